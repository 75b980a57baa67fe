"""`atelier serve`: the read-only HTTP API over a workdir (FastAPI on uvicorn).

Reads DIR/atelier.duckdb, the FAISS index and the images of DIR (through
``evaluator.serve``) and the token file; writes only the snapshot folder (a temporary
folder, removed at exit, unless --snapshot-dir names one). Only click is imported at
module level: FastAPI, uvicorn and the store load when the command runs.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from pathlib import Path

import click

from evaluator.cli.options import device_option, model_option, pretrained_option, workdir_option


@click.command("serve")
@workdir_option()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Loopback by default; another address needs --token-file.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@model_option(required=False, help="open_clip model for text and image-upload search (image-id search needs none).")
@pretrained_option()
@device_option()
@click.option("--token-file", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="File holding a token: every request then needs `Authorization: Bearer <token>`.")
@click.option("--cors", "cors", multiple=True, metavar="ORIGIN",
              help="Allow browser pages of ORIGIN (repeatable); CORS is off without it.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server processes (uvicorn workers); each loads the model and keeps its own rate limits.")
@click.option("--lock-wait", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds a request waits for a writer to release the store when no snapshot of it exists yet.")
@click.option("--request-timeout", default=15.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Seconds a request may take; past it the answer is 503 with Retry-After and its queries stop.")
@click.option("--rate-limit", default=50.0, show_default=True, type=click.FloatRange(min=0),
              help="Requests a second per client address and worker (0: no limit); past it, 429 with Retry-After.")
@click.option("--rate-burst", default=100, show_default=True, type=click.IntRange(min=1),
              help="Requests a client may send at once before --rate-limit applies.")
@click.option("--snapshot-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where the server keeps its copy of the store (default: a temporary folder, removed at exit).")
@click.option("--no-snapshot", is_flag=True,
              help="Read the store itself, one connection per request: no copy on disk, slower, and a request "
                   "waits (then 503) while a writer holds the store.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve_cmd(*, workdir: Path, host: str, port: int, model: str | None, pretrained: str | None, device: str,
              token_file: Path | None, cors: tuple[str, ...], workers: int, lock_wait: float, request_timeout: float,
              rate_limit: float, rate_burst: int, snapshot_dir: Path | None, no_snapshot: bool, log_level: str) -> None:
    """Serve a read-only HTTP API (JSON) over DIR: scores, comparisons, images, search, SQL."""
    from evaluator.errors import InputError
    from evaluator.serve.config import LOOPBACK_HOSTS, ServeConfig, read_token
    from evaluator.workspace.workdir import Workdir

    wd = Workdir.at(workdir, create=False)
    if not wd.store.is_file():
        raise InputError(f"no store at {wd.store}; run `atelier score --workdir {workdir}` (or `atelier demo`) first")
    token = read_token(token_file) if token_file else None
    if host not in LOOPBACK_HOSTS and token is None:
        raise InputError(f"--host {host} would expose the workdir beyond this machine; give --token-file too")
    own_dir = None if (snapshot_dir or no_snapshot) else Path(tempfile.mkdtemp(prefix="atelier-serve-"))
    config = ServeConfig(workdir=wd.root, model=model, pretrained=pretrained, device=device, token=token,
                         token_file=token_file.resolve() if token_file else None, cors_origins=tuple(cors),
                         lock_wait=lock_wait, request_timeout=request_timeout, rate_limit=rate_limit,
                         rate_burst=rate_burst, snapshot=not no_snapshot, snapshot_dir=snapshot_dir or own_dir)
    click.echo(f"atelier serve: {wd.root} on http://{host}:{port} (docs at /docs"
               f"{', token required' if token else ''}{f', {workers} workers' if workers > 1 else ''})", err=True)
    try:
        run_server(config, host=host, port=port, workers=workers, log_level=log_level)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def run_server(config, *, host: str, port: int, workers: int, log_level: str) -> None:
    """uvicorn over the app: in this process, or in ``workers`` processes that rebuild it from the env."""
    import uvicorn

    from evaluator.serve.app import create_app
    from evaluator.workspace import settings

    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the
    # handler it found: make that a no-op, so a stopped server exits 0, not -15.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: None)
    options = {"host": host, "port": port, "log_level": log_level, "access_log": log_level == "debug"}
    if workers == 1:
        uvicorn.run(create_app(config), **options)
        return
    settings.set_serve_config(config.to_json())
    uvicorn.run("evaluator.serve.app:app_from_env", factory=True, workers=workers, **options)
