"""The kept images (files with no flag) of a curated source, in a layout training tools read.

- ``kohya``: ``OUT/<repeats>_<concept>/<name>`` with ``<stem>.txt`` holding the caption
  (the labels' prompt, else the PNG ``parameters`` prompt); the concept is ``--concept`` or
  each file's artist id. This is kohya sd-scripts' DreamBooth folder convention, which
  ``atelier train`` reads too.
- ``flat``: ``OUT/<name>`` and ``OUT/labels.csv`` (``file,artist,prompt``: the import's
  labels format).

Files are copied byte for byte. The folder is built beside OUT under a temporary name and
renamed into place at the end, so OUT is either complete or absent; an existing,
non-empty OUT is refused.
"""

from __future__ import annotations

import csv
import io
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evaluator.errors import InputError
from evaluator.workspace.workdir import Workdir

LAYOUTS = ("kohya", "flat")
DEFAULT_CONCEPT = "images"


@dataclass(frozen=True)
class ExportOptions:
    out: Path
    layout: str = "kohya"
    repeats: int = 1
    concept: str | None = None

    def validate(self, src: Path | None, workdir: str | Path) -> None:
        from evaluator.ingest.importer import NAME_SAFE

        if self.layout not in LAYOUTS:
            raise InputError(f"--layout must be one of {', '.join(LAYOUTS)} but is {self.layout!r}")
        if self.repeats < 1:
            raise InputError(f"--repeats must be >= 1 but is {self.repeats}")
        if self.concept is not None and (not self.concept or NAME_SAFE.search(self.concept)):
            raise InputError(f"--concept {self.concept!r} must match [A-Za-z0-9._-]+ (it is a folder name)")
        out = self.out.expanduser().resolve()
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise InputError(f"--export {out} exists and is not an empty folder: choose a new one")
        if src is not None:
            src = Path(src).resolve()
            if out == src or src in out.parents:
                raise InputError(f"--export {out} is inside the source {src}: a rerun would curate the export")


@dataclass
class ExportResult:
    out: Path
    layout: str
    n_images: int
    n_captions: int
    folders: list[str]

    def report_line(self) -> str:
        return (f"exported {self.n_images} kept images ({self.n_captions} with captions) to {self.out} "
                f"[{self.layout}: {', '.join(self.folders[:5]) or 'no folder'}]")


def _kept_files(wd: Workdir, source: str) -> list[tuple[str, str | None, str | None, str]]:
    from evaluator.workspace.store import connect_read_only

    con = connect_read_only(wd.store)
    try:
        return con.execute(
            "SELECT path, artist_id, caption, sha256 FROM curation_files "
            "WHERE source = ? AND len(flags) = 0 ORDER BY path", [source]).fetchall()
    finally:
        con.close()


def _source_path(wd: Workdir, source: str, rel: str) -> Path:
    from evaluator.curation.sources import STORE_SOURCE

    return wd.resolve_inside(rel) if source == STORE_SOURCE else Path(source) / rel


def _unique(folder: Path, rel: str, sha: str, taken: set[Path]) -> Path:
    name = Path(rel).name
    target = folder / name
    if target in taken:
        target = folder / f"{Path(name).stem}-{sha[:8]}{Path(name).suffix}"
    taken.add(target)
    return target


def export_kept(workdir: str | Path, source: str, options: ExportOptions) -> ExportResult:
    """Copy the source's kept files to ``options.out`` (see the module docstring)."""
    wd = Workdir.at(workdir, create=False)
    rows = _kept_files(wd, source)
    out = options.out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        result = _write(wd, source, rows, staging, options)
        if out.exists():
            out.rmdir()  # validated empty
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.out = out
    return result


def _write(wd: Workdir, source: str, rows, staging: Path, options: ExportOptions) -> ExportResult:
    taken: set[Path] = set()
    folders: set[str] = set()
    labels: list[tuple[str, str, str]] = []
    n_captions = 0
    for rel, artist, caption, sha in rows:
        if options.layout == "kohya":
            folder = f"{options.repeats}_{options.concept or artist or DEFAULT_CONCEPT}"
            target = _unique(staging / folder, rel, sha, taken)
        else:
            folder = "."
            target = _unique(staging, rel, sha, taken)
        folders.add(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_source_path(wd, source, rel), target)
        if caption:
            n_captions += 1
            if options.layout == "kohya":
                target.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        labels.append((target.name, artist or "", caption or ""))
    if options.layout == "flat":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["file", "artist", "prompt"])
        writer.writerows(labels)
        (staging / "labels.csv").write_text(buffer.getvalue(), encoding="utf-8")
    return ExportResult(staging, options.layout, len(rows), n_captions, sorted(folders))
