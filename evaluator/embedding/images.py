"""Image embeddings: the CLIP image encoder over a workdir's images, and their Parquet parts.

Reads image files (paths relative to the workdir) and writes
``embeddings/<model>/part-*.parquet``: ``image_id`` int64 and a float16 ``embedding``
of fixed size, L2-normalised, the model key in the file metadata.

``embed_images`` decodes and preprocesses in DataLoader workers while the main process
runs the model, and writes a part file atomically every ``part_size`` images, so a
killed run loses at most one part and a rerun skips what is done.

Under a launcher (``torchrun --nproc_per_node N``: RANK/WORLD_SIZE) each process embeds
the images it owns (``image_id % world_size == rank``, see
``evaluator.generation.distributed.owns_image``) and writes its own parts
(``part-<time>-r<rank>-<uuid>.parquet``); every rank reads every part first, so a rerun,
with any number of processes, embeds only the gaps and no image is embedded twice.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluator.embedding.decode import open_rgb
from evaluator.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from evaluator.embedding.clip import LoadedClip
    from evaluator.generation.distributed import DistEnv
    from evaluator.workspace.workdir import Workdir


# ---------------------------------------------------------------------------- parts on disk


def _embedding_schema(dim: int):
    import pyarrow as pa

    return pa.schema([("image_id", pa.int64()), ("embedding", pa.list_(pa.float16(), dim))])


def _write_part(folder: Path, ids: list[int], vecs: np.ndarray, model: str, tag: str = "") -> Path:
    """One part file, written under a temporary name and renamed: never seen half-written.

    ``tag`` (``r<rank>-`` under a launcher) says which process wrote it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from catalog.atomic import atomic_path

    dim = vecs.shape[1]
    flat = pa.array(vecs.astype("float16").reshape(-1), type=pa.float16())
    table = pa.table(
        {"image_id": pa.array(ids, type=pa.int64()), "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)},
        schema=_embedding_schema(dim).with_metadata({"model": model}),
    )
    path = folder / f"part-{time.strftime('%Y%m%dT%H%M%S')}-{tag}{uuid.uuid4().hex[:8]}.parquet"
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
    ``ids`` restricts the result to those images, part by part, so that memory holds only
    them (a rank of a launch loads its share, not every image's vector).
    """
    import numpy as np
    import pyarrow.parquet as pq

    if ids is not None:
        ids = ids if isinstance(ids, np.ndarray) else np.fromiter(ids, dtype=np.int64)
    wanted = None if ids is None else np.unique(ids.astype(np.int64))
    all_ids, all_vecs = [], []
    dim = None
    for path in _part_paths(workdir.embeddings(model)):
        try:
            table = pq.read_table(path)
        except Exception as exc:
            raise InputError(f"embedding part {path} is unreadable: {exc}") from exc
        col = table.column("embedding").combine_chunks()
        d = col.type.list_size
        if dim is not None and d != dim:
            raise InputError(f"embedding part {path} has dimension {d}, others have {dim}")
        dim = d
        part_ids = table.column("image_id").to_numpy().astype(np.int64)
        part_vecs = col.flatten().to_numpy(zero_copy_only=False).reshape(-1, d)
        if wanted is not None:
            keep = np.isin(part_ids, wanted)
            part_ids, part_vecs = part_ids[keep], part_vecs[keep]
        all_ids.append(part_ids)
        all_vecs.append(part_vecs)
    if not all_ids:
        return np.zeros(0, dtype=np.int64), np.zeros((0, dim or 0), dtype=np.float32)
    id_arr = np.concatenate(all_ids).astype(np.int64)
    vec_arr = np.concatenate(all_vecs)
    order = np.argsort(id_arr, kind="stable")
    id_arr, vec_arr = id_arr[order], vec_arr[order]
    keep = np.ones(len(id_arr), dtype=bool)
    keep[1:] = id_arr[1:] != id_arr[:-1]
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


def embedding_summary(workdir: Workdir, model: str) -> dict:
    ids, vecs = load_embeddings(workdir, model)
    return {"model": model, "n": int(len(ids)), "dim": int(vecs.shape[1]) if vecs.ndim == 2 else 0}


# ---------------------------------------------------------------------------- reading images


class _ImageDataset:
    """Decode + preprocess one image in a worker; a bad file yields its error, not a crash."""

    def __init__(self, root: Path, rows: list[tuple[int, str]], preprocess: Any) -> None:
        self.root = root
        self.rows = rows
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        image_id, relpath = self.rows[i]
        try:
            path = (self.root / relpath) if not os.path.isabs(relpath) else Path(relpath)
            if hasattr(self.preprocess, "open"):  # clip.ClipPreprocess: JPEG draft mode, shrink, transform
                return image_id, self.preprocess.open(path), None
            return image_id, self.preprocess(open_rgb(path)), None
        except Exception as exc:  # undecodable, missing, truncated: recorded per image
            return image_id, None, f"{type(exc).__name__}: {exc}"


def _collate(batch):
    import torch

    ok = [(i, t) for i, t, e in batch if e is None]
    bad = [(i, e) for i, _, e in batch if e is not None]
    ids = [i for i, _ in ok]
    tensors = torch.stack([t for _, t in ok]) if ok else None
    return ids, tensors, bad


@dataclass(frozen=True)
class LoaderPlan:
    """How many decode workers and torch threads an embedding run uses, and how batches move.

    On a CPU the model and the decoders share the cores: measured on 2 cores (ViT-B-32,
    SD 1.5 WebP), 2 workers + 2 torch threads reached 77% of the model-alone throughput,
    1 worker + 2 threads 89%, so the model keeps every core and one worker per 4 cores
    decodes (decoding is a small share of the work once originals are kept). On a GPU the
    cores only decode: all but one become workers, and batches are pinned in page-locked
    memory so the host-to-device copy runs without blocking.
    """

    workers: int
    torch_threads: int
    pin_memory: bool
    prefetch_factor: int | None


def usable_cores(processes: int = 1) -> int:
    """The cores this process may run on (its CPU affinity), shared among ``processes``
    ranks of a launch on one machine; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, processes))


