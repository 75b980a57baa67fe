"""`atelier report`: a self-contained HTML + Markdown with leaderboard, gains, losses, plots, thumbnails."""

from __future__ import annotations

import base64
import html.parser
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.store import build_store, raw

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    build_store(root, n_artists=40, n_templates=2, n_seeds=3, n_checkpoints=3, with_images=True)
    return root


class Collector(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href", "action", "data", "poster"):
            if name in attrs:
                self.refs.append((tag, name, attrs[name] or ""))
        if tag == "table":
            self._table = f"{attrs.get('class') or 'table'}#{len(self.tables)}"
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_report_is_self_contained_with_leaderboard_gains_losses_plots_gallery(workdir, tmp_path):
    from dashboard.report import write_report

    html_path, md_path = write_report(workdir, tmp_path / "out" / "report.html")
    assert html_path.is_file() and md_path == html_path.with_suffix(".md") and md_path.is_file()
    text = html_path.read_text(encoding="utf-8")
    parser = Collector()
    parser.feed(text)
    # nothing is fetched from anywhere: every src/href is inline data
    external = [r for r in parser.refs if not r[2].startswith("data:")]
    assert external == [], external
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", text, re.I)
    assert "<script" not in text.lower() and "@import" not in text and "url(" not in text

    board = next(t for k, t in parser.tables.items() if k.startswith("leaderboard#"))
    header, rows = board[0], board[1:]
    assert header[0] == "checkpoint" and "artist_similarity" in header
    assert sorted(r[0] for r in rows) == ["base", "ft-1", "ft-2"]
    value = raw(workdir, "SELECT value FROM checkpoint_scores WHERE checkpoint = 'ft-1' AND metric = 'artist_similarity'")[0][0]
    cell = next(r for r in rows if r[0] == "ft-1")[header.index("artist_similarity")]
    assert cell.startswith(f"{value:.4g} [")

    for finetune in ("ft-1", "ft-2"):
        assert f"{finetune} vs base" in text
        gained = raw(workdir, "SELECT a.name FROM comparisons c JOIN artists a USING (artist_id) WHERE c.finetune = ? "
                              "AND c.metric = 'artist_similarity' AND c.verdict = 'gained' ORDER BY c.delta DESC", [finetune])
        lost = raw(workdir, "SELECT a.name FROM comparisons c JOIN artists a USING (artist_id) WHERE c.finetune = ? "
                            "AND c.metric = 'artist_similarity' AND c.verdict = 'lost' ORDER BY c.delta", [finetune])
        assert gained and lost
        assert f"Gained ({len(gained)})" in text and f"Lost ({len(lost)})" in text
    gained_tables = [t for k, t in parser.tables.items() if k.startswith("gained-list")]
    first_gained = raw(workdir, "SELECT a.name FROM comparisons c JOIN artists a USING (artist_id) WHERE c.finetune = 'ft-1' "
                                "AND c.metric = 'artist_similarity' AND c.verdict = 'gained' ORDER BY c.delta DESC")
    assert [r[0] for r in gained_tables[0][1:]] == [r[0] for r in first_gained][:25]

    assert text.count("<svg") >= 1 + 2 * 2  # leaderboard bars + (histogram, scatter) per fine-tune
    thumbs = [r[2] for r in parser.refs if r[0] == "img" and r[2].startswith("data:image/jpeg;base64,")]
    from dashboard import queries as q
    from dashboard.report import strip_artists

    strip = strip_artists(q.Store.at(workdir, use_cache=False), 8)
    lost = raw(workdir, "SELECT artist_id FROM comparisons WHERE verdict = 'lost' AND metric = 'artist_similarity'")
    assert set(strip.artist_id) & {r[0] for r in lost}  # the strip shows what was lost, not the first names
    expected = raw(workdir, """SELECT count(*) FROM images WHERE template = 'portrait' AND seed = 0 AND thumb_path IS NOT NULL
                                AND artist_id IN (SELECT unnest(?))""", [strip.artist_id.tolist()])[0][0]
    assert len(thumbs) == expected >= 8 * 3 - 2  # 8 artists x 3 checkpoints, first template, seed 0
    assert base64.b64decode(thumbs[0].split(",", 1)[1])[:2] == b"\xff\xd8"  # a real JPEG

    md = md_path.read_text(encoding="utf-8")
    assert "| checkpoint |" in md and "### Gained" in md and "### Lost" in md
    assert "base64," not in md and len(md) < 40_000  # links, not the pictures themselves
    plots = re.findall(r"\]\((report_files/plot-\d+\.svg)\)", md)
    assert len(plots) >= 1 + 2 * 2 and all((md_path.parent / p).read_text().startswith("<svg") for p in plots)
    thumbs_md = re.findall(r"\]\(([^)]*thumbs/[^)]*)\)", md)
    assert len(thumbs_md) == len(thumbs) and all((md_path.parent / t).is_file() for t in thumbs_md)
    assert not re.search(r"\]\((?:https?:)?//", md)


def test_report_command_and_errors(workdir, tmp_path):
    from evaluator.cli.main import main

    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", "--workdir", str(workdir), "--out", str(out), "--gallery-artists", "2", "--top", "3"])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".md").is_file() and str(out) in result.output
    parser = Collector()
    parser.feed(out.read_text())
    assert all(len(t) <= 1 + 3 for k, t in parser.tables.items() if k.startswith(("gained-list", "lost-list")))
    missing = CliRunner().invoke(main, ["report", "--workdir", str(tmp_path / "nowhere"), "--out", str(out)])
    assert missing.exit_code != 0 and "does not exist" in missing.output
    from dashboard.report import write_report

    with pytest.raises(ValueError, match="must name an .html file"):
        write_report(workdir, tmp_path / "r.pdf")


@pytest.mark.slow
def test_report_on_a_store_made_by_the_real_pipeline(pipeline_workdir, tmp_path):
    from dashboard.report import write_report

    html_path, md_path = write_report(pipeline_workdir, tmp_path / "pipeline.html")
    parser = Collector()
    parser.feed(html_path.read_text(encoding="utf-8"))
    assert all(r[2].startswith("data:") for r in parser.refs)
    board = next(t for k, t in parser.tables.items() if k.startswith("leaderboard#"))
    checkpoints = {r[0] for r in raw(pipeline_workdir, "SELECT DISTINCT checkpoint FROM checkpoint_scores")}
    assert {row[0] for row in board[1:]} == checkpoints
    for base, finetune in raw(pipeline_workdir, "SELECT DISTINCT base, finetune FROM comparisons"):
        assert f"{finetune} vs {base}" in html_path.read_text(encoding="utf-8")
    assert any(r[0] == "img" for r in parser.refs)  # the gallery strip
    assert "| checkpoint |" in md_path.read_text(encoding="utf-8")
