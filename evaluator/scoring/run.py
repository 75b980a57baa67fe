"""`atelier score`: manifests + embeddings -> every metric -> the DuckDB store.

Reads the workdir (manifests, checkpoint and run records, images, the store) through
``evaluator.scoring.inputs``; writes the store through ``evaluator.scoring.write``.

Order of work, and why:

1. take the workdir's score lock (``DIR/.score.lock``, an OS file lock: a killed run
   releases it) so two score/embed runs on one workdir queue instead of racing;
2. load the embedding model (its key names every score row); read the manifests, the
   catalog, templates, checkpoint and run records (``inputs``);
3. embed images not yet embedded (resumable part files), update the FAISS index;
4. fingerprint the inputs: unchanged since the last write -> stop, writing nothing;
5. compute image scores for images not scored yet under the same scoring context
   (model, catalog, `art-by` text, references), then every aggregate from all of them
   (``aggregate``);
6. open the store once and write everything in ONE transaction, then close (``write``).

Under ``torchrun --nproc_per_node N`` (or ``accelerate launch``) the same command runs
on N processes (a gloo/nccl process group): step 3 embeds each rank's images
(``image_id % N == rank``) into its own parts; after a gather every rank loads all
vectors, rank 0 alone updates the index and embeds the texts (the others then read them
from the cache); step 5's image-level metrics are computed by each rank for its share
of the new images and written as ``image_scores`` parts (``evaluator.scoring.parts``);
after a second gather rank 0 reads every part with DuckDB, computes the aggregates and
writes the store in one transaction (step 6), as in one process. Ranks > 0 never open
the store for writing. One process does exactly what it did before.

A run whose inputs are unchanged (same images, catalog, references and config) writes
nothing: a rerun adds no row, not even a `runs` row. A killed run leaves the store as
it was (nothing is written before step 6) and its finished embedding parts are reused.

Tables written (``model`` is the embedding model key, e.g. ``ViT-B-32/laion2b_s34b_b79k``
or ``tiny-clip@<fp8>``; every score row is per model):

- ``images``: manifest rows (generated, imported, ``source='reference'``), upserted.
- ``image_scores (image_id, model, metric, value)``: the image-level metrics.
- ``artist_scores (checkpoint, artist_id, model, metric, value, n, n_seeds, ci_low,
  ci_high)``: image metrics as the mean of per-seed means, CI = percentile bootstrap
  over seeds; artist metrics (diversity, content_leak: no CI; recognition_margin: CI
  over seeds, or images without seeds: ``ci_over``; recognized: 0/1, NULL without a
  margin CI, with ``reason``). ``n`` = images, ``n_seeds`` = known seeds.
- ``checkpoint_scores``: the leaderboard: image metrics over all artist images (CI over
  seeds), artist metrics averaged over artists (CI over artists), recognized_auc_sdxl/
  sd1 (``n_pos``/``n_neg``, CI over artists, NULL below 5 of a class, with ``reason``)
  and fd_clip (no CI).
- ``artist_neighbors (checkpoint, model, artist_id, rank, neighbor_id, similarity)``:
  top-k artists by cosine of image centroids; replaced per model on each write.
- ``comparisons (base, finetune, artist_id, model, metric, base_value, finetune_value,
  delta, ci_low, ci_high, n, verdict, higher_is_better, ci_over, paired, n_base,
  n_finetune, verdict_reason)``: paired bootstrap over the seeds both share (``n``);
  else two-sample over each side's seeds, or images where no seed is known
  (``ci_over``); verdict gained/lost only when the CI excludes 0 and the delta is at
  least the metric's ``min_effect``, kept otherwise (``verdict_reason`` says when the
  change was real but under min_effect), undecided (with ``verdict_reason``) when there
  is no CI.
- ``embedding_errors (image_id, model, error, run_id)``: images that could not be read.
- ``reference_images``, ``reference_prototypes (artist_id, model, n, embedding)``.
- ``score_state (model, fingerprint)``: what the last write was computed from.
- ``runs``: generation runs (from their records) plus one ``kind='score'`` row per
  write and a ``kind='index'`` row when the FAISS index changed (recall in ``message``).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluator.embedding.index import IndexConfig
from evaluator.errors import InputError
from evaluator.generation.distributed import DistEnv
from evaluator.workspace.records import utcnow
from evaluator.workspace.workdir import Workdir, workdir_lock

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evaluator.embedding.embed import EmbedResult, LoadedClip
    from evaluator.scoring.aggregate import ScoreTables
    from evaluator.scoring.inputs import Embedded, ScoreInputs, TextVectors
    from evaluator.scoring.metrics import EvalInputs
    from evaluator.scoring.write import StoreRows


def _result(**kwargs: Any) -> Any:
    """A field whose value changes stored numbers: part of the score fingerprint."""
    return field(metadata={"fingerprint": True}, **kwargs)


def _default_min_effects() -> dict[str, float]:
    from evaluator.scoring.metrics import default_min_effects

    return default_min_effects()


def _operational(**kwargs: Any) -> Any:
    """A field that changes only speed or waiting, never a stored value: not fingerprinted."""
    return field(metadata={"fingerprint": False}, **kwargs)


@dataclass
class ScoreConfig:
    """What to score with, and how. Defaults favour exact, reproducible numbers on a CPU.

    Every field declares whether it changes results (``_result``: part of the
    fingerprint, so changing it rescores) or only how the run goes (``_operational``).
    """

    # open_clip model: an architecture (+ pretrained tag or weights file), hf-hub:<id>,
    # or a local folder (evaluator.testing.tiny_clip). No default: scores are per model,
    # and a silently chosen one would mix numbers of different models.
    model: str | None = _result(default=None)
    # None: the architecture's own weights decide (a folder or hf-hub id carries them).
    pretrained: str | None = _result(default=None)
    # CPU/float32: exact and available everywhere; pass cuda/float16 on a GPU.
    device: str = _result(default="cpu")
    dtype: str = _result(default="float32")
    # None: the catalog shipped with atelier (styles.csv, or $ATELIER_CATALOG).
    catalog_path: str | Path | None = _result(default=None)
    # None: atelier's templates (catalog/data/templates.toml); a file is merged over them.
    templates_path: str | Path | None = _result(default=None)
    # Bootstrap resamples over seeds (see evaluator.scoring.stats: 1000 -> ~0.7 pt MC error).
    bootstrap: int = _result(default=1000)
    ci_alpha: float = _result(default=0.05)  # two-sided 95% intervals: the usual reporting level
    bootstrap_seed: int = _result(default=0)  # fixed: a rerun reproduces every interval
    k_neighbors: int = _result(default=10)  # artist_neighbors per artist: a screenful in the dashboard
    # retrieval_map@k for each k, side by side: @1 is "is the nearest reference work the
    # artist's", @10 the usual k of style-retrieval papers, @5 between.
    retrieval_ks: tuple[int, ...] = _result(default=(1, 5, 10))
    # Identification readout: raw cosine, or CSLS, which marks down "hub" classes close to
    # many images at once (r(c) over the csls_k nearest scored images; 10 as in CSLS's paper).
    readout: str = _result(default="cosine")
    csls_k: int = _result(default=10)
    # recognized = the recognition margin's CI lies above this; 0 = "closer to its own
    # artist text than the no-artist baseline is", with 95% confidence.
    recognized_threshold: float = _result(default=0.0)
    # metric -> the smallest change that counts as gained/lost (metrics.COSINE_MIN_EFFECT
    # and its neighbours give the reasons): with enough seeds every change a fine-tune makes
    # is significant, and a verdict should be about the ones a user would care about.
    # Every comparable metric's registry default, so changing a default rescores; given
    # overrides (``all`` sets every metric) are put over the defaults in __post_init__.
    min_effect: dict[str, float] = _result(default_factory=_default_min_effects)
    # None: only the `base` field of checkpoint records pairs checkpoints; explicit
    # (base, finetune) pairs are compared on top of those.
    base_pairs: list[tuple[str, str]] | None = _result(default=None)
    # Embedding: 64 images a batch fill a CPU's vector units; workers None = from the cores
    # (embedding.images.loader_plan: 1 per 4 cores on CPU, the model keeps the rest).
    batch_size: int = _operational(default=64)
    num_workers: int | None = _operational(default=None)
    part_size: int = _operational(default=4096)  # images per embedding part file: what a killed run can lose
    # FAISS: exact search up to 200k images, IVF past that (see IndexConfig).
    index: IndexConfig = _result(default_factory=IndexConfig)
    # An hour: long enough to queue behind a large score/embed run on the same workdir.
    lock_timeout: float = _operational(default=3600.0)
    # Two minutes for a reader (the dashboard) to release the store: it holds it for
    # one query at a time.
    store_timeout: float = _operational(default=120.0)
    progress: bool = _operational(default=True)  # progress bars: a long run shows it is alive

    def __post_init__(self) -> None:
        """Resolve ``min_effect`` against the registry once: overrides (``all`` included) on
        top of every default, so the fingerprint and the verdicts see one complete dict."""
        from evaluator.scoring.metrics import register_retrieval_map, resolve_min_effects

        for k in self.retrieval_ks:  # so that a min_effect may name retrieval_map@k
            if isinstance(k, int) and k >= 1:  # a bad k is validate()'s to report
                register_retrieval_map(k)
        self.min_effect = resolve_min_effects(self.min_effect)

    def validate(self) -> None:
        if not self.model:
            raise InputError("model is required: an open_clip name with --pretrained, a hf-hub: id, or a local folder")
        if self.bootstrap < 1:
            raise InputError(f"bootstrap must be >= 1 but is {self.bootstrap}")
        if not 0 < self.ci_alpha < 1:
            raise InputError(f"ci_alpha must be in (0, 1) but is {self.ci_alpha}")
        if self.k_neighbors < 1:
            raise InputError(f"k_neighbors must be >= 1 but is {self.k_neighbors}")
        if not self.retrieval_ks or any(not isinstance(k, int) or k < 1 for k in self.retrieval_ks):
            raise InputError(f"retrieval_ks must be integers >= 1 but are {list(self.retrieval_ks)}")
        from evaluator.scoring.metrics import READOUTS

        if self.readout not in READOUTS:
            raise InputError(f"readout must be one of {', '.join(READOUTS)} but is {self.readout!r}")
        if self.csls_k < 1:
            raise InputError(f"csls_k must be >= 1 but is {self.csls_k}")
        for pair in self.base_pairs or []:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise InputError(f"a comparison pair must be two different checkpoints (base, finetune) but is {pair!r}")

    def fingerprint_fields(self) -> dict[str, Any]:
        """The result-affecting fields and their values (nested configs as dicts)."""
        values = asdict(self)
        out = {}
        for f in fields(self):
            if "fingerprint" not in f.metadata:
                raise TypeError(f"{type(self).__name__}.{f.name} must be declared with _result() or _operational()")
            if f.metadata["fingerprint"]:
                out[f.name] = values[f.name]
        return out

    def fingerprint(self) -> str:
        """Digest of the result-affecting fields: a change makes the next run rescore."""
        from evaluator.scoring.inputs import sha

        return sha(self.fingerprint_fields())


@dataclass
class ScoreSummary:
    run_id: str | None
    model: str
    noop: bool = False
    n_images: int = 0
    n_embedded: int = 0
    n_scored: int = 0
    n_skipped: int = 0
    n_failed: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    index: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    # undecided verdicts, NULL metrics and their reasons (evaluator.scoring.notices)
    warnings: list[str] = field(default_factory=list)
    rank: int = 0  # under a launcher: this process; only rank 0 writes the store
    world_size: int = 1
    n_from_parts: int = 0  # new images whose image metrics a killed launch's parts already held


class _Clock:
    """Seconds spent in each step, in the order the steps ran."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.timings: dict[str, float] = {}
        self._last = self.start

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self._last, 3)
        self._last = now


