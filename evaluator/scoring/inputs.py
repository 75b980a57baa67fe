"""What a scoring run reads: manifests, the store's state, the catalog, templates,
checkpoint and run records, image and text embeddings; and the fingerprint of it all.

Reads ``DIR/manifests``, ``DIR/checkpoints``, ``DIR/runs``, the store (images, this
model's image scores and score state), the catalog and templates files. Writes only
embedding part files, the FAISS index and the text-embedding cache (all resumable);
the store is written by ``evaluator.scoring.write``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaluator.errors import InputError
from evaluator.workspace.records import RUN_COLUMNS

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from evaluator.embedding.embed import EmbedResult, LoadedClip
    from evaluator.embedding.index import IndexConfig, IndexInfo
    from evaluator.generation.distributed import DistEnv
    from evaluator.scoring.metrics import EvalInputs
    from evaluator.workspace.workdir import Workdir

# A user's templates file with `replace_defaults = true` may drop `art-by`; the metric
# still needs a text, and this is the one atelier ships.
ART_BY_FALLBACK = "artwork by {name}"
# A character's identification text: "art by Hatsune Miku" would name an artist.
CHARACTER_TEXT = "a picture of {name}"
OWN_RUN_KINDS = ("score", "index")  # written to the store by score / index build themselves
CHECKPOINT_COLUMNS = ("name", "source", "kind", "base", "adapters", "fingerprint", "dtype", "scheduler", "notes")
# Bumped when a metric's definition changes what an image's stored value is (2: no
# clip_score for an image without a prompt; 3: retrieval_map@1/5/10 and prototype_*
# replace retrieval_map@k): the next run rescores every image.
METRIC_DEFINITIONS_VERSION = 3
# The image columns image scores depend on: a change in any of them is news.
IMAGE_KEY_COLUMNS = ["image_id", "sha256", "error", "checkpoint", "artist_id", "template", "seed", "prompt", "path"]


def sha(obj: Any) -> str:
    """A short digest of a JSON-able object (keys sorted, so dict order does not count)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def frame_digest(frame: pd.DataFrame) -> str:
    """A digest of a frame's rows: vectorised row hashes (a million rows in ~1 s)."""
    import pandas as pd

    hashes = pd.util.hash_pandas_object(frame.astype(str), index=False).to_numpy()
    return hashlib.sha256(hashes.tobytes()).hexdigest()[:16]


def changed_rows(new: pd.DataFrame, old: pd.DataFrame | None) -> pd.DataFrame:
    """Rows of ``new`` that are not already in the store as they are (by a row hash).

    A rerun after one more shard rewrites only that shard's images, not a million rows.
    A representation difference (a column typed differently) only makes a row look
    changed, and an upsert of an unchanged row is harmless.
    """
    import pandas as pd

    from evaluator.workspace.manifest import MANIFEST_COLUMNS

    if old is None or old.empty or new.empty:
        return new
    cols = list(MANIFEST_COLUMNS)
    h_new = pd.util.hash_pandas_object(new[cols].astype(str), index=False).to_numpy()
    h_old = pd.Series(
        pd.util.hash_pandas_object(old[cols].astype(str), index=False).to_numpy(), index=old["image_id"].to_numpy()
    )
    h_old = h_old[~h_old.index.duplicated()]
    previous = h_old.reindex(new["image_id"].to_numpy()).to_numpy()
    return new[previous != h_new]


def load_catalog_frame(catalog_path: str | Path | None) -> pd.DataFrame:
    """The artists table to score against: the given catalog, or atelier's default.

    A catalog that cannot be loaded stops the run: identification ranks every image
    against the whole catalog, so scoring against a guess would store wrong numbers.
    """
    from catalog.model import CatalogError, catalog_frame, default_catalog_path, load_catalog

    source = Path(catalog_path) if catalog_path is not None else default_catalog_path()
    fix = "pass an existing catalog CSV with --catalog, or set ATELIER_CATALOG to one"
    try:
        return catalog_frame(load_catalog(source))
    except FileNotFoundError as exc:
        raise InputError(f"catalog {source} not found: {fix}") from exc
    except CatalogError as exc:
        raise InputError(f"catalog {source} cannot be used: {exc}; fix it, or {fix}") from exc


def load_template_texts(path: str | Path | None) -> dict[str, str]:
    """Template name -> text: atelier's templates, with a user's file merged over them."""
    from catalog.templates import load_templates

    return {name: t.text for name, t in load_templates(path).items()}


