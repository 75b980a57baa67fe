"""Run every benchmark and write one report (JSON and Markdown) of ratios and curves.

Each bench script measures its figure against a baseline run in the same process
(a bare diffusers loop, a naive one-image-at-a-time embedder, a per-image identification
loop, exact FAISS search, a 10k-image store) and writes ``bench/results/<name>.json``;
this script runs them in turn, then gathers the results into
``bench/results/report.json`` and ``bench/results/report.md``.

    bench/run_all            # everything (about 30-60 min on 2 CPU cores)
    bench/run_all --quick    # small sizes, a few minutes: checks the scripts still run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

FULL = {
    "generate": [],
    "embed": [],
    "identify": [],
    "faiss": ["--n", "1000000", "--queries", "1000", "--single", "100", "--uniform-n", "100000", "--index-memory", "2GB"],
    "dashboard": ["--no-apptest"],
    "serve": ["--artists", "9000", "--checkpoints", "7", "--clients", "1,50", "--requests", "3000",
              "--time-cap", "12", "--write-every", "2"],
    "scale": [],
    "recipes": [],
    "train": [],
}
QUICK = {
    "generate": ["--quick"],
    "embed": ["--runs", "1", "--arch", "ViT-S-32"],
    "identify": ["--images", "10000"],
    "faiss": ["--n", "50000", "--dim", "128"],
    "dashboard": ["--no-apptest", "--repeats", "2"],
    "serve": ["--artists", "200", "--checkpoints", "2", "--clients", "4", "--requests", "200", "--time-cap", "3",
              "--write-every", "0"],
    "scale": ["--sizes", "1000,5000", "--artists", "500,2000", "--identify-images", "10000", "--repeats", "1"],
    "recipes": ["--quick"],
    "train": ["--quick"],
}


def run_benches(plan: dict[str, list[str]], only: set[str]) -> dict[str, dict]:
    status = {}
    for name, args in plan.items():
        if only and name not in only:
            continue
        script = HERE / f"bench_{name}.py"
        out = RESULTS / f"{name}.json"
        cmd = [sys.executable, str(script), *args]
        if name in {"dashboard", "scale"}:
            cmd += ["--out", str(out)]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=HERE.parent)
        status[name] = {"returncode": proc.returncode, "seconds": round(time.perf_counter() - t0, 1),
                        "command": " ".join(["python", *cmd[1:]]).replace(str(HERE.parent) + "/", "")}
    return status


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def summarize() -> list[dict]:
    """One row per headline figure: what, value, baseline, ratio, target."""
    rows = []
    gen = _load("generate")
    if gen:
        ratio = gen.get("ratio_runner_over_bare_median")
        rows.append({"figure": "generation: runner / bare diffusers loop (time, equal batch)",
                     "ratio": ratio, "target": "<= 1.03", "detail": f"without PNG/thumbnail writing: {gen.get('ratio_runner_over_bare_without_saving_median')}"})
    emb = _load("embed")
    if emb:
        runs = emb.get("runs", [])
        rows.append({"figure": f"embedding: atelier / naive loop (throughput, {emb.get('model')}, worst of {len(runs)} runs)",
                     "ratio": emb.get("speedup_vs_naive_min"), "target": ">= 1.5",
                     "detail": "; ".join(f"{r.get('pipeline_images_per_s')} vs {r.get('naive_images_per_s')} img/s" for r in runs)})
        rows.append({"figure": "embedding: % of the model alone on pre-decoded tensors (min-max over runs)",
                     "ratio": f"{emb.get('pct_of_ceiling_min')}-{emb.get('pct_of_ceiling_max')}%", "target": ">= 90%",
                     "detail": f"CPU bound on {emb.get('cores')} cores: {emb.get('cpu_bound_pct_max')}% of the ceiling; "
                               f"the pipeline reached at least {emb.get('pct_of_cpu_bound_min')}% of that bound"})
    ide = _load("identify")
    if ide:
        rows.append({"figure": f"identification: {ide.get('images')} images x {ide.get('artists')} artists, batched / naive",
                     "ratio": ide.get("speedup"), "target": "seconds on a laptop CPU",
                     "detail": f"batched {ide.get('batched_seconds')} s, {ide.get('precision')} matmul with a float64 recheck"})
        if "kinds_ratio" in ide:
            rows.append({"figure": f"identification: {ide.get('images')} images x {ide.get('kind_artists'):,} artists "
                                   f"(kinds catalog) / x {ide.get('artists'):,} as before (time)",
                         "ratio": ide["kinds_ratio"], "target": "<= 3",
                         "detail": f"{ide.get('kinds_artist_images_seconds')} s vs {ide.get('kinds_baseline_seconds')} s "
                                   f"(float32 ranks, as before); over today's code at {ide.get('artists'):,}: "
                                   f"{ide.get('kinds_now_ratio')} ({ide.get('kinds_now_seconds')} s; the class-count ratio "
                                   f"is {ide.get('kinds_class_ratio')}); images spread over both kinds: "
                                   f"{ide.get('kinds_mixed_ratio')}"})
    fai = _load("faiss")
    if fai and "speedup_single" in fai:  # bench_faiss.py: the index atelier builds at --n, held-out queries
        detail = (f"held-out recall@10 {fai['recall_at_10']}, nprobe {fai.get('nprobe')}, built in {fai['build_seconds']} s, "
                  f"{fai['bytes']:,} bytes; exact {fai.get('exact_ms_per_query_single')} / {fai.get('exact_ms_per_query_batch')} ms a query")
        for mode in ("single", "batch"):
            rows.append({"figure": f"FAISS at {fai['n']:,} x {fai['dim']}, clustered: {fai['kind']} / exact ({mode} queries)",
                         "ratio": fai[f"speedup_{mode}"], "target": ">= 50x at recall@10 >= 0.95", "detail": detail})
        bud = fai.get("index_memory")
        if bud and "speedup_single" in bud:  # --index-memory: atelier's choice under the budget
            rows.append({"figure": f"FAISS at {fai['n']:,} x {fai['dim']} under --index-memory {bud.get('memory_budget')}: "
                                   f"{bud['kind']} / exact (single, batch queries)",
                         "ratio": f"{bud['speedup_single']} / {bud['speedup_batch']}", "target": ">= 50x at recall@10 >= 0.95",
                         "detail": f"held-out recall@10 {bud['recall_at_10']}, nprobe {bud.get('nprobe')}"
                                   + (f", re-ranking factor {bud['refine_factor']}" if bud.get("refine_factor") else "")
                                   + ", built in "
                                   f"{bud['build_seconds']} s, {bud.get('bytes') or 0:,} bytes resident (estimated)"})
        uni = fai.get("uniform")
        if uni:
            rows.append({"figure": f"FAISS uniform worst case at {uni['n']:,}: {uni['kind']} / exact (single queries)",
                         "ratio": uni["speedup_single"], "target": "none: no structure to exploit",
                         "detail": f"recall@10 {uni['recall_at_10']}; {uni.get('reason') or ''}"})
    rows += _serve_rows(_load("serve"))
    dash = _load("dashboard")
    if dash:
        for page, figures in dash.get("pages", {}).items():
            rows.append({"figure": f"dashboard {page}: 1M-image store / 10k store (query time)",
                         "ratio": figures.get("queries_ratio_1M_vs_10k"), "target": "< 1 s at 1M",
                         "detail": f"{figures.get('queries_1M', {}).get('median_ms')} ms median at 1M"})
    return rows


def _serve_rows(serve: dict | None) -> list[dict]:
    """p99 and throughput of each endpoint at the largest client count, then under a writer."""
    if not serve or "current" not in serve.get("variants", {}):
        return []
    current, clients = serve["variants"]["current"], max(serve["clients"])
    images = serve["artists"] * 16 * serve["checkpoints"]
    rows = []
    for label, figures in (("", current), (" under a writer", current.get("under_writer", {}))):
        for key, run in figures.items():
            if not key.endswith(f"@{clients}") or not isinstance(run, dict):
                continue
            endpoint = key.split("@")[0]
            rows.append({"figure": f"API {endpoint}{label}, {clients} clients, {images:,} images (p99 ms)",
                         "ratio": run.get("p99_ms"), "target": "< 50 ms" if endpoint.startswith("search") else "< 100 ms",
                         "detail": f"{run.get('req_per_s')} req/s, p50 {run.get('p50_ms')} ms, {run.get('errors')} errors"})
    return rows


def write_report(status: dict, full: bool = False) -> tuple[Path, Path]:
    report = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": status,
        "headline": summarize(),
        "results": {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))
                    if p.stem not in {"report"}},
    }
    json_path = RESULTS / "report.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")

    lines = ["# atelier benchmark report", "",
             f"Machine: {report['machine']['cpus']} CPUs, Python {report['machine']['python']}, "
             f"{report['machine']['platform']}. Written {report['written_at']}.", "",
             "| figure | ratio | target | detail |", "| --- | --- | --- | --- |"]
    for row in report["headline"]:
        lines.append(f"| {row['figure']} | {row['ratio']} | {row['target']} | {row['detail']} |")
    scale = report["results"].get("scale")
    if scale:
        lines += ["", "## Scale curves (per-item time relative to the smallest size)", ""]
        for stage, curve in scale.get("pipeline", {}).items():
            cells = ", ".join(f"{n}: {s} s (x{curve['ratio_per_item_vs_smallest'][n]})" for n, s in curve["seconds"].items())
            lines.append(f"- {stage}: {cells}")
        for page, curve in scale.get("dashboard", {}).items():
            cells = ", ".join(f"{n}: {ms} ms" for n, ms in curve["median_ms"].items())
            lines.append(f"- dashboard {page}: {cells}")
        ident = scale.get("identification")
        if ident:
            cells = ", ".join(f"{a} artists: {v['seconds']} s" for a, v in ident["by_artists"].items())
            lines.append(f"- identification of {ident['images']:,} images: {cells}")
    lines += ["", "## Commands", ""]
    for st in status.values():
        lines.append(f"- `{st['command']}` (exit {st['returncode']}, {st['seconds']} s)")
    md_path = RESULTS / "report.md"
    md_path.write_text("\n".join(lines) + "\n")
    if status and full:  # a full run's report is the committed one (bench/report.md)
        (HERE / "report.md").write_text(md_path.read_text())
    return json_path, md_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: check the scripts run")
    parser.add_argument("--only", default="", help="comma list of bench names (generate,embed,identify,faiss,dashboard,serve,scale,recipes,train)")
    parser.add_argument("--report-only", action="store_true", help="only gather existing results")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    only = {s for s in args.only.split(",") if s}
    if args.report_only:  # keep the commands of the last full run
        previous = RESULTS / "report.json"
        status = json.loads(previous.read_text()).get("runs", {}) if previous.is_file() else {}
    else:
        status = run_benches(QUICK if args.quick else FULL, only)
    json_path, md_path = write_report(status, full=not (args.quick or only))
    print(f"\nreport: {json_path} and {md_path}")
    print(md_path.read_text())
    return 1 if any(s["returncode"] for s in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
