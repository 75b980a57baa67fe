"""What a fine-tune is trained on: a folder of images and captions read into items.

Reads a dataset folder (images, caption files, a labels CSV); writes nothing. Three
layouts users already have are read:

* **kohya** (sd-scripts' DreamBooth layout): sub-folders ``<repeats>_<concept>``
  (``10_mystyle/`` = ten repeats of concept "mystyle"), each image with its caption in a
  file beside it (``a.png`` + ``a.txt``; ``caption_extension``). An image without a
  caption file, or with an empty one, is captioned with its concept name, as kohya does
  with its class tokens. Only the first non-empty line of a caption file is read (kohya's
  rule). Folders and files starting with "." are not read.
* **flat + labels**: the images in one folder and a labels CSV (``file,artist`` as
  ``atelier import`` reads it, read by the importer's ``read_labels``; ``artist`` is the
  concept). The caption is the caption file beside the image if any, else the CSV's
  ``caption`` column, else its ``prompt``, else the concept. An optional ``repeats``
  column (default 1). A ``labels.csv`` inside the folder is found without ``labels=``.
* **a curated export** (``atelier curate --export OUT --layout kohya|flat``) is one of
  the two above.

Everything is checked before anything is returned, and every problem names its file:
a caption file with no image beside it, an image that cannot be decoded, a folder whose
name is not ``<repeats>_<concept>``, an image outside any such folder, a labelled file
that does not exist, an image the labels do not name, or no image at all. Files that are
neither images nor captions (kohya's ``.npz`` latent caches, metadata ``.json``) are
listed in ``TrainingDataset.ignored``, never read.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from evaluator.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
KOHYA_FOLDER = re.compile(r"^(\d+)_(.+)$")
LABELS_NAME = "labels.csv"
# Errors listed in one message; the rest are counted (a folder of 5,000 bad captions
# should not print 5,000 lines).
MAX_PROBLEMS_SHOWN = 10
# EXIF orientations that swap width and height (rotated 90 or 270 degrees).
SWAPPING_ORIENTATIONS = (5, 6, 7, 8)


class DatasetError(InputError):
    """A dataset folder or labels file that cannot be trained on (the message names the files)."""


@dataclass(frozen=True)
class TrainingItem:
    """One training image: where it is, what it says, how often it is seen per epoch."""

    path: Path  # absolute
    caption: str
    sha256: str  # of the file's bytes: the image's identity for the split and the records
    repeats: int
    concept: str
    width: int  # after EXIF rotation, as the pixels are used
    height: int
    group: str = ""  # near-duplicate group; "" = its own group (its sha256)
    relpath: str = ""  # path inside the dataset folder, POSIX

    @property
    def group_key(self) -> str:
        return self.group or self.sha256

    @property
    def concept_id(self) -> str:
        """The concept as a path-safe slug (the ``artist_id`` of its validation images)."""
        from evaluator.ingest.importer import slugify

        return slugify(self.concept)


@dataclass
class TrainingDataset:
    """The items of a dataset folder, in a stable order (by relative path)."""

    source: Path
    layout: str  # "kohya" | "flat"
    items: list[TrainingItem]
    ignored: list[str] = field(default_factory=list)  # relative paths of files not read

    @property
    def fingerprint(self) -> str:
        """SHA-256 over every item's (relative path, content hash, caption, repeats, concept):
        moving the folder keeps it, changing any image, caption or repeat count changes it."""
        rows = sorted((i.relpath, i.sha256, i.caption, i.repeats, i.concept) for i in self.items)
        return "sha256:" + hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode("utf-8")).hexdigest()

    @property
    def concepts(self) -> list[str]:
        return sorted({i.concept for i in self.items})

    def with_groups(self, groups: dict[str, str]) -> TrainingDataset:
        """A copy whose items carry the near-duplicate group of ``groups`` (sha256 -> group)."""
        items = [replace(i, group=groups.get(i.sha256, i.group)) for i in self.items]
        return TrainingDataset(self.source, self.layout, items, list(self.ignored))


def load_dataset(
    source: str | Path, *, caption_extension: str = ".txt", labels: str | Path | None = None
) -> TrainingDataset:
    """Read ``source`` (kohya layout, or flat with ``labels``); see the module docstring."""
    root = Path(source).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"dataset {root} is not a folder")
    extension = _caption_extension(caption_extension)
    if labels is None and (root / LABELS_NAME).is_file():
        labels = root / LABELS_NAME
    if labels is not None:
        dataset = _load_flat(root, Path(labels).expanduser().resolve(), extension)
    else:
        dataset = _load_kohya(root, extension)
    if not dataset.items:
        raise DatasetError(f"dataset {root} holds no image ({', '.join(IMAGE_SUFFIXES)}); "
                           "expected kohya folders like 10_mystyle/ or a flat folder with a labels CSV")
    return dataset


def _caption_extension(value: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"\.[A-Za-z0-9_.-]+", value or ""):
        raise DatasetError(f"caption_extension must look like '.txt' or '.caption' but is {value!r}")
    if value.lower() in IMAGE_SUFFIXES:
        raise DatasetError(f"caption_extension {value!r} is an image suffix")
    return value


def _visible_files(folder: Path) -> list[Path]:
    """Files under ``folder``, sorted, skipping anything hidden (``.cache/``, ``.DS_Store``)."""
    out = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        out.append(path)
    return out


class _Problems:
    """Problems collected over a whole folder, raised as one error naming the files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lines: list[str] = []

    def add(self, path: Path, message: str) -> None:
        self.lines.append(f"{path}: {message}")

    def raise_if_any(self) -> None:
        if not self.lines:
            return
        shown = self.lines[:MAX_PROBLEMS_SHOWN]
        more = len(self.lines) - len(shown)
        tail = f"; and {more} more" if more > 0 else ""
        noun = "problem" if len(self.lines) == 1 else "problems"
        raise DatasetError(f"dataset {self.root}: {len(self.lines)} {noun}: " + "; ".join(shown) + tail)


