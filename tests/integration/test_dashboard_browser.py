"""A real browser on the served dashboard: headless chromium opens every page, images render.

`streamlit run` serves the app on a free localhost port; chromium (Debian's
/usr/bin/chromium) is driven over the DevTools protocol (a websocket, with the
`websockets` package streamlit already depends on) because Streamlit renders on the
client after a websocket handshake, which `--dump-dom` does not wait for. The test polls
the live DOM until the thumbnails have loaded (``naturalWidth > 0``), then keeps the DOM
and a screenshot of every page under tests/artifacts/.

Skipped only when chromium is absent and ATELIER_REQUIRE_BROWSER is unset.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from support.store import build_store

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"


def find_chromium() -> str | None:
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name) if not name.startswith("/") else (name if os.access(name, os.X_OK) else None)
        if found:
            return found
    return None


CHROMIUM = find_chromium()
if CHROMIUM is None and os.environ.get("ATELIER_REQUIRE_BROWSER"):
    raise RuntimeError("ATELIER_REQUIRE_BROWSER is set but no chromium was found (apt-get install chromium)")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (set ATELIER_REQUIRE_BROWSER to fail instead)"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")
        time.sleep(0.2)


class DevTools:
    """The few DevTools-protocol calls this test needs, over one page websocket."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self._connection = connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=20)
        self.ws = self._connection.__enter__()
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def close(self) -> None:
        self._connection.__exit__(None, None, None)


def start_chromium(user_dir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1600,1200", f"--user-data-dir={user_dir}",
         "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    port_file = user_dir / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while not (port_file.is_file() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("chromium did not open its DevTools port")
        time.sleep(0.1)
    port = int(port_file.read_text().split()[0])
    wait_http(f"http://127.0.0.1:{port}/json/version", 20)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
        pages = [t for t in json.load(response) if t.get("type") == "page"]
    return proc, pages[0]["webSocketDebuggerUrl"]


@contextlib.contextmanager
def serve_dashboard(workdir: Path, log_dir: Path):
    """`streamlit run` of the dashboard on ``workdir`` at a free loopback port; yields its URL."""
    from dashboard.cli import streamlit_command

    port = free_port()
    with (log_dir / "streamlit.log").open("w") as log:
        proc = subprocess.Popen(streamlit_command(workdir, port, "127.0.0.1"),
                                env=dict(os.environ, ATELIER_WORKDIR=str(workdir)),
                                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60)
            yield f"http://127.0.0.1:{port}"
        finally:
            stop(proc)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


@contextlib.contextmanager
def browser(profile: Path):
    """Headless chromium with one page, its DevTools session ready (Page and Runtime enabled)."""
    proc, ws_url = start_chromium(profile)
    tools = None
    try:
        tools = DevTools(ws_url)
        tools.call("Page.enable")
        tools.call("Runtime.enable")
        yield tools
    finally:
        if tools is not None:
            tools.close()
        stop(proc)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dash-browser")
    build_store(workdir, n_artists=12, n_templates=1, n_seeds=2, n_checkpoints=3, with_images=True,
                       error_rate=0.0)
    with serve_dashboard(workdir, tmp_path_factory.mktemp("logs")) as url:
        yield workdir, url


def test_gallery_renders_thumbnails_in_a_real_browser(served, tmp_path):
    workdir, base_url = served
    expected = 3 + 12 * 3  # the baseline row, then 12 artists x 3 checkpoints, one template, seed 0
    with browser(tmp_path / "chromium-profile") as tools:
        tools.call("Page.navigate", url=f"{base_url}/?page=Gallery")
        loaded, deadline = 0, time.monotonic() + 90
        probe = ("Array.from(document.querySelectorAll('[data-testid=\"stMain\"] img'))"
                 ".filter(i => i.complete && i.naturalWidth > 0 && i.src.includes('/media/')).length")
        while time.monotonic() < deadline:
            loaded = tools.evaluate(probe) or 0
            if loaded >= expected:
                break
            time.sleep(0.5)
        time.sleep(0.5)  # let the last image paint before the screenshot
        dom = tools.evaluate("document.documentElement.outerHTML") or ""
        shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "gallery.html").write_text(dom, encoding="utf-8")
        png = base64.b64decode(shot["data"])
        (ARTIFACTS / "gallery.png").write_bytes(png)
        header = tools.evaluate("Array.from(document.querySelectorAll('[data-testid=stMain] h2')).map(h => h.innerText).join(' ')")
        sizes = tools.evaluate(
            "Array.from(document.querySelectorAll('[data-testid=\"stMain\"] img')).map(i => [i.naturalWidth, i.naturalHeight])")
    assert loaded == expected, f"{loaded} of {expected} thumbnails rendered; see {ARTIFACTS / 'gallery.png'}"
    assert "Gallery" in (header or "")
    assert dom.count("<img") >= expected and "/media/" in dom
    assert all(w == 64 and h == 64 for w, h in sizes[:expected]), sizes[:5]  # the real 64 px thumbnails
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert "Traceback" not in dom and "StreamlitAPIException" not in dom


