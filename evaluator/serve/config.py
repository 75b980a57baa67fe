"""What `atelier serve` answers and how: ``ServeConfig``, and reading the token file.

Reads the token file (once, at start); writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from evaluator.errors import InputError

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class ServeConfig:
    """One server's settings. ``token`` None: no Authorization needed (loopback use)."""

    workdir: Path
    model: str | None = None  # open_clip model for text search; None: image-id search only
    pretrained: str | None = None
    device: str = "cpu"
    token: str | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    # A request waits this long for a writer (`atelier score`) to release the store,
    # then answers 503 with Retry-After: long enough for a scoring commit, short for a client.
    lock_wait: float = 2.0
    default_limit: int = 100
    max_limit: int = 1000
    max_body_bytes: int = 1 << 20  # JSON bodies are small; uploads are not accepted yet
    max_k: int = 100

    def __post_init__(self) -> None:
        if self.lock_wait < 0:
            raise InputError(f"lock_wait must be >= 0 but is {self.lock_wait}")
        if not 1 <= self.default_limit <= self.max_limit:
            raise InputError(f"default_limit must be within 1..max_limit ({self.max_limit}) but is {self.default_limit}")
        if self.token is not None and not self.token:
            raise InputError("token must not be empty")


def read_token(path: str | Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace dropped); an empty file is an error."""
    path = Path(path)
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InputError(f"--token-file {path}: cannot read it: {exc}") from exc
    if not token:
        raise InputError(f"--token-file {path} is empty; put the token on its first line")
    if any(c.isspace() for c in token):
        raise InputError(f"--token-file {path}: the token must be one word (no spaces or line breaks)")
    return token
