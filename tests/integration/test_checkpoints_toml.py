"""Checkpoints TOML validation, kind detection, fingerprints, pickles, shipped configs, tokenizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.gen import CORPUS, tiny_lora, tiny_pipeline, tiny_single_file, write_toml

from evaluator.generation.checkpoints import (
    CheckpointError,
    PickleRefusedError,
    changed_files,
    detect_kind,
    fingerprint,
    kind_of_file,
    load_checkpoints,
    load_pickled_state_dict,
    prepare_config_dir,
)

BAD = CORPUS / "checkpoints"


@pytest.fixture(scope="module")
def sd1(tmp_path_factory) -> Path:
    return tiny_pipeline(tmp_path_factory, "sd1")


def test_valid_file_resolves_paths_bases_and_adapters(tmp_path, sd1, tmp_path_factory):
    lora = tiny_lora(tmp_path_factory, "sd1")
    shutil.copy(lora, tmp_path / "wc.safetensors")
    toml = write_toml(tmp_path / "ck.toml", f"""
[[checkpoint]]
name = "base"
source = "{sd1}"
dtype = "fp16"
scheduler = "euler_a"

[[checkpoint]]
name = "ft"
base = "base"
lora = [{{ path = "wc.safetensors", scale = 0.5 }}]
notes = "watercolour LoRA"