@dataclass
class _Prepared:
    """Steps 2-4 done: inputs read, images embedded and indexed, inputs fingerprinted."""

    clip: LoadedClip
    inputs: ScoreInputs
    pairs: list[tuple[str, str]]
    embedding: EmbedResult
    embedded: Embedded
    fingerprint: dict
    env: DistEnv

    @property
    def unchanged(self) -> bool:
        """Same inputs as the last write, no new vector: there is nothing to write."""
        previous = self.inputs.store.fingerprint or {}
        return (previous.get("inputs") == self.fingerprint["inputs"] and self.embedding.n_done == 0
                and self.embedded.index_info.added == 0)


def score(workdir: str | Path, config: ScoreConfig | None = None, echo=None, **overrides: Any) -> ScoreSummary:
    """Score every image of ``workdir`` into its store; see the module docstring."""
    cfg = config or ScoreConfig()
    if overrides:
        from dataclasses import replace

        cfg = replace(cfg, **overrides)
    cfg.validate()
    from datetime import timedelta

    from evaluator.generation.distributed import dist_env, join_process_group, leave_process_group

    env = dist_env()
    wd = Workdir.at(workdir)
    say = echo or (lambda msg: None)
    # the ranks of a launch share the lock (they must not queue behind each other)
    with workdir_lock(wd, cfg.lock_timeout, echo=say, shared=env.world_size > 1):  # 1.
        # a day: ranks > 0 wait at a gather while rank 0 indexes, embeds texts, writes
        joined = join_process_group(env, cfg.device, timeout=timedelta(hours=24))
        summary = _score_locked(wd, cfg, say, env)
        if joined:
            leave_process_group()
        return summary