def test_the_world_demo_s_gallery_shows_its_32_px_paintings_large_enough_to_compare(world_workdir, tmp_path):
    """The world demo's images are 32 px: the gallery shows each cell at CELL_PX, so the
    styles of base, ft-forgets and ft-learns can be told apart side by side (the issue's
    screenshot; kept as tests/artifacts/world-gallery.png)."""
    from dashboard.gallery import CELL_PX

    expected = 3 + 12 * 3  # the baseline row, then the first page of 12 world artists x 3 checkpoints
    probe = ("Array.from(document.querySelectorAll('[data-testid=\"stMain\"] img'))"
             ".filter(i => i.complete && i.naturalWidth > 0 && i.src.includes('/media/'))"
             ".map(i => [i.naturalWidth, Math.round(i.getBoundingClientRect().width)])")
    with serve_dashboard(world_workdir, tmp_path) as url, browser(tmp_path / "chromium-profile") as tools:
        tools.call("Page.navigate", url=f"{url}/?page=Gallery")
        sizes, deadline = [], time.monotonic() + 90
        while time.monotonic() < deadline and len(sizes) < expected:
            sizes = tools.evaluate(probe) or []
            time.sleep(0.5)
        time.sleep(0.5)
        shot = tools.call("Page.captureScreenshot", format="png")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "world-gallery.png").write_bytes(base64.b64decode(shot["data"]))
    assert len(sizes) == expected, f"{len(sizes)} of {expected} images rendered; see {ARTIFACTS / 'world-gallery.png'}"
    assert all(natural == 32 and shown == CELL_PX for natural, shown in sizes), sizes[:5]


def test_gallery_detail_opens_in_view_under_the_last_row_clicked(served, tmp_path):
    _, base_url = served
    with browser(tmp_path / "chromium-profile") as tools:
        tools.call("Page.navigate", url=f"{base_url}/?page=Gallery")
        views = "Array.from(document.querySelectorAll('[data-testid=stMain] button')).filter(b => b.innerText.trim() === 'View')"
        state = "(document.querySelector('[data-testid=stApp]') || {dataset: {}}).dataset.testScriptState"
        deadline = time.monotonic() + 90  # a click while the script still runs is dropped
        while time.monotonic() < deadline and not (
                (tools.evaluate(f"{views}.length") or 0) >= 12 * 3 and tools.evaluate(state) == "notRunning"):
            time.sleep(0.5)
        tools.evaluate(f"(() => {{ const b = {views}; b[b.length - 1].scrollIntoView({{block: 'center'}}); "
                       "b[b.length - 1].click(); })()")
        probe = ("(() => { const m = Array.from(document.querySelectorAll('[data-testid=stMarkdownContainer]'))"
                 ".find(e => e.innerText.trim() === 'Generation parameters');"
                 " if (!m) return null; const r = m.getBoundingClientRect();"
                 " return {top: r.top, height: window.innerHeight}; })()")
        where = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (where and tools.evaluate(state) == "notRunning"):
            where = tools.evaluate(probe)
            time.sleep(0.5)
        time.sleep(1.0)
        where = tools.evaluate(probe)
        shot = tools.call("Page.captureScreenshot", format="png")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "gallery-detail.png").write_bytes(base64.b64decode(shot["data"]))
    assert where is not None, "the detail never opened"
    assert 0 <= where["top"] < where["height"], where  # on screen, where the user clicked