[[checkpoint]]
name = "hub"
source = "org/some-model"
kind = "sdxl"
""")
    specs = load_checkpoints(toml)
    assert list(specs) == ["base", "ft", "hub"]
    assert specs["base"].source_type == "folder" and specs["base"].dtype == "float16"
    assert specs["ft"].source_type == "inherit" and specs["ft"].base == "base"
    assert specs["ft"].lora[0].path == (tmp_path / "wc.safetensors").resolve()
    assert specs["ft"].lora[0].scale == 0.5
    assert specs["hub"].source_type == "hub"
    assert detect_kind(specs["ft"], specs) == "sd1"  # from the base's folder
    assert detect_kind(specs["hub"], specs) == "sdxl"  # given


@pytest.mark.parametrize(
    "body, expected",
    [
        ('name = "a b"\nsource = "x"', "'name': 'a b' must match [A-Za-z0-9._-]+"),
        ('name = "a"\nsourse = "org/m"', "unknown field 'sourse'; did you mean 'source'?"),
        ('name = "a"\nsource = "org/m"\nkind = "sdxll"', "field 'kind': 'sdxll' is not a kind; did you mean 'sdxl'?"),
        ('name = "a"\nsource = "org/m"\nscheduler = "eulr"', "unknown scheduler 'eulr'; did you mean 'euler'?"),
        ('name = "a"\nsource = "org/m"\ndtype = "fp64"', "field 'dtype': 'fp64' is not a dtype"),
        ('name = "a"', "field 'source': missing"),
        ('name = "a"\nsource = "./nowhere/model.safetensors"', "does not exist"),
        ('name = "a"\nbase = "bsae"', "no checkpoint named 'bsae'"),
        ('name = "a"\nsource = "org/m"\nlora = [{ path = "missing.safetensors" }]', "field 'lora[0]'.path"),
        ('name = "a"\nsource = "org/m"\ntextual_inversion = [{ path = "ck.toml", token = "two words" }]', "'textual_inversion[0]'.token"),
        ('name = "a"\nsource = "org/m"\nlora = [{ path = "ck.toml", scael = 1 }]', "unknown field 'scael'; did you mean 'scale'?"),
    ],
)
def test_bad_tables_name_file_checkpoint_and_field(tmp_path, body, expected):
    toml = write_toml(tmp_path / "ck.toml", f"[[checkpoint]]\n{body}\n")
    with pytest.raises(CheckpointError) as info:
        load_checkpoints(toml)
    message = str(info.value)
    assert str(toml) in message
    assert expected in message


def test_every_bad_table_is_reported_in_one_run(tmp_path):
    toml = write_toml(tmp_path / "ck.toml", (
        '[[checkpoint]]\nname = "a"\nsorce = "o/m"\n'
        '[[checkpoint]]\nname = "ok"\nsource = "o/m"\n'
        '[[checkpoint]]\nname = "b"\nsource = "o/m"\nkind = "sd3x"\n'
        '[[checkpoint]]\nname = "c"\nbase = "okk"\n'
    ))
    with pytest.raises(CheckpointError) as info:
        load_checkpoints(toml)
    lines = str(info.value).splitlines()
    assert lines[0] == f"3 problems in {toml}:"
    assert "unknown field 'sorce'; did you mean 'source'?" in lines[1]
    assert "checkpoint 'b', field 'kind'" in lines[2]
    assert "checkpoint 'c', field 'base'" in lines[3] and "'ok'" in lines[3]


def test_duplicates_cycles_and_file_level_errors(tmp_path):
    dup = write_toml(tmp_path / "dup.toml", '[[checkpoint]]\nname = "a"\nsource = "o/m"\n[[checkpoint]]\nname = "a"\nsource = "o/n"\n')
    with pytest.raises(CheckpointError, match="'a' is defined twice"):
        load_checkpoints(dup)
    cycle = write_toml(tmp_path / "cycle.toml", '[[checkpoint]]\nname = "a"\nbase = "b"\n[[checkpoint]]\nname = "b"\nbase = "a"\n')
    with pytest.raises(CheckpointError, match="cycle a -> b -> a"):
        load_checkpoints(cycle)
    broken = write_toml(tmp_path / "broken.toml", "[[checkpoint]\nname = \n")
    with pytest.raises(CheckpointError, match="not valid TOML"):
        load_checkpoints(broken)
    typo = write_toml(tmp_path / "typo.toml", '[[checkpoints]]\nname = "a"\n')
    with pytest.raises(CheckpointError, match="did you mean 'checkpoint'"):
        load_checkpoints(typo)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoints(tmp_path / "absent.toml")


def test_pickles_are_refused_without_allow_pickle(tmp_path):
    shutil.copy(BAD / "tensors.ckpt", tmp_path / "model.ckpt")
    toml = write_toml(tmp_path / "ck.toml", '[[checkpoint]]\nname = "p"\nsource = "model.ckpt"\n')
    with pytest.raises(PickleRefusedError) as info:
        load_checkpoints(toml)
    assert "--allow-pickle" in str(info.value) and "weights_only=True" in str(info.value)
    assert "'source'" in str(info.value)
    specs = load_checkpoints(toml, allow_pickle=True)
    assert detect_kind(specs["p"], specs, allow_pickle=True) == "sd1"  # read with weights_only=True


def test_malicious_pickle_is_not_executed(capsys):
    with pytest.raises(CheckpointError) as info:
        load_pickled_state_dict(BAD / "evil.ckpt", allow_pickle=True)
    assert "Unsupported global" in str(info.value)
    assert "this pickle ran code" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "name, expected",
    [
        ("empty.safetensors", "header too small"),
        ("text.safetensors", "not a readable .safetensors file"),
        ("truncated.safetensors", "not a readable .safetensors file"),
        ("not-sd.safetensors", "cannot tell SD 1.x / 2.x / SDXL"),
    ],
)
def test_bad_weight_files_have_clear_errors(name, expected):
    with pytest.raises(CheckpointError, match=expected.replace(".", r"\.")):
        kind_of_file(BAD / name)


def test_empty_source_file_rejected_up_front(tmp_path):
    shutil.copy(BAD / "empty.safetensors", tmp_path / "e.safetensors")
    toml = write_toml(tmp_path / "ck.toml", '[[checkpoint]]\nname = "e"\nsource = "e.safetensors"\n')
    with pytest.raises(CheckpointError, match=r"is empty \(0 bytes\)"):
        load_checkpoints(toml)


def test_kind_detection_from_folders_and_single_files(tmp_path_factory):
    from evaluator.generation.checkpoints import kind_of_folder

    assert kind_of_folder(tiny_pipeline(tmp_path_factory, "sd1")) == "sd1"
    assert kind_of_folder(tiny_pipeline(tmp_path_factory, "sdxl")) == "sdxl"
    assert kind_of_file(tiny_single_file(tmp_path_factory, "sd1")) == "sd1"
    assert kind_of_file(tiny_single_file(tmp_path_factory, "sdxl")) == "sdxl"


def test_fingerprint_stable_and_notices_changes(tmp_path, sd1):
    data = bytearray(range(256)) * (3 * 4096 + 7)  # ~3 MiB: head, middle and tail differ
    weights = tmp_path / "m.safetensors"
    weights.write_bytes(bytes(data))
    toml = write_toml(tmp_path / "ck.toml", '[[checkpoint]]\nname = "m"\nsource = "m.safetensors"\nkind = "sd1"\n')
    spec = load_checkpoints(toml)["m"]
    first = fingerprint(spec)
    assert fingerprint(spec)["fingerprint"] == first["fingerprint"]
    assert first["fingerprint"].startswith("quick:")
    # a change in the last MiB, same size: the quick fingerprint sees it and names the file
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    second = fingerprint(spec)
    assert second["fingerprint"] != first["fingerprint"]
    assert changed_files(first["files"], second["files"]) == ["source/m.safetensors (content)"]
    # a change in the middle escapes the quick fingerprint; the full hash sees it
    full_before = fingerprint(spec, full=True)["fingerprint"]
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert fingerprint(spec)["fingerprint"] == second["fingerprint"]
    assert fingerprint(spec, full=True)["fingerprint"] != full_before
    # content-based: a copy elsewhere (new mtime) has the same fingerprint
    other = tmp_path / "copy"
    other.mkdir()
    shutil.copy(weights, other / "m.safetensors")
    copy_toml = write_toml(other / "ck.toml", '[[checkpoint]]\nname = "m"\nsource = "m.safetensors"\nkind = "sd1"\n')
    assert fingerprint(load_checkpoints(copy_toml)["m"])["fingerprint"] == second["fingerprint"]


def test_shipped_configs_have_the_real_architectures():
    """Parameter counts of SD 1.5, 2.1 and SDXL base, built on the meta device (no memory)."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from evaluator.generation.checkpoints import CONFIGS_DIR

    def count(model):
        return sum(p.numel() for p in model.parameters())

    expected = {
        "sd1": (859_520_964, 83_653_863, 123_060_480),
        "sd2": (865_910_724, 83_653_863, 340_387_840),
        "sdxl": (2_567_463_684, 83_653_863, 123_060_480),
    }
    for kind, (unet_n, vae_n, text_n) in expected.items():
        root = CONFIGS_DIR / kind
        with init_empty_weights():
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(root / "unet"))
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(root / "vae"))
            text = CLIPTextModel(CLIPTextConfig.from_pretrained(root / "text_encoder"))
        assert (count(unet), count(vae), count(text)) == (unet_n, vae_n, text_n), kind
    with init_empty_weights():
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(CONFIGS_DIR / "sdxl" / "text_encoder_2"))
    assert count(text_2) == 694_659_840


