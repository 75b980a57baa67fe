"""Helpers of the hardening tests: a small workdir on tiny models, CLI subprocesses, and
the invariants a store and a workdir must keep after crashes, races and bad inputs.

Everything is built locally from seeded random weights (evaluator.testing.tiny,
evaluator.testing.tiny_clip); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Four artists x (style + the null baseline) x 2 seeds x 2 checkpoints = 20 units:
# enough for comparisons, neighbours and a bootstrap over seeds, seconds to generate.
ARTISTS = [
    ("claude-monet", "Claude Monet", "yes"),
    ("pablo-picasso", "Pablo Picasso", "yes"),
    ("katsushika-hokusai", "Katsushika Hokusai", "no"),
    ("frida-kahlo", "Frida Kahlo", "no"),
]
SEEDS = (0, 1)
CHECKPOINTS = ("base", "ft")

# Primary keys of every store table (the contract in evaluator/store.py); each must
# hold count(*) = count(DISTINCT key) after any crash or race.
TABLE_KEYS: dict[str, list[str]] = {
    "artists": ["artist_id"],
    "templates": ["name"],
    "checkpoints": ["name"],
    "runs": ["run_id"],
    "images": ["image_id"],
    "image_scores": ["image_id", "model", "metric"],
    "artist_scores": ["checkpoint", "artist_id", "model", "metric"],
    "checkpoint_scores": ["checkpoint", "model", "metric"],
    "artist_neighbors": ["checkpoint", "model", "artist_id", "rank"],
    "comparisons": ["base", "finetune", "artist_id", "model", "metric"],
    "reference_images": ["artist_id", "image_id"],
    "reference_prototypes": ["artist_id", "model"],
    "embedding_errors": ["image_id", "model"],
    "score_state": ["model"],
    "schema_migrations": ["version"],
    # atelier train (migration 4) and atelier curate (migration 5)
    "training_runs": ["run"],
    "training_split": ["run", "sha256"],
    "training_steps": ["run", "step"],
    "training_images": ["run", "step", "image_id"],
    "training_metrics": ["run", "step", "model", "metric"],
    "training_memorization": ["run", "step", "model", "image_id"],
    "curation": ["sha256"],
    "curation_files": ["source", "path"],
}

# Columns that legitimately differ between a crashed-and-resumed run and a clean one:
# ids and clocks of runs, timings, and the digest of the run records.
VOLATILE = {
    "images": {"run_id", "created_at", "seconds"},
    "checkpoints": {"added_at"},
    "score_state": {"fingerprint", "run_id", "updated_at"},
    "schema_migrations": {"applied_at"},
    "embedding_errors": {"run_id"},
}
# Tables compared row for row with a clean run (runs differ by design: a resumed run
# leaves more run records; they are checked for duplicates and status instead).
COMPARED = [t for t in TABLE_KEYS if t != "runs"]


def env_for_subprocess(**extra: str) -> dict[str, str]:
    """One torch thread, the repo importable, no hub access."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(extra)
    return env


def atelier_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "evaluator.cli.main", *args]