def _split_files(root: Path, files: list[Path], extension: str, problems: _Problems, skip: set[Path]):
    """(images, captions by image-less key, ignored) of a file list; flags orphan captions
    and two images that would share one caption file."""
    images, captions, ignored = [], {}, []
    for path in files:
        if path in skip:
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES:
            images.append(path)
        elif path.name.endswith(extension):
            captions[path.with_name(path.name[: -len(extension)])] = path
        else:
            ignored.append(path.relative_to(root).as_posix())
    by_stem: dict[Path, Path] = {}
    for image in images:
        stem = image.with_suffix("")
        if stem in by_stem:
            problems.add(image, f"shares its caption file {stem.name}{extension} with {by_stem[stem].name}; rename one")
        by_stem[stem] = image
    for stem, caption in captions.items():
        if stem not in by_stem:
            problems.add(caption, f"caption file without an image (no {stem.name}.png/.jpg/... beside it)")
    return images, {stem: captions[stem] for stem in captions if stem in by_stem}, ignored


def _read_caption(path: Path, problems: _Problems) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(path, f"caption file cannot be read as UTF-8 text: {exc}")
        return ""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _image_facts(path: Path, problems: _Problems) -> tuple[str, int, int] | None:
    """(sha256, width, height) of an image file, or None (and a problem) if it cannot be decoded."""
    from PIL import Image

    try:
        data = path.read_bytes()
        with Image.open(path) as image:
            image.load()
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except Exception as exc:  # PIL raises many kinds (UnidentifiedImageError, OSError, DecompressionBomb...)
        problems.add(path, f"unreadable image ({type(exc).__name__}: {exc})")
        return None
    if orientation in SWAPPING_ORIENTATIONS:
        width, height = height, width
    return hashlib.sha256(data).hexdigest(), width, height


def image_items(folder: str | Path, caption: str, concept: str, repeats: int = 1) -> list[TrainingItem]:
    """Every image under ``folder`` as items with one ``caption`` (prior preservation's class
    images); unreadable images are an error naming them, and so is a folder with none."""
    root = Path(folder).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"image folder {root} is not a folder")
    problems = _Problems(root)
    items = []
    for path in _visible_files(root):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        facts = _image_facts(path, problems)
        if facts is not None:
            items.append(TrainingItem(path, caption, facts[0], repeats, concept, facts[1], facts[2],
                                      relpath=path.relative_to(root).as_posix()))
    problems.raise_if_any()
    if not items:
        raise DatasetError(f"image folder {root} holds no image ({', '.join(IMAGE_SUFFIXES)})")
    return items


