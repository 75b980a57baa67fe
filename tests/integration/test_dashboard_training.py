"""The Training page under AppTest on a store with training rows; and the chosen-step rule."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from evaluator.training.validation import choose_step

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "dashboard" / "app.py")
SIMILARITY = {10: 0.50, 20: 0.70, 30: 0.90}
MEMORIZATION = {10: 0.80, 20: 0.90, 30: 0.97}  # step 30 is the most alike and a near copy


def write_training_store(root: Path, shared_data: Path) -> None:
    """Rows as on_saved_step writes them (the real schema, migrated), and real image files."""
    from PIL import Image

    from evaluator.workspace.store import open_store

    paintings = sorted((shared_data / "images" / "paintings").glob("*.jpg"))
    runs = pd.DataFrame([{"run": "train-a", "output_name": "mystyle", "method": "lora", "base": "tiny", "config": "{}",
                          "dataset": "/data/x", "dataset_fingerprint": "sha256:0", "n_train": 7, "n_validation": 2}])
    steps, metrics, images, memo = [], [], [], []
    for step in (10, 20, 30):
        steps.append({"run": "train-a", "step": step, "train_loss": 1 / step, "val_loss": 2 / step, "lr": 1e-4,
                      "seconds": step * 1.5, "checkpoint": f"mystyle@step-{step:06d}", "step_dir": "x",
                      "validation_status": "ok", "validation_error": None})
        for metric, value in (("reference_similarity", SIMILARITY[step]), ("memorization_max", MEMORIZATION[step]),
                              ("clip_score", 20.0 + step / 10), ("retrieval_map@10", None)):
            metrics.append({"run": "train-a", "step": step, "model": "tiny-clip", "metric": metric, "value": value,
                            "n": 4, "reason": None if value is not None else "the base checkpoint's images are missing"})
        for seed in (0, 1):
            rel = f"images/mystyle@step-{step:06d}/mystyle/validation-{seed}-{step:08d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            with Image.open(paintings[(step // 10 + seed) % len(paintings)]) as image:
                image.convert("RGB").resize((32, 32)).save(root / rel)
            image_id = step * 10 + seed
            images.append({"run": "train-a", "step": step, "image_id": image_id, "checkpoint": f"mystyle@step-{step:06d}",
                           "prompt": "a lighthouse, mystyle", "seed": seed, "path": rel, "thumb_path": None, "error": None})
            memo.append({"run": "train-a", "step": step, "model": "tiny-clip", "image_id": image_id,
                         "nearest_sha256": "ab", "nearest_path": "/data/x/4_mystyle/a.jpg", "similarity": MEMORIZATION[step]})
    split, references = [], []
    for k, side in enumerate(["validation", "validation", "train"]):
        split.append({"run": "train-a", "sha256": f"sha{k}", "path": f"/data/x/{k}.jpg", "side": side, "group_key": f"sha{k}"})
        rel = f"imported/reference/mystyle/held-{k}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with Image.open(paintings[k]) as image:
            image.convert("RGB").resize((32, 32)).save(root / rel)
        references.append({"image_id": 9000 + k, "unit_id": f"u{k}", "source": "reference", "artist_id": "mystyle",
                           "path": rel, "source_sha256": f"sha{k}"})
    with open_store(root / "atelier.duckdb") as con:
        for table, rows in (("training_split", pd.DataFrame(split)), ("images", pd.DataFrame(references)),
                            ("training_runs", runs), ("training_steps", pd.DataFrame(steps)),
                            ("training_metrics", pd.DataFrame(metrics)), ("training_images", pd.DataFrame(images)),
                            ("training_memorization", pd.DataFrame(memo))):
            con.register("frame", rows)
            con.execute(f"INSERT INTO {table} ({', '.join(rows.columns)}) SELECT * FROM frame")
            con.unregister("frame")
    with open_store(root / "atelier.duckdb") as con:  # a resumed run recorded step 10 again, later
        con.execute("INSERT INTO training_runs (run, output_name, n_train, n_validation) VALUES ('train-b', 'mystyle', 7, 2)")
        con.execute("INSERT INTO training_steps (run, step, checkpoint, validation_status, recorded_at) "
                    "VALUES ('train-b', 10, 'mystyle@step-000010', 'ok', current_timestamp + INTERVAL 1 HOUR)")
        for metric, value in (("reference_similarity", 0.6), ("memorization_max", 0.85)):
            con.execute("INSERT INTO training_metrics VALUES ('train-b', 10, 'tiny-clip', ?, ?, 4, NULL)", [metric, value])
    losses = root / "training" / "mystyle" / "losses.jsonl"
    losses.parent.mkdir(parents=True)
    lines = [json.dumps({"step": s, "loss": 1 / s, "lr": 1e-4}) for s in range(1, 31)]
    losses.write_text("\n".join(lines) + '\n{"step": 31, "lo')  # a line cut by a kill


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, shared_data) -> Path:
    root = tmp_path_factory.mktemp("dash-training")
    write_training_store(root, shared_data)
    return root


def open_training(workdir: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv("ATELIER_WORKDIR", str(workdir))
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["page"] = "Training"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def metric_values(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def captions(at: AppTest) -> list[str]:
    """Caption texts as a reader sees them (the page escapes stored text for Markdown)."""
    return [c.value.replace("\\", "").replace("&lt;", "<") for c in at.caption]


def test_training_page_shows_the_chosen_step_curves_and_gallery(workdir, monkeypatch):
    at = open_training(workdir, monkeypatch)
    values = metric_values(at)
    assert values["Saved steps"] == "3" and values["Chosen step"] == "20"  # 30 is more alike but memorizes
    assert values["Training images"] == "7" and values["Validation images"] == "2"
    assert any("memorization_max < 0.95" in c for c in captions(at))
    assert len(at.get("vega_lite_chart")) == 4  # loss, style, memorization, clip_score
    steps_table = next(d.value for d in at.dataframe if "checkpoint" in d.value.columns)
    assert steps_table["step"].tolist() == [10, 20, 30]
    # step 10 was recorded again by a resumed run: its latest record wins (figures and images)
    assert steps_table.set_index("step")["reference_similarity"].to_dict() == {10: 0.6, 20: 0.7, 30: 0.9}
    # one prompt/seed across steps 20 and 30 (the resumed step 10 made none), both seeds of the
    # chosen step, the 2 held-out images (not the trained one)
    assert len(at.get("image")) == 2 + 2 + 2
    assert any("the base checkpoint's images are missing" in c for c in captions(at))

    at.slider(key="training-threshold").set_value(0.99).run()
    assert metric_values(at)["Chosen step"] == "30"
    at.slider(key="training-threshold").set_value(0.5).run()
    assert metric_values(at)["Chosen step"] == "none"


def test_training_page_without_runs_says_how_to_make_one(tmp_path, monkeypatch):
    from evaluator.workspace.store import open_store

    with open_store(tmp_path / "atelier.duckdb"):
        pass
    at = open_training(tmp_path, monkeypatch)
    assert any("atelier train" in i.value for i in at.info)


def frame(rows: dict) -> pd.DataFrame:
    return pd.DataFrame([{"step": s, "metric": m, "value": v} for s, figures in rows.items() for m, v in figures.items()])


def test_choose_step_rule():
    rows = {s: {"reference_similarity": SIMILARITY[s], "memorization_max": MEMORIZATION[s]} for s in SIMILARITY}
    assert choose_step(frame(rows)).step == 20
    assert choose_step(frame(rows), threshold=1.0).step == 30
    base = {0: {"reference_similarity": 0.99, "memorization_max": 0.1}, **rows}
    assert choose_step(frame(base)).step == 20  # step 0 is the base: shown, never chosen
    tie = {10: {"reference_similarity": 0.7, "memorization_max": 0.1}, 20: {"reference_similarity": 0.7, "memorization_max": 0.1}}
    assert choose_step(frame(tie)).step == 10  # same style for less training
    missing = {10: {"reference_similarity": 0.9, "memorization_max": float("nan")}, 20: {"reference_similarity": 0.2, "memorization_max": 0.1}}
    assert choose_step(frame(missing)).step == 20  # an unknown memorization is never chosen
    none = choose_step(frame({10: {"clip_score": 20.0}}))
    assert none.step is None and "never computed" in none.reason
    assert choose_step(pd.DataFrame(columns=["step", "metric", "value"])).step is None
