"""TrainingConfig: read from TOML, flags override, and every bad value refused naming its field."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from click.testing import CliRunner

from evaluator.errors import InputError
from evaluator.training.config import TrainingConfig, from_mapping, load_config
from tests.support.training import planted_style_dataset, toml_text

REQUIRED = {"base": "base-model", "dataset": "data", "output_name": "mystyle"}


def write(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(toml_text({**REQUIRED, **fields}))
    return path


def refused(tmp_path: Path, **fields) -> str:
    with pytest.raises(InputError) as info:
        load_config(write(tmp_path, **fields))
    return str(info.value)


def test_reads_fields_and_resolves_paths_against_the_file(tmp_path):
    (tmp_path / "base-model").mkdir()
    config = load_config(write(tmp_path, rank=8, alpha=4.0, validation_prompts=["a", "b"], noise_offset=0))
    assert config.rank == 8 and config.lora_alpha == 4.0 and config.validation_prompts == ["a", "b"]
    assert config.dataset == str(tmp_path / "data")  # relative to the TOML
    assert config.base == str(tmp_path / "base-model")  # an existing path, made absolute
    assert isinstance(config.noise_offset, float)
    assert TrainingConfig(**REQUIRED).lora_alpha == 4.0  # alpha unset = rank


def test_a_base_that_is_no_path_stays_a_checkpoint_name(tmp_path):
    assert load_config(write(tmp_path, base="sd15")).base == "sd15"


def test_overrides_win_over_the_file_and_are_validated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(write(tmp_path, max_train_steps=10), {"max_train_steps": 3, "dataset": "elsewhere"})
    assert config.max_train_steps == 3
    assert config.dataset == str(tmp_path / "elsewhere")
    with pytest.raises(InputError, match="'rank'"):
        load_config(write(tmp_path), {"rank": 0})


def test_unknown_field_is_refused_with_the_closest_name(tmp_path):
    message = refused(tmp_path, learning_rat=1e-4)
    assert "unknown field 'learning_rat'" in message and "did you mean 'learning_rate'" in message
    assert str(tmp_path / "train.toml") in message


@pytest.mark.parametrize(
    ("fields", "named", "says"),
    [
        ({"rank": 0}, "rank", ">= 1"),
        ({"resolution": 500}, "resolution", "multiple of 8"),
        ({"resolution": 520}, "resolution", "multiple of bucket_reso_steps"),
        ({"method": "lorra"}, "method", "did you mean 'lora'"),
        ({"lr_scheduler": "cosin"}, "lr_scheduler", "did you mean 'cosine'"),
        ({"rank": "4"}, "rank", "must be int"),
        ({"train_text_encoder": "yes"}, "train_text_encoder", "must be bool"),
        ({"validation_seeds": [0, "1"]}, "validation_seeds", "must be int"),
        ({"learning_rate": 0}, "learning_rate", "> 0"),
        ({"validation_fraction": 1.0}, "validation_fraction", "between 0 and 1"),
        ({"output_name": "a/b"}, "output_name", "[A-Za-z0-9._-]+"),
        ({"output_name": "x@step-000001"}, "output_name", "must match"),
        ({"method": "textual_inversion", "initializer_token": "art"}, "placeholder_token", "one word"),
        ({"method": "textual_inversion", "placeholder_token": "<s>"}, "initializer_token", "one word"),
        ({"class_data_dir": "cls"}, "class_prompt", "required"),
        ({"class_data_dir": "cls", "class_prompt": "a painting"}, "class_data_dir", "method 'full'"),
        ({"mixed_precision": "fp16"}, "mixed_precision", "CUDA"),
        ({"min_snr_gamma": -1.0}, "min_snr_gamma", "> 0"),
        ({"max_bucket_reso": 256, "resolution": 512}, "resolution", "within"),
    ],
)
def test_bad_values_are_refused_naming_the_field(tmp_path, fields, named, says):
    message = refused(tmp_path, **fields)
    assert f"'{named}'" in message and says in message, message


def test_required_fields(tmp_path):
    with pytest.raises(InputError, match="field 'output_name' is required"):
        from_mapping({"base": "b", "dataset": "d"})


def test_tables_are_refused(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('[train]\nbase = "x"\n')
    with pytest.raises(InputError, match=r"\[train\] tables are not read"):
        load_config(path)


def test_every_field_has_a_reason_and_a_flag():
    from evaluator.cli.train import field_help, train_cmd

    helps = field_help()
    names = [f.name for f in dataclasses.fields(TrainingConfig)]
    assert [n for n in names if n not in helps] == []
    flags = {opt for p in train_cmd.params for opt in p.opts}
    assert [n for n in names if "--" + n.replace("_", "-") not in flags] == []


def test_cli_refuses_a_bad_flag_before_loading_anything(tmp_path):
    from evaluator.cli.main import main

    config = write(tmp_path)
    result = CliRunner().invoke(main, ["train", str(config), "-w", str(tmp_path / "wd"), "--rank", "0"])
    assert result.exit_code == 1 and "field 'rank' must be >= 1" in result.output
    assert not (tmp_path / "wd" / "training").exists()


def test_cli_names_an_unknown_base_with_a_suggestion(tmp_path):
    from evaluator.cli.main import main

    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")
    checkpoints = tmp_path / "ck.toml"
    checkpoints.write_text(f'[[checkpoint]]\nname = "sd15"\nsource = "{tmp_path / "pipe"}"\n')
    planted_style_dataset(tmp_path / "data", count=3)
    config = write(tmp_path, base="sd16", checkpoints=str(checkpoints))
    result = CliRunner().invoke(main, ["train", str(config), "-w", str(tmp_path / "wd")])
    assert result.exit_code == 1, result.output
    assert "field 'base'" in result.output and "did you mean 'sd15'" in result.output


@pytest.mark.parametrize("problem", ["empty", "orphan caption"])
def test_cli_refuses_a_dataset_naming_the_file(tmp_path, problem):
    from evaluator.cli.main import main

    (tmp_path / "pipe").mkdir()
    (tmp_path / "pipe" / "model_index.json").write_text("{}")  # no weights: the dataset is read first
    data = tmp_path / "data"
    (data / "1_x").mkdir(parents=True)
    if problem == "orphan caption":
        planted_style_dataset(data, count=2, concept="x")
        (data / "1_x" / "lonely.txt").write_text("a caption")
    result = CliRunner().invoke(main, ["train", str(write(tmp_path, base="pipe")), "-w", str(tmp_path / "wd")])
    assert result.exit_code == 1, result.output
    if problem == "empty":
        assert "holds no image" in result.output and str(data) in result.output
    else:
        assert "lonely.txt" in result.output and "caption file without an image" in result.output