PAGE_HEADERS = {"Leaderboard": "Leaderboard", "Compare": "Compare a fine-tune with its base", "Artist": "Artist",
                "Similarity": "Similarity", "SQL": "SQL", "Runs": "Runs"}
# (charts, tables) each page draws at least, once rendered
PAGE_MINIMUM = {"Leaderboard": (2, 2), "Compare": (3, 3), "Artist": (0, 2), "Similarity": (1, 1), "SQL": (0, 0),
                "Runs": (1, 2)}
# images each page shows at least once loaded (Compare: base beside fine-tune for the lost and gained)
PAGE_IMAGES = {"Compare": 2}


def test_every_other_page_renders_without_an_exception_in_the_browser(served, tmp_path):
    _, base_url = served
    seen: dict[str, dict] = {}
    with browser(tmp_path / "chromium-profile") as tools:
        for page, header in PAGE_HEADERS.items():
            tools.call("Page.navigate", url=f"{base_url}/?page={page}")
            state: dict = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                state = tools.evaluate(
                    "({h: Array.from(document.querySelectorAll('[data-testid=stMain] h2')).map(h => h.innerText).join('|'),"
                    " s: (document.querySelector('[data-testid=stApp]') || {dataset: {}}).dataset.testScriptState,"
                    " x: document.querySelectorAll('[data-testid=stException]').length,"
                    " charts: document.querySelectorAll('[data-testid=stVegaLiteChart]').length,"
                    " tables: document.querySelectorAll('[data-testid=stDataFrame]').length,"
                    " images: Array.from(document.querySelectorAll('[data-testid=stMain] img'))"
                    "   .filter(i => i.complete && i.naturalWidth > 0 && i.src.includes('/media/')).length})") or {}
                charts, tables = PAGE_MINIMUM[page]
                if (header in state.get("h", "") and state.get("s") == "notRunning"
                        and state.get("charts", 0) >= charts and state.get("tables", 0) >= tables
                        and state.get("images", 0) >= PAGE_IMAGES.get(page, 0)):
                    break
                time.sleep(0.3)
            seen[page] = state
            time.sleep(0.5)  # charts finish drawing after the script stops
            shot = tools.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / f"{page.lower()}.png").write_bytes(base64.b64decode(shot["data"]))
    for page, header in PAGE_HEADERS.items():
        assert header in seen[page].get("h", ""), (page, seen[page])
        assert seen[page].get("x") == 0, (page, seen[page])
        charts, tables = PAGE_MINIMUM[page]
        assert seen[page]["charts"] >= charts and seen[page]["tables"] >= tables, (page, seen[page])
        assert seen[page]["images"] >= PAGE_IMAGES.get(page, 0), (page, seen[page])


if __name__ == "__main__":  # pragma: no cover - run by hand: python tests/integration/test_dashboard_browser.py
    sys.exit(pytest.main([__file__, "-v"]))


@pytest.fixture(scope="module")
def served_demo(world_workdir, tmp_path_factory):
    """The dashboard on the store `atelier demo` makes (the world: real verdicts to show;
    the random-weight demo's changes are all under min_effect, so it has none)."""
    with serve_dashboard(world_workdir, tmp_path_factory.mktemp("demo-logs")) as url:
        yield world_workdir, url


