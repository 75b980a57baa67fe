"""Import images made elsewhere: A1111 / ComfyUI outputs, labelled folders, references.

Each file becomes one ``images`` row. Its settings come from the PNG ``parameters``
chunk (A1111 and friends) or ComfyUI's ``prompt`` graph when present, else from a labels
CSV (``file,artist[,checkpoint][,prompt][,seed][,template][,negative_prompt]``; the file's
own parameters win over the CSV's prompt, seed and negative prompt), and a seed can be
read from the file name (``seed_from_filename``, one capture group). A row with
``template = null`` and an empty ``artist`` (or ``artist = _baseline``) is a no-artist
baseline image, what the recognition metrics compare with. Artist names are mapped to catalog ids
(NFC + casefold on names and aliases, then accent-insensitive); a name the catalog does
not know is kept under a slug of the name and reported.

Every file is copied into ``DIR/imported/<checkpoint>/<artist>/<stem>-<unit8><suffix>``
with a thumbnail: byte for byte, in its own encoding, when it is a whole 8-bit RGB PNG,
JPEG or WebP that needed no change (``evaluator.ingest.originals``), else as an RGB PNG
(EXIF rotation applied; CMYK, 16-bit, palette, grey and alpha converted; animations keep
their first frame; other formats re-encoded). The settings live in the store's ``images``
row (prompt, negative prompt, seed, steps, guidance, sampler, size, model, source path and
the original's SHA-256, which is the image's provenance); a converted PNG also carries them
as A1111 infotext plus atelier's chunk, a kept original keeps whatever its own metadata
says. No sidecar is written: the one tool that needs a file beside the image, kohya-style
training, gets ``<stem>.txt`` captions from ``atelier curate --export``. A file that cannot be decoded
(empty, truncated, not an image, a decompression bomb) is reported and still recorded,
with its reason in ``error`` and an id from its SHA-256 and path: nothing is dropped.
So is, before anything is written, a file whose artist id, checkpoint or template would be
an unsafe path component (``unsafe_identifiers``), whose seed does not fit the int64
``seed`` column (ComfyUI's seeds reach 2**64-1: recorded as an error, not mapped), or whose
text chunk holds a NUL; an iTXt chunk that is not UTF-8 keeps what decodes (noted). Long
stems and names are capped with a hash suffix (``short_name``). A source inside the
workdir, or a workdir inside the source, is refused. The source is walked without
following symbolic links that leave it (``source_files``; ``follow_links`` opts in),
hidden names skipped, each real folder once; a file over ``MAX_FILE_BYTES`` is its
error, never read; copies go only to folders that resolve inside the workdir.

Kills: an import holds ``DIR/.import.lock``, sweeps the temporaries a killed import
left, and always brings the store up to date with every manifest (the rows, import runs
and reference rows it lacks), so an import killed after its shard, or timed out on the
store, is finished by the next import (or ``score``).

Identity (see docs/ARCHITECTURE.md): the unit id hashes (checkpoint, artist, template
"import", prompt, seed or -1, size, steps 0, guidance 0, scheduler ""), with the file's
SHA-256 in place of the prompt when there is none, so a rerun maps each file to the same
row. The run writes a manifest shard, then ingests it into the store in one transaction.

Reads a folder (and its labels CSV, the catalog, earlier manifests); writes
``DIR/imported/``, ``DIR/thumbs/imported/``, one manifest shard, ``runs/<run_id>.json``,
``checkpoints/<name>.json`` for model names never seen, and the store's ``images``,
``runs`` and ``reference_images`` rows. ``import_images`` runs five numbered steps:
read, decode, identify, write, ingest.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from catalog.schema import tag_key
from catalog.units import BASELINE_ARTIST_ID, WorkUnit
from evaluator.errors import InputError
from evaluator.ingest.originals import copy_is_complete, keep_original
from evaluator.workspace.records import Provenance, RunRecord, image_record, utcnow
from evaluator.workspace.workdir import Workdir

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
# 100 megapixels (e.g. 10,000 x 10,000): far above any generation or museum scan we
# expect, far below what exhausts memory when decoded (~300 MB as RGB).
MAX_PIXELS = 100_000_000
NAME_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
# zlib level 1: imports re-encode photos and finished generations, whose noise barely
# compresses; level 1 is ~4x faster than 4-6 for files ~10 % larger.
IMPORT_PNG_LEVEL = 1
# Names that become path components are capped (a 245-character stem plus the unit id
# overflows the 255-byte name limit of most file systems): a longer one keeps its first
# characters plus 8 hex digits of its SHA-256, so the same name always maps the same way.
MAX_STEM = 80
MAX_NAME = 100
INT32_RANGE = (-(2**31), 2**31 - 1)
# ComfyUI draws seeds up to 2**64 - 1: every seed of [0, 2**64) is kept exactly (seed_text;
# ``seed`` holds it when it fits int64), a larger one is that file's error.
MAX_SEED = 2**64 - 1
# A file larger than this is refused before a byte is read (a link to an 8 GB file, a
# disk image named .png): 512 MiB is above any 100-megapixel 16-bit PNG (~300 MB).
MAX_FILE_BYTES = 512 * 2**20
UNKNOWN_ARTIST = "_unknown"  # no labels, no metadata
INVALID_ID = "_invalid"  # the stand-in of an identifier refused as unsafe (its file's error says which)


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
    seedless: list[str] = field(default_factory=list)  # files --seed-from-filename did not match
    no_seed: int = 0  # generated images recorded without a seed (-1)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (file, what was converted)
    skipped_links: list[tuple[str, str]] = field(default_factory=list)  # (file, why the link was not followed)
    rows_ingested: int = 0
    rows_recovered: int = 0  # rows earlier (killed) imports had written to manifests but not to the store
    swept: int = 0  # temporaries of killed imports removed
    manifest_path: str | None = None

    def report_lines(self) -> list[str]:
        lines = [
            f"import {self.source_dir}: {self.imported} imported, {self.unchanged} already there, "
            f"{len(self.failed)} failed (recorded with their error), {self.rows_ingested} rows written to the store"
        ]
        if self.rows_recovered:
            lines.append(f"  {self.rows_recovered} of these rows were recorded by an earlier import that stopped before "
                         "the store was written: the store is up to date with the manifests again")
        if self.swept:
            lines.append(f"  removed {self.swept} temporary file(s) a killed import had left")
        for name, reason in self.skipped_links:
            lines.append(f"  skipped: {name}: {reason}")
        for name, reason in self.failed:
            lines.append(f"  failed: {name}: {reason}")
        for name, count in sorted(self.unknown_artists.items()):
            lines.append(f"  artist not in the catalog (kept as {slugify(name)!r}): {name} ({count} images)")
        for name in self.missing:
            lines.append(f"  labels name a missing file: {name}")
        if self.unlabelled:
            lines.append(f"  {len(self.unlabelled)} files without labels or metadata (artist unknown): {', '.join(self.unlabelled[:5])}")
        if self.seedless:
            lines.append(f"  {len(self.seedless)} files whose name --seed-from-filename does not match (seed unknown): "
                         f"{', '.join(self.seedless[:5])}")
        if self.no_seed:
            lines.append(f"  {self.no_seed} images have no seed (no metadata, labels `seed` column or "
                         "--seed-from-filename): `atelier score` bootstraps them over images, not seeds")
        if self.ignored:
            lines.append(f"  {len(self.ignored)} non-image files ignored: {', '.join(self.ignored[:5])}")
        for name, note in self.notes[:20]:
            lines.append(f"  note: {name}: {note}")
        return lines


def short_name(name: str, limit: int) -> str:
    """``name`` if at most ``limit`` characters, else its head plus ``-`` and 8 hex digits of
    its SHA-256: deterministic, and still [A-Za-z0-9._-] / slug-shaped when ``name`` was."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-._')}-{digest}"


