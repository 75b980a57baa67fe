"""`atelier dashboard` and `atelier report`, reached from evaluator.cli.main's command table.

``dashboard`` serves dashboard/app.py (it reads DIR/atelier.duckdb, writes nothing);
``report`` reads the store and writes an HTML file and its Markdown twin. Only click is
imported at module level.
"""

from __future__ import annotations

from pathlib import Path

import click

from evaluator.cli.options import workdir_option

APP = Path(__file__).resolve().parent / "app.py"


def streamlit_command(workdir: Path, port: int, host: str, headless: bool = True) -> list[str]:
    """The `streamlit run` command line that serves the dashboard for ``workdir``."""
    import sys

    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port),
        "--server.address", host,
        "--server.headless", "true" if headless else "false",
        "--browser.gatherUsageStats", "false",
        "--", "--workdir", str(workdir),
    ]


@click.command("dashboard")
@workdir_option(help="The workdir whose store (DIR/atelier.duckdb) the dashboard reads.")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 127.0.0.1 keeps the dashboard local, 0.0.0.0 shares it.")
@click.option("--open-browser/--no-open-browser", default=False, show_default=True)
def dashboard_command(workdir: Path, port: int, host: str, open_browser: bool) -> None:
    """Serve the Streamlit dashboard (read-only) for a workdir."""
    import os

    root = workdir.expanduser().resolve()
    store = root / "atelier.duckdb"
    if not store.is_file():
        raise click.ClickException(
            f"no store at {store}; run `atelier demo --workdir {root}` or `atelier score --workdir {root}` first"
        )
    env = dict(os.environ, ATELIER_WORKDIR=str(root))
    click.echo(f"atelier dashboard: http://{host}:{port}  (workdir {root}; Ctrl+C stops)")
    code = serve_until_stopped(streamlit_command(root, port, host, headless=not open_browser), env)
    if code:
        raise click.ClickException(f"streamlit exited with status {code}")


def serve_until_stopped(command: list[str], env: dict[str, str]) -> int:
    """Run the server and pass on a request to stop: SIGTERM or SIGHUP to `atelier
    dashboard` (a service manager, `kill`, a closed terminal) stops streamlit too, instead
    of leaving it orphaned and holding the port. Ctrl+C reaches both already. Returns its
    exit status, 0 when it stopped because it was asked to."""
    import signal
    import subprocess

    process = subprocess.Popen(command, env=env)
    asked: list[int] = []

    def forward(signum, _frame) -> None:
        asked.append(signum)
        process.send_signal(signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), forward)
    while True:
        try:
            code = process.wait()
            break
        except KeyboardInterrupt:  # the terminal sent SIGINT to streamlit as well: let it finish
            asked.append(signal.SIGINT)
    return 0 if asked and code in (0, *(-s for s in asked)) else code


@click.command("report")
@workdir_option(help="The workdir whose store (DIR/atelier.duckdb) the report reads.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write; a Markdown twin is written beside it (same name, .md).")
@click.option("--gallery-artists", default=8, show_default=True, type=click.IntRange(0, 200),
              help="Artists in the thumbnail strip.")
@click.option("--top", default=25, show_default=True, type=click.IntRange(1, 10_000),
              help="Gained and lost artists listed per fine-tune.")
def report_command(workdir: Path, out: Path, gallery_artists: int, top: int) -> None:
    """Write a self-contained HTML (and Markdown) report: leaderboard, gains, losses, plots."""
    from streamlit import logger as streamlit_logger

    # Outside `streamlit run` the query cache falls back to memory and says so when the
    # dashboard's cached queries are defined; not news here. Streamlit's own setter
    # reaches each of its loggers (their levels are set one by one at import).
    streamlit_logger.set_log_level("error")
    from dashboard.report import ReportConfig, write_report

    html_path, md_path = write_report(workdir, out, ReportConfig(gallery_artists=gallery_artists, top=top))
    click.echo(f"wrote {html_path}\nwrote {md_path}")

