"""`atelier report`: a self-contained HTML summary (and a Markdown twin) of a workdir.

Attachable to a model card or an e-mail: inline CSS, plots as inline SVG drawn here
(no plotting library, no JavaScript), thumbnails as base64 data URIs, no link to any
external host. The Markdown twin links its pictures instead (plots as SVG files in
``<stem>_files/``, thumbnails where they lie in the workdir), so it stays small. Contents: the leaderboard with confidence intervals, provenance, and for
each fine-tune the artists gained and lost (by the CI verdict), a delta histogram and a
base-vs-fine-tune scatter, then a gallery strip (same template and seed per artist
across checkpoints).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from dashboard import queries as q
from evaluator.errors import InputError, StateError

VERDICT_COLOR = {"gained": "#2e7d32", "kept": "#9e9e9e", "lost": "#c62828", "undecided": "#f9a825"}
PREFERRED_METRICS = ("artist_similarity", "top1", "mrr", "clip_score")


@dataclass(frozen=True)
class ReportConfig:
    # Eight artists x up to seven checkpoints of 192 px JPEGs keeps the file under ~1 MB.
    gallery_artists: int = 8
    # 25 names per list: what a reader scans; the full table is one SQL query away.
    top: int = 25
    # Scatter points: every artist up to this many (gains and losses first).
    scatter_points: int = 3000


# ------------------------------------------------------------------ SVG

def _esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# Markdown punctuation that can start a link, image, emphasis, code, table cell, heading,
# Streamlit directive (`:red[..]`, `:material/x:`, emoji) or LaTeX (`$`); `://` and `@`
# start GFM autolinks; `.` before a letter (www.x, evil.example), a list / rule marker
# (`- `, `+ `, `---`, `===`). Digits' dots (0.123) stay readable.
_MD_SPECIAL = re.compile(r"[\\`*_{}\[\]()#!|~:$^@]|[-+=](?=[\s\-+=]|$)|\.(?!\d)")


def md_text(value) -> str:
    """Stored text (catalog, PNG metadata, prompts, names) made inert inside Markdown.

    HTML-escaped (no tag reaches a renderer that allows HTML), Markdown punctuation
    backslash-escaped (no image, link, emphasis or directive), line breaks made spaces
    (no new block): rendered, it reads exactly as the stored text.
    """
    text = "" if value is None else str(value)
    text = " ".join(text.splitlines())
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), html.escape(text, quote=False))


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, value = [], first
    while value <= hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _x_ticks(ticks: list[float], x, y: float, y_top: float) -> list[str]:
    """Tick marks with labels along a horizontal axis at ``y`` (grid lines up to ``y_top``)."""
    parts = []
    for tick in ticks:
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{y_top:.1f}" y2="{y + 3:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{x(tick):.1f}" y="{y + 13:.1f}" font-size="9" text-anchor="middle">{tick:.3g}</text>')
    return parts


def _y_ticks(ticks: list[float], y, x: float) -> list[str]:
    return [f'<text x="{x - 3:.1f}" y="{y(t) + 3:.1f}" font-size="9" text-anchor="end">{t:.3g}</text>' for t in ticks]


def svg_bars(labels: list[str], values: list[float], lows: list[float], highs: list[float], title: str,
             width: int = 560) -> str:
    """Horizontal bars with CI whiskers."""
    row, left, pad = 24, 140, 20
    height = pad * 2 + row * len(labels) + 34
    finite = [v for v in [*values, *lows, *highs] if v is not None and math.isfinite(v)]
    lo = min(0.0, min(finite, default=0.0))
    hi = max(finite, default=1.0) or 1.0
    scale = (width - left - pad) / (hi - lo if hi > lo else 1.0)
    x = lambda v: left + (v - lo) * scale  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">',
             f'<text x="{left}" y="14" font-size="12" font-weight="bold">{_esc(title)}</text>']
    for i, (label, value, low, high) in enumerate(zip(labels, values, lows, highs, strict=True)):
        y = pad + i * row + 4
        parts.append(f'<text x="{left - 6}" y="{y + 13}" font-size="11" text-anchor="end">{_esc(label)}</text>')
        if value is not None and math.isfinite(value):
            parts.append(f'<rect x="{x(min(0, value)):.1f}" y="{y}" width="{abs(x(value) - x(0)):.1f}" height="{row - 8}" fill="#5c6bc0"/>')
            parts.append(f'<text x="{x(max(value, 0)) + 4:.1f}" y="{y + 12}" font-size="10">{value:.4g}</text>')
        if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
            mid = y + (row - 8) / 2
            parts.append(f'<line x1="{x(low):.1f}" x2="{x(high):.1f}" y1="{mid:.1f}" y2="{mid:.1f}" stroke="black"/>')
    axis_y = pad + row * len(labels) + 6
    parts.extend(_x_ticks(nice_ticks(lo, hi), x, axis_y, pad))
    parts.append("</svg>")
    return "".join(parts)


def svg_histogram(frame: pd.DataFrame, title: str, width: int = 560, height: int = 220) -> str:
    """Stacked histogram from (start, end, verdict, artists) bins."""
    pad_l, pad_b, pad_t = 40, 30, 22
    if frame.empty:
        return f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="40"><text x="4" y="20">{_esc(title)}: no data</text></svg>'
    totals = frame.groupby("start")["artists"].sum()
    top = float(totals.max()) or 1.0
    lo, hi = float(frame["start"].min()), float(frame["end"].max())
    sx = (width - pad_l - 10) / (hi - lo if hi > lo else 1.0)
    sy = (height - pad_b - pad_t) / top
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" aria-label="{_esc(title)}">',
             f'<text x="{pad_l}" y="14" font-size="12" font-weight="bold">{_esc(title)}</text>']
    stacked: dict[float, float] = {}
    for r in frame.sort_values(["start", "verdict"]).itertuples(index=False):
        base = stacked.get(r.start, 0.0)
        h = r.artists * sy
        y = height - pad_b - base - h
        color = VERDICT_COLOR.get(getattr(r, "verdict", ""), "#5c6bc0")
        parts.append(f'<rect x="{pad_l + (r.start - lo) * sx:.1f}" y="{y:.1f}" width="{max((r.end - r.start) * sx - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{r.start:.4g}..{r.end:.4g}: {r.artists}</title></rect>')
        stacked[r.start] = base + h
    if lo < 0 < hi:
        zx = pad_l + (0 - lo) * sx
        parts.append(f'<line x1="{zx:.1f}" x2="{zx:.1f}" y1="{pad_t}" y2="{height - pad_b}" stroke="black" stroke-dasharray="3,3"/>')
    parts.extend(_x_ticks(nice_ticks(lo, hi), lambda v: pad_l + (v - lo) * sx, height - pad_b, height - pad_b))
    counts = [t for t in nice_ticks(0.0, top, 4) if t == int(t)]
    parts.extend(_y_ticks(counts, lambda v: height - pad_b - v * sy, pad_l))
    parts.append("</svg>")
    return "".join(parts)


def svg_scatter(frame: pd.DataFrame, xlabel: str, ylabel: str, title: str, size: int = 300) -> str:
    pad = 36
    if frame.empty:
        return ""
    lo = float(min(frame.base_value.min(), frame.finetune_value.min()))
    hi = float(max(frame.base_value.max(), frame.finetune_value.max()))
    s = (size - 2 * pad) / (hi - lo if hi > lo else 1.0)
    px = lambda v: pad + (v - lo) * s  # noqa: E731
    py = lambda v: size - pad - (v - lo) * s  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" role="img" aria-label="{_esc(title)}">',
             f'<text x="{pad}" y="14" font-size="12" font-weight="bold">{_esc(title)}</text>',
             f'<line x1="{px(lo):.1f}" y1="{py(lo):.1f}" x2="{px(hi):.1f}" y2="{py(hi):.1f}" stroke="black" stroke-dasharray="3,3"/>']
    for r in frame.itertuples(index=False):
        parts.append(f'<circle cx="{px(r.base_value):.1f}" cy="{py(r.finetune_value):.1f}" r="2" '
                     f'fill="{VERDICT_COLOR.get(r.verdict, "#5c6bc0")}" fill-opacity="0.6"/>')
    ticks = nice_ticks(lo, hi, 4)
    parts.extend(_x_ticks(ticks, px, size - pad, pad))
    parts.extend(_y_ticks(ticks, py, pad))
    parts.append(f'<text x="{size / 2}" y="{size - 6}" font-size="10" text-anchor="middle">{_esc(xlabel)}</text>')
    parts.append(f'<text x="10" y="{size / 2}" font-size="10" transform="rotate(-90 10 {size / 2})" text-anchor="middle">{_esc(ylabel)}</text>')
    parts.append("</svg>")
    return "".join(parts)


@dataclass
class MarkdownLinks:
    """Where the Markdown twin's pictures go: plots as SVG files in ``<stem>_files/`` beside it,
    thumbnails linked where they are in the workdir. Links, not 100 KB of base64 per picture."""

    folder: Path  # the folder of the .md file
    assets: str  # the plots' folder name, relative to it
    svgs: dict[str, str] = field(default_factory=dict)

    def plot(self, svg: str) -> str:
        name = f"plot-{len(self.svgs) + 1:02d}.svg"
        self.svgs[name] = svg
        return quote(f"{self.assets}/{name}")

    def image(self, path: Path) -> str:
        try:
            target = os.path.relpath(path, self.folder)
        except ValueError:  # another drive: only an absolute path reaches it
            target = str(path)
        return quote(Path(target).as_posix())

    def write(self) -> None:
        from catalog.atomic import atomic_write_text

        if not self.svgs:
            return
        folder = self.folder / self.assets
        folder.mkdir(exist_ok=True)
        for name, svg in self.svgs.items():
            atomic_write_text(folder / name, svg)
            (folder / name).chmod(0o644)


def _image_data_uri(path: Path) -> str:
    mime = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}.get(
        path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


# ------------------------------------------------------------------ tables

def _html_table(frame: pd.DataFrame, css_class: str = "") -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{_esc(_cell(v))}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False)
    )
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'


def _md_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "_none_\n"
    esc = lambda v: md_text(_cell(v))  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def leaderboard_table(long: pd.DataFrame) -> pd.DataFrame:
    """checkpoint x metric, each cell "value [low, high]", or "NULL (why)"."""
    if long.empty:
        return pd.DataFrame()
    reasons = long["reason"] if "reason" in long else pd.Series(None, index=long.index, dtype=object)
    cells = long.assign(cell=[
        f"NULL ({why})" if pd.isna(v) and pd.notna(why) else
        f"{_cell(v)} [{_cell(lo)}, {_cell(hi)}]" if pd.notna(lo) and pd.notna(hi) else _cell(v)
        for v, lo, hi, why in zip(long.value, long.ci_low, long.ci_high, reasons, strict=True)
    ])
    return cells.pivot(index="checkpoint", columns="metric", values="cell").reset_index().rename_axis(columns=None)


# ------------------------------------------------------------------ report

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}.muted{color:#777;font-size:.85rem}
.warning{background:#fff8e1;border-left:4px solid #f9a825;padding:.5rem .8rem}
.lists{display:flex;gap:2rem;flex-wrap:wrap}.plots{display:flex;gap:1rem;flex-wrap:wrap;align-items:flex-start}
.gained{color:#2e7d32}.lost{color:#c62828}
.strip td{text-align:center;font-size:.75rem}.strip img{width:128px;height:auto;display:block}
"""