def slugify(name: str) -> str:
    """``Jean-Honoré Fragonard`` -> ``jean-honore-fragonard``: the catalog's own slug rule
    (capped at MAX_NAME characters, as it becomes a folder name)."""
    from catalog.names import slugify as catalog_slug

    return short_name(catalog_slug(name) or "unknown", MAX_NAME)


def _name_keys(name: str) -> list[str]:
    nfc = unicodedata.normalize("NFC", name).casefold().strip()
    spaced = re.sub(r"[\s_-]+", " ", nfc)
    return list(dict.fromkeys([nfc, spaced, slugify(name)]))


# A Danbooru tag with a qualifier (``akira_(coffee_curry)``, escaped or not): the qualifier
# names the person, so such a label is never cut down to ``akira`` to find a name.
QUALIFIED_TAG = re.compile(r"^[^\s(]+_\\?\([^\s]*\\?\)$")


class ArtistIndex:
    """Label name -> catalog artist_id: by id, by Danbooru tag or one of its aliases (exact,
    escapes undone), then by NFC/casefolded name or alias, then by slug."""

    def __init__(self, artists: list | None):
        self.by_key: dict[str, str] = {}
        self.by_tag: dict[str, str] = {}
        self.ids: set[str] = set()
        for artist in artists or []:
            self.ids.add(artist.artist_id)
            for name in (artist.name, *tuple(getattr(artist, "aliases", ()) or ())):
                for key in _name_keys(name):
                    self.by_key.setdefault(key, artist.artist_id)
            self.by_key.setdefault(artist.artist_id, artist.artist_id)
            self._add_tags(artist)
        self.has_catalog = artists is not None

    def _add_tags(self, artist) -> None:
        tag = getattr(artist, "tag", "")
        if tag:  # the row's own tag first: an alias never takes another row's tag
            self.by_tag.setdefault(tag, artist.artist_id)
        for alias in getattr(artist, "tag_aliases", ()) or ():
            self.by_tag.setdefault(alias, artist.artist_id)

    def lookup_tag(self, label: str) -> str | None:
        """The row whose Danbooru tag (or tag alias) ``label`` is, or None."""
        return self.by_tag.get(tag_key(label))

    def lookup(self, name: str) -> str | None:
        if name in self.ids:
            return name
        tagged = self.lookup_tag(name)
        if tagged is not None:
            return tagged
        if QUALIFIED_TAG.match(name.strip()):
            return next((self.by_key[k] for k in _name_keys(name) if k in self.by_key), None)
        for variant in name_variants(name):
            for key in _name_keys(variant):
                if key in self.by_key:
                    return self.by_key[key]
        return None


    def lookup_in_prompt(self, prompt: str) -> str | None:
        """The catalog artist a prompt names ("... in the style of X", "art by X, ...") or,
        in a booru prompt, the first comma-separated token that is a catalog tag
        ("ilya_kuvshinov, 1girl", "(artist:wlop:1.2)")."""
        for match in STYLE_PHRASE.finditer(prompt):
            words = match.group(1).strip().split()
            for end in range(len(words), 0, -1):  # "Claude Monet soft light" -> ... "Claude Monet"
                found = self.lookup(" ".join(words[:end]))
                if found is not None:
                    return found
        for token in prompt.split(","):
            found = self.lookup_tag(_bare_token(token))
            if found is not None:
                return found
        return None


def _bare_token(token: str) -> str:
    """A prompt token without attention syntax or an ``artist:`` prefix: ``(artist:wlop:1.2)``
    -> ``wlop``; escaped brackets (``akira_\\(coffee_curry\\)``) are part of the tag and stay."""
    text = token.strip()
    # `text and`: "" is in every string, so an empty token (a file without a prompt) looped forever
    while text and text[:1] in "([" and text[-1:] in ")]" and not text.endswith("\\)") and not text.endswith("\\]"):
        text = text[1:-1].strip()
    text = re.sub(r":\s*[0-9.]+$", "", text)
    return re.sub(r"^(?:artist|by)\s*:\s*", "", text, flags=re.IGNORECASE)


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