def run_atelier(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(atelier_cmd(*args), env=env_for_subprocess(), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, **kw)


# ------------------------------------------------------------------ models and workdirs


@dataclass(frozen=True)
class Models:
    base: Path  # tiny SD 1.x diffusers folder
    lora: Path  # a LoRA of it (the fine-tune)
    clip: Path  # tiny open_clip folder
    root: Path


_MODELS: dict[str, Models] = {}


def tiny_models(tmp_path_factory) -> Models:
    """Build the tiny models once per session."""
    if "m" not in _MODELS:
        from evaluator.testing.tiny import build_tiny_lora, build_tiny_pipeline
        from evaluator.testing.tiny_clip import build_tiny_clip

        root = tmp_path_factory.mktemp("hardening-models")
        base = build_tiny_pipeline(root / "base", kind="sd1", seed=0)
        lora = build_tiny_lora(base, root / "lora.safetensors", seed=1)
        clip = build_tiny_clip(root / "clip", seed=0)
        _MODELS["m"] = Models(Path(base), Path(lora), Path(clip), root)
    return _MODELS["m"]


def write_catalog(path: Path, artists=ARTISTS, notes: dict[str, str] | None = None) -> Path:
    from catalog.model import Artist
    from catalog.model import write_catalog as _write

    notes = notes or {}
    _write([Artist(artist_id=a, name=n, recognized_sdxl=r, recognized_sd1=r, notes=notes.get(a, ""))
            for a, n, r in artists], path)
    return path


def checkpoints_toml(models: Models) -> str:
    return textwrap.dedent(f"""\
        [[checkpoint]]
        name = "base"
        source = "{models.base.as_posix()}"

        [[checkpoint]]
        name = "ft"
        source = "{models.base.as_posix()}"
        base = "base"
        lora = [{{ path = "{models.lora.as_posix()}", scale = 1.0 }}]
        """)


def prepare_workdir(root: Path, models: Models, seeds=SEEDS, checkpoints=CHECKPOINTS) -> list:
    """A workdir with styles.csv, checkpoints.toml and plan.parquet; returns the units."""
    from catalog.model import load_catalog
    from catalog.plan import make_plan, write_plan
    from catalog.templates import load_templates

    root.mkdir(parents=True, exist_ok=True)
    catalog = write_catalog(root / "styles.csv")
    (root / "checkpoints.toml").write_text(checkpoints_toml(models))
    units = make_plan(load_catalog(catalog), load_templates(), ["style", "null"], seeds=list(seeds),
                      checkpoints=list(checkpoints), width=64, height=64, steps=3, guidance=5.0)
    write_plan(units, root / "plan.parquet")
    return units


def generate_args(root: Path, batch_size: int = 1) -> list[str]:
    # batch size 1: each image is computed alone, so a resumed run's images are the
    # bit-identical twins of a clean run's whatever the kills did to the batches.
    return ["generate", "--plan", str(root / "plan.parquet"), "--checkpoints", str(root / "checkpoints.toml"),
            "-w", str(root), "--batch-size", str(batch_size), "--no-progress", "--threads", "1"]


def score_args(root: Path, models: Models, *extra: str) -> list[str]:
    return ["score", "-w", str(root), "--model", str(models.clip), "--catalog", str(root / "styles.csv"),
            "--bootstrap", "50", "--batch-size", "1", "--num-workers", "0", "-q", *extra]


# Embedding / scoring through the library with small part files, so a kill can land
# between parts (the CLI's 4096-image parts would make a tiny run all-or-nothing).
EMBED_SCRIPT = textwrap.dedent("""
    import sys
    from evaluator.embedding.embed import embed_images, load_clip
    from evaluator.workspace.manifest import read_manifests
    from evaluator.workspace.workdir import workdir_lock
    from evaluator.workspace.workdir import Workdir
    wd = Workdir.at(sys.argv[1], create=False)
    clip = load_clip(sys.argv[2])
    frame = read_manifests(wd.manifests)
    frame = frame[frame["error"].isna() & frame["path"].notna()]
    with workdir_lock(wd):
        r = embed_images(wd, clip, frame[["image_id", "path"]], batch_size=1, num_workers=0, part_size=2, progress=False)
    print("EMBED", r.n_done, r.n_skipped, r.n_failed)
""")

SCORE_SCRIPT = textwrap.dedent("""
    import sys
    from evaluator.scoring.run import ScoreConfig, score
    s = score(sys.argv[1], ScoreConfig(model=sys.argv[2], catalog_path=sys.argv[3], bootstrap=50, batch_size=1,
              num_workers=0, part_size=2, progress=False), echo=print)
    print("DONE", s.noop, s.n_scored)
""")


# Runs one of the commands above and SIGKILLs itself at an exact moment chosen by the
# test (argv[1]): "replace:N" before the N-th os.replace (a temporary file written, not
# yet renamed: the worst moment for catalog.atomic), "upsert:N" after the N-th
# upsert_df of the store transaction (mid-transaction), "commit:1" right after COMMIT
# (before the connection is closed and the WAL checkpointed), "-" never. Real files,
# real DuckDB, a real SIGKILL: only the moment is chosen.
KILL_WRAPPER = textwrap.dedent("""
    import contextlib, os, signal, sys
    spec, target, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if spec != "-":
        what, n = spec.split(":")
        n, seen = int(n), [0]

        def hit():
            seen[0] += 1
            if seen[0] >= n:
                os.kill(os.getpid(), signal.SIGKILL)

        if what == "replace":
            real_replace = os.replace

            def replace(src, dst, *a, **k):
                hit()
                return real_replace(src, dst, *a, **k)

            os.replace = replace
        elif what in ("upsert", "commit"):
            import evaluator.workspace.store as store
            if what == "upsert":
                real_upsert = store.upsert_df

                def upsert(*a, **k):
                    out = real_upsert(*a, **k)
                    hit()
                    return out

                store.upsert_df = upsert
            else:
                real_tx = store.transaction

                @contextlib.contextmanager
                def tx(con):
                    with real_tx(con):
                        yield con
                    hit()

                store.transaction = tx
    if target == "cli":
        sys.argv = ["atelier", *args]
        from evaluator.cli.main import main
        main()
    else:
        sys.argv = ["-c", *args]
        exec({"embed": EMBED, "score": SCORE}[target])
""")


def embed_cmd(root: Path, models: Models, kill: str = "-") -> list[str]:
    return [sys.executable, "-c", _wrapper(), kill, "embed", str(root), str(models.clip)]


def score_cmd(root: Path, models: Models, kill: str = "-") -> list[str]:
    return [sys.executable, "-c", _wrapper(), kill, "score", str(root), str(models.clip), str(root / "styles.csv")]


def cli_cmd(*args: str, kill: str = "-") -> list[str]:
    return [sys.executable, "-c", _wrapper(), kill, "cli", *args]


def _wrapper() -> str:
    return f"EMBED = {EMBED_SCRIPT!r}\nSCORE = {SCORE_SCRIPT!r}\n" + KILL_WRAPPER


def copy_workdir(src: Path, dst: Path, parts: tuple[str, ...]) -> Path:
    """Copy the named top-level entries of a workdir (images, manifests, ...)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in parts:
        source = src / name
        if source.is_dir():
            shutil.copytree(source, dst / name)
        elif source.is_file():
            shutil.copy2(source, dst / name)
    return dst


# ------------------------------------------------------------------ kills


def run_to_end(cmd: list[str], timeout: float = 300) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env_for_subprocess(), cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd[3:6]} failed:\n{done.stdout}\n{done.stderr}"
    return time.perf_counter() - t0, done


def kill_at(make_cmd, rng, clean_seconds: float, progress, modes: list[tuple[str, int]]) -> tuple[str, bool]:
    """Run the command and SIGKILL it at a moment drawn from ``rng`` (a random.Random)
    among ``modes`` ((name, top): ``time``, ``progress`` +1..top, or a hook
    ``replace|upsert|commit`` at call 1..top). Returns (what was chosen and what
    happened, killed?)."""
    mode, top = modes[rng.randrange(len(modes))]
    delay = rng.uniform(0.0, 0.7 * clean_seconds)
    step = rng.randint(1, top)
    jitter = rng.uniform(0.0, 0.03)
    kill = f"{mode}:{step}" if mode in ("replace", "upsert", "commit") else "-"
    start_count = progress()
    proc = subprocess.Popen(make_cmd(kill), env=env_for_subprocess(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    hard_stop = t0 + 4 * clean_seconds + 60
    while proc.poll() is None and time.monotonic() < hard_stop:
        if mode == "time" and time.monotonic() - t0 >= delay:
            break
        if mode == "progress" and progress() >= start_count + step:
            time.sleep(jitter)
            break
        time.sleep(0.005)
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)
    assert proc.returncode in (0, -9), f"{mode}: the run failed (rc {proc.returncode}) instead of dying or finishing"
    label = {"time": f"time {delay:.2f}s", "progress": f"progress +{step}"}.get(mode, kill)
    killed = proc.returncode == -9
    return f"{label}: {'killed' if killed else 'ended'}", killed


def crash_kills() -> int:
    """Kills per stage: 6 by default, ``ATELIER_CRASH_SEEDS`` for a longer soak."""
    raw = os.environ.get("ATELIER_CRASH_SEEDS", "")
    return int(raw) if raw.strip() else 6


# ------------------------------------------------------------------ file invariants


def temporaries(root: Path) -> list[Path]:
    """Files catalog.atomic leaves behind when killed mid-write (``.<name>.<rand>.tmp``)."""
    return sorted(p for p in root.rglob(".*.tmp") if p.is_file())


def check_images(root: Path, units, complete: bool = True) -> dict[str, str]:
    """Every PNG under its final name decodes fully; with ``complete``, every unit has
    exactly one image and one thumbnail and nothing else is there. Returns
    relpath -> sha256 of the decoded pixels."""
    from PIL import Image

    images = root / "images"
    found = sorted(p for p in images.rglob("*") if p.is_file() and not p.name.startswith(".")) if images.is_dir() else []
    pixels: dict[str, str] = {}
    for path in found:
        assert path.suffix == ".png", f"unexpected file {path}"
        with Image.open(path) as image:
            image.load()  # raises on a truncated file
            pixels[path.relative_to(root).as_posix()] = hashlib.sha256(image.tobytes()).hexdigest()
    if complete:
        wanted = sorted(f"images/{u.relpath()}" for u in units)
        assert sorted(pixels) == wanted, "every unit's image exactly once"
        thumbs = sorted(p.relative_to(root).as_posix() for p in (root / "thumbs").rglob("*") if p.is_file()
                        and not p.name.startswith("."))
        assert thumbs == sorted(f"thumbs/{u.relpath('.jpg')}" for u in units)
    return pixels


# ------------------------------------------------------------------ store invariants


def connect_ro(store: Path):
    import duckdb

    return duckdb.connect(str(store), read_only=True)


def check_store(store: Path, expect_images: int | None = None) -> dict[str, int]:
    """No duplicate key in any table, no orphan row, every path inside the workdir.

    Returns the row count per table.
    """
    con = connect_ro(store)
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        counts = {}
        for table, key in TABLE_KEYS.items():
            assert table in tables, f"table {table} missing"
            cols = ", ".join(key)
            total, distinct = con.execute(f"SELECT count(*), count(DISTINCT ({cols})) FROM {table}").fetchone()
            assert total == distinct, f"{table}: {total} rows but {distinct} distinct keys ({cols})"
            counts[table] = total
        # declared primary keys are there (a migration that lost one would allow duplicates)
        constrained = {r[0] for r in con.execute(
            "SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'").fetchall()}
        assert set(TABLE_KEYS) <= constrained, set(TABLE_KEYS) - constrained
        orphans = {
            "image_scores": "SELECT count(*) FROM image_scores s WHERE s.image_id NOT IN (SELECT image_id FROM images)",
            "embedding_errors": "SELECT count(*) FROM embedding_errors e WHERE e.image_id NOT IN (SELECT image_id FROM images)",
            "reference_images": "SELECT count(*) FROM reference_images r WHERE r.image_id NOT IN (SELECT image_id FROM images)",
            "artist_scores.checkpoint": "SELECT count(*) FROM artist_scores WHERE checkpoint NOT IN (SELECT name FROM checkpoints)",
            "artist_scores.artist": "SELECT count(*) FROM artist_scores WHERE artist_id NOT IN (SELECT artist_id FROM artists) AND artist_id <> '_baseline'",
            "checkpoint_scores": "SELECT count(*) FROM checkpoint_scores WHERE checkpoint NOT IN (SELECT name FROM checkpoints)",
            "comparisons.base": "SELECT count(*) FROM comparisons WHERE base NOT IN (SELECT name FROM checkpoints) OR finetune NOT IN (SELECT name FROM checkpoints)",
            "comparisons.artist": "SELECT count(*) FROM comparisons WHERE artist_id NOT IN (SELECT artist_id FROM artists) AND artist_id <> '_baseline'",
            "artist_neighbors": "SELECT count(*) FROM artist_neighbors WHERE artist_id NOT IN (SELECT artist_id FROM artists) OR neighbor_id NOT IN (SELECT artist_id FROM artists)",
            "images.run": "SELECT count(*) FROM images WHERE run_id IS NOT NULL AND run_id NOT IN (SELECT run_id FROM runs)",
            "images.checkpoint": "SELECT count(*) FROM images WHERE checkpoint IS NOT NULL AND checkpoint NOT IN (SELECT name FROM checkpoints)",
            "score_state.run": "SELECT count(*) FROM score_state WHERE run_id NOT IN (SELECT run_id FROM runs)",
        }
        for name, sql in orphans.items():
            n = con.execute(sql).fetchone()[0]
            assert n == 0, f"{n} orphan rows: {name}"
        bad_paths = con.execute(
            "SELECT path FROM images WHERE path LIKE '/%' OR path LIKE '%..%' OR thumb_path LIKE '/%' OR thumb_path LIKE '%..%'"
        ).fetchall()
        assert not bad_paths, bad_paths
        if expect_images is not None:
            assert counts["images"] == expect_images
    finally:
        con.close()
    return counts


def table_rows(store: Path, table: str) -> list[tuple]:
    """Rows of a table without its volatile columns, sorted (floats kept as floats)."""
    con = connect_ro(store)
    try:
        cols = [r[0] for r in con.execute(f"DESCRIBE {table}").fetchall() if r[0] not in VOLATILE.get(table, set())]
        quoted = ", ".join(f'"{c}"' for c in cols)
        rows = con.execute(f"SELECT {quoted} FROM {table}").fetchall()
    finally:
        con.close()
    return sorted(rows, key=lambda r: tuple("" if v is None else str(v) if not isinstance(v, float) else f"{v:.6g}" for v in r))


def _close(a, b, tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return math.isclose(a, b, rel_tol=tol, abs_tol=tol)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    return a == b


def assert_same_tables(got: Path, want: Path, tables=COMPARED, tol: float = 1e-6) -> None:
    """Row sets of ``got`` equal those of ``want`` (floats within ``tol``)."""
    for table in tables:
        a, b = table_rows(got, table), table_rows(want, table)
        assert len(a) == len(b), f"{table}: {len(a)} rows, clean run has {len(b)}"
        for x, y in zip(a, b, strict=True):
            assert _close(x, y, tol), f"{table} differs:\n  got  {x}\n  want {y}"
