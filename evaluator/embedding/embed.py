"""open_clip image and text embeddings, stored as float16 Parquet keyed by image id.

- ``load_clip`` accepts an open_clip architecture + pretrained tag (fetched only when
  online), an architecture + local checkpoint file, a ``hf-hub:`` id, or a local folder
  (``open_clip_config.json`` + weights, e.g. one made by ``evaluator.testing.tiny_clip``). Each
  gets a stable *model key*, the ``model`` column of the store.
- ``embed_images`` decodes and preprocesses in DataLoader workers while the main process
  runs the model, L2-normalises, and writes part files atomically every ``part_size``
  images, so a killed run loses at most one part and a rerun skips what is done.
- ``embed_texts`` caches text embeddings on disk by (model, text): the artist × template
  matrix (9,000 × 5 texts) is encoded once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

    from evaluator.workspace.workdir import Workdir

DTYPES = ("float32", "float16", "bfloat16")
TEXT_CACHE_DIR = "_texts"
# Text cache part files before they are merged into one: reads stay one file or a few.
MAX_TEXT_PARTS = 16


@dataclass(frozen=True)
class ClipSpec:
    """Which CLIP to load, and where. CPU/float32 by default: exact and runs anywhere."""

    model: str  # architecture name, hf-hub:<id>, local-dir:<path>, or a folder path
    pretrained: str | None = None  # tag (needs network) or a local weights file
    device: str = "cpu"
    dtype: str = "float32"

    def validate(self) -> None:
        if not self.model or not str(self.model).strip():
            raise ValueError("model must be a non-empty open_clip name, hf-hub: id or folder")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)} but is {self.dtype!r}")
        if not (self.device == "cpu" or self.device.startswith(("cuda", "mps"))):
            raise ValueError(f"device must be cpu, cuda[:N] or mps but is {self.device!r}")


@dataclass
class LoadedClip:
    """A loaded model with its preprocessing, tokenizer and store key."""

    key: str
    spec: ClipSpec
    model: Any
    preprocess: Any
    tokenizer: Any
    embed_dim: int
    fingerprint: str
    info: dict = field(default_factory=dict)

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.spec.dtype)


def file_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a weights file: a changed file gives a new model key."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _resolve(spec: ClipSpec) -> tuple[str, str | None, str, str, dict]:
    """(open_clip model_name, pretrained, model key, fingerprint, info) without loading."""
    import open_clip

    from evaluator.testing.tiny_clip import CONFIG_NAME

    model = spec.model
    local = model[len("local-dir:") :] if model.startswith("local-dir:") else model
    if not model.startswith("hf-hub:") and (Path(local).is_dir() or model.startswith("local-dir:")):
        folder = Path(local).expanduser().resolve()
        config_path = folder / CONFIG_NAME
        if not folder.is_dir():
            raise FileNotFoundError(f"CLIP folder {folder} does not exist")
        if not config_path.is_file():
            raise FileNotFoundError(f"CLIP folder {folder} has no {CONFIG_NAME}")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{config_path}: invalid JSON at line {exc.lineno}: {exc.msg}") from exc
        weights = sorted(
            [*folder.glob("*.safetensors"), *folder.glob("*.bin"), *folder.glob("*.pth")],
            key=lambda p: (p.suffix != ".safetensors", p.name),
        )
        if not weights:
            raise FileNotFoundError(f"CLIP folder {folder} has no weights (*.safetensors, *.bin, *.pth)")
        fingerprint = file_fingerprint(weights[0])
        kind = (config.get("atelier") or {}).get("kind")
        stem = kind or folder.name
        info = {"source": str(folder), "weights": str(weights[0]), "random_weights": bool(kind)}
        return f"local-dir:{folder}", None, f"{stem}@{fingerprint[:8]}", fingerprint, info
    if model.startswith("hf-hub:"):
        return model, None, model, model, {"source": model}
    # a built-in architecture name
    arch = model.replace("/", "-")
    if open_clip.get_model_config(arch) is None:
        import difflib

        close = difflib.get_close_matches(arch, open_clip.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown open_clip model {model!r}{hint}")
    if spec.pretrained is None:
        raise ValueError(
            f"model {model!r} needs --pretrained (a tag such as laion2b_s34b_b79k, or a local weights "
            "file); random weights are for tests: build a folder with evaluator.testing.tiny_clip"
        )
    pre = spec.pretrained
    if Path(pre).expanduser().is_file():
        weights = Path(pre).expanduser().resolve()
        fingerprint = file_fingerprint(weights)
        key = f"{arch}/{weights.stem}@{fingerprint[:8]}"
        return arch, str(weights), key, fingerprint, {"source": str(weights)}
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if pre not in tags:
        import difflib

        close = difflib.get_close_matches(pre, tags, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known tags: {', '.join(tags) or 'none'}"
        raise ValueError(f"{pre!r} is neither a weights file nor a pretrained tag of {arch}{hint}")
    return arch, pre, f"{arch}/{pre}", f"{arch}/{pre}", {"source": f"{arch}/{pre}"}


def model_key(model: str, pretrained: str | None = None) -> str:
    """The store's ``model`` string for a spec, without loading weights."""
    return _resolve(ClipSpec(model, pretrained))[2]


