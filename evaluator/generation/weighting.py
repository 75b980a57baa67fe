"""Prompt syntax in diffusers: A1111's attention weights and per-step prompt switching.

Reads and writes nothing: functions over a loaded SD 1.x / SDXL pipeline. A prompt in A1111
syntax (``catalog.recipes.grammar``) becomes, per unit, a ``StepSchedule`` of distinct
prompts (``catalog.recipes.schedule``); each is encoded once with A1111's arithmetic:

1. every (text, weight) run is tokenized on its own (textual-inversion tokens expanded as
   diffusers does), the tokens concatenated and cut to the encoder's 75 (A1111 would
   start a second 75-token chunk; diffusers truncates, and so do we);
2. the text encoder runs on the unweighted tokens (SD 1.x: last hidden state; SDXL: the
   penultimate layer of both encoders, concatenated, and the second one's pooled output);
3. each token's embedding is multiplied by its weight and the whole is rescaled to the
   mean it had before (A1111's ``sd_hijack_clip``), per encoder; the pooled vector is
   left unweighted, as A1111 leaves it. A mean of ~0 is not rescaled to (``_weighted``).

The pipeline is then called with ``prompt_embeds`` for step 0, and a
``callback_on_step_end`` puts in each later step's embeddings (and SDXL's pooled ones).
A prompt with no syntax never comes here: the runner passes it as text, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from catalog.recipes.schedule import Chunks, StepSchedule, step_schedule

SYNTAX_CHARACTERS = "\\()[]"
# Below this fraction of the embeddings' mean magnitude a mean is ~0 and is not rescaled to.
MEAN_FLOOR = 1e-3


def prompt_nodes(prompt: str, where: str = "prompt"):
    """The parts of a prompt; a prompt with none of ``\\ ( ) [ ]`` is plain without parsing."""
    from catalog.recipes.grammar import parse
    from catalog.recipes.parts import Leaf

    if not any(c in prompt for c in SYNTAX_CHARACTERS):
        return (Leaf(prompt),) if prompt else ()
    return parse(prompt, where)


def plain_prompt(prompt: str) -> str | None:
    """The text a plain prompt stands for (escapes removed), or None if it has syntax."""
    from catalog.recipes.parts import is_plain, plain_text

    nodes = prompt_nodes(prompt)
    return plain_text(nodes) if is_plain(nodes) else None


def _encoders(pipe) -> list[tuple[Any, Any]]:
    """(tokenizer, text encoder) pairs of the pipeline, first one first."""
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if getattr(pipe, "text_encoder_2", None) is not None:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def _token_ids(pipe, tokenizer, chunks: Chunks) -> tuple[list[int], list[float]]:
    """Token ids (BOS, body, EOS, padding) and one weight per token, A1111 style."""
    length = tokenizer.model_max_length
    empty = tokenizer("", padding="max_length", max_length=length).input_ids
    bos, eos, pad = empty[0], empty[1], empty[2] if length > 2 else empty[1]
    body: list[int] = []
    weights: list[float] = []
    for text, weight in chunks:
        if hasattr(pipe, "maybe_convert_prompt"):
            text = pipe.maybe_convert_prompt(text, tokenizer)
        ids = tokenizer(text, add_special_tokens=False).input_ids
        body.extend(ids)
        weights.extend([weight] * len(ids))
    body, weights = body[: length - 2], weights[: length - 2]
    padding = length - 2 - len(body)
    return [bos, *body, eos] + [pad] * padding, [1.0, *weights, 1.0] + [1.0] * padding


def _weighted(hidden, weights):
    """A1111's emphasis: multiply each token's vector, then restore the original mean.

    A mean that is ~0 next to the values (under ``MEAN_FLOOR`` of their mean magnitude, as
    with an encoder whose final layer norm has no bias) would make A1111's rescale a
    division by ~0 (inf, or a sign flip); then the multiplied vectors are kept unscaled.
    """
    import torch

    original_mean = hidden.mean()
    floor = MEAN_FLOOR * hidden.abs().mean()
    scale = torch.tensor(weights, dtype=hidden.dtype, device=hidden.device).reshape(1, -1, 1)
    hidden = hidden * scale
    new_mean = hidden.mean()
    if original_mean.abs() < floor or new_mean.abs() < floor:
        return hidden
    return hidden * (original_mean / new_mean)


def encode_chunks(pipe, chunks: Chunks) -> tuple[Any, Any | None]:
    """(prompt embeddings [1, 77, D], pooled embeddings [1, P] for SDXL else None)."""
    import torch

    pieces, pooled = [], None
    pairs = _encoders(pipe)
    for tokenizer, encoder in pairs:
        ids, weights = _token_ids(pipe, tokenizer, chunks)
        device = encoder.device
        output = encoder(torch.tensor([ids], device=device), output_hidden_states=len(pairs) > 1)
        if len(pairs) > 1:  # SDXL: penultimate layer; the pooled vector of the last encoder
            hidden = output.hidden_states[-2]
            if output[0].ndim == 2:
                pooled = output[0]
        else:
            hidden = output[0]
        pieces.append(_weighted(hidden, weights) if any(w != 1.0 for w in weights) else hidden)
    embeds = torch.cat(pieces, dim=-1) if len(pieces) > 1 else pieces[0]
    return embeds, pooled


@dataclass
class _Side:
    """The encoded prompts of one side (positive or negative) of a batch, per unit."""

    schedules: list[StepSchedule]
    embeds: list[list[Any]]  # unit -> prompt index -> [1, 77, D]
    pooled: list[list[Any]]  # unit -> prompt index -> [1, P] or None

    def at(self, step: int):
        import torch

        embeds = torch.cat([e[s.per_step[step]] for e, s in zip(self.embeds, self.schedules, strict=True)])
        pooled = None
        if self.pooled and self.pooled[0][0] is not None:
            pooled = torch.cat([p[s.per_step[step]] for p, s in zip(self.pooled, self.schedules, strict=True)])
        return embeds, pooled


def _encode_side(pipe, prompts: Sequence[str], steps: int) -> _Side:
    schedules = [step_schedule(prompt_nodes(p), steps) for p in prompts]
    embeds, pooled = [], []
    for schedule in schedules:
        encoded = [encode_chunks(pipe, chunks) for chunks in schedule.prompts]
        embeds.append([e for e, _ in encoded])
        pooled.append([p for _, p in encoded])
    return _Side(schedules, embeds, pooled)


def weighted_call_arguments(pipe, prompts: Sequence[str], negative: str, steps: int) -> dict[str, Any]:
    """The pipeline arguments for prompts with syntax: embeddings and the step callback.

    ``negative`` is the batch's one negative prompt: passed as text when plain (diffusers
    encodes it, or zeroes an empty one for SDXL, as before), else encoded here too.
    """
    positive = _encode_side(pipe, prompts, steps)
    negative_plain = plain_prompt(negative) if negative else ""
    negative_side = None
    if negative_plain is None:  # one encoding, shared by the batch (one negative per batch)
        once = _encode_side(pipe, [negative], steps)
        count = len(prompts)
        negative_side = _Side(once.schedules * count, once.embeds * count, once.pooled * count)
    embeds, pooled = positive.at(0)
    arguments: dict[str, Any] = {"prompt_embeds": embeds}
    if pooled is not None:
        arguments["pooled_prompt_embeds"] = pooled
    if negative_side is None:
        arguments["negative_prompt"] = [negative_plain] * len(prompts) if negative_plain else None
    else:
        negative_embeds, negative_pooled = negative_side.at(0)
        arguments["negative_prompt_embeds"] = negative_embeds
        if negative_pooled is not None:
            arguments["negative_pooled_prompt_embeds"] = negative_pooled
    switching = any(s.switches() for s in positive.schedules) or (
        negative_side is not None and any(s.switches() for s in negative_side.schedules))
    if switching:
        arguments["callback_on_step_end"] = _StepSwitcher(positive, negative_side, steps)
        arguments["callback_on_step_end_tensor_inputs"] = (
            ["prompt_embeds", "add_text_embeds"] if pooled is not None else ["prompt_embeds"])
    return arguments


class _StepSwitcher:
    """``callback_on_step_end``: after step i, the embeddings of step i + 1.

    The pipeline holds [negative; positive] when it guides (classifier-free guidance); the
    negative half is kept as the pipeline made it unless the negative prompt has syntax.
    """

    def __init__(self, positive: _Side, negative: _Side | None, steps: int) -> None:
        self.positive, self.negative, self.steps = positive, negative, steps

    def __call__(self, pipe, index: int, timestep, kwargs: dict) -> dict:
        import torch

        total = max(1, len(getattr(pipe.scheduler, "timesteps", [])) or self.steps)
        step = min(self.steps - 1, (index + 1) * self.steps // total)
        current = kwargs["prompt_embeds"]
        embeds, pooled = self.positive.at(step)
        batch = embeds.shape[0]
        out: dict[str, Any] = {}
        if current.shape[0] == 2 * batch:  # guided: [negative; positive]
            negative = current[:batch] if self.negative is None else self.negative.at(step)[0]
            out["prompt_embeds"] = torch.cat([negative.to(current), embeds.to(current)])
        else:
            out["prompt_embeds"] = embeds.to(current)
        if pooled is not None and "add_text_embeds" in kwargs:
            text_embeds = kwargs["add_text_embeds"]
            if text_embeds.shape[0] == 2 * batch:
                negative_pooled = text_embeds[:batch] if self.negative is None else self.negative.at(step)[1]
                out["add_text_embeds"] = torch.cat([negative_pooled.to(text_embeds), pooled.to(text_embeds)])
            else:
                out["add_text_embeds"] = pooled.to(text_embeds)
        return out