def _score_locked(wd: Workdir, cfg: ScoreConfig, say, env: DistEnv) -> ScoreSummary:
    from evaluator.generation.distributed import gather_objects
    from evaluator.scoring.inputs import embed_text_inputs

    clock = _Clock()
    started = utcnow()
    prepared = _prepare(wd, cfg, say, clock, env)  # 2.-4.
    model = prepared.clip.key
    rows = prepared.embedded.scored_rows
    texts = None
    unchanged = prepared.unchanged if env.is_main else None
    if env.world_size > 1:  # rank 0 decides (its index) and fills the text cache first
        if env.is_main and not unchanged:
            texts = embed_text_inputs(wd, prepared.clip, prepared.inputs, prepared.embedded, cfg.progress)
        unchanged = gather_objects(unchanged, env)[0]
    if unchanged:
        say(f"score: nothing new for {model} ({len(rows)} images already scored)")
        return ScoreSummary(None, model, noop=True, n_images=len(rows), n_skipped=len(rows),
                            index=asdict(prepared.embedded.index_info), seconds=clock.timings,
                            rank=env.rank, world_size=env.world_size)
    return _score_and_write(wd, cfg, prepared, clock, started, say, texts)  # 5.-6.


def _prepare(wd: Workdir, cfg: ScoreConfig, say, clock: _Clock, env: DistEnv) -> _Prepared:
    """Steps 2-4: the model, the inputs, embeddings and index, the fingerprint."""
    from evaluator.embedding.embed import load_clip
    from evaluator.generation.distributed import device_for, gather_objects
    from evaluator.scoring.inputs import (
        EmbedSettings,
        embed_missing,
        fingerprint,
        load_and_index,
        merge_embed_results,
        read_inputs,
        resolve_pairs,
    )

    # 2. the model (its key names every row), then everything scoring reads
    clip = load_clip(cfg.model, cfg.pretrained, device_for(cfg.device, env), cfg.dtype)
    clock.lap("load_model")
    inputs = read_inputs(wd, clip.key, catalog_path=cfg.catalog_path, templates_path=cfg.templates_path,
                         store_timeout=cfg.store_timeout)
    clock.lap("read_inputs")
    pairs = resolve_pairs(inputs.checkpoint_records, cfg.base_pairs, inputs.checkpoints_seen)  # a typo fails early
    # 3. embed what is missing, update the index
    settings = EmbedSettings(cfg.batch_size, cfg.num_workers, cfg.part_size, cfg.progress)
    embedding = embed_missing(wd, clip, inputs, settings, env)
    if embedding.n_done:
        where = f"rank {env.rank}/{env.world_size}: " if env.world_size > 1 else ""
        say(f"{where}embedded {embedding.n_done} images with {clip.key} ({embedding.n_skipped} already done, "
            f"{embedding.n_failed} unreadable)")
    embedding = merge_embed_results(gather_objects(embedding, env))  # every rank's parts are written
    clock.lap("embed")
    only = _share_and_references(inputs, env) if not env.is_main else None
    embedded = load_and_index(wd, clip.key, inputs, cfg.index, update=env.is_main, only=only)  # one index writer
    if only is not None:
        say(f"rank {env.rank}/{env.world_size}: loaded {len(embedded.position)} embeddings, its share of the "
            f"scored images and the {len(embedded.reference_rows)} reference works")
    clock.lap("index")
    # 4. what a write would be computed from
    fp = fingerprint(inputs, embedded, embedding.errors, model=clip.key, config_digest=cfg.fingerprint(),
                     identification={"retrieval_ks": sorted(set(cfg.retrieval_ks)), "readout": cfg.readout,
                                     "csls_k": cfg.csls_k})
    if env.world_size > 1:  # rank 0 holds every vector (a rank > 0 its share): its fingerprint is the run's
        fp = gather_objects(fp, env)[0]
    return _Prepared(clip, inputs, pairs, embedding, embedded, fp, env)