def _load_kohya(root: Path, extension: str) -> TrainingDataset:
    problems = _Problems(root)
    files = _visible_files(root)
    images, captions, ignored = _split_files(root, files, extension, problems, skip=set())
    items = []
    for image in images:
        rel = image.relative_to(root)
        match = KOHYA_FOLDER.match(rel.parts[0]) if len(rel.parts) > 1 else None
        if len(rel.parts) == 1:
            problems.add(image, "image outside a <repeats>_<concept> folder (kohya layout: put it in e.g. 10_mystyle/, "
                                "or give a labels CSV for a flat folder)")
            continue
        if match is None or int(match.group(1)) < 1 or not match.group(2).strip():
            problems.add(root / rel.parts[0], "folder name must be <repeats>_<concept> with repeats >= 1, like 10_mystyle")
            continue
        repeats, concept = int(match.group(1)), match.group(2).strip()
        caption = _read_caption(captions[image.with_suffix("")], problems) if image.with_suffix("") in captions else ""
        facts = _image_facts(image, problems)
        if facts is not None:
            items.append(TrainingItem(image, caption or concept, facts[0], repeats, concept, facts[1], facts[2],
                                      relpath=rel.as_posix()))
    problems.raise_if_any()
    return TrainingDataset(root, "kohya", _sorted_items(items), ignored)


def _sorted_items(items: list[TrainingItem]) -> list[TrainingItem]:
    """Items in relative-path order (the folder walk is sorted already; kept explicit)."""
    return sorted(items, key=lambda i: i.relpath)


def _label_extras(labels: Path) -> dict[str, dict[str, str]]:
    """file -> the CSV's optional ``caption`` and ``repeats`` cells (read_labels keeps neither)."""
    text = labels.read_text(encoding="utf-8-sig")
    out = {}
    for row in csv.DictReader(text.splitlines()):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        out[Path(row.get("file", "")).as_posix()] = {"caption": row.get("caption", ""), "repeats": row.get("repeats", "")}
    return out


def _repeats(labels: Path, line: int, raw: str) -> int:
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise DatasetError(f"{labels}: line {line}: repeats must be an integer >= 1 but is {raw!r}")
    return int(raw)


def _load_flat(root: Path, labels: Path, extension: str) -> TrainingDataset:
    from evaluator.ingest.importer import read_labels

    if not labels.is_file():
        raise DatasetError(f"labels file {labels} does not exist")
    table = read_labels(labels, root)
    extras = _label_extras(labels)
    problems = _Problems(root)
    images, captions, ignored = _split_files(root, _visible_files(root), extension, problems, skip={labels})
    present = {image.relative_to(root).as_posix(): image for image in images}
    for name, label in table.items():
        if name not in present:
            problems.add(labels, f"line {label.line}: file {name!r} is not an image in {root}")
        elif not label.artist:
            problems.add(labels, f"line {label.line}: file {name!r} has an empty 'artist' (its concept)")
    items = []
    for rel, image in present.items():
        label = table.get(rel)
        if label is None:
            problems.add(image, f"image not named in {labels.name} (add a row, or move it out of the folder)")
            continue
        if not label.artist:
            continue
        key = image.with_suffix("")
        caption = _read_caption(captions[key], problems) if key in captions else ""
        caption = caption or extras.get(rel, {}).get("caption") or label.prompt or label.artist
        repeats = _repeats(labels, label.line, extras.get(rel, {}).get("repeats", ""))
        facts = _image_facts(image, problems)
        if facts is not None:
            items.append(TrainingItem(image, caption, facts[0], repeats, label.artist, facts[1], facts[2], relpath=rel))
    problems.raise_if_any()
    return TrainingDataset(root, "flat", _sorted_items(items), ignored)