def test_prepared_config_dir_is_complete_offline(tmp_path, monkeypatch):
    from transformers import CLIPTokenizer

    monkeypatch.setenv("ATELIER_CACHE", str(tmp_path))
    folder = prepare_config_dir("sdxl")
    assert prepare_config_dir("sdxl") == folder  # cached
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    tok = CLIPTokenizer.from_pretrained(folder / "tokenizer", local_files_only=True)
    tok2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2", local_files_only=True)
    assert len(tok) == 49408 and tok.pad_token == "<|endoftext|>" and tok2.pad_token == "!"
    with pytest.raises(CheckpointError, match="did you mean 'sdxl'"):
        prepare_config_dir("sdx")


def test_tokenizer_matches_open_clip_ids():
    import open_clip.tokenizer as oct

    from evaluator.generation.tokenizer import load_clip_tokenizer

    ours = load_clip_tokenizer()
    reference = oct.SimpleTokenizer()
    for text in ["a painting in the style of Claude Monet, oil on canvas", "Jean-Honoré Fragonard!! 1776 <3", "ukiyo-e 北斎"]:
        expected = [reference.sot_token_id, *reference.encode(text), reference.eot_token_id]
        assert ours(text).input_ids == expected
    small = load_clip_tokenizer(n_merges=1000)
    assert len(small) == 1514
    assert max(small("style of Claude Monet").input_ids) < 1514


def test_single_file_with_the_wrong_architecture_says_what_to_supply(tmp_path, tmp_path_factory, monkeypatch):
    """A tiny file read with the shipped SD 1.x config fails naming the mismatch and the fix."""
    from evaluator.generation.checkpoints import load_pipeline

    monkeypatch.setenv("ATELIER_CACHE", str(tmp_path / "cache"))
    single = tiny_single_file(tmp_path_factory, "sd1")
    toml = write_toml(tmp_path / "ck.toml", f'[[checkpoint]]\nname = "s"\nsource = "{single}"\n')
    specs = load_checkpoints(toml)
    with pytest.raises(CheckpointError) as info:
        load_pipeline(specs["s"], specs)
    message = str(info.value)
    assert "checkpoint 's', field 'source'" in message and "as sd1 with the architecture config" in message
    assert "expected shape" in message and "set config = a local diffusers folder" in message
