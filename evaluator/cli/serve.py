"""`atelier serve`: the read-only HTTP API over a workdir (FastAPI on uvicorn).

Reads DIR/atelier.duckdb, the FAISS index and the images of DIR (through
``evaluator.serve``) and the token file; writes nothing. Only click is imported at
module level: FastAPI, uvicorn and the store load when the command runs.
"""

from __future__ import annotations

import signal
from pathlib import Path

import click

from evaluator.cli.options import device_option, model_option, pretrained_option, workdir_option


@click.command("serve")
@workdir_option()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind. Loopback by default; another address needs --token-file.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@model_option(required=False, help="open_clip model for text search (image-id search needs none).")
@pretrained_option()
@device_option()
@click.option("--token-file", default=None, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="File holding a token: every request then needs `Authorization: Bearer <token>`.")
@click.option("--cors", "cors", multiple=True, metavar="ORIGIN",
              help="Allow browser pages of ORIGIN (repeatable); CORS is off without it.")
@click.option("--lock-wait", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds a request waits for a writer to release the store before answering 503.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def serve_cmd(*, workdir: Path, host: str, port: int, model: str | None, pretrained: str | None, device: str,
              token_file: Path | None, cors: tuple[str, ...], lock_wait: float, log_level: str) -> None:
    """Serve a read-only HTTP API (JSON) over DIR: scores, comparisons, images, search, SQL."""
    import uvicorn

    from evaluator.errors import InputError
    from evaluator.serve.app import create_app
    from evaluator.serve.config import LOOPBACK_HOSTS, ServeConfig, read_token
    from evaluator.workspace.workdir import Workdir

    wd = Workdir.at(workdir, create=False)
    if not wd.store.is_file():
        raise InputError(f"no store at {wd.store}; run `atelier score --workdir {workdir}` (or `atelier demo`) first")
    token = read_token(token_file) if token_file else None
    if host not in LOOPBACK_HOSTS and token is None:
        raise InputError(f"--host {host} would expose the workdir beyond this machine; give --token-file too")
    config = ServeConfig(workdir=wd.root, model=model, pretrained=pretrained, device=device, token=token,
                         cors_origins=tuple(cors), lock_wait=lock_wait)
    app = create_app(config)
    click.echo(f"atelier serve: {wd.root} on http://{host}:{port} (docs at /docs"
               f"{', token required' if token else ''})", err=True)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the
    # handler it found: make that a no-op, so a stopped server exits 0, not -15.
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: None)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