def write_report(workdir: str | Path, out: str | Path, config: ReportConfig | None = None) -> tuple[Path, Path]:
    """Write ``out`` (HTML) and ``out`` with suffix ``.md``; return both paths.

    Reads the store read-only (waiting briefly for a writer); writes atomically.
    """
    from catalog.atomic import atomic_write_text

    config = config or ReportConfig()
    store = q.Store.at(workdir, use_cache=False, lock_timeout=30.0)
    if not store.exists():
        raise FileNotFoundError(f"no store at {store.path}; run `atelier demo` or `atelier score` first")
    behind = store.schema_behind()
    if behind is not None:
        raise StateError(f"the store {store.path} has schema version {behind}, older than this atelier's: "
                         f"update it in place (keeps every row) with `atelier migrate --workdir {Path(workdir)}`")
    out = Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"--out must name an .html file but is {out}")
    md_path = out.with_suffix(".md")
    links = MarkdownLinks(md_path.parent.resolve(), f"{md_path.stem}_files")
    with store.session():
        html_parts, md_parts = _report_parts(store, config, links)
    document = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>atelier report</title>"
                f"<style>{CSS}</style></head><body>{''.join(html_parts)}</body></html>\n")
    atomic_write_text(out, document)
    links.write()  # the twin's plots before the twin that links them
    atomic_write_text(md_path, "".join(md_parts))
    for path in (out, md_path):  # a report is for sharing: not the 0600 of a temp file
        path.chmod(0o644)
    return out, md_path


