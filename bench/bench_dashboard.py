"""Time every dashboard page on a 1M-image store, against a 10k-image baseline in the same run.

For each page: (a) the page's queries, uncached, on one read-only connection opened for
the page run, as the app runs them; (b) the whole page under Streamlit's AppTest with the query cache
cleared first (a cold page: script, queries, layout, charts). Median and p95 over
``--repeats`` runs, and the ratio 1M / 10k: a page whose cost grows with the store (a
scan where an index or aggregate should answer) shows a large ratio.

    python bench/bench_dashboard.py                       # builds the stores once under /tmp
    python bench/bench_dashboard.py --big /tmp/bench1m --repeats 9
    python bench/bench_dashboard.py --big /tmp/bench10m --checkpoints 70 --no-apptest   # 10M images

Writes bench/results/dashboard.json. The 1M store has no image files (rows only), so
the gallery's cost of reading thumbnails is not in these figures; it is a few ms per page.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
APP = REPO / "dashboard" / "app.py"
# A person reads one result before running the next query; the SQL page's spare worker
# starts in that time (about 1 s on 2 cores), so back-to-back runs would time its start-up.
THINK_SECONDS = {"SQL": 1.5}
PAGES = ["Leaderboard", "Compare", "Gallery", "Artist", "Similarity", "SQL", "Runs"]


def ensure_store(path: Path, n_artists: int, n_templates: int, n_seeds: int, n_checkpoints: int) -> Path:
    if (path / "atelier.duckdb").is_file():
        return path
    t0 = time.perf_counter()
    from evaluator.testing import synthetic_store as make_store

    spec = make_store.SyntheticStoreSpec(n_artists, n_templates, n_seeds, n_checkpoints, with_images=False)
    make_store.build_store(path, spec)
    print(f"built {path} in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def page_queries(store) -> dict[str, Callable[[], object]]:
    """What each page asks the store on its first render (defaults selected)."""
    from dashboard import queries as q

    model = q.models(store)[0]
    any_filter = q.ArtistFilter()
    pair = q.comparison_pairs(store)
    base, finetune = pair.base.iloc[0], pair.finetune.iloc[0]
    metric = "artist_similarity"
    first_artist = q.artist_search(store, "", limit=1).artist_id.iloc[0]

    def leaderboard():
        q.models(store), q.overview(store), q.leaderboard(store, model)
        q.metric_histogram(store, model, metric), q.checkpoint_provenance(store), q.score_runs(store)

    def compare():
        q.models(store), q.comparison_pairs(store), q.filter_options(store)
        q.comparison_summary(store, base, finetune, model, metric, any_filter)
        q.comparison_points(store, base, finetune, model, metric, any_filter)
        q.delta_histogram(store, base, finetune, model, metric, any_filter)
        q.comparison_table(store, base, finetune, model, metric, any_filter, verdict="gained", limit=50)
        q.comparison_table(store, base, finetune, model, metric, any_filter, verdict="lost", descending=False, limit=50)
        q.comparison_table(store, base, finetune, model, metric, any_filter, limit=50)

    def gallery():
        q.models(store)
        templates, seeds = q.templates_and_seeds(store)
        checkpoints = q.checkpoint_names(store)
        q.filter_options(store)
        q.gallery_artists(store, any_filter, 1, 0)
        artists, _ = q.gallery_artists(store, any_filter, 12, 0)
        images = q.gallery_images(store, artists.artist_id.tolist(), templates[0], seeds[0], checkpoints)
        q.image_detail(store, int(images.image_id.iloc[0]))

    def artist():
        q.models(store), q.artist_search(store, "", limit=200), q.artist_info(store, first_artist)
        q.artist_scores_of(store, first_artist, model), q.artist_comparisons_of(store, first_artist, model)
        q.artist_neighbors_of(store, first_artist, model), q.artist_references(store, first_artist)
        q.artist_image_count(store, first_artist), q.artist_images(store, first_artist, 24, 0)

    def similarity():
        q.models(store), q.score_runs(store), q.neighbor_checkpoints(store, model), q.filter_options(store)
        q.top_similar_pairs(store, base, model, any_filter, limit=200)
        q.artist_search(store, "", limit=100)
        near = q.artist_neighbors_of(store, first_artist, model)
        ids = [first_artist, *near[near.checkpoint == base].neighbor_id]
        q.similarity_matrix(store, base, model, ids), q.artist_names(store, ids)

    def sql():
        q.models(store)
        q.keep_spare_worker()  # as the page does when it renders
        q.run_user_sql(store, q.EXAMPLE_QUERIES["Biggest losses (artist_similarity)"])

    def runs():
        q.models(store), q.runs(store), q.run_progress(store), q.error_images(store, 1, 0), q.error_images(store, 100, 0)

    return {"Leaderboard": leaderboard, "Compare": compare, "Gallery": gallery, "Artist": artist,
            "Similarity": similarity, "SQL": sql, "Runs": runs}


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(p95 * 1000, 1),
            "min_ms": round(ordered[0] * 1000, 1), "n": len(ordered)}


def time_queries(workdir: Path, repeats: int) -> dict[str, dict]:
    from dashboard import queries as q

    store = q.Store.at(workdir, use_cache=False)
    out = {}
    for page, run in page_queries(store).items():
        run()  # warm the OS file cache, as a running dashboard has it
        samples = []
        for _ in range(repeats):
            time.sleep(THINK_SECONDS.get(page, 0.0))
            t0 = time.perf_counter()
            with store.session():  # as the app runs a page: one connection per run
                run()
            samples.append(time.perf_counter() - t0)
        out[page] = _stats(samples)
    return out


def time_apptest(workdir: Path, repeats: int) -> dict[str, dict]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["ATELIER_WORKDIR"] = str(workdir)
    out = {}
    for page in PAGES:
        samples = []
        for i in range(repeats + 1):
            st.cache_data.clear()
            at = AppTest.from_file(str(APP), default_timeout=120)
            at.query_params["page"] = page
            t0 = time.perf_counter()
            at.run()
            elapsed = time.perf_counter() - t0
            if at.exception:
                raise RuntimeError(f"page {page} raised: {at.exception[0].value}")
            if page == "SQL":  # the page's work is the query: press Run
                t0 = time.perf_counter()
                at.button(key="sql-run").click().run()
                elapsed += time.perf_counter() - t0
            if i:  # the first run imports modules: not a page cost
                samples.append(elapsed)
        out[page] = _stats(samples)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=Path, default=Path("/tmp/atelier-bench-1m"),
                        help="workdir of the 1M-image store (built if missing)")
    parser.add_argument("--small", type=Path, default=Path("/tmp/atelier-bench-10k"),
                        help="workdir of the 10k-image baseline store (built if missing)")
    parser.add_argument("--checkpoints", type=int, default=7,
                        help="checkpoints of the big store when it is built: 7 gives 1M images, 70 gives 10M "
                             "(the JSON keeps the key '1M' for the big store; 'stores' gives its real size)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "dashboard.json")
    parser.add_argument("--no-apptest", action="store_true", help="time queries only")
    args = parser.parse_args(argv)
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    sys.path.insert(0, str(REPO))

    big = ensure_store(args.big, 9000, 4, 4, args.checkpoints)  # 9,000 x 4 x 4 x 7 = 1,008,000 images (x 70: 10M)
    small = ensure_store(args.small, 90, 4, 4, 7)  # 10,080
    result: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                "platform": platform.platform()},
                    "stores": {}, "pages": {}}
    import duckdb

    for label, path in (("1M", big), ("10k", small)):
        con = duckdb.connect(str(path / "atelier.duckdb"), read_only=True)
        result["stores"][label] = {"workdir": str(path), "images": con.execute("SELECT count(*) FROM images").fetchone()[0],
                                   "artists": con.execute("SELECT count(*) FROM artists").fetchone()[0],
                                   "mb": round((path / "atelier.duckdb").stat().st_size / 1e6)}
        con.close()
    queries = {label: time_queries(path, args.repeats) for label, path in (("1M", big), ("10k", small))}
    apptest = {} if args.no_apptest else {label: time_apptest(path, max(3, args.repeats // 2))
                                         for label, path in (("1M", big), ("10k", small))}
    for page in queries["1M"]:
        entry = {"queries_1M": queries["1M"][page], "queries_10k": queries["10k"][page],
                 "queries_ratio_1M_vs_10k": round(queries["1M"][page]["median_ms"] / max(queries["10k"][page]["median_ms"], 0.1), 2)}
        if apptest:
            entry.update({"page_1M": apptest["1M"][page], "page_10k": apptest["10k"][page],
                          "page_ratio_1M_vs_10k": round(apptest["1M"][page]["median_ms"] / max(apptest["10k"][page]["median_ms"], 0.1), 2)})
        result["pages"][page] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    header = f"{'page':12s} {'queries 1M med/p95 ms':>22s} {'10k med':>8s} {'ratio':>6s}"
    if apptest:
        header += f" {'page 1M med/p95 ms':>20s} {'10k med':>8s} {'ratio':>6s}"
    print(header)
    for page, e in result["pages"].items():
        line = (f"{page:12s} {e['queries_1M']['median_ms']:>10.0f} / {e['queries_1M']['p95_ms']:<9.0f} "
                f"{e['queries_10k']['median_ms']:>8.0f} {e['queries_ratio_1M_vs_10k']:>6.2f}")
        if apptest:
            line += (f" {e['page_1M']['median_ms']:>9.0f} / {e['page_1M']['p95_ms']:<8.0f} "
                     f"{e['page_10k']['median_ms']:>8.0f} {e['page_ratio_1M_vs_10k']:>6.2f}")
        print(line)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