@lru_cache(maxsize=4)
def _load_cached(spec: ClipSpec) -> LoadedClip:
    import open_clip
    import torch

    name, pretrained, key, fingerprint, info = _resolve(spec)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name, pretrained=pretrained, device=spec.device
        )
    except RuntimeError as exc:
        if pretrained and not Path(pretrained).is_file():
            raise RuntimeError(
                f"could not fetch weights for {name}/{pretrained} (no network to the model hub?). "
                f"Pass a local weights file with --pretrained, or a local folder: {exc}"
            ) from exc
        raise
    model = model.to(device=spec.device, dtype=getattr(torch, spec.dtype)).eval()
    tokenizer = open_clip.get_tokenizer(name)
    embed_dim = int(model.text_projection.shape[1]) if getattr(model, "text_projection", None) is not None else None
    if embed_dim is None:
        with torch.no_grad():
            embed_dim = int(model.encode_text(tokenizer(["x"]).to(spec.device)).shape[-1])
    return LoadedClip(key, spec, model, preprocess, tokenizer, embed_dim, fingerprint, info)


def load_clip(
    model: str | ClipSpec | LoadedClip,
    pretrained: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
) -> LoadedClip:
    """Load (once per process) an open_clip model; see the module docstring for sources."""
    if isinstance(model, LoadedClip):
        return model
    spec = model if isinstance(model, ClipSpec) else ClipSpec(str(model), pretrained, device, dtype)
    spec.validate()
    if spec.model.startswith("local-dir:") or Path(spec.model).expanduser().is_dir():
        local = spec.model.removeprefix("local-dir:")
        spec = ClipSpec(str(Path(local).expanduser().resolve()), None, spec.device, spec.dtype)
    return _load_cached(spec)


# ---------------------------------------------------------------------------- images


class _ImageDataset:
    """Decode + preprocess one image in a worker; a bad file yields its error, not a crash."""

    def __init__(self, root: Path, rows: list[tuple[int, str]], preprocess: Any) -> None:
        self.root = root
        self.rows = rows
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        from PIL import Image

        image_id, relpath = self.rows[i]
        try:
            path = (self.root / relpath) if not os.path.isabs(relpath) else Path(relpath)
            with Image.open(path) as img:
                img.load()
                tensor = self.preprocess(img.convert("RGB"))
            return image_id, tensor, None
        except Exception as exc:  # undecodable, missing, truncated: recorded per image
            return image_id, None, f"{type(exc).__name__}: {exc}"


def _collate(batch):
    import torch

    ok = [(i, t) for i, t, e in batch if e is None]
    bad = [(i, e) for i, _, e in batch if e is not None]
    ids = [i for i, _ in ok]
    tensors = torch.stack([t for _, t in ok]) if ok else None
    return ids, tensors, bad


@dataclass
class EmbedResult:
    model: str
    n_done: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    parts: list[str] = field(default_factory=list)


def _embedding_schema(dim: int):
    import pyarrow as pa

    return pa.schema([("image_id", pa.int64()), ("embedding", pa.list_(pa.float16(), dim))])