def _report_parts(store: q.Store, config: ReportConfig, links: MarkdownLinks) -> tuple[list[str], list[str]]:
    html_parts: list[str] = []
    md_parts: list[str] = []
    stats = q.overview(store)
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary = (f"{stats['checkpoints']} checkpoints · {stats['artists']:,} artists · {stats['images']:,} images "
               f"({stats['errors']:,} failed) · {stats['runs']} runs")
    html_parts.append(f"<h1>atelier report</h1><p class='muted'>{_esc(store.workdir)} · {now}</p><p>{_esc(summary)}</p>")
    md_parts.append(f"# atelier report\n\n{md_text(store.workdir)} · {now}\n\n{md_text(summary)}\n")

    models = q.models(store)
    random = random_weight_models(models)
    if random:
        warning = (f"Scored with random-weight embedding models ({', '.join(random)}): the numbers below test the "
                   "machinery, not a model. Text-side metrics are meaningless and image-side ones structural at best.")
        html_parts.append(f"<p class='warning'><strong>Random weights.</strong> {_esc(warning)}</p>")
        md_parts.append(f"\n> **Random weights.** {md_text(warning)}\n")
    for model in models:
        long = q.leaderboard(store, model)
        html_parts.append(f"<h2>Leaderboard · <code>{_esc(model)}</code></h2>")
        md_parts.append(f"\n## Leaderboard · {md_text(model)}\n")
        table = leaderboard_table(long)
        html_parts.append(_html_table(table, "leaderboard"))
        md_parts.append(_md_table(table))
        html_parts.append("<p class='muted'>mean over artists [95% interval]</p>")
        metric = next((m for m in PREFERRED_METRICS if m in set(long.metric)), None) or (long.metric.iloc[0] if len(long) else None)
        if metric:
            rows = long[long.metric == metric]
            svg = svg_bars(rows.checkpoint.tolist(), rows.value.tolist(), rows.ci_low.tolist(), rows.ci_high.tolist(),
                           f"{metric} by checkpoint")
            html_parts.append(f"<div class='plots'>{svg}</div>")
            md_parts.append(f"\n![{md_text(metric)} by checkpoint]({links.plot(svg)})\n")

        section_html, section_md = _comparison_sections(store, model, config, links)
        html_parts.append(section_html)
        md_parts.append(section_md)

    prov = q.checkpoint_provenance(store)
    if not prov.empty:
        cols = [c for c in ["checkpoint", "kind", "base", "source", "fingerprint", "dtype", "scheduler", "last_run", "git_rev", "device"] if c in prov]
        html_parts.append("<h2>Provenance</h2>" + _html_table(prov[cols], "provenance"))
        md_parts.append("\n## Provenance\n\n" + _md_table(prov[cols]))

    strip_html, strip_md = _gallery_strip(store, config.gallery_artists, links)
    if strip_html:
        html_parts.append("<h2>Gallery</h2>" + strip_html)
        md_parts.append("\n## Gallery\n\n" + strip_md)
    return html_parts, md_parts