def loader_plan(device: str, num_workers: int | None = None, cores: int | None = None) -> LoaderPlan:
    """The plan for ``device`` on ``cores`` (default: ``usable_cores()``); an explicit
    ``num_workers`` wins over the default."""
    cores = cores or usable_cores()
    cuda = device.startswith("cuda")
    workers = num_workers if num_workers is not None else (max(1, min(8, cores - 1)) if cuda else max(1, cores // 4))
    threads = cores if cuda or cores - workers < 2 else cores - workers
    return LoaderPlan(workers, max(1, threads), cuda, 4 if workers > 0 else None)


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count set for a block, then restored."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _rows_of(image_rows: Any) -> list[tuple[int, str]]:
    """(image_id, path) pairs from a DataFrame or a list of dicts, validated."""
    if hasattr(image_rows, "to_dict"):
        records = image_rows[["image_id", "path"]].to_dict("records")
    else:
        records = list(image_rows)
    rows = []
    for i, rec in enumerate(records):
        if rec.get("image_id") is None:
            raise InputError(f"image row {i} has no image_id")
        path = rec.get("path")
        if path is None or (isinstance(path, float)) or str(path) == "":
            raise InputError(f"image row {i} (image_id {rec['image_id']}) has no path")
        rows.append((int(rec["image_id"]), str(path)))
    return rows


# ---------------------------------------------------------------------------- embedding


@dataclass
class EmbedResult:
    model: str
    n_done: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    errors: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    parts: list[str] = field(default_factory=list)
    rank: int = 0
    world_size: int = 1
    n_elsewhere: int = 0  # listed images another rank owns


def _owned_rows(rows: list[tuple[int, str]], env: DistEnv, result: EmbedResult) -> list[tuple[int, str]]:
    """The rows this rank embeds (all of them in one process); the others count as elsewhere."""
    from evaluator.generation.distributed import owns_image

    if env.world_size == 1:
        return rows
    mine = [row for row in rows if owns_image(row[0], env)]
    result.n_elsewhere = len(rows) - len(mine)
    return mine


def _images_to_embed(rows: list[tuple[int, str]], done: set[int], result: EmbedResult) -> list[tuple[int, str]]:
    """The rows not embedded yet, each image once; the others count as skipped."""
    seen: set[int] = set()
    todo = []
    for image_id, path in rows:
        if image_id in done or image_id in seen:
            result.n_skipped += 1
            continue
        seen.add(image_id)
        todo.append((image_id, path))
    return todo


class _PartWriter:
    """Collects normalised vectors and writes a part file each time ``part_size`` are pending."""

    def __init__(self, folder: Path, model: str, part_size: int, result: EmbedResult, tag: str = "") -> None:
        self.folder = folder
        self.tag = tag
        self.model = model
        self.part_size = part_size
        self.result = result
        self.ids: list[int] = []
        self.vecs: list[np.ndarray] = []

    def add(self, ids: list[int], vecs: np.ndarray) -> None:
        self.ids.extend(ids)
        self.vecs.append(vecs)

    def flush_if_full(self) -> None:
        if len(self.ids) >= self.part_size:
            self.flush()

    def flush(self) -> None:
        import numpy as np

        if not self.ids:
            return
        self.result.parts.append(str(_write_part(self.folder, self.ids, np.concatenate(self.vecs), self.model,
                                                     self.tag)))
        self.result.n_done += len(self.ids)
        self.ids, self.vecs = [], []


def _encode_batches(clip: LoadedClip, loader: Any, writer: _PartWriter, progress_bar: Any) -> None:
    """Run the image encoder over the loader's batches; failed images go to the result's errors."""
    import torch

    with torch.inference_mode():
        for ids, tensors, bad in loader:
            for image_id, error in bad:
                writer.result.errors[image_id] = error
            if tensors is not None:
                # non_blocking: from pinned memory (CUDA) the copy overlaps; on CPU it is a no-op
                feats = clip.model.encode_image(tensors.to(clip.spec.device, clip.torch_dtype, non_blocking=True))
                feats = torch.nn.functional.normalize(feats.float(), dim=-1)
                writer.add(ids, feats.cpu().numpy())
            progress_bar.update(len(ids) + len(bad))
            writer.flush_if_full()


def embed_images(
    workdir: Workdir,
    clip: LoadedClip,
    image_rows: Any,
    batch_size: int = 64,
    num_workers: int | None = None,
    part_size: int = 4096,
    progress: bool = True,
    *,
    env: DistEnv | None = None,
) -> EmbedResult:
    """Embed every listed image not yet embedded by this model; return what happened.

    ``image_rows``: a DataFrame or dicts with ``image_id`` and ``path`` (relative to the
    workdir). Workers decode and preprocess (a DataLoader) while this process runs the
    model: on a 2-core CPU the model is the bottleneck and decoding hides behind it.
    ``env`` (``dist_env()`` under a launcher): embed only this rank's images; None = every image,
    so a caller that does not know about ranks never embeds half.
    """
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from evaluator.generation.distributed import DistEnv

    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1 but is {batch_size}")
    if num_workers is not None and num_workers < 0:
        raise InputError(f"num_workers must be >= 0 but is {num_workers}")
    start = time.perf_counter()
    rows = _rows_of(image_rows)
    env = env or DistEnv(0, 1, 0)
    result = EmbedResult(model=clip.key, rank=env.rank, world_size=env.world_size)
    todo = _images_to_embed(_owned_rows(rows, env, result), embedded_ids(workdir, clip.key), result)
    folder = workdir.embeddings(clip.key)
    folder.mkdir(parents=True, exist_ok=True)
    if not todo:
        result.seconds = time.perf_counter() - start
        return result
    plan = loader_plan(clip.spec.device, num_workers, usable_cores(env.world_size))
    loader = DataLoader(
        _ImageDataset(workdir.root, todo, clip.preprocess),
        batch_size=batch_size,
        num_workers=plan.workers,
        collate_fn=_collate,
        prefetch_factor=plan.prefetch_factor,
        persistent_workers=False,
        pin_memory=plan.pin_memory,
    )
    ranked = env.world_size > 1
    writer = _PartWriter(folder, clip.key, part_size, result, f"r{env.rank}-" if ranked else "")
    bar = tqdm(total=len(todo), desc=f"embed {clip.key}" + (f" r{env.rank}" if ranked else ""), unit="img",
               disable=not progress, position=env.rank if ranked else None)
    with torch_threads(plan.torch_threads):
        _encode_batches(clip, loader, writer, bar)
    bar.close()
    writer.flush()
    result.n_failed = len(result.errors)
    result.seconds = time.perf_counter() - start
    return result


def embed_image_files(clip: LoadedClip, paths: list[str | Path]) -> np.ndarray:
    """Embed image files outside any workdir (search by an uploaded image)."""
    import torch

    tensors = []
    for path in paths:
        try:
            if hasattr(clip.preprocess, "open"):  # the same pixels as the embedder's workers
                tensors.append(clip.preprocess.open(path))
                continue
            tensors.append(clip.preprocess(open_rgb(path)))
        except Exception as exc:
            raise InputError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
    with torch.inference_mode():
        feats = clip.model.encode_image(torch.stack(tensors).to(clip.spec.device, clip.torch_dtype))
        return torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy()