def _to_json(value: Any) -> Any:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def checkpoints_frame(records: list[dict], names_seen: list[str]) -> pd.DataFrame:
    """``checkpoints`` rows: one per record, plus a stub for each name only seen in images."""
    import pandas as pd

    rows = {}
    for rec in records:
        if not rec.get("name"):
            raise InputError(f"checkpoint record without a name: {rec!r}")
        row = {c: rec.get(c) for c in CHECKPOINT_COLUMNS}
        row["adapters"] = _to_json(row["adapters"])
        rows[row["name"]] = row
    for name in names_seen:
        rows.setdefault(name, {c: None for c in CHECKPOINT_COLUMNS} | {"name": name, "notes": "seen in images; no checkpoint record"})
    return pd.DataFrame(list(rows.values()), columns=list(CHECKPOINT_COLUMNS))


def runs_frame(records: list[dict]) -> pd.DataFrame:
    """``runs`` rows of the generation/import runs' records (JSON columns as text, naive UTC)."""
    import pandas as pd

    rows = []
    for rec in records:
        if not rec.get("run_id") or not rec.get("kind"):
            raise InputError(f"run record without run_id/kind: {rec!r}")
        row = {c: rec.get(c) for c in RUN_COLUMNS}
        for c in ("config", "versions", "timings"):
            row[c] = _to_json(row[c])
        for c in ("started_at", "finished_at"):
            if row[c] is not None:
                row[c] = pd.Timestamp(row[c]).tz_localize(None) if pd.Timestamp(row[c]).tzinfo else pd.Timestamp(row[c])
        rows.append(row)
    frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    for c in ("started_at", "finished_at"):
        frame[c] = pd.to_datetime(frame[c])
    return frame


@dataclass
class StoreState:
    """What the store already holds for one model (all empty when there is no store yet)."""

    images: pd.DataFrame | None = None
    scores: pd.DataFrame | None = None  # image_id, metric, value of this model's image scores
    fingerprint: dict = field(default_factory=dict)  # score_state of the last write


def read_store_state(wd: Workdir, model: str, timeout: float) -> StoreState:
    """Images, this model's image scores and its score state, from the store."""
    import pandas as pd

    from evaluator.workspace.store import open_store

    state = StoreState()
    if wd.store.is_file():
        with open_store(wd.store, timeout=timeout) as con:  # writable: migrates an old store
            state.images = con.execute("SELECT * FROM images").df()
            state.scores = con.execute(
                "SELECT image_id, metric, value FROM image_scores WHERE model = ?", [model]
            ).df()
            row = con.execute("SELECT fingerprint FROM score_state WHERE model = ?", [model]).fetchone()
            state.fingerprint = json.loads(row[0]) if row and row[0] else {}
    if state.scores is None:
        state.scores = pd.DataFrame(columns=["image_id", "metric", "value"])
    return state


@dataclass
class ScoreInputs:
    """Everything read before embedding: images, catalog, templates, records, store state."""

    images: pd.DataFrame  # manifest rows, plus rows only the store has (earlier imports)
    store: StoreState
    artists: pd.DataFrame
    templates: dict[str, str]
    checkpoint_records: list[dict]
    run_records: list[dict]  # generation and import runs (score/index write their own)
    scored_rows: pd.DataFrame  # usable non-reference images of a checkpoint
    reference_rows: pd.DataFrame  # usable reference images of an artist
    checkpoints_seen: list[str]

    @property
    def art_by(self) -> str:
        return self.templates.get("art-by", ART_BY_FALLBACK)

    @property
    def catalog_ids(self) -> list[str]:
        return self.artists["artist_id"].astype(str).tolist()

    @property
    def artist_names(self) -> list[str]:
        return self.artists["name"].astype(str).tolist()

    @property
    def catalog_kinds(self) -> list[str] | None:
        """Each row's kind (artist | character); None for a catalog frame without kinds."""
        if "kind" not in self.artists:
            return None
        return self.artists["kind"].fillna("artist").astype(str).tolist()

    @property
    def catalog_tagged(self) -> list[bool] | None:
        if "tag" not in self.artists:
            return None
        return self.artists["tag"].notna().tolist()

    @property
    def tag_templates(self) -> frozenset[str]:
        """Templates whose prompt takes the Danbooru {tag}: their images are identified among tagged rows."""
        import string

        names = set()
        for name, text in self.templates.items():
            try:
                if any(f == "tag" for _, f, _, _ in string.Formatter().parse(text)):
                    names.add(name)
            except ValueError:
                continue
        return frozenset(names)