def _share_and_references(inputs: ScoreInputs, env: DistEnv) -> np.ndarray:
    """The image ids a rank > 0 needs under the cosine readout: its share of the scored
    images and every reference work. An image metric then depends on the image, the texts
    and the references alone, so the rank need not hold the other ranks' vectors (at 100M
    images x 512 dims, 200 GB). The CSLS readout's hubness term is over every scored image:
    each rank finds its share's top k per class and the ranks merge them (``_csls_penalties``)."""
    import numpy as np

    from evaluator.generation.distributed import share_mask

    scored = inputs.scored_rows["image_id"].to_numpy(dtype=np.int64)
    refs = inputs.reference_rows["image_id"].to_numpy(dtype=np.int64)
    return np.union1d(scored[share_mask(scored, env)], refs)


def _score_and_write(wd: Workdir, cfg: ScoreConfig, prepared: _Prepared, clock: _Clock, started, say,
                     texts: TextVectors | None) -> ScoreSummary:
    """Steps 5-6: every metric of the new images and every aggregate, then one write."""
    from evaluator.scoring.aggregate import ScoreTables, ScoringBatch, compute_scores, scored_meta
    from evaluator.scoring.notices import score_warnings
    from evaluator.scoring.parts import clear_parts
    from evaluator.scoring.stats import BootstrapConfig
    from evaluator.scoring.write import ScoreRun, write_all
    from evaluator.workspace.records import Provenance, RunRecord

    embedded, model, env = prepared.embedded, prepared.clip.key, prepared.env
    rows = embedded.scored_rows
    # 5a. what is already scored under the same context is kept, the rest is computed
    same_context, old_scores, new_mask = _already_scored(prepared)
    # 5b. text embeddings (cached on disk by model and text), then the metrics' inputs
    metric_inputs = _metric_inputs(wd, cfg, prepared, texts)
    clock.lap("texts")
    # 5c. the image metrics of this rank's share, gathered on rank 0 (parts), then every table's rows
    new_scores, mine, reused = _image_scores(wd, prepared, metric_inputs, new_mask)
    if not env.is_main:
        say(f"rank {env.rank}/{env.world_size}: image metrics of {mine} images written to parts; rank 0 writes the store")
        return ScoreSummary(None, model, n_images=len(rows), n_scored=mine, rank=env.rank, world_size=env.world_size)
    batch = ScoringBatch(metric_inputs, scored_meta(rows), new_mask, old_scores, model, prepared.pairs,
                         BootstrapConfig(n_boot=cfg.bootstrap, alpha=cfg.ci_alpha, seed=cfg.bootstrap_seed),
                         cfg.k_neighbors, new_scores=new_scores, min_effect=cfg.min_effect)
    tables = compute_scores(batch) if len(rows) else ScoreTables()
    tables.warnings = score_warnings(metric_inputs, tables) if len(rows) else []
    clock.lap("metrics")
    # 6. one transaction
    info = embedded.index_info
    run_id = f"score-{started.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    summary = ScoreSummary(run_id, model, n_images=len(rows), n_embedded=prepared.embedding.n_done,
                           n_scored=int(new_mask.sum()), n_skipped=int((~new_mask).sum()),
                           n_failed=prepared.embedding.n_failed, index=asdict(info), world_size=env.world_size,
                           n_from_parts=reused)
    processes = f"; {env.world_size} processes" if env.world_size > 1 else ""
    record = RunRecord(
        run_id, "score", Provenance.collect(cfg.device, cfg.dtype), started_at=started, config=asdict(cfg),
        timings=clock.timings, n_done=summary.n_scored, n_skipped=summary.n_skipped, n_failed=summary.n_failed,
        message=f"model {model}; index {info.kind} ntotal {info.ntotal} recall@10 {info.recall_at_10}{processes}",
    )
    run = ScoreRun(record, model, info, asdict(cfg.index), clock.start)
    store_rows = _store_rows(prepared, tables, run_id)
    store_rows.new_context = not same_context
    summary.rows = write_all(wd, store_rows, run, store_timeout=cfg.store_timeout)
    clear_parts(wd, model)  # the store holds them now
    summary.seconds = clock.timings
    summary.warnings = list(tables.warnings)
    say(
        f"scored {summary.n_scored} new images ({summary.n_skipped} already scored, {summary.n_failed} unreadable) "
        f"with {model}; wrote {sum(summary.rows.values())} rows to {wd.store} (run {run_id})"
    )
    if reused:
        say(f"  {reused} of them from the image_scores parts of an interrupted launch")
    for line in summary.warnings:
        say(line)
    return summary


