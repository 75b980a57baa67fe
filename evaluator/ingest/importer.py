"""Import images made elsewhere: A1111 / ComfyUI outputs, labelled folders, references.

Each file becomes one ``images`` row. Its settings come from the PNG ``parameters``
chunk (A1111 and friends) or ComfyUI's ``prompt`` graph when present, else from a labels
CSV (``file,artist[,checkpoint][,prompt]``). Artist names are mapped to catalog ids
(NFC + casefold on names and aliases, then accent-insensitive); a name the catalog does
not know is kept under a slug of the name and reported.

Every file is copied into ``DIR/imported/<checkpoint>/<artist>/<stem>-<unit8>.png`` as
an RGB PNG (EXIF rotation applied; CMYK, 16-bit, palette, grey and alpha converted;
animations keep their first frame), with a thumbnail. A file that cannot be decoded
(empty, truncated, not an image, a decompression bomb) is reported and still recorded,
with its reason in ``error`` and an id from its SHA-256 and path: nothing is dropped.

Identity (see docs/ARCHITECTURE.md): the unit id hashes (checkpoint, artist, template
"import", prompt, seed or -1, size, steps 0, guidance 0, scheduler ""), with the file's
SHA-256 in place of the prompt when there is none, so a rerun maps each file to the same
row. The run writes a manifest shard, then ingests it into the store in one transaction.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from catalog.units import WorkUnit
from evaluator.workspace.workdir import Workdir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# 100 megapixels (e.g. 10,000 x 10,000): far above any generation or museum scan we
# expect, far below what exhausts memory when decoded (~300 MB as RGB).
MAX_PIXELS = 100_000_000
NAME_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# zlib level 1: imports re-encode photos and finished generations, whose noise barely
# compresses; level 1 is ~4x faster than 4-6 for files ~10 % larger.
IMPORT_PNG_LEVEL = 1


@dataclass
class ImportSummary:
    run_id: str
    source_dir: str
    imported: int = 0  # new rows (file copied now)
    unchanged: int = 0  # already imported with the same content: nothing to do
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason), recorded with error
    unknown_artists: dict[str, int] = field(default_factory=dict)  # label name -> images
    unlabelled: list[str] = field(default_factory=list)  # files with neither labels nor metadata
    missing: list[str] = field(default_factory=list)  # labels rows whose file does not exist
    ignored: list[str] = field(default_factory=list)  # non-image files in the folder
    notes: list[tuple[str, str]] = field(default_factory=list)  # (file, what was converted)
    rows_ingested: int = 0
    manifest_path: str | None = None

    def report_lines(self) -> list[str]:
        lines = [
            f"import {self.source_dir}: {self.imported} imported, {self.unchanged} already there, "
            f"{len(self.failed)} failed (recorded with their error), {self.rows_ingested} rows written to the store"
        ]
        for name, reason in self.failed:
            lines.append(f"  failed: {name}: {reason}")
        for name, count in sorted(self.unknown_artists.items()):
            lines.append(f"  artist not in the catalog (kept as {slugify(name)!r}): {name} ({count} images)")
        for name in self.missing:
            lines.append(f"  labels name a missing file: {name}")
        if self.unlabelled:
            lines.append(f"  {len(self.unlabelled)} files without labels or metadata (artist unknown): {', '.join(self.unlabelled[:5])}")
        if self.ignored:
            lines.append(f"  {len(self.ignored)} non-image files ignored: {', '.join(self.ignored[:5])}")
        for name, note in self.notes[:20]:
            lines.append(f"  note: {name}: {note}")
        return lines


def slugify(name: str) -> str:
    """``Jean-Honoré Fragonard`` -> ``jean-honore-fragonard``: the catalog's own slug rule."""
    from catalog.names import slugify as catalog_slug

    return catalog_slug(name) or "unknown"


def _name_keys(name: str) -> list[str]:
    nfc = unicodedata.normalize("NFC", name).casefold().strip()
    spaced = re.sub(r"[\s_-]+", " ", nfc)
    return list(dict.fromkeys([nfc, spaced, slugify(name)]))