# The labels CSV's template value that marks a no-artist baseline image (the `null`
# template of atelier's own plans).
BASELINE_TEMPLATE = "null"
IMPORT_TEMPLATE = "import"  # the template of an imported image whose labels name none


@dataclass
class Label:
    line: int
    artist: str | None
    checkpoint: str | None
    prompt: str | None
    seed: int | None = None
    template: str | None = None
    negative_prompt: str | None = None

    @property
    def baseline(self) -> bool:
        return self.template == BASELINE_TEMPLATE or self.artist == BASELINE_ARTIST_ID


def _label_seed(path: Path, number: int, raw: str) -> int | None:
    """The labels' ``seed`` cell: empty = unknown, else a non-negative integer."""
    if not raw:
        return None
    if not raw.isdigit():
        raise InputError(f"{path}: line {number}: seed must be a non-negative integer but is {raw!r}")
    return int(raw)


def _label_row(path: Path, number: int, row: dict[str, str]) -> Label:
    """One labels row as a Label; a contradictory baseline row is an error naming its line."""
    template = row.get("template") or None
    artist = row.get("artist") or None
    if template == BASELINE_TEMPLATE and artist not in (None, BASELINE_ARTIST_ID):
        raise InputError(f"{path}: line {number}: template 'null' is the no-artist baseline, so 'artist' must be "
                         f"empty but is {artist!r}")
    if artist == BASELINE_ARTIST_ID and template not in (None, BASELINE_TEMPLATE):
        raise InputError(f"{path}: line {number}: artist {BASELINE_ARTIST_ID!r} is the no-artist baseline, so "
                         f"'template' must be empty or 'null' but is {template!r}")
    return Label(number, artist, row.get("checkpoint") or None, row.get("prompt") or None,
                 _label_seed(path, number, row.get("seed", "")), template, row.get("negative_prompt") or None)


def read_labels(path: Path, src_dir: Path) -> dict[str, Label]:
    """``file -> Label``; errors name the CSV and line (unknown columns are fine)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc})") from exc
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "file" not in columns:
        raise InputError(f"{path}: line 1: the header needs a 'file' column (found: {', '.join(columns) or 'nothing'})")
    if "artist" not in columns:
        raise InputError(f"{path}: line 1: the header needs an 'artist' column (found: {', '.join(columns)})")
    labels: dict[str, Label] = {}
    for number, row in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None}
        name = row.get("file", "")
        if not name:
            raise InputError(f"{path}: line {number}: empty 'file'")
        key = Path(name).as_posix()
        if key in labels:
            raise InputError(f"{path}: line {number}: file {name!r} is already labelled on line {labels[key].line}")
        labels[key] = _label_row(path, number, row)
    return labels


def seed_pattern(regex: str | None) -> re.Pattern | None:
    """``--seed-from-filename``: a regular expression with exactly one capture group."""
    if not regex:
        return None
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise InputError(f"--seed-from-filename {regex!r} is not a regular expression: {exc}") from exc
    if pattern.groups != 1:
        raise InputError(f"--seed-from-filename needs exactly one capture group (the seed) but {regex!r} has "
                         f"{pattern.groups}, e.g. '-s(\\d+)\\.png$'")
    return pattern


def seed_from_name(pattern: re.Pattern | None, name: str) -> int | None:
    """The seed the pattern captures in a file name; None when it does not match."""
    match = pattern.search(name) if pattern is not None else None
    if match is None:
        return None
    text = match.group(1)
    if text is None or not text.isdigit():
        raise InputError(f"--seed-from-filename captured {text!r} from {name!r}, which is not a non-negative integer")
    return int(text)


def checkpoint_name(raw: str | None) -> str | None:
    """A model name from labels/metadata as a path-safe checkpoint name ([A-Za-z0-9._-]+)."""
    if not raw:
        return None
    name = NAME_SAFE.sub("-", unicodedata.normalize("NFC", raw).strip()).strip("-.")
    return short_name(name, MAX_NAME) if name else None


def unsafe_identifiers(artist_id: str, checkpoint: str | None, template: str) -> list[tuple[str, str]]:
    """(field, reason) for each identifier that would be an unsafe path component or id.

    Artist ids follow the catalog's slug rule (or are one of the importer's own ``_`` ids),
    checkpoint names the checkpoints' NAME_PATTERN (no ``.``/``..``/hidden names), templates
    the template name rule; each at most MAX_NAME characters. Checked before any write.
    """
    from catalog.schema import ARTIST_ID_PATTERN
    from catalog.templates import TEMPLATE_NAME_PATTERN
    from evaluator.generation.checkpoints.spec import NAME_PATTERN

    problems = []
    internal = (BASELINE_ARTIST_ID, UNKNOWN_ARTIST)
    if artist_id not in internal and (len(artist_id) > MAX_NAME or not ARTIST_ID_PATTERN.match(artist_id)):
        problems.append(("artist_id", f"artist id {artist_id[:120]!r} is not a catalog slug "
                                      f"([a-z0-9]+(-[a-z0-9]+)*, at most {MAX_NAME} characters)"))
    if checkpoint is not None and (len(checkpoint) > MAX_NAME or not NAME_PATTERN.match(checkpoint)):
        problems.append(("checkpoint", f"checkpoint name {checkpoint[:120]!r} must match [A-Za-z0-9._-]+, not start "
                                       f"with '.', at most {MAX_NAME} characters"))
    if len(template) > MAX_NAME or template.startswith(".") or not TEMPLATE_NAME_PATTERN.match(template):
        problems.append(("template", f"template {template[:120]!r} must match [A-Za-z0-9._-]+ and not start with '.'"))
    return problems


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
                _check_text_chunks(image, data, notes)
                info = read_generation_info(image)
                frames = getattr(image, "n_frames", 1)
                if frames > 1:
                    notes.append(f"animated ({frames} frames): first frame kept")
                    image.seek(0)
                image.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise ValueError(f"decompression bomb refused ({exc})") from exc
            except UnidentifiedImageError as exc:
                raise ValueError(f"not an image Pillow can read ({_describe_head(data)})") from exc
            except OSError as exc:
                raise ValueError(f"corrupt or truncated image ({exc})") from exc
            except MetadataError:
                raise
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


def _describe_head(data: bytes) -> str:
    """What a file that is not an image looks like, without quoting its content (the
    error is stored and shown: a file could be a secret), e.g. ``looks like text``."""
    head = data[:256]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "looks like HTML" if text.lstrip().lower().startswith(("<!doctype", "<html", "<?xml")) else "looks like text"
    return f"starts with bytes {head[:4].hex(' ')}"


class MetadataError(ValueError):
    """A file's text chunks cannot be used (its recorded error, as is)."""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _broken_itxt(data: bytes) -> dict[str, tuple[str, int]]:
    """iTXt chunks whose text is not valid UTF-8 (Pillow drops them silently): keyword ->
    (the text with undecodable bytes as U+FFFD, how many were replaced)."""
    import zlib

    from PIL.PngImagePlugin import MAX_TEXT_CHUNK

    found: dict[str, tuple[str, int]] = {}
    if not data.startswith(PNG_SIGNATURE):
        return found
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos : pos + 4], "big"), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            break
        if kind != b"iTXt" or body.count(b"\0") < 3:
            continue
        key, rest = body.split(b"\0", 1)
        compressed, rest = rest[:1] == b"\x01", rest[2:]
        _lang, _translated, text = rest.split(b"\0", 2)
        if compressed:
            try:
                text = zlib.decompressobj().decompress(text, MAX_TEXT_CHUNK)
            except zlib.error:
                continue
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            decoded = text.decode("utf-8", "replace")
            found[key.decode("latin-1")] = (decoded, decoded.count("\ufffd") - text.decode("utf-8", "ignore").count("\ufffd"))
    return found