def _already_scored(prepared: _Prepared) -> tuple[bool, pd.DataFrame, np.ndarray]:
    """(same scoring context as the store's, the image scores kept, bool mask of the images to score)."""
    import pandas as pd

    inputs, rows = prepared.inputs, prepared.embedded.scored_rows
    same_context = inputs.store.fingerprint.get("context") == prepared.fingerprint["context"]
    old_scores = inputs.store.scores if same_context else pd.DataFrame(columns=["image_id", "metric", "value"])
    already = set(old_scores["image_id"].astype(int).tolist()) if len(old_scores) else set()
    return same_context, old_scores, ~rows["image_id"].isin(already).to_numpy()


def _metric_inputs(wd: Workdir, cfg: ScoreConfig, prepared: _Prepared, texts: TextVectors | None) -> EvalInputs:
    """The metrics' inputs: image vectors, text embeddings (embedded now unless given), readout."""
    from dataclasses import replace

    from evaluator.scoring.inputs import embed_text_inputs, eval_inputs
    from evaluator.scoring.metrics import register_retrieval_map

    for k in cfg.retrieval_ks:  # a k other than 1, 5, 10 is registered on first use
        register_retrieval_map(k)
    if texts is None:
        texts = embed_text_inputs(wd, prepared.clip, prepared.inputs, prepared.embedded, cfg.progress)
    metric_inputs = eval_inputs(prepared.inputs, prepared.embedded, texts, embed_dim=prepared.clip.embed_dim,
                                recognized_threshold=cfg.recognized_threshold)
    metric_inputs = replace(metric_inputs, retrieval_ks=tuple(sorted(set(cfg.retrieval_ks))), readout=cfg.readout,
                            csls_k=cfg.csls_k, csls_pool=metric_inputs.vecs)
    if cfg.readout == "csls":
        metric_inputs = replace(metric_inputs, csls_penalties=_csls_penalties(metric_inputs, prepared.env))
    return metric_inputs