class ArtistIndex:
    """Label name -> catalog artist_id, by NFC/casefolded name or alias, then by slug."""

    def __init__(self, artists: list | None):
        self.by_key: dict[str, str] = {}
        self.ids: set[str] = set()
        for artist in artists or []:
            self.ids.add(artist.artist_id)
            for name in (artist.name, *tuple(getattr(artist, "aliases", ()) or ())):
                for key in _name_keys(name):
                    self.by_key.setdefault(key, artist.artist_id)
            self.by_key.setdefault(artist.artist_id, artist.artist_id)
        self.has_catalog = artists is not None

    def lookup(self, name: str) -> str | None:
        if name in self.ids:
            return name
        for variant in name_variants(name):
            for key in _name_keys(variant):
                if key in self.by_key:
                    return self.by_key[key]
        return None


    def lookup_in_prompt(self, prompt: str) -> str | None:
        """The catalog artist a prompt names ("... in the style of X", "art by X, ...")."""
        for match in STYLE_PHRASE.finditer(prompt):
            words = match.group(1).strip().split()
            for end in range(len(words), 0, -1):  # "Claude Monet soft light" -> ... "Claude Monet"
                found = self.lookup(" ".join(words[:end]))
                if found is not None:
                    return found
        return None


STYLE_PHRASE = re.compile(r"(?:style of|artwork by|painting by|art by|painted by|\bby)\s+([^,.;:\n()]+)", re.IGNORECASE)


def name_variants(name: str) -> list[str]:
    """``Alessandro (Shout) Gottardo`` -> itself, ``Alessandro Gottardo``, ``Shout``;
    ``Ilya/Ilja Repin`` -> ``Ilya Repin``, ``Ilja Repin``: how labels write aliases."""
    out = [name]
    inner = re.findall(r"\(([^)]*)\)", name)
    bare = re.sub(r"\s*\([^)]*\)\s*", " ", name).strip()
    out += [bare, *inner]
    for text in list(out):
        match = re.match(r"^(\S+)/(\S+)(\s.*)?$", text)
        if match:
            rest = match.group(3) or ""
            out += [match.group(1) + rest, match.group(2) + rest]
    return [v for v in dict.fromkeys(v.strip() for v in out) if v]


def load_artist_index(catalog_path: str | Path | None) -> ArtistIndex:
    """The catalog's names when one can be loaded (else an empty index: every name unknown)."""
    from catalog.model import load_catalog

    try:
        return ArtistIndex(load_catalog(catalog_path))
    except FileNotFoundError:
        if catalog_path is not None:
            raise
        return ArtistIndex(None)


@dataclass
class Label:
    line: int
    artist: str | None
    checkpoint: str | None
    prompt: str | None


