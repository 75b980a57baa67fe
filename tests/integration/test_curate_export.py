"""`atelier curate` exports, embeddings, refusals and --from-store, on small real images."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from evaluator.cli.main import main

REAL = ["Adam-Hughes", "Claude-Monet", "Beeple", "Grant-Wood", "Bob-Mizer", "David-Aja"]


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def small_corpus(shared_data: Path, out: Path) -> Path:
    """Six real images at 64 px (labelled), a byte copy of one and a broken file."""
    out.mkdir(parents=True)
    rows = []
    for name in REAL:
        image = Image.open(shared_data / "images" / "generated-sd15" / f"{name}.webp").convert("RGB")
        image.resize((64, 64), Image.LANCZOS).save(out / f"{name}.png")
        rows.append([f"{name}.png", "Test Artist", f"a painting, {name.lower()} light"])
    shutil.copyfile(out / "Beeple.png", out / "Beeple_copy.png")
    (out / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n-cut")
    with open(out / "labels.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["file", "artist", "prompt"], *rows])
    return out


@pytest.fixture
def corpus(shared_data, tmp_path):
    return small_corpus(shared_data, tmp_path / "corpus")


def test_kohya_export_holds_the_kept_images_with_their_captions(corpus, tmp_path):
    from evaluator.training.dataset import load_dataset

    out = tmp_path / "export"
    result = invoke("curate", str(corpus), "-w", str(tmp_path / "wd"), "-q", "--workers", "0", "--min-side", "32",
                    "--export", str(out), "--layout", "kohya", "--repeats", "3")
    assert result.exit_code == 0, result.output
    assert "exported 6 kept images (6 with captions)" in result.output
    folder = out / "3_test-artist"
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(f"{n}.png" for n in REAL)
    assert (folder / "Beeple.txt").read_text() == "a painting, beeple light\n"
    assert (folder / "Beeple.png").read_bytes() == (corpus / "Beeple.png").read_bytes()
    dataset = load_dataset(out)  # the training stage reads it as it is
    assert len(dataset.items) == 6 and {i.repeats for i in dataset.items} == {3}
    assert {i.caption for i in dataset.items} == {f"a painting, {n.lower()} light" for n in REAL}


def test_flat_export_writes_the_import_labels_and_refuses_a_used_folder(corpus, tmp_path):
    from evaluator.training.dataset import load_dataset

    out = tmp_path / "flat"
    args = ["curate", str(corpus), "-w", str(tmp_path / "wd"), "-q", "--workers", "0", "--min-side", "32",
            "--export", str(out), "--layout", "flat"]
    assert invoke(*args).exit_code == 0
    with open(out / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["file"] for r in rows) == sorted(f"{n}.png" for n in REAL)
    assert {r["artist"] for r in rows} == {"test-artist"}
    assert len(load_dataset(out).items) == 6
    again = invoke(*args)
    assert again.exit_code == 1 and "exists and is not an empty folder" in again.output


@pytest.mark.slow
def test_the_kohya_export_trains_with_atelier_train(corpus, tmp_path_factory, tmp_path):
    from tests.support.gen import tiny_pipeline
    from tests.support.training import TINY_TRAINING, toml_text

    out = tmp_path / "export"
    assert invoke("curate", str(corpus), "-w", str(tmp_path / "wd"), "-q", "--workers", "0", "--min-side", "32",
                  "--export", str(out)).exit_code == 0
    pipe = tiny_pipeline(tmp_path_factory, "sd1")
    config = tmp_path / "train.toml"
    config.write_text(toml_text({**TINY_TRAINING, "method": "lora", "base": str(pipe), "dataset": str(out),
                                 "output_name": "curated", "max_train_steps": 2, "save_every": 2}))
    result = invoke("train", str(config), "-w", str(tmp_path / "wd"), "-q")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (tmp_path / "wd" / "training" / "curated" / "step-000002").is_dir()


def test_embeddings_fill_the_embedding_columns_and_a_wrong_head_is_refused(corpus, tmp_path, shared_data):
    from evaluator.testing.tiny_clip import build_tiny_clip
    from evaluator.workspace.store import connect_read_only

    clip = build_tiny_clip(tmp_path / "clip")
    workdir = tmp_path / "wd"
    head = shared_data / "models" / "laion-aesthetic-v1" / "sa_0_4_vit_b_32_linear.pth"
    refused = invoke("curate", str(corpus), "-w", str(workdir), "-q", "--model", str(clip), "--aesthetic-head", str(head))
    assert refused.exit_code == 1 and "OpenAI CLIP ViT-B-32" in refused.output and "meaningless" in refused.output
    assert not (workdir / "atelier.duckdb").exists()  # refused before anything was written
    result = invoke("curate", str(corpus), "-w", str(workdir), "-q", "--workers", "0", "--min-side", "32",
                    "--model", str(clip), "--near-cosine", "1.0")
    assert result.exit_code == 0, result.output
    assert "no LAION aesthetic head" in result.output
    con = connect_read_only(workdir / "atelier.duckdb")
    try:
        rows = con.execute("SELECT embedding_model, len(embedding), centroid_cosine, outlier_z, aesthetic "
                           "FROM curation WHERE error IS NULL").fetchall()
    finally:
        con.close()
    assert len(rows) == 6 and all(r[0].startswith("tiny-clip@") and r[1] == 16 for r in rows)
    assert all(r[2] is not None and r[3] is not None and r[4] is None for r in rows)  # 6 labelled: z decided


def test_from_store_curates_the_imported_images(corpus, tmp_path):
    from evaluator.workspace.store import connect_read_only

    workdir = tmp_path / "wd"
    assert invoke("import", str(corpus), "-w", str(workdir), "-q").exit_code == 0
    result = invoke("curate", "--from-store", "-w", str(workdir), "-q", "--workers", "0", "--min-side", "32")
    assert result.exit_code == 0, result.output
    con = connect_read_only(workdir / "atelier.duckdb")
    try:
        n_images = con.execute("SELECT count(*) FROM images WHERE path IS NOT NULL").fetchone()[0]
        rows = con.execute("SELECT f.image_id, f.flags, f.artist_id FROM curation_files f WHERE source = 'store'"
                           ).fetchall()
    finally:
        con.close()
    assert len(rows) == n_images and all(r[0] is not None for r in rows)
    # import keeps each original byte for byte, so the byte copy is a duplicate again (a PNG re-encode made it a near one)
    flags = sorted(tuple(r[1]) for r in rows)
    assert flags.count(("duplicate",)) == 1 and ("near_duplicate",) not in flags, flags
    assert {r[2] for r in rows} == {"test-artist", None}  # the unlabelled copy has no artist


def test_src_and_from_store_are_exclusive(tmp_path, corpus):
    result = invoke("curate", str(corpus), "--from-store", "-w", str(tmp_path / "wd"))
    assert result.exit_code != 0 and "one of them" in result.output


@pytest.mark.slow
def test_a_watermark_detector_file_fills_the_probability(corpus, tmp_path):
    import torch

    from evaluator.curation.detector import build_detector
    from evaluator.workspace.store import connect_read_only

    torch.manual_seed(0)
    weights = tmp_path / "watermark_model_v1.pt"
    torch.save(build_detector().state_dict(), weights)  # LAION's architecture, random weights
    workdir = tmp_path / "wd"
    result = invoke("curate", str(corpus), "-w", str(workdir), "-q", "--min-side", "32", "--watermark-model",
                    str(weights), "--max-watermark", "1.0")
    assert result.exit_code == 0, result.output
    assert "no --watermark-model" not in result.output
    con = connect_read_only(workdir / "atelier.duckdb")
    try:
        rows = con.execute("SELECT watermark_prob, watermark_model, error FROM curation").fetchall()
    finally:
        con.close()
    readable = [r for r in rows if r[2] is None]
    assert len(readable) == 6 and all(0.0 <= r[0] <= 1.0 and r[1].startswith("laion-watermark@") for r in readable)
    assert all(r[0] is None for r in rows if r[2] is not None)  # an unreadable file has no probability
