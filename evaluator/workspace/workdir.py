"""The layout of a workdir: where every stage writes, so every stage can find it.

::

    DIR/atelier.duckdb                 the store (one writer at a time; see store.py)
    DIR/images/<unit relpath>.png      generated images (PNG with a `parameters` chunk)
    DIR/imported/<checkpoint>/...      copies of imported images, as PNG
    DIR/thumbs/<same relpath>.jpg      thumbnails made once, at generation or import
    DIR/manifests/<run_id>/rank<R>-part<K>.parquet   generation/import manifest shards
    DIR/embeddings/<model>/part-*.parquet            image embeddings (float16) by image id
    DIR/index/<model>.faiss            FAISS index over all image embeddings of a model
    DIR/runs/<run_id>.json             provenance of each run (config, versions, timings)
    DIR/checkpoints/<name>.json        each checkpoint's record and fingerprint (+ .files.json)
    DIR/.score.lock                    held by embed / index / score (``workdir_lock``)
    DIR/.import.lock                   held by import / references add (``workdir_lock(..., "import")``)

A command that reads a workdir opens it with ``Workdir.at(path, create=False)``: a
missing one is an error naming close folders, never a new empty store. Every entry
above that is a symbolic link must resolve inside the workdir (``check_links``), and
writers that take a path from data resolve it with ``write_path``: nothing is ever
written outside the workdir through a link.
"""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from evaluator.errors import InputError, StateError

STORE_NAME = "atelier.duckdb"
# The top-level entries stages write; a symlink among them must stay inside the workdir.
LAYOUT = (STORE_NAME, "images", "imported", "thumbs", "manifests", "embeddings", "index", "runs", "checkpoints")


class WorkdirNotFoundError(InputError, FileNotFoundError):
    """A command that reads a workdir was given one that does not exist."""


def missing_workdir_message(root: Path) -> str:
    """``workdir X does not exist`` plus the close names of folders beside it."""
    parent = root.parent
    try:
        siblings = [p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        siblings = []
    close = difflib.get_close_matches(root.name, siblings, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(str(parent / c) for c in close)}?" if close else ""
    return (f"workdir {root} does not exist{hint} (generate, import, references add and demo make one; "
            "other commands read an existing one)")


def model_slug(model: str) -> str:
    """A file-safe name for an embedding model (``ViT-B-32/openai`` -> ``ViT-B-32_openai``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"


@dataclass(frozen=True)
class Workdir:
    root: Path

    @classmethod
    def at(cls, path: str | Path, create: bool = True) -> Workdir:
        """The workdir at ``path``, made when ``create`` (writers), else it must exist
        (``WorkdirNotFoundError`` with close names). Links in its layout are checked."""
        try:
            root = Path(path).expanduser().resolve()
        except RuntimeError as exc:  # a symlink loop
            raise InputError(f"workdir {path}: {exc}") from exc
        if create:
            root.mkdir(parents=True, exist_ok=True)
        elif not root.is_dir():
            raise WorkdirNotFoundError(missing_workdir_message(root))
        workdir = cls(root)
        workdir.check_links()
        return workdir

    def check_links(self) -> None:
        """Refuse a layout entry (``images``, ``manifests``, the store, ...) that is a
        symlink leaving the workdir or a loop: stages would write through it."""
        for name in LAYOUT:
            entry = self.root / name
            if not entry.is_symlink():
                continue
            try:
                target = entry.resolve(strict=False)
            except (RuntimeError, OSError) as exc:
                raise InputError(f"{entry} is a symbolic link that cannot be resolved ({exc})") from exc
            if target != self.root and self.root not in target.parents:
                raise InputError(f"{entry} is a symbolic link to {target}, outside the workdir {self.root}; "
                                 "atelier writes only inside the workdir: replace the link by a folder")

    @property
    def store(self) -> Path:
        return self.root / STORE_NAME

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def imported(self) -> Path:
        return self.root / "imported"

    @property
    def thumbs(self) -> Path:
        return self.root / "thumbs"

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/<name>.json``: the checkpoint records written by generation."""
        return self.root / "checkpoints"

    def embeddings(self, model: str) -> Path:
        return self.root / "embeddings" / model_slug(model)

    def index(self, model: str) -> Path:
        return self.root / "index" / f"{model_slug(model)}.faiss"

    def resolve_inside(self, relpath: str | Path) -> Path:
        """Resolve a stored relative path, refusing anything that escapes the workdir
        (``..``, an absolute path, a symlink pointing out, a symlink loop)."""
        try:
            path = (self.root / relpath).resolve()
        except (RuntimeError, OSError) as exc:
            raise InputError(f"path {str(relpath)!r} in the workdir {self.root} cannot be resolved ({exc})") from exc
        if path != self.root and self.root not in path.parents:
            raise InputError(f"path {str(relpath)!r} escapes the workdir {self.root}")
        return path

    def write_path(self, relpath: str | Path) -> Path:
        """Where to write ``relpath``: its folder resolved (links followed) must be inside
        the workdir; the file itself may be a link, which an atomic rename replaces."""
        relpath = Path(relpath)
        folder = self.resolve_inside(relpath.parent) if relpath.parent != Path(".") else self.root
        return folder / relpath.name


# What each lock serialises: score/embed/index share one; imports another, so an import
# may sweep its own temporaries while no other import is writing them.
LOCKS = {"score": "atelier score/embed", "import": "atelier import / references add"}


@contextlib.contextmanager
def workdir_lock(wd: Workdir, timeout: float = 3600.0, echo: Callable[[str], None] | None = None,
                 name: str = "score", shared: bool = False) -> Iterator[None]:
    """Exclusive lock on ``DIR/.<name>.lock`` (``score``: scoring or embedding;
    ``import``: imports). ``shared``: the ranks of one launch (torchrun) hold it together,
    so they do not queue behind each other while a single-process run still waits for them.

    An OS lock (flock): released by the kernel when the holder dies, even by SIGKILL,
    so a crash never leaves a stale lock behind. A second run waits; past ``timeout``
    it refuses with the holder's pid.
    """
    what = LOCKS[name]
    path = wd.root / f".{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole block
    deadline = time.monotonic() + timeout
    told = False
    try:
        while True:
            try:
                fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                if time.monotonic() >= deadline:
                    raise StateError(
                        f"another {what} run (pid {holder}) holds {path}; waited {timeout:.0f}s"
                    ) from None
                if not told and echo is not None:
                    echo(f"waiting for another {what} run (pid {holder}) on {wd.root} ...")
                    told = True
                time.sleep(0.2)
        handle.seek(0)  # shared: the last rank to arrive names the holders
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