DEMO_PROBE = ("({s: (document.querySelector('[data-testid=stApp]') || {dataset: {}}).dataset.testScriptState,"
              " x: document.querySelectorAll('[data-testid=stException]').length,"
              " charts: document.querySelectorAll('[data-testid=stVegaLiteChart]').length,"
              " text: (document.querySelector('[data-testid=stMain]') || {innerText: ''}).innerText,"
              " images: Array.from(document.querySelectorAll('[data-testid=stMain] img'))"
              "   .filter(i => i.complete && i.naturalWidth > 0 && i.src.includes('/media/')).length})")
# page -> (charts, images) it must draw on the demo store
DEMO_PAGES = {"Compare": (3, 2), "Gallery": (0, 9), "Similarity": (2, 0)}


def test_the_demo_store_pages_show_their_new_elements_in_a_real_browser(served_demo, tmp_path):
    """Compare: verdict matrix, scatter, forest plot, thumbnails of the lost; Gallery: the grid;
    Similarity: the matrix from embeddings (not the top-k pairs with holes) and the artist map."""
    _, base_url = served_demo
    seen: dict[str, dict] = {}
    with browser(tmp_path / "chromium-profile") as tools:
        for page, (charts, images) in DEMO_PAGES.items():
            tools.call("Page.navigate", url=f"{base_url}/?page={page}")
            state, deadline = {}, time.monotonic() + 120
            while time.monotonic() < deadline:
                state = tools.evaluate(DEMO_PROBE) or {}
                if (state.get("s") == "notRunning" and state.get("charts", 0) >= charts
                        and state.get("images", 0) >= images):
                    break
                time.sleep(0.5)
            time.sleep(0.5)
            shot = tools.call("Page.captureScreenshot", format="png")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            (ARTIFACTS / f"demo-{page.lower()}.png").write_bytes(base64.b64decode(shot["data"]))
            seen[page] = state
    for page, (charts, images) in DEMO_PAGES.items():
        state = seen[page]
        assert state.get("x") == 0 and state.get("charts", 0) >= charts and state.get("images", 0) >= images, (
            page, {k: v for k, v in state.items() if k != "text"})
    assert "Verdict matrix" in seen["Compare"]["text"] and "Lost (" in seen["Compare"]["text"]
    assert "baseline (no artist)" in seen["Gallery"]["text"]
    assert "only the stored nearest pairs are known" not in seen["Similarity"]["text"]
    assert "Map of" in seen["Similarity"]["text"]


@pytest.fixture(scope="module")
def served_world(world_workdir, tmp_path_factory):
    """The dashboard on the world demo's store (issue 18)."""
    with serve_dashboard(world_workdir, tmp_path_factory.mktemp("world-logs")) as url:
        yield world_workdir, url


@pytest.mark.slow
def test_the_world_demo_gallery_shows_its_paintings_in_a_real_browser(served_world, tmp_path):
    """The Gallery of the world store: base and fine-tunes side by side, each row an artist's
    style (kept as tests/artifacts/world-gallery.png, the README's picture of the world)."""
    _, base_url = served_world
    with browser(tmp_path / "chromium-profile") as tools:
        tools.call("Page.navigate", url=f"{base_url}/?page=Gallery")
        state, deadline = {}, time.monotonic() + 120
        while time.monotonic() < deadline:
            state = tools.evaluate(DEMO_PROBE) or {}
            if state.get("s") == "notRunning" and state.get("images", 0) >= 9:
                break
            time.sleep(0.5)
        time.sleep(0.5)
        shot = tools.call("Page.captureScreenshot", format="png")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "world-gallery.png").write_bytes(base64.b64decode(shot["data"]))
    assert state.get("x") == 0 and state.get("images", 0) >= 9, {k: v for k, v in state.items() if k != "text"}
    assert "baseline (no artist)" in state["text"] and "ft-learns" in state["text"]