def read_inputs(
    wd: Workdir, model: str, *, catalog_path: str | Path | None, templates_path: str | Path | None, store_timeout: float
) -> ScoreInputs:
    """Read the manifests, the store's state, the catalog, templates and records."""
    import pandas as pd

    from evaluator.workspace.manifest import MANIFEST_COLUMNS, read_manifests
    from evaluator.workspace.records import (
        load_checkpoint_records,
        load_run_records,
        seed_pairing_keys,
    )

    manifest = read_manifests(wd.manifests)
    state = read_store_state(wd, model, store_timeout)
    images = manifest
    if state.images is not None and len(state.images):
        extra = state.images[~state.images["image_id"].isin(manifest["image_id"])]
        if len(extra):
            images = pd.concat([manifest, extra[list(MANIFEST_COLUMNS)]], ignore_index=True)
    usable = images["error"].isna() & images["path"].notna()
    scored_rows = images[usable & (images["source"] != "reference") & images["checkpoint"].notna()]
    # the scorers pair by int64 seed: keys equal iff seeds are, also past int64 (seed_text)
    scored_rows = scored_rows.assign(seed=seed_pairing_keys(scored_rows))
    return ScoreInputs(
        images=images,
        store=state,
        artists=load_catalog_frame(catalog_path),
        templates=load_template_texts(templates_path),
        checkpoint_records=load_checkpoint_records(wd.root),
        run_records=[r for r in load_run_records(wd.root) if r.get("kind") not in OWN_RUN_KINDS],
        scored_rows=scored_rows,
        reference_rows=images[usable & (images["source"] == "reference") & images["artist_id"].notna()],
        checkpoints_seen=sorted(scored_rows["checkpoint"].unique().tolist()),
    )