def _csls_penalties(metric_inputs: EvalInputs, env: DistEnv) -> dict:
    """CSLS's r(c) of every class matrix over every scored image, each rank reading only its
    share: a rank's top k per class (float64) are gathered and merged, the same bit for bit as
    one process over the whole pool (``metrics.csls_top_k``). A collective: every rank calls it."""
    from evaluator.generation.distributed import gather_objects, share_mask
    from evaluator.scoring.metrics import class_matrix_key, csls_penalty_of_parts, csls_top_k

    matrices = metric_inputs.csls_class_matrices()
    mine = metric_inputs.vecs[share_mask(metric_inputs.image_ids, env)]
    parts = gather_objects([csls_top_k(m, mine, metric_inputs.csls_k) for m in matrices], env)
    return {class_matrix_key(m): csls_penalty_of_parts([rank[i] for rank in parts], metric_inputs.csls_k)
            for i, m in enumerate(matrices)}


def _image_scores(wd: Workdir, prepared: _Prepared, metric_inputs: EvalInputs,
                  new_mask: np.ndarray) -> tuple[pd.DataFrame | None, int, int]:
    """This rank's share of the new images' image metrics: (every new image's rows on rank 0,
    images scored here, new images found in earlier parts).

    Without a launcher and without parts left by a killed launch: (None, n), and the
    aggregation computes them in place, as it always did. Otherwise each rank writes its
    rows as a part, and after a gather rank 0 reads them all (``evaluator.scoring.parts``).
    """
    import numpy as np
    import pandas as pd

    from evaluator.generation.distributed import gather_objects, share_mask
    from evaluator.scoring.aggregate import image_metric_rows
    from evaluator.scoring.parts import parts_dir, read_parts, write_part

    env, model = prepared.env, prepared.clip.key
    folder = parts_dir(wd, model, prepared.fingerprint["context"])
    earlier = read_parts(folder)  # a killed launch's rows under this context: reused
    if env.world_size == 1 and earlier.empty:
        return None, int(new_mask.sum()), 0
    gather_objects(None, env)  # every rank has read the earlier parts before any writes its own
    done = np.isin(metric_inputs.image_ids, earlier["image_id"])
    reused = int((new_mask & done).sum())
    mask = new_mask & share_mask(metric_inputs.image_ids, env) & ~done
    rows = image_metric_rows(metric_inputs, mask, model)
    if env.world_size > 1:
        write_part(folder, rows, env)
        gather_objects(None, env)  # every rank's part is on disk
        if not env.is_main:
            return None, int(mask.sum()), reused
        rows = pd.DataFrame(columns=rows.columns)
    every = pd.concat([read_parts(folder), rows], ignore_index=True)
    every = every[every["image_id"].isin(metric_inputs.image_ids[new_mask])]
    return _in_registry_order(every), int(mask.sum()), reused