def _write_part(folder: Path, ids: list[int], vecs: np.ndarray, model: str) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from catalog.atomic import atomic_path

    dim = vecs.shape[1]
    flat = pa.array(vecs.astype("float16").reshape(-1), type=pa.float16())
    table = pa.table(
        {"image_id": pa.array(ids, type=pa.int64()), "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)},
        schema=_embedding_schema(dim).with_metadata({"model": model}),
    )
    path = folder / f"part-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def _part_paths(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("part-*.parquet") if not p.name.startswith("."))


def embedded_ids(workdir: Workdir, model: str) -> set[int]:
    """Image ids already embedded by ``model`` (reads only the id column)."""
    import pyarrow.parquet as pq

    done: set[int] = set()
    for path in _part_paths(workdir.embeddings(model)):
        done.update(pq.read_table(path, columns=["image_id"]).column(0).to_pylist())
    return done


def load_embeddings(workdir: Workdir, model: str, ids: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids int64[N], vectors float32[N, D]) sorted by id, one row per image.

    An image embedded twice (two runs raced) keeps one row: the vectors are equal.
    ``ids`` restricts the result to those images.
    """
    import numpy as np
    import pyarrow.parquet as pq

    all_ids, all_vecs = [], []
    dim = None
    for path in _part_paths(workdir.embeddings(model)):
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise ValueError(f"embedding part {path} is unreadable: {exc}") from exc
        col = table.column("embedding").combine_chunks()
        d = col.type.list_size
        if dim is not None and d != dim:
            raise ValueError(f"embedding part {path} has dimension {d}, others have {dim}")
        dim = d
        all_ids.append(table.column("image_id").to_numpy())
        all_vecs.append(col.flatten().to_numpy(zero_copy_only=False).reshape(-1, d))
    if not all_ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim or 0), dtype=np.float32)
    id_arr = np.concatenate(all_ids).astype(np.int64)
    vec_arr = np.concatenate(all_vecs)
    order = np.argsort(id_arr, kind="stable")
    id_arr, vec_arr = id_arr[order], vec_arr[order]
    keep = np.ones(len(id_arr), dtype=bool)
    keep[1:] = id_arr[1:] != id_arr[:-1]
    if ids is not None:
        keep &= np.isin(id_arr, np.asarray(list(ids), dtype=np.int64))
    return id_arr[keep], vec_arr[keep].astype(np.float32)


def compact_embeddings(workdir: Workdir, model: str) -> int:
    """Merge all part files of a model into one (dedup'd); returns the row count."""
    ids, vecs = load_embeddings(workdir, model)
    folder = workdir.embeddings(model)
    old = _part_paths(folder)
    if len(old) <= 1:
        return len(ids)
    new = _write_part(folder, ids.tolist(), vecs, model)
    for path in old:
        if path != new:
            path.unlink()
    return len(ids)


def _rows_of(image_rows: Any) -> list[tuple[int, str]]:
    """(image_id, path) pairs from a DataFrame or a list of dicts, validated."""
    if hasattr(image_rows, "to_dict"):
        records = image_rows[["image_id", "path"]].to_dict("records")
    else:
        records = list(image_rows)
    rows = []
    for i, rec in enumerate(records):
        if rec.get("image_id") is None:
            raise ValueError(f"image row {i} has no image_id")
        path = rec.get("path")
        if path is None or (isinstance(path, float)) or str(path) == "":
            raise ValueError(f"image row {i} (image_id {rec['image_id']}) has no path")
        rows.append((int(rec["image_id"]), str(path)))
    return rows


def embed_images(
    workdir: Workdir,
    clip: LoadedClip,
    image_rows: Any,
    batch_size: int = 64,
    num_workers: int = 2,
    part_size: int = 4096,
    progress: bool = True,
) -> EmbedResult:
    """Embed every listed image not yet embedded by this model; return what happened.

    ``image_rows``: a DataFrame or dicts with ``image_id`` and ``path`` (relative to the
    workdir). Workers decode and preprocess (a DataLoader) while this process runs the
    model: on a 2-core CPU the model is the bottleneck and decoding hides behind it.
    """
    import numpy as np
    import torch
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 but is {batch_size}")
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0 but is {num_workers}")
    start = time.perf_counter()
    rows = _rows_of(image_rows)
    result = EmbedResult(model=clip.key)
    done = embedded_ids(workdir, clip.key)
    seen: set[int] = set()
    todo = []
    for image_id, path in rows:
        if image_id in done or image_id in seen:
            result.n_skipped += 1
            continue
        seen.add(image_id)
        todo.append((image_id, path))
    folder = workdir.embeddings(clip.key)
    folder.mkdir(parents=True, exist_ok=True)
    if not todo:
        result.seconds = time.perf_counter() - start
        return result
    dataset = _ImageDataset(workdir.root, todo, clip.preprocess)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
    pend_ids: list[int] = []
    pend_vecs: list[np.ndarray] = []
    bar = tqdm(total=len(todo), desc=f"embed {clip.key}", unit="img", disable=not progress)
    with torch.inference_mode():
        for ids, tensors, bad in loader:
            for image_id, error in bad:
                result.errors[image_id] = error
            if tensors is not None:
                feats = clip.model.encode_image(tensors.to(clip.spec.device, clip.torch_dtype))
                feats = torch.nn.functional.normalize(feats.float(), dim=-1)
                pend_ids.extend(ids)
                pend_vecs.append(feats.cpu().numpy())
            bar.update(len(ids) + len(bad))
            if len(pend_ids) >= part_size:
                result.parts.append(str(_write_part(folder, pend_ids, np.concatenate(pend_vecs), clip.key)))
                result.n_done += len(pend_ids)
                pend_ids, pend_vecs = [], []
    bar.close()
    if pend_ids:
        result.parts.append(str(_write_part(folder, pend_ids, np.concatenate(pend_vecs), clip.key)))
        result.n_done += len(pend_ids)
    result.n_failed = len(result.errors)
    result.seconds = time.perf_counter() - start
    return result


def embed_image_files(clip: LoadedClip, paths: list[str | Path]) -> np.ndarray:
    """Embed image files outside any workdir (search by an uploaded image)."""
    import torch
    from PIL import Image

    tensors = []
    for path in paths:
        try:
            with Image.open(path) as img:
                img.load()
                tensors.append(clip.preprocess(img.convert("RGB")))
        except Exception as exc:
            raise ValueError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
    with torch.inference_mode():
        feats = clip.model.encode_image(torch.stack(tensors).to(clip.spec.device, clip.torch_dtype))
        return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()


# ---------------------------------------------------------------------------- texts


def _text_cache_paths(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("texts-*.parquet") if not p.name.startswith("."))


def _read_text_cache(folder: Path) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    cache: dict[str, np.ndarray] = {}
    for path in _text_cache_paths(folder):
        try:
            table = pq.read_table(path)
        except FileNotFoundError:  # merged away by a concurrent compaction: its rows live on
            continue
        col = table.column("embedding").combine_chunks()
        vecs = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, col.type.list_size)
        for text, vec in zip(table.column("text").to_pylist(), vecs, strict=True):
            cache[text] = vec
    return cache


def embed_texts(
    clip: LoadedClip,
    texts: list[str],
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """L2-normalised text embeddings, float32 [len(texts), D], in the order given.

    With ``cache_dir`` (``embeddings/<model>/_texts`` of a workdir), texts seen before are
    read back instead of encoded: keyed by (model folder, exact text). Stored as float32,
    so cached and fresh values are identical.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from tqdm import tqdm

    from catalog.atomic import atomic_path

    texts = [str(t) for t in texts]
    folder = Path(cache_dir) if cache_dir is not None else None
    cache = _read_text_cache(folder) if folder is not None else {}
    missing = list(dict.fromkeys(t for t in texts if t not in cache))
    if missing:
        new_vecs = []
        with torch.inference_mode():
            starts = range(0, len(missing), batch_size)
            for s in tqdm(starts, desc="embed texts", disable=not progress or len(missing) < 1000):
                tokens = clip.tokenizer(missing[s : s + batch_size]).to(clip.spec.device)
                feats = clip.model.encode_text(tokens)
                new_vecs.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        fresh = np.concatenate(new_vecs).astype(np.float32)
        cache.update(zip(missing, fresh, strict=True))
        if folder is not None:
            flat = pa.array(fresh.reshape(-1), type=pa.float32())
            table = pa.table(
                {
                    "text": pa.array(missing, type=pa.string()),
                    "embedding": pa.FixedSizeListArray.from_arrays(flat, fresh.shape[1]),
                }
            )
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"texts-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
            with atomic_path(path) as tmp:
                pq.write_table(table, tmp)
            if len(_text_cache_paths(folder)) > MAX_TEXT_PARTS:
                _compact_text_cache(folder, cache)
    if not texts:
        return np.zeros((0, clip.embed_dim), dtype=np.float32)
    return np.stack([cache[t] for t in texts]).astype(np.float32)


def _compact_text_cache(folder: Path, cache: dict[str, np.ndarray]) -> None:
    """Merge the cache's part files into one (written first, then the old ones removed)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from catalog.atomic import atomic_path

    old = _text_cache_paths(folder)
    texts = sorted(cache)
    vecs = np.stack([cache[t] for t in texts]).astype(np.float32)
    table = pa.table({
        "text": pa.array(texts, type=pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vecs.reshape(-1), type=pa.float32()), vecs.shape[1]),
    })
    merged = folder / f"texts-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}-merged.parquet"
    with atomic_path(merged) as tmp:
        pq.write_table(table, tmp)
    for path in old:
        path.unlink(missing_ok=True)


def artist_template_texts(
    clip: LoadedClip, names: list[str], templates: dict[str, str], cache_dir: str | Path | None = None
) -> tuple[list[str], np.ndarray]:
    """The artist x template text matrix: (template names, vectors [A, T, D]).

    ``templates`` maps a name to its text with ``{name}``; a template without it (the
    null baseline) gives the same vector for every artist. Cached like embed_texts, so
    9,000 artists x 5 templates are encoded once per model.
    """
    order = sorted(templates)
    texts = [templates[t].replace("{name}", n) for n in names for t in order]
    vecs = embed_texts(clip, texts, cache_dir=cache_dir, progress=True)
    return order, vecs.reshape(len(names), len(order), -1)


def text_cache_dir(workdir: Workdir, model: str) -> Path:
    return workdir.embeddings(model) / TEXT_CACHE_DIR


def embedding_summary(workdir: Workdir, model: str) -> dict:
    ids, vecs = load_embeddings(workdir, model)
    return {"model": model, "n": int(len(ids)), "dim": int(vecs.shape[1]) if vecs.ndim == 2 else 0}

