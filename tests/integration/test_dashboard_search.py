"""The dashboard's text/image search runs `atelier search --format json` in a child process."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "faiss", "diffusers", "transformers")


def test_search_command_line():
    from dashboard.search import SearchQuery, search_command

    query = SearchQuery(Path("/w"), "tiny-clip@1234", "/w/models/clip", text="a stormy sea", k=7)
    line = search_command(query)
    assert line[:4] == [sys.executable, "-m", "evaluator.cli.main", "search"]
    assert line[line.index("--workdir") + 1] == "/w" and line[line.index("--model") + 1] == "/w/models/clip"
    assert line[line.index("--text") + 1] == "a stormy sea" and line[line.index("-k") + 1] == "7"
    assert line[-2:] == ["--format", "json"]
    image_line = search_command(query, Path("/tmp/q.img"))
    assert "--text" not in image_line and image_line[image_line.index("--image") + 1] == "/tmp/q.img"


def test_a_failed_search_is_the_commands_message_and_loads_no_torch(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import dashboard.views
        from dashboard.search import SearchQuery, run_search
        from evaluator.errors import InputError
        try:
            run_search(SearchQuery(Path({str(tmp_path / "missing")!r}), "m", "spec", text="x"))
        except InputError as exc:
            print("ERROR", exc)
        print("HEAVY", sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"ERROR `atelier search` failed: workdir {tmp_path / 'missing'} does not exist" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout


@pytest.mark.slow
def test_a_text_search_on_the_pipeline_store_finds_images_without_torch_in_the_dashboard(pipeline_workdir):
    """The demo store: the Similarity page's search returns hits; this process never loads torch."""
    code = textwrap.dedent(f"""
        import json, sys
        from dashboard import queries as q, views
        store = q.Store.at({str(pipeline_workdir)!r}, use_cache=False)
        model = q.models(store)[0]
        rows, artists = views.similarity_search(store, model, views._default_clip_spec(store, model), text="a stormy sea", k=5)
        print(json.dumps({{"rows": len(rows), "artists": artists.artist_id.tolist(),
                          "sorted": rows.similarity.tolist() == sorted(rows.similarity, reverse=True)}}))
        print("HEAVY", sorted(m for m in {HEAVY!r} if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    found = json.loads(lines[-2])
    assert found["rows"] == 5 and found["sorted"] and found["artists"]
    assert lines[-1] == "HEAVY []", out.stdout
