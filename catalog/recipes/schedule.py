"""Which text, with which weights, the text encoder sees at each sampling step (A1111's rules).

Reads and writes nothing. A1111 (``prompt_parser.get_learned_conditioning_prompt_schedules``
and ``reconstruct_cond_batch``) works in two steps, and so does this module:

1. the *schedule steps* ``S``: the step count, every bound resolved to a step
   (``parts.resolve_bound``: a fraction times the steps, truncated), and, when the prompt
   alternates, every step 1..steps. Each ``t`` in ``S`` has one prompt: a leaf is in it
   when ``t`` is past each of its ``after`` bounds and at or before each ``until`` bound;
   an alternation takes option ``(t - 1) % n``;
2. at sampling step ``k`` (0-based, as A1111's denoiser counts), the prompt of the smallest
   ``t`` in ``S`` with ``k <= t`` is used.

So ``[a:b:10]`` at 20 steps is a for steps 0..10 and b from step 11, and ``[a|b]`` is
a, a, b, a, b, ... (steps 0 and 1 both map to ``t = 1``), exactly as A1111 samples them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from catalog.recipes.parts import Alternation, Leaf, Node, resolve_bound

Chunks = tuple[tuple[str, float], ...]  # (text, weight) runs, neighbours of equal weight merged


@dataclass(frozen=True)
class StepSchedule:
    """The distinct prompts of a recipe and, for each sampling step, the one it uses."""

    prompts: tuple[Chunks, ...]
    per_step: tuple[int, ...]  # index into ``prompts`` for step 0 .. steps-1

    def switches(self) -> list[int]:
        """The steps whose prompt differs from the previous step's."""
        return [k for k in range(1, len(self.per_step)) if self.per_step[k] != self.per_step[k - 1]]


def _bounds(nodes: Sequence[Node], steps: int, out: set[int]) -> bool:
    """Add every resolved bound to ``out``; return True when the prompt alternates."""
    alternates = False
    for node in nodes:
        if isinstance(node, Leaf):
            out.update(resolve_bound(b, steps) for b in (*node.after, *node.until))
        else:
            alternates = True
            for option in node.options:
                _bounds(option, steps, out)
    return alternates


def schedule_steps(nodes: Sequence[Node], steps: int) -> list[int]:
    """A1111's schedule steps ``S`` (see the module docstring), sorted."""
    found: set[int] = {steps}
    if _bounds(nodes, steps, found):
        found.update(range(1, steps + 1))
    return sorted(found)


def _active(leaf: Leaf, t: int, steps: int) -> bool:
    return all(t > resolve_bound(b, steps) for b in leaf.after) and all(
        t <= resolve_bound(b, steps) for b in leaf.until)


def _leaves_at(nodes: Sequence[Node], t: int, steps: int) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for node in nodes:
        if isinstance(node, Alternation):
            out.extend(_leaves_at(node.options[(t - 1) % len(node.options)], t, steps))
        elif _active(node, t, steps):
            out.append((node.text, node.weight))
    return out


def chunks_at(nodes: Sequence[Node], t: int, steps: int) -> Chunks:
    """The (text, weight) runs of the prompt at schedule step ``t``, equal weights merged."""
    merged: list[tuple[str, float]] = []
    for text, weight in _leaves_at(nodes, t, steps):
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + text, weight)
        elif text:
            merged.append((text, weight))
    return tuple(merged)


def step_schedule(nodes: Sequence[Node], steps: int) -> StepSchedule:
    """The prompts of ``nodes`` over ``steps`` sampling steps, one index per step."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1 but is {steps}")
    entries = [(t, chunks_at(nodes, t, steps)) for t in schedule_steps(nodes, steps)]
    prompts: list[Chunks] = []
    per_step: list[int] = []
    for k in range(steps):
        chunks = next(c for t, c in entries if k <= t)
        if chunks not in prompts:
            prompts.append(chunks)
        per_step.append(prompts.index(chunks))
    return StepSchedule(tuple(prompts), tuple(per_step))
