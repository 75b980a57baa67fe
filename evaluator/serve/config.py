"""What `atelier serve` answers and how: ``ServeConfig``, and reading the token file.

Reads the token file (once per process, at start); writes nothing. With ``--workers N``,
uvicorn starts the app by its import string in N processes, so the config travels as
JSON in ``ATELIER_SERVE_CONFIG`` (``to_json`` / ``from_json``; the token itself never:
each worker reads the token file).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
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
    max_body_bytes: int = 1 << 20  # JSON bodies are small; an upload has its own limits
    max_k: int = 100
    token_file: Path | None = None  # where ``token`` came from (workers read it again)
    # Requests read a copy of the store (see serve.snapshot); False: a connection per request.
    snapshot: bool = True
    snapshot_dir: Path | None = None  # None: a fresh temporary folder of this process
    # Each snapshot's hot tables in memory as encoded rows (see serve.readmodel): a page is a
    # slice, not a query. False: every request queries the copy (less memory, ~50x slower).
    read_model: bool = True
    # A request with no response after this long answers 503 (its queries interrupted):
    # longer than user SQL's own 10 s limit, so that limit speaks first.
    request_timeout: float | None = 15.0
    # Per client address and worker: 50 a second covers a script paging through results;
    # bursts of 100 absorb a dashboard-like fan-out. 0: no limit.
    rate_limit: float = 50.0
    rate_burst: int = 100
    # An uploaded query image: 20 MB, 40 megapixels (see serve.upload).
    max_upload_bytes: int = 20 << 20
    max_upload_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if self.lock_wait < 0:
            raise InputError(f"lock_wait must be >= 0 but is {self.lock_wait}")
        if not 1 <= self.default_limit <= self.max_limit:
            raise InputError(f"default_limit must be within 1..max_limit ({self.max_limit}) but is {self.default_limit}")
        if self.token is not None and not self.token:
            raise InputError("token must not be empty")
        if self.request_timeout is not None and not self.request_timeout > 0:
            raise InputError(f"request_timeout must be > 0 but is {self.request_timeout}")
        if self.rate_limit < 0 or (self.rate_limit and self.rate_burst < 1):
            raise InputError(f"rate_limit must be >= 0 (and rate_burst >= 1) but are {self.rate_limit}, {self.rate_burst}")

    def to_json(self) -> str:
        """The config without the token (a worker reads ``token_file`` again)."""
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items() if k != "token"}
        data["cors_origins"] = list(self.cors_origins)
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        """The config ``to_json`` wrote; the token read from its file."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InputError(f"ATELIER_SERVE_CONFIG is not JSON: {exc}") from exc
        known = {f.name for f in fields(cls)} - {"token"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"ATELIER_SERVE_CONFIG has unknown keys {unknown}")
        for key in ("workdir", "token_file", "snapshot_dir"):
            if data.get(key) is not None:
                data[key] = Path(data[key])
        data["cors_origins"] = tuple(data.get("cors_origins") or ())
        token = read_token(data["token_file"]) if data.get("token_file") else None
        return cls(**data, token=token)


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
