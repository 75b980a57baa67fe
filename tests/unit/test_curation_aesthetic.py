"""LAION's aesthetic heads from the real files: scores rise with the human rating; a head
is refused for any embedding model but its own OpenAI CLIP."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.curation.aesthetic import (
    HEADS,
    OPENAI_CLIP,
    check_head_matches,
    find_head,
    load_head,
    openai_arch_of,
    spec_for_file,
)
from evaluator.errors import InputError

V1 = "laion-aesthetic-v1"
CASES = [  # (head file, folder of LAION's per-rating mean embeddings)
    (f"{V1}/sa_0_4_vit_b_32_linear.pth", f"{V1}/vit_b_32_embeddings"),
    (f"{V1}/sa_0_4_vit_l_14_linear.pth", f"{V1}/vit_l_14_embeddings"),
    ("laion-aesthetic-v2/sac+logos+ava1-l14-linearMSE.pth", f"{V1}/vit_l_14_embeddings"),
]


def _ratings(folder) -> np.ndarray:
    return np.stack([np.load(folder / f"rating{n}.npy").reshape(-1) for n in range(10)])


@pytest.mark.parametrize(("head_file", "embeddings"), CASES, ids=["v1-b32", "v1-l14", "v2-l14"])
def test_scores_rise_with_the_rating(shared_data, head_file, embeddings):
    head = load_head(shared_data / "models" / head_file)
    scores = head.score(_ratings(shared_data / "models" / embeddings))
    assert np.all(np.diff(scores) > 0), scores
    assert scores[9] - scores[0] > 3  # a real head spreads the buckets, not just orders them


def test_v2_matches_a_naive_torch_forward(shared_data):
    import torch

    path = shared_data / "models" / CASES[2][0]
    state = torch.load(path, map_location="cpu", weights_only=True)
    x = torch.tensor(_ratings(shared_data / "models" / CASES[2][1]), dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    for i in (0, 2, 4, 6, 7):
        x = x @ state[f"layers.{i}.weight"].double().T + state[f"layers.{i}.bias"].double()
    np.testing.assert_allclose(load_head(path).score(_ratings(shared_data / "models" / CASES[2][1])),
                               x[:, 0].numpy(), rtol=1e-9)


def test_the_b16_head_loads_as_a_512_d_linear_head(shared_data):
    head = load_head(shared_data / "models" / V1 / "sa_0_4_vit_b_16_linear.pth")
    assert head.spec.clip_arch == "ViT-B-16" and head.layers[0][0].shape == (1, 512)


def test_the_input_is_l2_normalised_first(shared_data):
    head = load_head(shared_data / "models" / CASES[0][0])
    vecs = _ratings(shared_data / "models" / CASES[0][1])
    np.testing.assert_allclose(head.score(vecs * 7.0), head.score(vecs), rtol=1e-6)


@pytest.mark.parametrize("key", ["ViT-L-14/laion2b_s32b_b82k", "tiny-clip@1a2b3c4d", "ViT-B-32/openai",
                                 "ViT-L-14/my-weights@deadbeef"])
def test_an_l14_head_is_refused_for_other_embeddings(key):
    with pytest.raises(InputError, match="OpenAI CLIP ViT-L-14"):
        check_head_matches(HEADS["aesthetic_v2_vit_l_14"], key)


def test_the_openai_models_are_recognised():
    assert openai_arch_of("ViT-L-14/openai") == "ViT-L-14"
    assert openai_arch_of("ViT-B-32-quickgelu/openai") == "ViT-B-32"
    sha = OPENAI_CLIP["ViT-B-16"][0]
    assert openai_arch_of(f"ViT-B-16/ViT-B-16@{sha[:8]}") == "ViT-B-16"  # OpenAI's own .pt file
    assert openai_arch_of(f"hf-hub:{OPENAI_CLIP['ViT-B-32'][1]}") == "ViT-B-32"
    assert openai_arch_of("ViT-B-16/laion400m_e32") is None


def test_a_head_given_for_the_wrong_model_is_refused_before_use(shared_data):
    with pytest.raises(InputError, match="meaningless"):
        find_head("ViT-B-32/laion2b_s34b_b79k", shared_data / "models" / CASES[0][0])


def test_a_head_is_found_in_the_cache_v2_first(shared_data, tmp_path):
    folder = tmp_path / "aesthetic"
    folder.mkdir()
    for head_file, _ in CASES:
        (folder / (shared_data / "models" / head_file).name).write_bytes((shared_data / "models" / head_file).read_bytes())
    assert find_head("ViT-L-14/openai", None, tmp_path).spec.name == "aesthetic_v2_vit_l_14"
    assert find_head("ViT-B-32/openai", None, tmp_path).spec.name == "aesthetic_v1_vit_b_32"
    assert find_head("ViT-B-16/openai", None, tmp_path) is None
    assert find_head("tiny-clip@00000000", None, tmp_path) is None


def test_an_unknown_file_name_gets_the_known_ones_suggested(tmp_path):
    with pytest.raises(InputError, match="did you mean sa_0_4_vit_b_32_linear.pth"):
        spec_for_file(tmp_path / "sa_0_4_vit_b_32_linear.pt")