def resolve_pairs(records: list[dict], explicit: list[tuple[str, str]] | None, checkpoints: list[str]) -> list[tuple[str, str]]:
    """(base, finetune) pairs: each record's `base` when it names a scored checkpoint,
    plus explicit pairs (which must name scored checkpoints)."""
    import difflib

    have = set(checkpoints)
    pairs = []
    for rec in records:
        base, name = rec.get("base"), rec.get("name")
        if base and name and base in have and name in have and base != name:
            pairs.append((base, name))
    for base, ft in explicit or []:
        for n in (base, ft):
            if n not in have:
                close = difflib.get_close_matches(n, sorted(have), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; scored checkpoints: {', '.join(sorted(have)) or 'none'}"
                raise InputError(f"--compare names checkpoint {n!r}, which has no scored images{hint}")
        pairs.append((base, ft))
    return sorted(set(pairs))


# ------------------------------------------------------------------ embeddings


@dataclass(frozen=True)
class EmbedSettings:
    """How to embed images: throughput and resumability, never the values."""

    batch_size: int
    num_workers: int | None  # None: from the cores (embedding.images.loader_plan)
    part_size: int
    progress: bool


def embed_missing(wd: Workdir, clip: LoadedClip, inputs: ScoreInputs, settings: EmbedSettings,
                  env: DistEnv | None = None) -> EmbedResult:
    """Embed every scored and reference image not embedded yet (resumable part files);
    under a launcher (``env``) only this rank's share."""
    import pandas as pd

    from evaluator.embedding.embed import embed_images

    to_embed = pd.concat([inputs.scored_rows, inputs.reference_rows], ignore_index=True)[["image_id", "path"]]
    return embed_images(wd, clip, to_embed, settings.batch_size, settings.num_workers, settings.part_size,
                        settings.progress, env=env)


def merge_embed_results(results: list[EmbedResult]) -> EmbedResult:
    """One result for the ranks' results (gathered in rank order): counts summed, errors joined."""
    from dataclasses import replace

    if len(results) == 1:
        return results[0]
    first = results[0]
    return replace(
        first, rank=0, world_size=len(results), n_elsewhere=0,
        n_done=sum(r.n_done for r in results), n_skipped=sum(r.n_skipped for r in results),
        n_failed=sum(r.n_failed for r in results), errors={k: v for r in results for k, v in r.errors.items()},
        seconds=max(r.seconds for r in results), parts=[p for r in results for p in r.parts],
    )


@dataclass
class Embedded:
    """The model's image vectors and the rows that have one (sorted by image id)."""

    vecs: np.ndarray  # float32 [M, D], every embedded image of the model
    position: pd.Series  # image_id -> row of vecs
    scored_rows: pd.DataFrame
    reference_rows: pd.DataFrame
    index_info: IndexInfo

    def vectors_of(self, rows: pd.DataFrame) -> np.ndarray:
        return self.vecs[self.position.loc[rows["image_id"]].to_numpy()]


def load_and_index(wd: Workdir, model: str, inputs: ScoreInputs, index_config: IndexConfig,
                   update: bool = True, only: np.ndarray | None = None) -> Embedded:
    """Load the model's embeddings, add new ones to the FAISS index, keep rows with a vector.

    ``update=False`` (ranks > 0 of a launch: rank 0 is the index's one writer) leaves
    the index alone; ``index_info`` then only counts the vectors. ``only`` loads just
    those images' vectors (a rank's share and the references); their rows are kept.
    """
    import numpy as np
    import pandas as pd

    from evaluator.embedding.embed import load_embeddings
    from evaluator.embedding.index import IndexInfo, update_index

    if update and only is not None:
        raise ValueError("the index is updated from every embedding: a partial load cannot update it")
    ids, vecs = load_embeddings(wd, model, only)
    if update:
        index_info = update_index(wd, model, index_config, embeddings=(ids, vecs))
    else:
        index_info = IndexInfo(model, "not updated on this rank", len(ids), int(vecs.shape[1]) if vecs.ndim == 2 else 0, 0)
    position = pd.Series(np.arange(len(ids)), index=ids)

    def with_vector(rows: pd.DataFrame) -> pd.DataFrame:
        return rows[rows["image_id"].isin(position.index)].sort_values("image_id").reset_index(drop=True)

    return Embedded(vecs, position, with_vector(inputs.scored_rows), with_vector(inputs.reference_rows), index_info)


# ------------------------------------------------------------------ fingerprint


def fingerprint(
    inputs: ScoreInputs, embedded: Embedded, errors: dict[int, str], *, model: str, config_digest: str,
    identification: dict | None = None,
) -> dict:
    """What a write is computed from: the scoring context (what image scores depend on:
    model, catalog, `art-by` text, references, retrieval ks, readout) and a digest of
    every input. Under the CSLS readout an image's ranks depend on every scored image
    (the hubness term's pool), so the images join the context: any change rescores."""
    refs = embedded.reference_rows
    context = {
        "model": model,
        "catalog": sha(list(zip(inputs.catalog_ids, inputs.artist_names, strict=True))),
        # like with like: the class set of each image follows kinds, tags and tag templates
        "classes": sha([inputs.catalog_kinds, inputs.catalog_tagged, sorted(inputs.tag_templates)]),
        "art_by": inputs.art_by,
        "refs": sha(sorted(refs["image_id"].astype(int).tolist()) + sorted(refs["artist_id"].tolist())),
        "identification": identification or {},
        "definitions": METRIC_DEFINITIONS_VERSION,
    }
    if (identification or {}).get("readout", "cosine") != "cosine":
        context["csls_pool"] = sha(sorted(embedded.scored_rows["image_id"].astype(int).tolist()))
    digests = {
        "context": sha(context),
        "images": frame_digest(inputs.images[IMAGE_KEY_COLUMNS].sort_values("image_id")),
        "artists": sha(inputs.artists.astype(str).values.tolist()),
        "templates": sha(inputs.templates),
        # only the columns written: a record's own timestamps (added_at) are not news
        "checkpoints": sha([{c: r.get(c) for c in CHECKPOINT_COLUMNS} for r in inputs.checkpoint_records]),
        "runs": sha([{c: r.get(c) for c in RUN_COLUMNS} for r in inputs.run_records]),
        "config": config_digest,
        "embedding_errors": sha(sorted(errors.items())),
    }
    return {"context": digests["context"], "inputs": digests}


# ------------------------------------------------------------------ texts and metric inputs


@dataclass
class TextVectors:
    """The text embeddings the metrics compare images with."""

    artist_text: np.ndarray  # float32 [A, D]: the `art-by` text of each catalog artist
    prompt: np.ndarray  # float32 [N, D]: each scored image's own prompt (zeros: none)
    has_prompt: np.ndarray | None = None  # bool [N]: the image has a prompt


def embed_text_inputs(wd: Workdir, clip: LoadedClip, inputs: ScoreInputs, embedded: Embedded, progress: bool) -> TextVectors:
    """Embed the identification text of every catalog row and every distinct prompt (cached on disk)."""
    import numpy as np

    from evaluator.embedding.embed import embed_texts, text_cache_dir

    cache = text_cache_dir(wd, clip.key)
    artist_text = _class_texts(clip, inputs, embedded, cache, progress)
    prompts = embedded.scored_rows["prompt"].fillna("").astype(str)
    has_prompt = (prompts.str.strip() != "").to_numpy(dtype=bool)
    # an image without a prompt has no CLIPScore: the empty text is not its prompt
    unique = sorted(set(prompts[has_prompt].tolist()))
    unique_vecs = embed_texts(clip, unique, cache_dir=cache, progress=progress) if unique else None
    row_of = {p: i for i, p in enumerate(unique)}
    prompt = np.zeros((len(prompts), clip.embed_dim), np.float32)
    if unique_vecs is not None:
        prompt[has_prompt] = unique_vecs[[row_of[p] for p in prompts[has_prompt]]]
    return TextVectors(artist_text, prompt, has_prompt)


def _class_texts(clip: LoadedClip, inputs: ScoreInputs, embedded: Embedded, cache: Path, progress: bool) -> np.ndarray:
    """float32 [A, D]: the identification text of each catalog row (`art-by` for artists,
    CHARACTER_TEXT for characters). With kinds, only the kinds of the scored images'
    artists are embedded (the other rows are in no class set; their vectors stay zero)."""
    import numpy as np

    from catalog.templates import Template
    from evaluator.embedding.embed import embed_texts

    art_by, character = Template("art-by", inputs.art_by), Template("character-text", CHARACTER_TEXT, kinds=("character",))
    kinds = inputs.catalog_kinds or ["artist"] * len(inputs.artist_names)
    needed = np.ones(len(kinds), bool)
    if inputs.catalog_kinds is not None:
        kind_of = dict(zip(inputs.catalog_ids, kinds, strict=True))
        wanted = {kind_of[a] for a in embedded.scored_rows["artist_id"].dropna().unique() if a in kind_of}
        needed = np.array([k in wanted for k in kinds], bool)
    texts = [(character if k == "character" else art_by).render(n)
             for n, k, keep in zip(inputs.artist_names, kinds, needed, strict=True) if keep]
    out = np.zeros((len(kinds), clip.embed_dim), np.float32)
    if texts:
        out[needed] = embed_texts(clip, texts, cache_dir=cache, progress=progress)
    return out


def recognition_labels(artists: pd.DataFrame) -> dict[str, dict[str, bool]]:
    """The catalog's human recognition labels: label column -> artist -> bool (known only)."""
    from evaluator.scoring.metrics import label_to_bool

    labels: dict[str, dict[str, bool]] = {}
    for col in ("recognized_sdxl", "recognized_sd1"):
        if col in artists:
            parsed = {a: label_to_bool(v) for a, v in zip(artists["artist_id"], artists[col], strict=True)}
            labels[col] = {a: v for a, v in parsed.items() if v is not None}
    return labels


def eval_inputs(
    inputs: ScoreInputs, embedded: Embedded, texts: TextVectors, *, embed_dim: int, recognized_threshold: float
) -> EvalInputs:
    """The metrics' inputs, one row per scored image (sorted by image id)."""
    import numpy as np

    from catalog.units import BASELINE_ARTIST_ID
    from evaluator.scoring.metrics import EvalInputs

    rows, refs, vecs = embedded.scored_rows, embedded.reference_rows, embedded.vecs
    dim = vecs.shape[1] if vecs.ndim == 2 else embed_dim
    return EvalInputs(
        image_ids=rows["image_id"].to_numpy(dtype=np.int64),
        vecs=embedded.vectors_of(rows) if len(rows) else np.zeros((0, dim), np.float32),
        checkpoint=rows["checkpoint"].astype(object).to_numpy(),
        artist_id=rows["artist_id"].fillna("").astype(object).to_numpy(),
        template=rows["template"].fillna("").astype(object).to_numpy(),
        seed=rows["seed"].fillna(-1).to_numpy(dtype=np.int64),
        prompt_vecs=texts.prompt,
        has_prompt=texts.has_prompt,
        catalog_ids=inputs.catalog_ids,
        artist_text_vecs=texts.artist_text,
        ref_vecs=embedded.vectors_of(refs) if len(refs) else None,
        ref_artist=refs["artist_id"].astype(object).to_numpy() if len(refs) else None,
        labels=recognition_labels(inputs.artists),
        catalog_kinds=None if inputs.catalog_kinds is None else np.array(inputs.catalog_kinds, dtype=object),
        catalog_tagged=None if inputs.catalog_tagged is None else np.array(inputs.catalog_tagged, dtype=bool),
        tag_templates=inputs.tag_templates,
        baseline_artist=BASELINE_ARTIST_ID,
        recognized_threshold=recognized_threshold,
    )