def _in_registry_order(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered as one process computes them (metric by registry order, then image id):
    the bootstrap resamples rows in order, so the order is part of a bit-identical result."""
    from evaluator.scoring.metrics import list_metrics

    order = {m.name: i for i, m in enumerate(list_metrics("image"))}
    keyed = rows.assign(_order=rows["metric"].map(order).fillna(len(order)))
    keyed = keyed.sort_values(["_order", "metric", "image_id"], kind="stable", ignore_index=True)
    return keyed.drop(columns="_order").astype({"image_id": "int64", "value": "float64"})


def _store_rows(prepared: _Prepared, tables: ScoreTables, run_id: str) -> StoreRows:
    """Every row the write puts in the store, besides the run rows."""
    from evaluator.scoring.aggregate import reference_tables
    from evaluator.scoring.inputs import changed_rows, checkpoints_frame, runs_frame
    from evaluator.scoring.write import StoreRows, embedding_errors_frame

    inputs, embedded, model = prepared.inputs, prepared.embedded, prepared.clip.key
    reference_images, prototypes = reference_tables(embedded.reference_rows, embedded.vectors_of, model)
    return StoreRows(
        images=changed_rows(inputs.images, inputs.store.images), artists=inputs.artists, templates=inputs.templates,
        checkpoints=checkpoints_frame(inputs.checkpoint_records, inputs.checkpoints_seen),
        runs=runs_frame(inputs.run_records), tables=tables,
        embedding_errors=embedding_errors_frame(prepared.embedding.errors, model, run_id),
        reference_images=reference_images, reference_prototypes=prototypes, fingerprint=prepared.fingerprint,
        pairs=list(prepared.pairs),
    )
