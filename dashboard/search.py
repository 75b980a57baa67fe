"""Text and image search for the dashboard, run by `atelier search` in a child process.

Embedding a query needs the CLIP model (torch, open_clip) and the FAISS index; loading
them into the Streamlit process would pin gigabytes in every dashboard for one search.
So a search runs ``python -m evaluator.cli.main search --format json`` and reads its
JSON: this module imports neither torch nor the evaluator's embedding code. Reads the
workdir's index and store through that command; writes only a temporary query image.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from evaluator.errors import InputError, StateError

# A cold start loads open_clip and the model: seconds on a laptop, a minute on a busy CI box.
SEARCH_TIMEOUT = 600.0


@dataclass(frozen=True)
class SearchQuery:
    """A text, or an image's bytes, to search the index of ``model`` with the CLIP ``spec``."""

    workdir: Path
    model: str  # the store's model key: whose index and scores the page shows
    spec: str  # what `atelier search --model` loads (a folder, hf-hub:<id>, ...)
    text: str = ""
    image_bytes: bytes | None = None
    k: int = 48
    image_id: int | None = None  # an image already in the index ("more like this")


def search_command(query: SearchQuery, image_path: Path | None = None) -> list[str]:
    """The `atelier search` command line of a query (the image already written to a file)."""
    if query.image_id is not None:
        what = ["--image-id", str(query.image_id)]
    elif image_path is not None:
        what = ["--image", str(image_path)]
    else:
        what = ["--text", query.text]
    return [sys.executable, "-m", "evaluator.cli.main", "search", "--workdir", str(query.workdir),
            "--model", query.spec, *what, "-k", str(query.k), "--format", "json"]


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_search(query: SearchQuery) -> dict:
    """The JSON `atelier search` prints: {"model", "index", "images": [{image_id, similarity, ...}]}."""
    with tempfile.TemporaryDirectory(prefix="atelier-search-") as folder:
        image_path = None
        if query.image_bytes is not None:
            image_path = Path(folder) / "query.img"
            image_path.write_bytes(query.image_bytes)
        try:
            done = subprocess.run(search_command(query, image_path), capture_output=True, text=True,
                                  timeout=SEARCH_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as exc:
            raise StateError(f"`atelier search` took longer than {SEARCH_TIMEOUT:g} s and was stopped") from exc
    if done.returncode != 0:
        reason = _last_line(done.stderr).removeprefix("Error: ") or f"exit status {done.returncode}"
        raise InputError(f"`atelier search` failed: {reason}")
    try:
        result = json.loads(_last_line(done.stdout))
    except json.JSONDecodeError as exc:
        raise StateError(f"`atelier search` printed no JSON result: {_last_line(done.stdout)[:200]!r}") from exc
    if result.get("model") != query.model:
        raise InputError(
            f"the CLIP model {query.spec!r} embeds for {result.get('model')!r}, but the scores shown are of "
            f"{query.model!r}: give the model the scores were made with"
        )
    return result
