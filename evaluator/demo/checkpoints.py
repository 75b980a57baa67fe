"""The demos' ``checkpoints.toml``: one writer for the random-weight demo and the world demo.

Writes ``DIR/checkpoints.toml`` (atomically, and only when its text changes, so a rerun
leaves the file and its mtime alone); reads nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DemoCheckpoint:
    """One ``[[checkpoint]]`` table: a source, optionally a base and one LoRA file."""

    name: str
    source: Path
    notes: str
    base: str | None = None
    lora: Path | None = None

    def toml(self) -> str:
        lines = ["[[checkpoint]]", f'name = "{self.name}"', f'source = "{self.source.as_posix()}"']
        if self.base:
            lines.append(f'base = "{self.base}"')
        if self.lora:
            lines.append(f'lora = [{{ path = "{self.lora.as_posix()}", scale = 1.0 }}]')
        lines.append(f'notes = "{self.notes}"')
        return "\n".join(lines) + "\n"


def write_checkpoints_file(workdir: Path, comment: str, checkpoints: list[DemoCheckpoint]) -> Path:
    """``workdir/checkpoints.toml`` naming ``checkpoints``; rewritten only when its text changes."""
    from catalog.atomic import atomic_write_text

    path = workdir / "checkpoints.toml"
    text = f"# {comment}\n" + "\n".join(c.toml() for c in checkpoints)
    if not path.exists() or path.read_text() != text:
        atomic_write_text(path, text)
    return path