def read_labels(path: Path, src_dir: Path) -> dict[str, Label]:
    """``file -> Label``; errors name the CSV and line (unknown columns are fine)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from exc
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "file" not in columns:
        raise ValueError(f"{path}: line 1: the header needs a 'file' column (found: {', '.join(columns) or 'nothing'})")
    if "artist" not in columns:
        raise ValueError(f"{path}: line 1: the header needs an 'artist' column (found: {', '.join(columns)})")
    labels: dict[str, Label] = {}
    for number, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        name = row.get("file", "")
        if not name:
            raise ValueError(f"{path}: line {number}: empty 'file'")
        key = Path(name).as_posix()
        if key in labels:
            raise ValueError(f"{path}: line {number}: file {name!r} is already labelled on line {labels[key].line}")
        labels[key] = Label(number, row.get("artist") or None, row.get("checkpoint") or None, row.get("prompt") or None)
    return labels


def checkpoint_name(raw: str | None) -> str | None:
    """A model name from labels/metadata as a path-safe checkpoint name ([A-Za-z0-9._-]+)."""
    if not raw:
        return None
    name = NAME_SAFE.sub("-", unicodedata.normalize("NFC", raw).strip()).strip("-.")
    return name or None


def _decode(path: Path, data: bytes):
    """Open, verify and convert one file; return (RGB image, info dict, notes) or raise ValueError."""
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    from evaluator.generation.pngmeta import read_generation_info

    if not data:
        raise ValueError("empty file (0 bytes)")
    import io

    notes: list[str] = []
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(io.BytesIO(data))
                info = read_generation_info(image)
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    notes.append(f"animated ({frames} frames): first frame kept")
                    image.seek(0)
                image.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ValueError(f"decompression bomb refused ({exc})") from exc
            except UnidentifiedImageError as exc:
                head = data[:16]
                raise ValueError(f"not an image Pillow can read (starts with {head!r})") from exc
            except OSError as exc:
                raise ValueError(f"corrupt or truncated image ({exc})") from exc
            except (SyntaxError, ValueError) as exc:
                raise ValueError(f"corrupt image ({exc})") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    oriented = ImageOps.exif_transpose(image)
    if oriented is not image:
        orientation = image.getexif().get(0x0112)
        if orientation not in (None, 1):
            notes.append(f"EXIF orientation {orientation} applied")
        image = oriented
    mode = image.mode
    if mode != "RGB":
        if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGB", rgba.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.getchannel("A"))
            image = background
            notes.append(f"{mode} with alpha composited on white")
        elif mode in ("I;16", "I;16B", "I;16L", "I"):
            import numpy as np

            array = np.asarray(image, dtype=np.float64)
            top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
            gray = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
            image = Image.fromarray(gray, mode="L").convert("RGB")
            notes.append(f"{mode} (16-bit) scaled to 8-bit RGB")
        else:
            image = image.convert("RGB")
            notes.append(f"{mode} converted to RGB")
    return image, info, notes


def _identity(checkpoint: str | None, artist_id: str, prompt: str, seed: int, width: int, height: int, salt: str | None) -> WorkUnit:
    return WorkUnit(
        checkpoint=checkpoint or "",
        artist_id=artist_id,
        template="import",
        prompt=prompt if salt is None else f"{prompt}\x00sha256:{salt}",
        negative_prompt="",
        seed=seed,
        width=width,
        height=height,
        steps=0,
        guidance=0.0,
        scheduler="",
    )


def import_images(
    src_dir: str | Path,
    workdir: str | Path,
    labels_csv: str | Path | None = None,
    checkpoint: str | None = None,
    as_reference: bool = False,
    catalog_path: str | Path | None = None,
    progress: bool = True,
    thumb_size: int = 192,
) -> ImportSummary:
    """Import every image under ``src_dir`` into ``workdir`` and its store (see module doc)."""
    from tqdm import tqdm

    from catalog.atomic import atomic_write_bytes
    from evaluator.generation.pngmeta import encode_png, format_parameters
    from evaluator.generation.runner import png_is_complete
    from evaluator.workspace.manifest import read_manifests, write_shard
    from evaluator.workspace.thumbs import write_thumbnail

    src = Path(src_dir).expanduser().resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"import source {src} is not a folder")
    forced = checkpoint_name(checkpoint) if checkpoint else None
    if checkpoint and forced != checkpoint:
        raise ValueError(f"--checkpoint must match [A-Za-z0-9._-]+ but is {checkpoint!r} (try {forced!r})")
    wd = Workdir.at(workdir)
    labels_path = Path(labels_csv).resolve() if labels_csv else None
    labels = read_labels(labels_path, src) if labels_path else {}
    index = load_artist_index(catalog_path)
    run_id = f"import-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    summary = ImportSummary(run_id=run_id, source_dir=str(src))
    source_kind = "reference" if as_reference else "imported"

    files = sorted(p for p in src.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    summary.ignored = [p.relative_to(src).as_posix() for p in files if p.suffix.lower() not in IMAGE_SUFFIXES and p != labels_path]
    present = {p.relative_to(src).as_posix() for p in images} | {p.name for p in images}
    summary.missing = [name for name in labels if name not in present]

    existing = read_manifests(wd.manifests)
    known = {}
    if len(existing):
        for row in existing[["image_id", "sha256", "path", "error"]].itertuples(index=False):
            known[int(row.image_id)] = (row.sha256, row.path, row.error if isinstance(row.error, str) else None)

    records: list[dict] = []
    seen_units: dict[str, tuple[str, str]] = {}
    now = datetime.now(UTC).replace(tzinfo=None)
    for path in tqdm(images, desc="import", unit="img", disable=not progress):
        rel = path.relative_to(src).as_posix()
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        label = labels.get(rel) or labels.get(path.name)
        try:
            image, info, notes = _decode(path, data)
            error = None
        except ValueError as exc:
            image, info, notes, error = None, None, [], str(exc)
        info = info or {}
        unit_info = info.get("unit") or {}

        # artist: labels > our own chunk > nothing
        artist_name = label.artist if label and label.artist else None
        if artist_name:
            artist_id = index.lookup(artist_name)
            if artist_id is None:
                summary.unknown_artists[artist_name] = summary.unknown_artists.get(artist_name, 0) + 1
                artist_id = slugify(artist_name)
        elif unit_info.get("artist_id"):
            artist_id = str(unit_info["artist_id"])
        elif index.lookup_in_prompt(info.get("prompt") or ""):
            artist_id = index.lookup_in_prompt(info.get("prompt") or "")
        else:
            artist_id = "_unknown"
            if error is None:
                summary.unlabelled.append(rel)
        # checkpoint: --checkpoint > labels > metadata model name
        if as_reference:
            ckpt = forced
        else:
            ckpt = forced or checkpoint_name(label.checkpoint if label else None) or checkpoint_name(
                unit_info.get("checkpoint") or info.get("model")
            )
        prompt = (label.prompt if label and label.prompt else None) or info.get("prompt") or ""
        negative = info.get("negative_prompt") or ""
        seed = info.get("seed") if isinstance(info.get("seed"), int) else -1
        width, height = (image.size if image is not None else (info.get("width") or 0, info.get("height") or 0))

        if error is not None:
            # unique per file and place: the content hash and the relative path
            unit = _identity(ckpt, artist_id, f"error:{rel}", -1, 0, 0, sha)
        else:
            unit = _identity(ckpt, artist_id, prompt, seed, width, height, None if prompt else sha)
            if unit.unit_id in seen_units and seen_units[unit.unit_id][0] != sha:  # same settings, other pixels
                unit = _identity(ckpt, artist_id, prompt, seed, width, height, sha)
        if unit.unit_id in seen_units:  # byte-identical copy of a file already taken: one row
            summary.notes.append((rel, f"same content and labels as {seen_units[unit.unit_id][1]}: recorded once"))
            continue
        seen_units[unit.unit_id] = (sha, rel)

        folder = ckpt or ("reference" if as_reference else "_unknown")
        stem = NAME_SAFE.sub("-", path.stem).strip("-") or "image"
        relpath = Path("imported") / folder / artist_id / f"{stem}-{unit.unit_id[:8]}.png"
        thumb_rel = Path("thumbs") / relpath.with_suffix(".jpg")
        record = {
            "image_id": unit.image_id,
            "unit_id": unit.unit_id,
            "source": source_kind,
            "checkpoint": ckpt,
            "artist_id": artist_id,
            "template": "import",
            "prompt": prompt,
            "negative_prompt": negative,
            "seed": seed,
            "width": width or None,
            "height": height or None,
            "steps": info.get("steps") or 0,
            "guidance": float(info.get("guidance") or 0.0),
            "scheduler": info.get("sampler") or "",
            "path": None,
            "thumb_path": None,
            "sha256": sha,
            "seconds": None,
            "error": None,
            "run_id": run_id,
            "created_at": now,
        }
        if error is not None:
            record["error"] = f"{rel}: {error}"
            record["path"] = None
            summary.failed.append((rel, error))
        else:
            record["path"] = relpath.as_posix()
            record["thumb_path"] = thumb_rel.as_posix()
            for note in notes:
                summary.notes.append((rel, note))
        previous = known.get(unit.image_id)
        if previous is not None and previous[0] == sha and previous[2] == record["error"] and (
            record["path"] is None or png_is_complete(wd.root / record["path"])
        ):
            summary.unchanged += 1
            continue
        if error is None:
            parameters = format_parameters(
                prompt, negative, int(record["steps"]), record["scheduler"] or "unknown", record["guidance"],
                seed, width, height, model=ckpt, extra={"Imported from": rel},
            )
            meta = {**record, "created_at": now.isoformat(), "imported_from": str(path)}
            atomic_write_bytes(wd.root / relpath, encode_png(image, parameters, meta, compress_level=IMPORT_PNG_LEVEL))
            write_thumbnail(image, wd.root / thumb_rel, thumb_size)
            image.close()
            summary.imported += 1
        records.append(record)

    if records:
        _record_checkpoints(wd, records, src)
        manifest = wd.manifests / run_id / "rank0-part00000.parquet"
        write_shard(records, manifest)
        summary.manifest_path = str(manifest)
        _write_import_run(wd, run_id, src, summary, as_reference, checkpoint, labels_path)
    summary.rows_ingested = _ingest(wd, records, as_reference, run_id) if records else 0
    return summary


def _record_checkpoints(wd: Workdir, records: list[dict], src: Path) -> None:
    """A ``checkpoints`` row (``DIR/checkpoints/<name>.json``) for each imported model name
    that has none, so scoring and the dashboard know it; generated records are never touched."""
    from catalog.atomic import atomic_write_text

    folder = wd.root / "checkpoints"
    for name in sorted({r["checkpoint"] for r in records if r["checkpoint"]}):
        path = folder / f"{name}.json"
        if path.exists():
            continue
        record = {
            "name": name,
            "source": f"imported:{src}",
            "kind": None,
            "base": None,
            "adapters": json.dumps({"lora": [], "textual_inversion": []}),
            "fingerprint": None,
            "dtype": None,
            "scheduler": None,
            "notes": f"images imported from {src}; weights unknown",
            "added_at": datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds"),
        }
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))


def _write_import_run(wd: Workdir, run_id: str, src: Path, summary: ImportSummary, as_reference: bool,
                      checkpoint: str | None, labels_path: Path | None) -> None:
    from catalog.atomic import atomic_write_text
    from evaluator.workspace.records import git_revision, package_versions

    now = datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="seconds")
    record = {
        "run_id": run_id,
        "kind": "import",
        "started_at": now,
        "finished_at": now,
        "status": "ok" if not summary.failed else "failed-units",
        "config": json.dumps({"source": str(src), "labels": str(labels_path) if labels_path else None,
                              "checkpoint": checkpoint, "as_reference": as_reference}),
        "versions": json.dumps(package_versions()),
        "git_rev": git_revision(),
        "device": None,
        "dtype": None,
        "timings": json.dumps({}),
        "n_done": summary.imported,
        "n_skipped": summary.unchanged,
        "n_failed": len(summary.failed),
        "host": None,
        "message": "; ".join(f"{n}: {r}" for n, r in summary.failed[:20]) or None,
    }
    atomic_write_text(wd.runs / f"{run_id}.json", json.dumps(record, indent=2))


def _ingest(wd: Workdir, records: list[dict], as_reference: bool, run_id: str) -> int:
    """Manifests -> ``images`` (upsert), plus references and the run row, in one transaction."""
    import pandas as pd

    from evaluator.workspace.manifest import ingest_manifests
    from evaluator.workspace.store import open_store, transaction, upsert_df

    run = json.loads((wd.runs / f"{run_id}.json").read_text())
    with open_store(wd.store) as con, transaction(con):
        written = ingest_manifests(con, wd.manifests)
        upsert_df(con, "runs", pd.DataFrame([run]), key=["run_id"])
        if as_reference:
            refs = pd.DataFrame(
                [{"artist_id": r["artist_id"], "image_id": r["image_id"]} for r in records if r["error"] is None]
            )
            if len(refs):
                upsert_df(con, "reference_images", refs, key=["artist_id", "image_id"])
    return written
