"""SD's invisible watermark, LAION's watermark detector loading, flags and the outlier score."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from evaluator.curation.config import REASONS, Thresholds
from evaluator.curation.outliers import MAD_SCALE, centroid_scores
from evaluator.curation.sdmark import KNOWN_MARKS, embed_sd_mark, read_sd_mark
from evaluator.curation.write import content_flags
from evaluator.errors import InputError

MARK_HOLDS = "Akihiko-Yoshida.webp"  # holds dwtDct at full size (agreement 1.0 measured)


def _real(shared_data, name=MARK_HOLDS):
    return np.asarray(Image.open(shared_data / "images" / "generated-sd15" / name).convert("RGB"))


def test_the_known_messages_are_sd1_bytes_and_the_sdxl_48_bits():
    assert len(KNOWN_MARKS["sd1"]) == 136 and len(KNOWN_MARKS["sdxl"]) == 48
    assert hex(int("".join(map(str, KNOWN_MARKS["sdxl"])), 2)) == "0xb3ec907bb19e"
    assert bytes(np.packbits(KNOWN_MARKS["sd1"])) == b"StableDiffusionV1"


@pytest.mark.slow
@pytest.mark.parametrize("message", ["sd1", "sdxl"])
def test_a_marked_real_image_reads_its_message_and_the_original_does_not(shared_data, message):
    rgb = _real(shared_data)
    marked = read_sd_mark(embed_sd_mark(rgb, message))
    plain = read_sd_mark(rgb)
    assert marked.message == message and marked.agreement >= Thresholds().sd_mark_agreement
    assert plain.agreement < Thresholds().sd_mark_agreement


def test_an_image_under_256x256_pixels_is_undecided():
    reading = read_sd_mark(np.zeros((200, 300, 3), np.uint8))
    assert reading.agreement is None and "256x256" in reading.reason


def test_the_detector_loads_a_saved_state_dict_and_gives_the_same_probabilities(tmp_path):
    import torch

    from evaluator.curation.detector import build_detector, load_detector

    torch.manual_seed(0)
    model = build_detector().eval()
    path = tmp_path / "watermark_model_v1.pt"
    torch.save(model.state_dict(), path)
    detector = load_detector(path)
    batch = np.random.default_rng(0).integers(0, 255, size=(2, 256, 256, 3), dtype=np.uint8)
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.softmax(model(x), dim=1)[:, 0].numpy()
    probs = detector.probabilities(batch)
    np.testing.assert_allclose(probs, expected, rtol=1e-5)
    assert probs.shape == (2,) and np.all((probs >= 0) & (probs <= 1))


def test_a_file_that_is_not_the_detector_is_refused(tmp_path):
    import torch

    from evaluator.curation.detector import load_detector

    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(2, 2)}, path)
    with pytest.raises(InputError, match="not LAION's efficientnet_b3 watermark detector"):
        load_detector(path)


def _row(**kw):
    row = {"error": None, "width": 512, "height": 512, "duplicate_of": None, "sd_mark_agreement": 0.5,
           "watermark_prob": None, "aesthetic": None, "outlier_z": None}
    row.update(kw)
    return row


def test_each_flag_follows_its_threshold_and_null_is_never_flagged():
    t = Thresholds()
    assert content_flags(_row(), t) == []
    assert content_flags(_row(error="empty file"), t) == ["unreadable"]
    assert content_flags(_row(width=255, height=1000), t) == ["low_resolution", "extreme_aspect"]
    assert content_flags(_row(width=900, height=300), t) == []  # exactly 3:1 is not extreme
    assert content_flags(_row(duplicate_of="x", sd_mark_agreement=0.8, watermark_prob=0.5, aesthetic=4.99,
                              outlier_z=-3.6), t) == ["near_duplicate", "watermark_sd", "watermark", "aesthetic_low",
                                                      "outlier"]
    assert content_flags(_row(sd_mark_agreement=None, aesthetic=float("nan")), t) == []
    assert set(REASONS) >= {"duplicate", "near_duplicate", "watermark_sd", "aesthetic_low", "outlier"}


def test_thresholds_are_validated():
    with pytest.raises(InputError, match="--near-cosine"):
        Thresholds(near_cosine=1.5).validate()


def test_the_outlier_z_matches_a_naive_median_mad():
    rng = np.random.default_rng(0)
    base = rng.normal(size=16)
    vecs = base + rng.normal(scale=0.1, size=(8, 16))
    vecs[7] = rng.normal(size=16)  # the stray one
    artists = ["a"] * 8 + ["b"] * 2
    vecs = np.vstack([vecs, rng.normal(size=(2, 16))])
    cos, z = centroid_scores(vecs, artists)
    unit = vecs[:8] / np.linalg.norm(vecs[:8], axis=1, keepdims=True)
    centre = unit.mean(0) / np.linalg.norm(unit.mean(0))
    c = unit @ centre
    expected = MAD_SCALE * (c - np.median(c)) / np.median(np.abs(c - np.median(c)))
    np.testing.assert_allclose(z[:8], expected)
    assert z[7] < -Thresholds().outlier_z and np.all(z[:7] > -Thresholds().outlier_z)
    assert np.isnan(z[8:]).all() and not np.isnan(cos[8:]).any()  # 2 images: undecided