def _check_text_chunks(image, data: bytes, notes: list[str]) -> None:
    """Keep what decodes of an iTXt chunk that is not UTF-8 (noted), and refuse a text chunk
    with a NUL byte (PNG forbids them; a NUL ends C strings and paths downstream)."""
    text = getattr(image, "text", None)
    if not isinstance(text, dict):
        return
    for key, (value, bad) in _broken_itxt(data).items():
        if key not in text:
            text[key] = value
            notes.append(f"iTXt chunk {key!r} is not valid UTF-8: {bad} undecodable byte sequence(s) kept as U+FFFD")
    for key, value in text.items():
        if "\0" in str(key) or "\0" in str(value):
            raise MetadataError(f"text chunk {str(key)[:40]!r} contains a NUL byte (at {str(value).find(chr(0))}); "
                             "PNG text may not, so the file's metadata cannot be trusted")


def _identity(checkpoint: str | None, artist_id: str, prompt: str, seed: int, width: int, height: int, salt: str | None,
              *, template: str = IMPORT_TEMPLATE) -> WorkUnit:
    return WorkUnit(
        checkpoint=checkpoint or "",
        artist_id=artist_id,
        template=template,
        prompt=prompt if salt is None else f"{prompt}\x00sha256:{salt}",
        negative_prompt="",
        seed=seed,
        width=width,
        height=height,
        steps=0,
        guidance=0.0,
        scheduler="",
    )


@dataclass(frozen=True)
class ImportOptions:
    """The options of one import (``atelier import``'s flags)."""

    labels_csv: str | Path | None = None  # file,artist[,checkpoint][,prompt][,seed][,template][,negative_prompt]
    checkpoint: str | None = None  # every image under this checkpoint name
    as_reference: bool = False  # reference images of their artists, not a model's output
    catalog_path: str | Path | None = None  # styles.csv for artist names (None: the project's)
    progress: bool = True
    thumb_size: int = 192
    seed_from_filename: str | None = None  # a regex with one capture group: the seed in the file name
    follow_links: bool = False  # import files that symbolic links outside the source point to
    max_file_bytes: int = MAX_FILE_BYTES  # a larger file is its recorded error, never read
    lock_timeout: float = 600.0  # wait this long for another import of the same workdir
    store_timeout: float = 30.0  # and this long for the store (a score may be writing it)

    @property
    def source_kind(self) -> str:
        return "reference" if self.as_reference else "imported"


class ImportSourceError(InputError, FileNotFoundError):
    """The folder to import does not exist (still a FileNotFoundError for old callers)."""


@dataclass
class _Import:
    """One import run: its inputs, what earlier imports made, and what this one made so far."""

    src: Path
    wd: Workdir
    options: ImportOptions
    forced: str | None  # the --checkpoint name
    labels_path: Path | None
    labels: dict[str, Label]
    index: ArtistIndex
    known: dict[int, tuple[str, str | None, str | None]]  # image_id -> (sha256, path, error)
    summary: ImportSummary
    started: datetime
    seed_regex: re.Pattern | None = None
    records: list[dict] = field(default_factory=list)
    seen_units: dict[str, tuple[str, str]] = field(default_factory=dict)  # unit_id -> (sha256, file)

    @property
    def run_id(self) -> str:
        return self.summary.run_id


@dataclass
class _Decoded:
    """Step 2's result for one file: the RGB image (None when it cannot be decoded)."""

    image: Any
    info: dict
    notes: list[str]
    error: str | None
    original: bytes | None = None  # the file's bytes when they are kept as they are (evaluator.ingest.originals)
    suffix: str = ".png"  # the copy's suffix: the original's, or .png for a converted copy


@dataclass(frozen=True)
class _Identified:
    """Step 3's result for one file: its unit and the settings its row shows."""

    unit: WorkUnit
    checkpoint: str | None
    prompt: str
    seed: int
    width: int
    height: int
    negative_prompt: str = ""


