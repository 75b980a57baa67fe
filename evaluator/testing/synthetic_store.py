"""Build a realistic atelier store without running any model: for tests and the dashboard bench.

The rows follow the schema of ``evaluator/workspace/store.py`` and the conventions of the pipeline
(paths relative to the workdir, ``"; "``-joined multi-valued artist fields, a
``_baseline`` artist for the no-artist ``null`` template, fine-tunes compared with their
base by a CI verdict). Scores are synthetic but structured: each artist has a latent
"known-ness" per checkpoint, so fine-tunes really gain and lose artists and the
leaderboard, comparison and neighbour tables have something to show.

The big tables are made by DuckDB from ``range()`` in SQL, not by Python loops, so the
1M-image bench store (9,000 artists x 4 templates x 4 seeds x 7 checkpoints) builds in
about a minute on two cores. With ``with_images`` every image also gets a real small
PNG (with a ``parameters`` text chunk) and a JPEG thumbnail, for the gallery and the
browser test.

    python -m evaluator.testing.synthetic_store --workdir /tmp/bench1m --artists 9000 --templates 4 \
        --seeds 4 --checkpoints 7 --no-images
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from evaluator.errors import InputError

# Enough first x last names for 9,000+ unique artists; a few real names first so the
# small test stores look like the catalog.
_REAL = [
    ("Claude", "Monet"), ("Vincent", "van Gogh"), ("Frida", "Kahlo"), ("Katsushika", "Hokusai"),
    ("Edvard", "Munch"), ("Wassily", "Kandinsky"), ("Piet", "Mondrian"), ("Henri", "Matisse"),
    ("Gustav", "Klimt"), ("Élisabeth", "Vigée Le Brun"), ("Zdzisław", "Beksiński"),
    ("Alphonse", "Mucha"),
]
_FIRST = [
    "Ada", "Bruno", "Clara", "Dario", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas",
    "Kira", "Luca", "Mara", "Nils", "Olga", "Paul", "Rosa", "Sven", "Tessa", "Umberto",
    "Vera", "Willem", "Xenia", "Yusuf", "Zoë", "Anouk", "Bram", "Chiara", "Dmitri", "Esme",
    "Farid", "Gala", "Hana", "Ivo", "Jun", "Kasia", "Leif", "Mei", "Nadia", "Otto",
    "Pia", "Quentin", "Rafael", "Sofia", "Tomás", "Ulla", "Viktor", "Wen", "Yara", "Zeno",
    "Amélie", "Björn", "Céline", "Dag", "Elif", "Fumiko", "Gunnar", "Hélène", "Ilse", "Jiro",
]
_SYLLABLES = ["ber", "cal", "dor", "fen", "gar", "hol", "kar", "lin", "mor", "nes", "pal", "ros",
              "sten", "tor", "vald", "wick", "zan", "mei", "bach", "ski"]
_MOVEMENTS = ["Impressionism", "Post-Impressionism", "Expressionism", "Cubism", "Surrealism",
              "Art Nouveau", "Ukiyo-e", "Baroque", "Romanticism", "Pop Art", "Minimalism",
              "Abstract Expressionism", "Fantasy art", "Concept art", "Symbolism"]
_MEDIUMS = ["oil painting", "watercolor", "ink", "digital art", "woodblock print", "gouache",
            "charcoal", "acrylic", "photography", "pastel"]
_TAGS = ["landscape", "portrait", "dark", "colorful", "fantasy", "architecture", "nature",
         "surreal", "anime", "abstract", "urban", "flowers", "cats", "sci-fi", "still life",
         "b&w", "high contrast", "pattern"]
_NATIONALITIES = ["French", "Dutch", "Mexican", "Japanese", "Norwegian", "Russian", "Austrian",
                  "Polish", "Czech", "American", "British", "Italian", "German", "Spanish"]
_TEMPLATES = [
    ("style", "artwork by {artist}"),
    ("portrait", "a portrait of a woman, by {artist}"),
    ("landscape", "a landscape with a river, by {artist}"),
    ("still-life", "a still life with fruit, by {artist}"),
    ("city", "a city street at night, by {artist}"),
    ("animal", "a cat sitting on a chair, by {artist}"),
]
_IMAGE_METRICS = ["clip_score", "artist_similarity", "artist_rank", "top1", "top5"]
_ARTIST_METRICS = ["clip_score", "artist_similarity", "artist_rank", "top1", "top5", "mrr",
                   "recognized", "diversity"]
_COMPARED_METRICS = ["artist_similarity", "top1", "clip_score", "mrr"]
BASELINE_ARTIST_ID = "_baseline"
# Explicit column lists: later migrations add columns, and positional inserts would break.
IMAGE_COLUMNS = ("image_id, unit_id, source, checkpoint, artist_id, template, prompt, negative_prompt, seed, "
                 "width, height, steps, guidance, scheduler, path, thumb_path, sha256, seconds, error, run_id, created_at")


def _artist_rows(n_artists: int, rng) -> list[dict]:
    """Deterministic artist rows with unique names and slugs."""
    import unicodedata

    rows, seen = [], set()
    i = 0
    while len(rows) < n_artists:
        if i < len(_REAL):
            first, last = _REAL[i]
        else:
            j = i - len(_REAL)
            first = _FIRST[j % len(_FIRST)]
            k = j // len(_FIRST)
            a, b = _SYLLABLES[k % len(_SYLLABLES)], _SYLLABLES[(k // len(_SYLLABLES)) % len(_SYLLABLES)]
            last = (a + b).capitalize() + ("" if k < len(_SYLLABLES) ** 2 else f" {k // len(_SYLLABLES) ** 2}")
        i += 1
        name = unicodedata.normalize("NFC", f"{first} {last}")
        ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        slug = "-".join("".join(ch if ch.isalnum() else " " for ch in ascii_name.lower()).split())
        if slug in seen:
            continue
        seen.add(slug)
        born = int(rng.integers(1500, 1990))
        died = None if born > 1940 and rng.random() < 0.7 else born + int(rng.integers(30, 90))
        rows.append({
            "artist_id": slug,
            "name": name,
            "aliases": f"{last}, {first}" if rng.random() < 0.3 else None,
            "born": born,
            "died": died,
            "living": died is None,
            "nationality": _NATIONALITIES[int(rng.integers(len(_NATIONALITIES)))],
            "movements": "; ".join(sorted(set(rng.choice(_MOVEMENTS, size=int(rng.integers(1, 3))).tolist()))),
            "mediums": "; ".join(sorted(set(rng.choice(_MEDIUMS, size=int(rng.integers(1, 3))).tolist()))),
            "tags": "; ".join(sorted(set(rng.choice(_TAGS, size=int(rng.integers(0, 4))).tolist()))) or None,
            "recognized_sdxl": str(rng.choice(["yes", "yes", "no", "unsure", ""])),
            "recognized_sd1": str(rng.choice(["yes", "no", "no", "unsure", ""])),
            "sources": "sdxl-style-studies; clip-interrogator",
            "notes": None,
        })
    return rows


def _write_image_files(workdir: Path, params_of_error_free_images: list[tuple]) -> None:
    """A real PNG (with a `parameters` chunk) and a JPEG thumbnail for every listed image."""
    import numpy as np
    from PIL import Image, PngImagePlugin

    from catalog.atomic import atomic_path

    for (path, thumb, prompt, neg, seed, width, height, steps, guidance, scheduler,
         checkpoint, artist_hash, ckpt_hash) in params_of_error_free_images:
        rng = np.random.default_rng(seed * 7919 + artist_hash % 100003 + ckpt_hash % 101)
        base = np.array([artist_hash % 256, (artist_hash // 256) % 256, ckpt_hash % 256], dtype=np.float32)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        pixels = base[None, None, :] * 0.6 + 60 * np.sin((xx[..., None] + seed * 5) / (6 + ckpt_hash % 7))
        pixels += 40 * np.cos(yy[..., None] / (4 + artist_hash % 9)) + rng.normal(0, 12, (height, width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype("uint8"), "RGB")
        info = PngImagePlugin.PngInfo()
        info.add_text(
            "parameters",
            f"{prompt}\nNegative prompt: {neg}\nSteps: {steps}, Sampler: {scheduler}, CFG scale: {guidance}, "
            f"Seed: {seed}, Size: {width}x{height}, Model: {checkpoint}",
        )
        target = workdir / path
        with atomic_path(target) as tmp:
            image.save(tmp, format="PNG", pnginfo=info)
        thumb_image = image.copy()
        thumb_image.thumbnail((192, 192))
        with atomic_path(workdir / thumb) as tmp:
            thumb_image.save(tmp, format="JPEG", quality=85)


@dataclass(frozen=True)
class SyntheticStoreSpec:
    """The size and the knobs of a synthetic store; checked when made.

    ``n_checkpoints`` counts the base: checkpoint 0 is ``base``, the others ``ft-1`` …
    are fine-tunes of it (a mix of LoRA and full fine-tunes), each compared with the base.
    """

    n_artists: int
    n_templates: int
    n_seeds: int
    n_checkpoints: int
    with_images: bool = True
    seed: int = 0
    model: str = "tiny-clip"
    k_neighbors: int = 10
    error_rate: float = 0.005
    n_reference_artists: int | None = None

    def __post_init__(self) -> None:
        for name in ("n_artists", "n_templates", "n_seeds", "n_checkpoints"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1 but is {getattr(self, name)}")
        if self.n_artists < 2:
            raise InputError(f"n_artists must be >= 2 (neighbours need two artists) but is {self.n_artists}")
        if self.n_templates > len(_TEMPLATES):
            raise InputError(f"n_templates must be <= {len(_TEMPLATES)} but is {self.n_templates}")

    @property
    def checkpoint_names(self) -> list[str]:
        return ["base"] + [f"ft-{i}" for i in range(1, self.n_checkpoints)]

    @property
    def neighbors_per_artist(self) -> int:
        return min(self.k_neighbors, self.n_artists - 1)

    @property
    def reference_artists(self) -> int:
        """Artists with reference works: the first 5% (at least two) unless given."""
        if self.n_reference_artists is not None:
            return self.n_reference_artists
        return min(self.n_artists, max(2, self.n_artists // 20))


# ---------------------------------------------------------------------------- small tables (pandas)


def _artists_frame(spec: SyntheticStoreSpec):
    import numpy as np
    import pandas as pd

    artists = pd.DataFrame(_artist_rows(spec.n_artists, np.random.default_rng(spec.seed)))
    artists["idx"] = range(spec.n_artists)
    return artists


def _templates_frame(spec: SyntheticStoreSpec):
    import pandas as pd

    return pd.DataFrame(_TEMPLATES[: spec.n_templates] + [("null", "a painting")], columns=["name", "text"])


def _checkpoints_frame(spec: SyntheticStoreSpec):
    import pandas as pd

    names = spec.checkpoint_names
    return pd.DataFrame({
        "name": names,
        "source": ["stabilityai/stable-diffusion-xl-base-1.0"] + [f"models/{c}.safetensors" for c in names[1:]],
        "kind": ["hub"] + ["lora" if i % 2 else "single_file" for i in range(1, spec.n_checkpoints)],
        "base": [None] + ["base"] * (spec.n_checkpoints - 1),
        "adapters": ["[]"] + [json.dumps([{"path": f"models/{c}.safetensors", "scale": 1.0}]) if i % 2 else "[]"
                              for i, c in enumerate(names[1:], 1)],
        "fingerprint": [hashlib.sha256(f"{c}|{spec.seed}".encode()).hexdigest() for c in names],
        "dtype": "float32",
        "scheduler": "euler",
        "notes": [f"synthetic checkpoint {c}" for c in names],
    })


def _runs_frame(spec: SyntheticStoreSpec):
    """One generate run per checkpoint and one score run, at fixed times (n_done filled later)."""
    import pandas as pd

    versions = json.dumps({"atelier": "0.1.0", "torch": "2.14.1", "diffusers": "0.42.1",
                           "open_clip": "3.3.0", "duckdb": "2.0.1"})
    t0 = pd.Timestamp("2026-11-20 08:00:00")
    common = {"versions": versions, "git_rev": "ce05e1b", "device": "cpu", "dtype": "float32"}
    generate = [
        {"run_id": f"gen-{c}", "kind": "generate", "started_at": t0 + pd.Timedelta(hours=i),
         "finished_at": t0 + pd.Timedelta(hours=i, minutes=50), "status": "done",
         "config": json.dumps({"checkpoint": c, "width": 64, "height": 64, "steps": 4, "guidance": 5.0,
                               "batch_size": 8, "scheduler": "euler"}),
         **common, "timings": json.dumps({"generate": 3000.0}), "n_done": None, "n_skipped": 0,
         "n_failed": None, "host": "bench", "message": None}
        for i, c in enumerate(spec.checkpoint_names)
    ]
    n = spec.n_checkpoints
    score = {"run_id": "score-1", "kind": "score", "started_at": t0 + pd.Timedelta(hours=n),
             "finished_at": t0 + pd.Timedelta(hours=n, minutes=20), "status": "done",
             "config": json.dumps({"model": spec.model, "bootstrap": 1000, "k_neighbors": spec.k_neighbors}),
             **common, "timings": json.dumps({"embed": 600.0, "score": 90.0}), "n_done": None, "n_skipped": 0,
             "n_failed": 0, "host": "bench", "message": None}
    return pd.DataFrame([*generate, score])


def _insert_small_tables(con, spec: SyntheticStoreSpec) -> None:
    """artists, templates, checkpoints, runs; and temp tables a, t, c of them for the SQL below."""
    import pandas as pd

    from evaluator.workspace.store import upsert_df

    artists, templates = _artists_frame(spec), _templates_frame(spec)
    upsert_df(con, "artists", artists.drop(columns=["idx"]), ["artist_id"])
    upsert_df(con, "templates", templates, ["name"])
    upsert_df(con, "checkpoints", _checkpoints_frame(spec), ["name"])
    upsert_df(con, "runs", _runs_frame(spec), ["run_id"])
    con.register("_artists", artists[["artist_id", "name", "idx"]])
    con.register("_templates", templates.iloc[: spec.n_templates].assign(tidx=range(spec.n_templates)))
    con.register("_ckpts", pd.DataFrame({"checkpoint": spec.checkpoint_names, "cidx": range(spec.n_checkpoints)}))
    con.execute("CREATE TEMP TABLE a AS SELECT * FROM _artists")
    con.execute("CREATE TEMP TABLE t AS SELECT * FROM _templates")
    con.execute("CREATE TEMP TABLE c AS SELECT * FROM _ckpts")


# ---------------------------------------------------------------------------- big tables (SQL)


def _create_skill_and_units(con, spec: SyntheticStoreSpec) -> None:
    """Temp tables ``skill`` (latent known-ness per checkpoint x artist) and ``u`` (one row per image)."""
    seed = spec.seed
    # Latent known-ness of an artist by a checkpoint: the base's, plus a per-fine-tune shift
    # (most small, some large either way) so that comparisons have gains and losses.
    con.execute(f"""CREATE TEMP TABLE skill AS
        SELECT c.checkpoint, c.cidx, a.artist_id, a.idx,
               (hash(a.idx, {seed}) % 1000) / 1000.0
               + CASE WHEN c.cidx = 0 THEN 0
                      ELSE ((hash(a.idx, c.cidx, {seed}) % 1000) / 1000.0 - 0.5)
                           * CASE WHEN hash(a.idx, c.cidx, {seed} + 1) % 5 = 0 THEN 1.2 ELSE 0.1 END
                 END AS skill
        FROM a CROSS JOIN c""")
    units = f"""
        SELECT s.checkpoint, s.artist_id, t.name AS template,
               replace(t.text, '{{artist}}', a.name) AS prompt, sd.seed, s.skill,
               left(sha256(concat_ws('|', s.checkpoint, s.artist_id, t.name, sd.seed, {seed})), 16) AS unit_id
        FROM skill s JOIN a USING (artist_id) CROSS JOIN t CROSS JOIN (SELECT range AS seed FROM range({spec.n_seeds})) sd
        UNION ALL
        SELECT c.checkpoint, '{BASELINE_ARTIST_ID}', 'null', 'a painting', sd.seed, 0.0,
               left(sha256(concat_ws('|', c.checkpoint, '{BASELINE_ARTIST_ID}', 'null', sd.seed, {seed})), 16)
        FROM c CROSS JOIN (SELECT range AS seed FROM range({spec.n_seeds})) sd"""
    con.execute(f"""CREATE TEMP TABLE u AS
        SELECT *, (('0x' || unit_id)::UBIGINT >> 1)::BIGINT AS image_id,
               (hash(unit_id) % 100000) / 100000.0 < {spec.error_rate} AS failed
        FROM ({units}) ORDER BY checkpoint, artist_id, template, seed""")


def _insert_generated_images(con) -> None:
    """``images`` rows of every unit; a failed one has an error and no files."""
    con.execute(f"""INSERT INTO images ({IMAGE_COLUMNS})
        SELECT image_id, unit_id, 'generated', checkpoint, artist_id, template, prompt,
               'blurry, lowres', seed, 64, 64, 4, 5.0, 'euler',
               CASE WHEN failed THEN NULL ELSE 'images/' || checkpoint || '/' || artist_id || '/' || template
                    || '-' || seed || '-' || left(unit_id, 8) || '.png' END,
               CASE WHEN failed THEN NULL ELSE 'thumbs/' || checkpoint || '/' || artist_id || '/' || template
                    || '-' || seed || '-' || left(unit_id, 8) || '.jpg' END,
               CASE WHEN failed THEN NULL ELSE sha256(unit_id) END,
               CASE WHEN failed THEN NULL ELSE 0.5 + (hash(unit_id, 1) % 1000) / 1000.0 END,
               CASE WHEN failed THEN 'RuntimeError: NaN latents at step ' || (hash(unit_id) % 4)::VARCHAR END,
               'gen-' || checkpoint,
               TIMESTAMP '2026-11-20 08:00:00' + INTERVAL (hash(unit_id, 2) % 36000) SECOND
        FROM u""")


def _insert_reference_images(con, spec: SyntheticStoreSpec) -> None:
    """Reference works: two imported images of real paintings for each of the first artists."""
    con.execute(f"""CREATE TEMP TABLE refs AS
        SELECT a.artist_id, r.range AS k,
               (('0x' || left(sha256('ref|' || a.artist_id || '|' || r.range), 16))::UBIGINT >> 1)::BIGINT AS image_id
        FROM a CROSS JOIN range(2) r WHERE a.idx < {spec.reference_artists}""")
    con.execute(f"""INSERT INTO images ({IMAGE_COLUMNS})
        SELECT image_id, left(sha256('ref|' || artist_id || '|' || k), 16), 'reference', NULL, artist_id,
               'import', NULL, NULL, -1, 64, 64, 0, 0.0, '',
               'imported/references/' || artist_id || '/ref-' || k || '.png',
               'thumbs/references/' || artist_id || '/ref-' || k || '.jpg',
               sha256(artist_id || k), 0.0, NULL, 'import-refs', TIMESTAMP '2026-11-19 12:00:00'
        FROM refs""")
    con.execute("INSERT INTO reference_images (artist_id, image_id) SELECT artist_id, image_id FROM refs")


def _insert_image_scores(con, spec: SyntheticStoreSpec) -> None:
    """Per-image scores from the latent skill plus seed noise."""
    metric_values = {
        "clip_score": "greatest(0, 18 + 10 * skill + 4 * noise)",
        "artist_similarity": "0.12 + 0.14 * skill + 0.03 * noise",
        "artist_rank": f"greatest(1, round({spec.n_artists} * greatest(0.0005, 1 - skill + 0.3 * noise) / 2))",
        "top1": "CASE WHEN skill + 0.35 * noise > 0.85 THEN 1.0 ELSE 0.0 END",
        "top5": "CASE WHEN skill + 0.35 * noise > 0.6 THEN 1.0 ELSE 0.0 END",
    }
    selects = " UNION ALL ".join(
        f"SELECT image_id, '{spec.model}', '{m}', {expr} FROM noisy" for m, expr in metric_values.items()
    )
    con.execute(f"""INSERT INTO image_scores (image_id, model, metric, value)
        WITH noisy AS (SELECT image_id, skill,
                ((hash(image_id, 11) % 1000) + (hash(image_id, 12) % 1000) + (hash(image_id, 13) % 1000))
                / 1000.0 - 1.5 AS noise
            FROM u WHERE NOT failed AND artist_id <> '{BASELINE_ARTIST_ID}')
        {selects}""")


def _insert_artist_scores(con, spec: SyntheticStoreSpec) -> None:
    """Means over seeds and templates with a normal-approximation interval, then mrr, recognized, diversity."""
    con.execute("""INSERT INTO artist_scores (checkpoint, artist_id, model, metric, value, n, ci_low, ci_high)
        SELECT i.checkpoint, i.artist_id, s.model, s.metric, avg(s.value), count(*)::INTEGER,
               avg(s.value) - 1.96 * coalesce(stddev_samp(s.value), 0) / sqrt(count(*)),
               avg(s.value) + 1.96 * coalesce(stddev_samp(s.value), 0) / sqrt(count(*))
        FROM image_scores s JOIN images i USING (image_id)
        WHERE i.source = 'generated' GROUP BY ALL""")
    # Images that made it, per (checkpoint, artist): the n of the per-artist metrics.
    con.execute("""CREATE TEMP TABLE ok AS SELECT checkpoint, artist_id, count(*)::INTEGER AS n
                   FROM u WHERE NOT failed GROUP BY ALL""")
    model = spec.model
    con.execute(f"""INSERT INTO artist_scores (checkpoint, artist_id, model, metric, value, n, ci_low, ci_high)
        SELECT checkpoint, artist_id, model, 'mrr', avg(1.0 / value), count(*)::INTEGER,
               avg(1.0 / value) - 1.96 * coalesce(stddev_samp(1.0 / value), 0) / sqrt(count(*)),
               avg(1.0 / value) + 1.96 * coalesce(stddev_samp(1.0 / value), 0) / sqrt(count(*))
        FROM image_scores s JOIN images i USING (image_id)
        WHERE s.metric = 'artist_rank' GROUP BY ALL
        UNION ALL
        SELECT s.checkpoint, s.artist_id, '{model}', 'recognized',
               CASE WHEN s.skill > 0.55 THEN 1.0 ELSE 0.0 END, ok.n, NULL, NULL
        FROM skill s JOIN ok USING (checkpoint, artist_id)
        UNION ALL
        SELECT s.checkpoint, s.artist_id, '{model}', 'diversity',
               0.25 + 0.1 * (hash(s.idx, s.cidx, 5) % 1000) / 1000.0, ok.n,
               0.2 + 0.1 * (hash(s.idx, s.cidx, 5) % 1000) / 1000.0,
               0.3 + 0.1 * (hash(s.idx, s.cidx, 5) % 1000) / 1000.0
        FROM skill s JOIN ok USING (checkpoint, artist_id)""")


def _insert_checkpoint_scores(con) -> None:
    con.execute("""INSERT INTO checkpoint_scores (checkpoint, model, metric, value, n, ci_low, ci_high)
        SELECT checkpoint, model, metric, avg(value), count(*)::INTEGER,
               avg(value) - 1.96 * coalesce(stddev_samp(value), 0) / sqrt(count(*)),
               avg(value) + 1.96 * coalesce(stddev_samp(value), 0) / sqrt(count(*))
        FROM artist_scores GROUP BY ALL""")


def _insert_artist_neighbors(con, spec: SyntheticStoreSpec) -> None:
    """k distinct neighbours per artist, never itself: offsets 1 + ((r-1)*stride + c) mod (n-1)."""
    k, n_artists = spec.neighbors_per_artist, spec.n_artists
    stride = 3 if 3 * (k - 1) < n_artists - 1 else 1
    con.execute(f"""INSERT INTO artist_neighbors (checkpoint, model, artist_id, rank, neighbor_id, similarity)
        SELECT s.checkpoint, '{spec.model}', s.artist_id, r.range::INTEGER, nb.artist_id,
               0.95 - 0.03 * r.range - 0.05 * (hash(s.idx, s.cidx, 9) % 1000) / 1000.0
        FROM skill s CROSS JOIN range(1, {k} + 1) r
        JOIN a nb ON nb.idx = (s.idx + 1 + ((r.range - 1) * {stride} + s.cidx) % ({n_artists} - 1)) % {n_artists}""")


def _insert_comparisons(con) -> None:
    """Each fine-tune against the base, per artist and compared metric, with a CI verdict."""
    metrics_sql = ", ".join(f"'{m}'" for m in _COMPARED_METRICS)
    con.execute(f"""INSERT INTO comparisons (base, finetune, artist_id, model, metric, base_value, finetune_value,
                                 delta, ci_low, ci_high, n, verdict)
        SELECT b.checkpoint, f.checkpoint, b.artist_id, b.model, b.metric, b.value, f.value,
               f.value - b.value,
               f.value - b.value - 1.96 * sqrt(pow((b.ci_high - b.ci_low) / 3.92, 2) + pow((f.ci_high - f.ci_low) / 3.92, 2)),
               f.value - b.value + 1.96 * sqrt(pow((b.ci_high - b.ci_low) / 3.92, 2) + pow((f.ci_high - f.ci_low) / 3.92, 2)),
               least(b.n, f.n),
               NULL
        FROM artist_scores b JOIN artist_scores f
          ON f.artist_id = b.artist_id AND f.model = b.model AND f.metric = b.metric
        WHERE b.checkpoint = 'base' AND f.checkpoint <> 'base' AND b.metric IN ({metrics_sql})""")
    # the product's rule (scoring.stats.verdict): the CI excludes 0 and the delta is at
    # least the metric's min_effect (every compared metric here is higher-is-better)
    from evaluator.scoring.metrics import default_min_effects

    margins = default_min_effects()
    margin = "CASE metric " + " ".join(f"WHEN '{m}' THEN {margins[m]!r}" for m in _COMPARED_METRICS) + " END"
    con.execute(f"""UPDATE comparisons SET verdict = CASE WHEN ci_low > 0 AND delta >= {margin} THEN 'gained'
                                                          WHEN ci_high < 0 AND delta <= -{margin} THEN 'lost'
                                                          ELSE 'kept' END""")


def _fill_later_columns(con, spec: SyntheticStoreSpec) -> None:
    """Columns added by later migrations (evaluator migration 2), when present; then the runs' counts."""
    columns = {(r[0], r[1]) for r in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns").fetchall()}
    for table in ("artist_scores", "checkpoint_scores"):
        if (table, "n_seeds") in columns:
            con.execute(f"UPDATE {table} SET n_seeds = {spec.n_seeds}")
    if ("comparisons", "higher_is_better") in columns:
        con.execute("UPDATE comparisons SET higher_is_better = metric <> 'artist_rank'")
    con.execute("""UPDATE runs SET n_done = x.done, n_failed = x.failed FROM (
        SELECT run_id, count(*) FILTER (WHERE error IS NULL) AS done,
               count(*) FILTER (WHERE error IS NOT NULL) AS failed FROM images GROUP BY run_id) x
        WHERE runs.run_id = x.run_id""")


def _image_file_params(con) -> list[tuple]:
    """What ``_write_image_files`` needs of every image that has a file, in path order."""
    return con.execute("""
        SELECT i.path, i.thumb_path, coalesce(i.prompt, ''), coalesce(i.negative_prompt, ''), greatest(i.seed, 0),
               i.width, i.height, i.steps, i.guidance, i.scheduler, coalesce(i.checkpoint, 'reference'),
               hash(i.artist_id) % 1000000, hash(coalesce(i.checkpoint, 'ref')) % 1000000
        FROM images i WHERE i.path IS NOT NULL ORDER BY i.path""").fetchall()


def build_store(workdir: str | Path, spec: SyntheticStoreSpec) -> Path:
    """Create ``workdir`` with a filled store (and image files); return the store path.

    Refuses to overwrite an existing store: a bench store is expensive, a test store cheap.
    The tables are filled in dependency order (scores from images, comparisons from scores).
    """
    from evaluator.workspace.store import open_store, transaction
    from evaluator.workspace.workdir import Workdir

    wd = Workdir.at(workdir)
    if wd.store.exists():
        raise FileExistsError(f"store {wd.store} already exists; remove it or pick another workdir")
    with open_store(wd.store) as con, transaction(con):
        _insert_small_tables(con, spec)
        _create_skill_and_units(con, spec)
        _insert_generated_images(con)
        _insert_reference_images(con, spec)
        _insert_image_scores(con, spec)
        _insert_artist_scores(con, spec)
        _insert_checkpoint_scores(con)
        _insert_artist_neighbors(con, spec)
        _insert_comparisons(con)
        _fill_later_columns(con, spec)
        files = _image_file_params(con) if spec.with_images else []
    if files:
        _write_image_files(wd.root, files)
    return wd.store


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--artists", type=int, default=9000)
    parser.add_argument("--templates", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--checkpoints", type=int, default=7)
    parser.add_argument("--images", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    spec = SyntheticStoreSpec(args.artists, args.templates, args.seeds, args.checkpoints,
                              with_images=args.images, seed=args.seed)
    store = build_store(args.workdir, spec)
    print(f"built {store} in {time.perf_counter() - t0:.1f}s ({store.stat().st_size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
