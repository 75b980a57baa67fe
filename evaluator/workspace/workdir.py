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
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from evaluator.errors import InputError, StateError

STORE_NAME = "atelier.duckdb"


def model_slug(model: str) -> str:
    """A file-safe name for an embedding model (``ViT-B-32/openai`` -> ``ViT-B-32_openai``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"


@dataclass(frozen=True)
class Workdir:
    root: Path

    @classmethod
    def at(cls, path: str | Path, create: bool = True) -> Workdir:
        root = Path(path).expanduser().resolve()
        if create:
            root.mkdir(parents=True, exist_ok=True)
        elif not root.is_dir():
            raise FileNotFoundError(f"workdir {root} does not exist")
        return cls(root)

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

    def resolve_inside(self, relpath: str) -> Path:
        """Resolve a stored relative path, refusing anything that escapes the workdir."""
        path = (self.root / relpath).resolve()
        if path != self.root and self.root not in path.parents:
            raise InputError(f"path {relpath!r} escapes the workdir {self.root}")
        return path


@contextlib.contextmanager
def workdir_lock(wd: Workdir, timeout: float = 3600.0, echo: Callable[[str], None] | None = None) -> Iterator[None]:
    """Exclusive lock on ``DIR/.score.lock`` held while scoring or embedding.

    An OS lock (flock): released by the kernel when the holder dies, even by SIGKILL,
    so a crash never leaves a stale lock behind. A second run waits; past ``timeout``
    it refuses with the holder's pid.
    """
    path = wd.root / ".score.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole block
    deadline = time.monotonic() + timeout
    told = False
    try:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                if time.monotonic() >= deadline:
                    raise StateError(
                        f"another atelier score/embed run (pid {holder}) holds {path}; waited {timeout:.0f}s"
                    ) from None
                if not told and echo is not None:
                    echo(f"waiting for another atelier score/embed run (pid {holder}) on {wd.root} ...")
                    told = True
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