def _comparison_sections(store: q.Store, model: str, config: ReportConfig,
                         links: MarkdownLinks) -> tuple[str, str]:
    """(HTML, Markdown) of each fine-tune vs its base: counts, plots, the gained and lost lists."""
    html_parts: list[str] = []
    md_parts: list[str] = []
    pairs = q.comparison_pairs(store)
    pairs = pairs[pairs.model == model]
    for (base, finetune), group in pairs.groupby(["base", "finetune"], sort=True):
        metrics = set(group.metric)
        cmp_metric = next((m for m in PREFERRED_METRICS if m in metrics), sorted(metrics)[0])
        s = q.comparison_summary(store, base, finetune, model, cmp_metric)
        title = f"{finetune} vs {base}"
        line = (f"{cmp_metric}: {s['gained']:,} gained · {s['lost']:,} lost · {s['kept']:,} kept "
                f"· {s['undecided']:,} undecided (no interval) "
                f"of {s['artists']:,} artists (mean Δ {_cell(s['mean_delta'])})")
        html_parts.append(f"<h2>{_esc(title)}</h2><p>{_esc(line)}</p>")
        md_parts.append(f"\n## {md_text(title)}\n\n{md_text(line)}\n")
        for other in sorted(metrics - {cmp_metric}):
            o = q.comparison_summary(store, base, finetune, model, other)
            counts = (f"{o['gained']:,} gained · {o['lost']:,} lost · {o['kept']:,} kept · "
                      f"{o['undecided']:,} undecided")
            html_parts.append(f"<p class='muted'>{_esc(other)}: {counts}</p>")
            md_parts.append(f"- {md_text(other)}: {counts}\n")
        hist = q.delta_histogram(store, base, finetune, model, cmp_metric)
        points = q.comparison_points(store, base, finetune, model, cmp_metric, limit=config.scatter_points)
        h_svg = svg_histogram(hist, f"Δ {cmp_metric} ({finetune} − {base})")
        s_svg = svg_scatter(points, base, finetune, f"{cmp_metric}: {base} vs {finetune}")
        html_parts.append(f"<div class='plots'>{h_svg}{s_svg}</div>")
        md_parts.append(f"\n![delta histogram]({links.plot(h_svg)})\n")
        if s_svg:
            md_parts.append(f"![scatter]({links.plot(s_svg)})\n")
        cols = ["name", "base_value", "finetune_value", "delta", "ci_low", "ci_high"]
        rising = not q.lower_is_better(cmp_metric)  # biggest change first
        gained = q.comparison_table(store, base, finetune, model, cmp_metric, verdict="gained", order="delta",
                                    descending=rising, limit=config.top)[cols]
        lost = q.comparison_table(store, base, finetune, model, cmp_metric, verdict="lost", order="delta",
                                  descending=not rising, limit=config.top)[cols]
        html_parts.append(
            "<div class='lists'>"
            f"<div><h3 class='gained'>Gained ({s['gained']:,})</h3>{_html_table(gained, 'gained-list')}</div>"
            f"<div><h3 class='lost'>Lost ({s['lost']:,})</h3>{_html_table(lost, 'lost-list')}</div></div>")
        md_parts.append(f"\n### Gained ({s['gained']:,})\n\n{_md_table(gained)}\n### Lost ({s['lost']:,})\n\n{_md_table(lost)}")
    return "".join(html_parts), "".join(md_parts)


