"""The prompt model: a sequence of leaves (text with a weight and a schedule) and alternations.

Reads and writes nothing. Every A1111 prompt flattens to this normal form, which is what
round trips (``grammar.parse(grammar.render(parts)) == normalize(parts)``):

* a ``Leaf`` is literal text (escapes already removed; a recipe's catalog ids are resolved
  to their text when its file is read), with the product of every attention weight around it (``(x)``
  1.1, ``[x]`` 1/1.1, ``(x:w)`` w; nested ones multiply, as A1111's ``multiply_range``);
* its schedule is the bounds of every prompt edit around it: ``after`` holds the ``N`` of
  ``[x:N]`` (and of the ``b`` side of ``[a:b:N]``), ``until`` the ``N`` of ``[x::N]`` (the
  ``a`` side). All bounds are kept, in order from the outermost: two bounds of different
  units (a step and a fraction) cannot be merged without knowing the step count;
* an ``Alternation`` is ``[a|b|c]``: its options are sequences of the same model.

A bound is an ``int`` step (A1111 reads a number >= 1 as a step and truncates it) or a
``float`` fraction of the steps (a number < 1). Weights are rounded to 6 decimals so that a
rendered weight reads back as the same float; adjacent leaves of equal weight and schedule
are one leaf (A1111 merges runs of equal weight too).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from evaluator.errors import InputError

Bound = Union[int, float]  # noqa: UP007  (isinstance-free alias, read by humans)
WEIGHT_DECIMALS = 6


def normal_weight(value: float) -> float:
    """A weight rounded so that its rendered text reads back as the same float (no -0.0)."""
    return round(float(value), WEIGHT_DECIMALS) + 0.0


def normal_bound(value: float | int) -> Bound:
    """A1111's reading of a schedule number: >= 1 is a step (truncated), < 1 a fraction."""
    number = float(value)
    if number >= 1:
        return int(number)
    return round(number, WEIGHT_DECIMALS) + 0.0


def resolve_bound(bound: Bound, steps: int) -> int:
    """The step a bound stands for at ``steps`` sampling steps (A1111's rule, capped at steps)."""
    number = float(bound)
    if number < 1:
        number *= steps
    return min(steps, int(number))


@dataclass(frozen=True, slots=True)
class Leaf:
    """Literal text with its attention weight and schedule bounds."""

    text: str = ""
    weight: float = 1.0
    after: tuple[Bound, ...] = ()  # active once the step is past every one of these
    until: tuple[Bound, ...] = ()  # active while the step is at or before every one of these

    @property
    def is_plain(self) -> bool:
        return self.weight == 1.0 and not self.after and not self.until

    def same_style(self, other: Leaf) -> bool:
        """Same weight and schedule: two such text leaves side by side are one leaf."""
        return (self.weight, self.after, self.until) == (other.weight, other.after, other.until)


@dataclass(frozen=True, slots=True)
class Alternation:
    """``[a|b|c]``: option ``(t - 1) % n`` at A1111 schedule step ``t`` (see ``schedule``)."""

    options: tuple[tuple[Node, ...], ...] = field(default=())


Node = Union[Leaf, Alternation]  # noqa: UP007


def scoped(nodes: Iterable[Node], weight: float = 1.0, after: tuple[Bound, ...] = (),
           until: tuple[Bound, ...] = ()) -> list[Node]:
    """``nodes`` inside an outer weight and schedule: weights multiply, bounds go first."""
    out: list[Node] = []
    for node in nodes:
        if isinstance(node, Leaf):
            out.append(Leaf(node.text, normal_weight(weight * node.weight), after + node.after,
                            until + node.until))
        else:
            out.append(Alternation(tuple(tuple(scoped(o, weight, after, until)) for o in node.options)))
    return out


def normalize(nodes: Iterable[Node]) -> tuple[Node, ...]:
    """The normal form: empty text dropped, neighbours of one weight and schedule merged."""
    out: list[Node] = []
    for node in nodes:
        if isinstance(node, Alternation):
            out.append(Alternation(tuple(normalize(option) for option in node.options)))
            continue
        node = Leaf(node.text, normal_weight(node.weight), tuple(normal_bound(b) for b in node.after),
                    tuple(normal_bound(b) for b in node.until))
        if not node.text:
            continue
        last = out[-1] if out else None
        if isinstance(last, Leaf) and last.same_style(node):
            out[-1] = Leaf(last.text + node.text, last.weight, last.after, last.until)
        else:
            out.append(node)
    return tuple(out)


def is_plain(nodes: Sequence[Node]) -> bool:
    """True when the prompt is one unweighted, unscheduled text (or nothing)."""
    return all(isinstance(n, Leaf) and n.is_plain for n in nodes) and len(nodes) <= 1


def plain_text(nodes: Sequence[Node]) -> str:
    """The text of a plain prompt (``is_plain``)."""
    return "".join(n.text for n in nodes if isinstance(n, Leaf))


# ------------------------------------------------------------------ JSON


def _bounds_json(bounds: tuple[Bound, ...]) -> Any:
    return bounds[0] if len(bounds) == 1 else list(bounds)


def to_json(nodes: Iterable[Node]) -> list[dict[str, Any]]:
    """JSON-ready parts: ``{"text", "weight", "from", "to"}`` (defaults left out) or
    ``{"alternate": [[parts], ...]}``; ``from``/``to`` are a number, or a list when nested."""
    out: list[dict[str, Any]] = []
    for node in nodes:
        if isinstance(node, Alternation):
            out.append({"alternate": [to_json(o) for o in node.options]})
            continue
        item: dict[str, Any] = {"text": node.text}
        if node.weight != 1.0:
            item["weight"] = node.weight
        if node.after:
            item["from"] = _bounds_json(node.after)
        if node.until:
            item["to"] = _bounds_json(node.until)
        out.append(item)
    return out


def _bounds_from(value: Any, where: str) -> tuple[Bound, ...]:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InputError(f"{where}: a schedule bound must be a number but is {v!r}")
    return tuple(normal_bound(v) for v in values)


def from_json(items: Any, where: str = "parts") -> tuple[Node, ...]:
    """The inverse of ``to_json`` (normalized); a malformed item names its index."""
    if not isinstance(items, list):
        raise InputError(f"{where}: expected a list of parts but got {type(items).__name__}")
    nodes: list[Node] = []
    for index, item in enumerate(items):
        here = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise InputError(f"{here}: a part must be an object but is {item!r}")
        if "alternate" in item:
            options = item["alternate"]
            if not isinstance(options, list) or len(options) < 2:
                raise InputError(f"{here}: alternate needs a list of at least 2 options")
            nodes.append(Alternation(tuple(from_json(o, f"{here}.alternate[{i}]") for i, o in enumerate(options))))
            continue
        unknown = sorted(set(item) - {"text", "weight", "from", "to"})
        if unknown:
            raise InputError(f"{here}: unknown key(s) {unknown}; a part has text, weight, from, to")
        weight = item.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InputError(f"{here}: weight must be a number but is {weight!r}")
        nodes.append(Leaf(str(item.get("text", "")), float(weight), _bounds_from(item.get("from", []), here),
                          _bounds_from(item.get("to", []), here)))
    return normalize(nodes)