def import_images(
    src_dir: str | Path,
    workdir: str | Path,
    *,
    labels_csv: str | Path | None = None,
    checkpoint: str | None = None,
    as_reference: bool = False,
    catalog_path: str | Path | None = None,
    progress: bool = True,
    thumb_size: int = 192,
    seed_from_filename: str | None = None,
    follow_links: bool = False,
    echo: Callable[[str], None] | None = None,
    store_timeout: float = 30.0,
) -> ImportSummary:
    """Import every image under ``src_dir`` into ``workdir`` and its store (see module doc).

    Holds ``DIR/.import.lock`` throughout, so it can sweep what a killed import left
    (temporaries) and bring the store up to date with every manifest, whatever an
    earlier import got to before it was killed or timed out on the store.
    """
    from tqdm import tqdm

    from evaluator.workspace.workdir import workdir_lock

    options = ImportOptions(labels_csv, checkpoint, as_reference, catalog_path, progress, thumb_size,
                            seed_from_filename, follow_links, store_timeout=store_timeout)
    src, wd, forced, seed_regex = _check_places(Path(src_dir), workdir, options)
    with workdir_lock(wd, options.lock_timeout, echo=echo, name="import"):
        swept = sweep_import_temporaries(wd)
        job, images = _open_import(src, wd, options, forced, seed_regex)  # 1. read
        job.summary.swept = swept
        for path in tqdm(images, desc="import", unit="img", disable=not options.progress):
            _import_file(job, path)  # 2-4. decode, identify, write
        _finish_import(job)  # 5. ingest
    return job.summary


def _check_places(src_dir: Path, workdir: str | Path, options: ImportOptions) -> tuple[Path, Workdir, str | None, Any]:
    """The source, the options and the workdir checked before anything is created."""
    src = src_dir.expanduser().resolve()
    if not src.is_dir():
        raise ImportSourceError(f"import source {src} is not a folder")
    forced = checkpoint_name(options.checkpoint) if options.checkpoint else None
    if options.checkpoint and (forced != options.checkpoint or unsafe_identifiers(UNKNOWN_ARTIST, forced, IMPORT_TEMPLATE)):
        hint = f" (try {forced!r})" if forced else ""
        raise InputError(f"--checkpoint must match [A-Za-z0-9._-]+, not start with '.' and have at most {MAX_NAME} "
                         f"characters, but is {options.checkpoint!r}{hint}")
    seed_regex = seed_pattern(options.seed_from_filename)
    _check_not_nested(src, Path(workdir).expanduser().resolve())
    return src, Workdir.at(workdir), forced, seed_regex


def _open_import(src: Path, wd: Workdir, options: ImportOptions, forced: str | None,
                 seed_regex: re.Pattern | None) -> tuple[_Import, list[Path]]:
    """Step 1, read: the labels, the catalog, the earlier imports, the files."""
    from evaluator.workspace.manifest import read_manifests

    labels_path = Path(options.labels_csv).resolve() if options.labels_csv else None
    labels = read_labels(labels_path, src) if labels_path else {}
    index = load_artist_index(options.catalog_path)
    if options.as_reference:
        check_reference_artists(labels, index, labels_path)
    run_id = f"import-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"
    summary = ImportSummary(run_id=run_id, source_dir=str(src))

    files, summary.skipped_links = source_files(src, options.follow_links)
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    summary.ignored = [p.relative_to(src).as_posix() for p in files if p.suffix.lower() not in IMAGE_SUFFIXES and p != labels_path]
    present = {p.relative_to(src).as_posix() for p in images} | {p.name for p in images}
    present |= {name for name, _ in summary.skipped_links} | {Path(name).name for name, _ in summary.skipped_links}
    summary.missing = [name for name in labels if name not in present]

    existing = read_manifests(wd.manifests)
    known = {}
    if len(existing):
        for row in existing[["image_id", "sha256", "path", "error"]].itertuples(index=False):
            known[int(row.image_id)] = (row.sha256, row.path, row.error if isinstance(row.error, str) else None)
    job = _Import(src, wd, options, forced, labels_path, labels, index, known, summary, utcnow(), seed_regex=seed_regex)
    return job, images