def random_weight_models(models: list[str]) -> list[str]:
    """Model keys of random-weight CLIPs (`atelier models random`, tiny test models, `--pretrained random`)."""
    from evaluator.embedding.clip import RANDOM_PRETRAINED

    def is_random(key: str) -> bool:
        stem = key.split("@", 1)[0]
        return stem in ("tiny-clip",) or stem.startswith("random-") or f"/{RANDOM_PRETRAINED}-seed" in key

    return [m for m in models if is_random(m)]


def strip_artists(store: q.Store, n_artists: int) -> pd.DataFrame:
    """The strip's artists: the biggest losses and gains of each comparison first (what a
    reader wants to see), then others in name order to fill the strip."""
    chosen: dict[str, str] = {}
    pairs = q.comparison_pairs(store)
    for (base, finetune, model), group in pairs.groupby(["base", "finetune", "model"], sort=True):
        metric = next((m for m in PREFERRED_METRICS if m in set(group.metric)), sorted(group.metric)[0])
        rising = not q.lower_is_better(metric)
        for verdict, descending in (("lost", not rising), ("gained", rising)):
            rows = q.comparison_table(store, base, finetune, model, metric, verdict=verdict, order="delta",
                                      descending=descending, limit=max(1, n_artists // 2))
            for row in rows.itertuples(index=False):
                chosen.setdefault(row.artist_id, row.name)
    picked = pd.DataFrame({"artist_id": list(chosen), "name": list(chosen.values())}).head(n_artists)
    if len(picked) < n_artists:
        more, _ = q.gallery_artists(store, q.ArtistFilter(), n_artists + len(picked), 0)
        more = more[~more.artist_id.isin(picked.artist_id)]
        picked = pd.concat([picked, more[["artist_id", "name"]]]).head(n_artists)
    return picked.reset_index(drop=True)


def _gallery_strip(store: q.Store, n_artists: int, links: MarkdownLinks) -> tuple[str, str]:
    """Thumbnails: the lost and gained artists x every checkpoint, first template, first seed."""
    if n_artists <= 0:
        return "", ""
    templates, seeds = q.templates_and_seeds(store)
    if not templates or not seeds:
        return "", ""
    template, seed = templates[0], seeds[0]
    checkpoints = q.checkpoint_names(store)
    artists = strip_artists(store, n_artists)
    images = q.gallery_images(store, artists.artist_id.tolist(), template, seed, checkpoints)
    cells = {(r.artist_id, r.checkpoint): r.thumb_path for r in images.itertuples(index=False)}
    head = "<tr><th>artist</th>" + "".join(f"<th>{_esc(c)}</th>" for c in checkpoints) + "</tr>"
    md = ["| artist | " + " | ".join(md_text(c) for c in checkpoints) + " |", "|---|" + "---|" * len(checkpoints)]
    rows = []
    for artist in artists.itertuples(index=False):
        tds, mds = [], []
        for checkpoint in checkpoints:
            path = q.image_file(store.workdir, cells.get((artist.artist_id, checkpoint)))
            if path is None:
                tds.append("<td>—</td>")
                mds.append("—")
                continue
            uri = _image_data_uri(path)
            alt = f"{artist.name} · {checkpoint}"
            tds.append(f"<td><img src='{uri}' alt='{_esc(alt)}'></td>")
            mds.append(f"![{md_text(alt)}]({links.image(path)})")
        rows.append(f"<tr><td>{_esc(artist.name)}</td>{''.join(tds)}</tr>")
        md.append(f"| {md_text(artist.name)} | " + " | ".join(mds) + " |")
    caption = f"<p class='muted'>template <code>{_esc(template)}</code>, seed {seed}</p>"
    return (caption + f"<table class='strip'>{head}{''.join(rows)}</table>",
            f"template {md_text(template)}, seed {md_text(seed)}\n\n" + "\n".join(md) + "\n")
