"""Caption dropout (kohya's caption_dropout_rate): which captions are trained as ""."""

from __future__ import annotations

import pytest

from evaluator.errors import InputError
from evaluator.training.config import TrainingConfig
from evaluator.training.models import dropped_caption


def _config(rate: float) -> TrainingConfig:
    return TrainingConfig(base="b", dataset="d", output_name="o", caption_dropout_rate=rate, seed=3).validate()


def test_dropout_share_follows_the_rate_and_is_reproducible():
    config = _config(0.25)
    draws = [dropped_caption(config, "a painting", step, index) for step in range(40) for index in range(25)]
    share = draws.count("") / len(draws)
    assert 0.2 < share < 0.3
    assert set(draws) == {"", "a painting"}
    again = [dropped_caption(config, "a painting", step, index) for step in range(40) for index in range(25)]
    assert draws == again


def test_no_dropout_by_default():
    config = _config(0.0)
    assert all(dropped_caption(config, "x", step, 0) == "x" for step in range(200))


@pytest.mark.parametrize("rate", [-0.1, 1.0, 2.0])
def test_bad_rate_is_refused_naming_the_field(rate):
    with pytest.raises(InputError, match="caption_dropout_rate"):
        _config(rate)