def check_reference_artists(labels: dict[str, Label], index: ArtistIndex, labels_path: Path | None) -> None:
    """Reference works must belong to catalog artists (by id, name or alias), as for
    `atelier references add`: one unknown name refuses the import before any write."""
    import difflib

    if not index.has_catalog:
        raise InputError("no catalog to check reference artists against: pass --catalog styles.csv")
    for label in labels.values():
        if label.artist and index.lookup(label.artist) is None:
            close = difflib.get_close_matches(slugify(label.artist), sorted(index.ids), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InputError(f"{labels_path}: line {label.line}: artist {label.artist!r} is not in the catalog{hint} "
                             "(reference works must belong to a catalog artist; pass --catalog with one that has it)")


def source_files(src: Path, follow_links: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """The regular files under ``src`` (hidden names skipped), sorted, and the symbolic
    links not followed with the reason: a link whose target leaves ``src`` (unless
    ``follow_links``), a loop, or one to something other than a file or folder.

    Folders reached through links are walked only with ``follow_links``, each real folder
    once (a link back to a parent is a loop, not an endless walk).
    """
    files: list[Path] = []
    skipped: list[tuple[str, str]] = []
    seen: set[Path] = set()
    pending = [src]
    while pending:
        folder = pending.pop()
        real = folder.resolve()
        if real in seen:
            skipped.append((folder.relative_to(src).as_posix(), f"folder link to {real}, already walked (a loop)"))
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((folder.relative_to(src).as_posix() or ".", f"cannot list the folder: {exc}"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            reason = _link_refusal(src, path, follow_links) if entry.is_symlink() else None
            if reason is not None:
                skipped.append((path.relative_to(src).as_posix(), reason))
            elif entry.is_dir():  # follows the link when there is one (and it was allowed)
                pending.append(path)
            elif entry.is_file():
                files.append(path)
    return sorted(files), sorted(skipped)


def _link_refusal(src: Path, link: Path, follow_links: bool) -> str | None:
    """Why the symbolic link ``link`` is not followed, or None to follow it."""
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        return f"symbolic link that cannot be resolved (broken or a loop: {exc.__class__.__name__})"
    if not (target.is_file() or target.is_dir()):
        return f"symbolic link to {target}, which is neither a file nor a folder"
    if not follow_links and target != src and not target.is_relative_to(src):
        return f"symbolic link to {target}, outside the source folder (--follow-links imports it)"
    return None


def sweep_import_temporaries(wd: Workdir) -> int:
    """Delete the ``.<name>.<rand>.tmp`` files killed imports left (catalog.atomic writes a
    temporary, then renames) among the copies, thumbnails, import shards and run records.

    Called under the import lock, so no other import is writing them; only import
    places are touched (``thumbs/imported/<ckpt>/<artist>/``, not a generated checkpoint
    that happens to be called ``imported``), never generate's or score's files.
    """
    patterns = [(wd.imported, "*/*/.*.tmp"), (wd.thumbs / "imported", "*/*/.*.tmp"),
                (wd.manifests, "import-*/.*.tmp"), (wd.runs, ".import-*.tmp")]
    removed = 0
    for folder, pattern in patterns:
        if not folder.is_dir():
            continue
        for path in folder.glob(pattern):
            if path.is_file() and not path.is_symlink():
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def _check_not_nested(src: Path, root: Path) -> None:
    """Refuse a source inside the workdir (it would re-import its own copies and thumbnails,
    more on every run) or a workdir inside the source (the same, one run later)."""
    if src == root or src.is_relative_to(root):
        where = "is the workdir" if src == root else f"is inside the workdir {root}"
        raise InputError(f"import source {src} {where}: its copies and thumbnails would be "
                         "imported again; import from a folder outside the workdir")
    if root.is_relative_to(src):
        raise InputError(f"the workdir {root} is inside the import source {src}: the next import would take its "
                         "copies and thumbnails again; use a workdir outside the source folder")


def _import_file(job: _Import, path: Path) -> None:
    """One file through steps 2-4; its row joins ``job.records`` unless already imported."""
    rel = path.relative_to(job.src).as_posix()
    try:
        data = _read_capped(path, job.options.max_file_bytes)
    except (OSError, ValueError) as exc:  # too large, vanished, unreadable: this file's error, nothing read
        data, sha, decoded = None, None, _Decoded(None, {}, [], str(exc))
    if data is not None:
        sha = hashlib.sha256(data).hexdigest()
        try:
            image, info, notes = _decode(path, data)
            suffix, why = keep_original(data, bool(notes), path.name)
            decoded = _Decoded(image, info or {}, notes + ([why] if why else []), None,
                               data if suffix else None, suffix or ".png")
        except ValueError as exc:
            decoded = _Decoded(None, {}, [], str(exc))
    found = _identify(job, path, rel, sha, decoded)
    if found is None:  # byte-identical copy of a file already taken: one row
        return
    record = _image_row(job, path, rel, sha, found, decoded)
    previous = job.known.get(found.unit.image_id)
    if previous is not None and previous[0] == sha and previous[2] == record["error"] and (
        record["path"] is None or (previous[1] is not None and copy_is_complete(job.wd.root / previous[1]))
    ):  # the copy an earlier import made (a PNG before originals were kept) is whole: it stays
        job.summary.unchanged += 1
        return
    if record["error"] is None:
        try:
            _write_copy(job, path, rel, record, decoded)
        except (OSError, ValueError) as exc:  # a name the file system refuses, a link out: this file's error
            _unwrite(job, record)
            reason = f"cannot write its copy: {exc}"
            record.update(error=f"{rel}: {reason}", path=None, thumb_path=None)
            job.summary.failed.append((rel, reason))
    job.records.append(record)


def _read_capped(path: Path, limit: int) -> bytes:
    """The file's bytes, refusing one over ``limit`` before reading it (and one that grows
    past it while read: never more than ``limit`` + 1 bytes are read)."""
    size = path.stat().st_size
    if size > limit:
        raise ValueError(f"file is {size:,} bytes, over the import limit of {limit:,} bytes: not read")
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"file grew past the import limit of {limit:,} bytes while read: not imported")
    return data


def _unwrite(job: _Import, record: dict) -> None:
    """Remove what a failed ``_write_copy`` left (the copy without its thumbnail)."""
    for key in ("path", "thumb_path"):
        if record.get(key):
            try:
                job.wd.write_path(record[key]).unlink(missing_ok=True)
            except (OSError, ValueError):  # never delete through a link that leaves the workdir
                continue


def _identify(job: _Import, path: Path, rel: str, sha: str, decoded: _Decoded) -> _Identified | None:
    """Step 3, identify: artist, checkpoint and unit of one file (None: a copy already taken)."""
    label = job.labels.get(rel) or job.labels.get(path.name)
    info = decoded.info
    unit_info = info.get("unit") or {}
    artist_id = _artist_of(job, label, info, unit_info, rel, decoded.error)
    # checkpoint: --checkpoint > labels > metadata model name
    if job.options.as_reference:
        ckpt = job.forced
    else:
        ckpt = job.forced or checkpoint_name(label.checkpoint if label else None) or checkpoint_name(
            unit_info.get("checkpoint") or info.get("model")
        )
    # the file's own parameters win over the labels, the labels over the file name
    prompt = info.get("prompt") or (label.prompt if label else None) or ""
    negative = info.get("negative_prompt") or (label.negative_prompt if label else None) or ""
    seed = _seed_of(job, label, info, path.name)
    template = _template_of(label, artist_id)
    artist_id, ckpt, template, seed = _refuse_unsafe(decoded, artist_id, ckpt, template, seed)
    width, height = (decoded.image.size if decoded.image is not None else (info.get("width") or 0, info.get("height") or 0))
    if decoded.error is not None:
        # unique per file and place: the content hash and the relative path
        unit = _identity(ckpt, artist_id, f"error:{rel}", -1, 0, 0, sha, template=template)
    else:
        unit = _identity(ckpt, artist_id, prompt, seed, width, height, None if prompt else sha, template=template)
        if unit.unit_id in job.seen_units and job.seen_units[unit.unit_id][0] != sha:  # same settings, other pixels
            unit = _identity(ckpt, artist_id, prompt, seed, width, height, sha, template=template)
    if unit.unit_id in job.seen_units:
        job.summary.notes.append((rel, f"same content and labels as {job.seen_units[unit.unit_id][1]}: recorded once"))
        return None
    job.seen_units[unit.unit_id] = (sha, rel)
    if seed < 0 and decoded.error is None and not job.options.as_reference:
        job.summary.no_seed += 1
    return _Identified(unit, ckpt, prompt, seed, width, height, negative)


def _refuse_unsafe(decoded: _Decoded, artist_id: str, ckpt: str | None, template: str,
                   seed: int) -> tuple[str, str | None, str, int]:
    """Unsafe identifiers and a seed the store cannot hold make the file's error (before any
    write); the offending values are replaced by stand-ins so nothing unsafe is recorded."""
    problems = [reason for _, reason in unsafe_identifiers(artist_id, ckpt, template)]
    fields = {name for name, _ in unsafe_identifiers(artist_id, ckpt, template)}
    if seed > MAX_SEED:
        # Recorded as this file's error rather than cut: no generator draws such a seed.
        problems.append(f"seed {seed} does not fit the store's seed columns (unsigned 64-bit, at most {MAX_SEED})")
        seed = -1
    if problems:
        decoded.error = "; ".join(([decoded.error] if decoded.error else []) + problems)
        decoded.image = None
    return (INVALID_ID if "artist_id" in fields else artist_id, None if "checkpoint" in fields else ckpt,
            IMPORT_TEMPLATE if "template" in fields else template, seed)


def _seed_of(job: _Import, label: Label | None, info: dict, name: str) -> int:
    """The file's own seed, else the labels' seed, else the one in its name, else -1 (unknown)."""
    if isinstance(info.get("seed"), int) and info["seed"] >= 0:
        return info["seed"]
    if label is not None and label.seed is not None:
        return label.seed
    found = seed_from_name(job.seed_regex, name)
    if found is None and job.seed_regex is not None:
        job.summary.seedless.append(name)
    return -1 if found is None else found


def _template_of(label: Label | None, artist_id: str) -> str:
    """The labels' template; a baseline image's is `null`; else `import`."""
    if artist_id == BASELINE_ARTIST_ID:
        return BASELINE_TEMPLATE
    return (label.template if label else None) or IMPORT_TEMPLATE


def _artist_of(job: _Import, label: Label | None, info: dict, unit_info: dict, rel: str, error: str | None) -> str:
    """The artist id: from the labels, else our own chunk, else a name in the prompt."""
    summary = job.summary
    if label is not None and label.baseline:
        return BASELINE_ARTIST_ID
    artist_name = label.artist if label and label.artist else None
    if artist_name:
        artist_id = job.index.lookup(artist_name)
        if artist_id is None:
            summary.unknown_artists[artist_name] = summary.unknown_artists.get(artist_name, 0) + 1
            artist_id = slugify(artist_name)
        return artist_id
    if unit_info.get("artist_id"):
        return str(unit_info["artist_id"])
    named = job.index.lookup_in_prompt(info.get("prompt") or "")
    if named:
        return named
    if error is None:
        summary.unlabelled.append(rel)
    return UNKNOWN_ARTIST


def _image_row(job: _Import, path: Path, rel: str, sha: str, found: _Identified, decoded: _Decoded) -> dict:
    """The ``images`` row of one file (with its error when it could not be decoded)."""
    info, unit = decoded.info, found.unit
    folder = found.checkpoint or ("reference" if job.options.as_reference else UNKNOWN_ARTIST)
    stem = short_name(NAME_SAFE.sub("-", path.stem).strip("-") or "image", MAX_STEM)
    relpath = Path("imported") / folder / unit.artist_id / f"{stem}-{unit.unit_id[:8]}{decoded.suffix}"
    numbers = {"width": found.width or None, "height": found.height or None, "steps": info.get("steps") or 0}
    for key, value in numbers.items():  # a header or infotext value the int32 columns cannot hold: unknown
        if value is not None and not INT32_RANGE[0] <= value <= INT32_RANGE[1]:
            numbers[key] = None
            if decoded.error is None:
                decoded.error = f"{key} {value} does not fit the store's {key} column (signed 32-bit)"
    record = image_record(
        unit, job.run_id, source=job.options.source_kind, checkpoint=found.checkpoint, prompt=found.prompt,
        negative_prompt=found.negative_prompt, seed=found.seed, **numbers, guidance=float(info.get("guidance") or 0.0),
        scheduler=info.get("sampler") or "", sha256=sha, created_at=job.started, source_path=rel, source_sha256=sha,
    )
    if decoded.error is not None:
        record["error"] = f"{rel}: {decoded.error}"
        job.summary.failed.append((rel, decoded.error))
    else:
        record["path"] = relpath.as_posix()
        record["thumb_path"] = (Path("thumbs") / relpath.with_suffix(".jpg")).as_posix()
        job.summary.notes.extend((rel, note) for note in decoded.notes)
    return record


def _write_copy(job: _Import, path: Path, rel: str, record: dict, decoded: _Decoded) -> None:
    """Step 4, write: the original bytes, or an RGB PNG (A1111 infotext + our chunk) for a
    converted file, and the thumbnail; each written atomically (temporary + rename)."""
    from catalog.atomic import atomic_write_bytes
    from evaluator.workspace.thumbs import write_thumbnail

    image = decoded.image
    # folders resolved inside the workdir: a link in it pointing out is refused, not written through
    target = job.wd.write_path(record["path"])
    atomic_write_bytes(target, decoded.original if decoded.original is not None else _png_copy(job, path, rel, record, image))
    write_thumbnail(image, job.wd.write_path(record["thumb_path"]), job.options.thumb_size)
    image.close()
    job.summary.imported += 1


def _png_copy(job: _Import, path: Path, rel: str, record: dict, image) -> bytes:
    """The RGB PNG of a converted file, its settings in A1111 infotext and atelier's chunk."""
    from evaluator.generation.pngmeta import InfotextParams, encode_png

    width, height = image.size
    seed = int(record["seed_text"]) if record.get("seed_text") else -1  # exact, also past int64
    parameters = InfotextParams(
        record["prompt"], record["negative_prompt"], int(record["steps"]), record["scheduler"] or "unknown",
        record["guidance"], seed, width, height, model=record["checkpoint"], extra={"Imported from": rel},
    ).text()
    meta = {**record, "created_at": job.started.isoformat(), "imported_from": str(path)}
    return encode_png(image, parameters, meta, compress_level=IMPORT_PNG_LEVEL)


def _finish_import(job: _Import) -> None:
    """Step 5, ingest: checkpoint records, the run record (``interrupted`` until the shard
    is written), the manifest shard, the final run record, then the store, which is
    brought up to date with every manifest (what killed imports left too)."""
    from evaluator.workspace.manifest import write_shard
    from evaluator.workspace.store import StoreLockedError

    run = None
    if job.records:
        _record_checkpoints(job.wd, job.records, job.src)
        _write_import_run(job, status="interrupted")
        manifest = job.wd.write_path(Path("manifests") / job.run_id / "rank0-part00000.parquet")
        write_shard(job.records, manifest)
        job.summary.manifest_path = str(manifest)
        run = _write_import_run(job)
    try:
        job.summary.rows_ingested, job.summary.rows_recovered = _ingest(job.wd, job.run_id, job.options.store_timeout)
    except StoreLockedError as exc:
        kept = f"this import's rows are in {job.summary.manifest_path}" if run else "nothing new was imported"
        raise StoreLockedError(f"{exc}; {kept}: the next `atelier import` or `atelier score` of {job.wd.root} "
                               "writes them to the store") from exc


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
            "added_at": utcnow().isoformat(timespec="seconds"),
        }
        atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True))


def _write_import_run(job: _Import, status: str | None = None) -> RunRecord:
    """``runs/<run_id>.json`` for the store's ``runs`` table; ``status`` overrides the
    final one (``interrupted``: written before the shard, replaced once it is)."""
    summary, options = job.summary, job.options
    config = {
        "source": str(job.src), "labels": str(job.labels_path) if job.labels_path else None,
        "checkpoint": options.checkpoint, "as_reference": options.as_reference,
        "seed_from_filename": options.seed_from_filename, "follow_links": options.follow_links,
    }
    message = "; ".join(f"{n}: {r}" for n, r in summary.failed[:20]) or None
    if status == "interrupted":
        message = "stopped before its manifest shard was complete; a rerun of the import finishes it"
    run = RunRecord(
        run_id=job.run_id,
        kind="import",
        provenance=Provenance.collect(),
        started_at=job.started,
        finished_at=None if status else utcnow(),
        status=status or ("ok" if not summary.failed else "failed-units"),
        config=config,
        n_done=summary.imported,
        n_skipped=summary.unchanged,
        n_failed=len(summary.failed),
        message=message,
    )
    run.write(job.wd)
    return run


def _ingest(wd: Workdir, run_id: str, timeout: float = 30.0) -> tuple[int, int]:
    """Bring the store up to date with every manifest in one transaction: the ``images``
    rows it lacks (or holds in an older version), the import runs it lacks, and a
    ``reference_images`` row for every reference image. Returns (rows written, of which
    from other runs than ``run_id``): a killed or lock-timed-out import is finished here."""
    from evaluator.workspace.manifest import read_manifests
    from evaluator.workspace.store import open_store, transaction, upsert_df

    frame = read_manifests(wd.manifests)
    if frame.empty:
        return 0, 0
    with open_store(wd.store, timeout=timeout) as con, transaction(con):
        stale = _not_in_store(con, frame, "images", ["image_id", "run_id", "created_at"])
        written = upsert_df(con, "images", stale, key=["image_id"])
        runs = _import_runs(wd)
        upsert_df(con, "runs", _not_in_store(con, runs, "runs", ["run_id", "status"]), key=["run_id"])
        refs = frame[(frame["source"] == "reference") & frame["error"].isna() & frame["path"].notna()
                     & frame["artist_id"].notna()][["artist_id", "image_id"]]
        upsert_df(con, "reference_images", _not_in_store(con, refs, "reference_images", ["artist_id", "image_id"]),
                  key=["artist_id", "image_id"])
    return written, int((stale["run_id"] != run_id).sum())


def _not_in_store(con, frame, table: str, columns: list[str]):
    """The rows of ``frame`` with no row of ``table`` equal on ``columns``."""
    if frame.empty:
        return frame
    incoming = frame[columns].assign(_row=range(len(frame)))
    con.register("_incoming", incoming)
    try:
        match = " AND ".join(f't."{c}" IS NOT DISTINCT FROM f."{c}"' for c in columns)
        missing = con.execute(f"SELECT _row FROM _incoming f WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match})"
                              ).fetchall()
    finally:
        con.unregister("_incoming")
    return frame.iloc[sorted(row[0] for row in missing)]


def _import_runs(wd: Workdir):
    """The ``runs`` rows of every import run recorded under ``runs/`` (JSON columns as text)."""
    import pandas as pd

    from evaluator.workspace.records import RUN_COLUMNS, load_run_records

    rows = [{c: r.get(c) for c in RUN_COLUMNS} for r in load_run_records(wd.root) if r.get("kind") == "import"]
    return pd.DataFrame(rows, columns=list(RUN_COLUMNS))
