"""A1111 prompt syntax read into the ``parts`` model and written back (a lark grammar).

Reads and writes nothing but strings. The syntax (AUTOMATIC1111's ``prompt_parser``):

* attention: ``(x)`` multiplies x's weight by 1.1, ``[x]`` divides it by 1.1, ``(x:1.3)``
  multiplies it by 1.3; nesting multiplies (``((x))`` is 1.21). The weight follows the
  colon directly, as A1111's attention regex needs: ``(x: 1.3)`` is ``(x)`` of "x: 1.3";
* prompt editing: ``[a:b:N]`` is a until step N, then b; ``[a:N]`` adds a after N,
  ``[a::N]`` removes it after N. N >= 1 is a step number, N < 1 a fraction of the steps;
* alternation: ``[a|b|c]`` changes option every step;
* escapes: a backslash makes the next character literal (``\\(``, ``\\)``, ``\\[``, ``\\:``).

Outside square brackets ``:`` and ``|`` are text (``masterpiece: a cat``); inside them they
are syntax. Unlike A1111, which silently reads an unbalanced prompt as plain text, ``parse``
refuses it with the column of the problem. ``AND`` and ``BREAK`` are text here (A1111's
composable-diffusion and chunk-break keywords are not implemented).

``render`` writes the canonical form: explicit weights ``(x:1.21)``, ``[a:b:N]`` for an
edit pair, ``[a:N]``/``[a::N]`` otherwise, and ``parse(render(p)) == normalize(p)``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from catalog.recipes.parts import Alternation, Bound, Leaf, Node, normal_bound, normalize, scoped
from evaluator.errors import InputError

EMPHASIS = 1.1  # A1111's round_bracket_multiplier; [x] divides by it
# A prompt of text and escapes only: what the grammar reads as one unweighted leaf.
_LITERAL = re.compile(r"(?:[^\\()\[\]]|\\.)*", re.S)
_UNESCAPE = re.compile(r"\\(.)", re.S)

GRAMMAR = r"""
start: seq
seq: _item*
bseq: _bitem*
_item: _group | TEXT | ESCAPE | COLON | PIPE
_bitem: _group | TEXT | ESCAPE
_group: weighted | emphasis | deemphasis | added | edited | alternate
weighted: "(" seq WEIGHT_END
emphasis: "(" seq ")"
deemphasis: "[" bseq "]"
added: "[" bseq SCHED_END
edited: "[" bseq COLON bseq SCHED_END
alternate: "[" bseq (PIPE bseq)+ "]"
TEXT: /[^\\\[\]():|]+/
ESCAPE: /\\./s
COLON: ":"
PIPE: "|"
WEIGHT_END.2: /:[+-]?(\d+\.?\d*|\.\d+)\)/
SCHED_END.2: /:[ \t\r\n\f]*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\]/
"""


@functools.cache
def _parser():
    import lark

    return lark.Lark(GRAMMAR, parser="lalr", lexer="contextual", maybe_placeholders=False)


def _number(token: str) -> float:
    """The number of a ``:N)`` or ``:N]`` token."""
    return float(token[1:-1].strip())


def _build(tree) -> list[Node]:
    """Nodes of a parsed (b)seq tree, weights and bounds pushed down to the leaves."""
    out: list[Node] = []
    for child in tree.children:
        if not hasattr(child, "data"):  # a token
            text = child.value[1:] if child.type == "ESCAPE" else child.value
            out.append(Leaf(text))
        else:
            out.extend(_GROUPS[child.data](child.children))
    return out


def _weighted(children) -> list[Node]:
    return scoped(_build(children[0]), _number(children[1].value))


def _emphasis(children) -> list[Node]:
    return scoped(_build(children[0]), EMPHASIS)


def _deemphasis(children) -> list[Node]:
    return scoped(_build(children[0]), 1 / EMPHASIS)


def _added(children) -> list[Node]:
    return scoped(_build(children[0]), after=(normal_bound(_number(children[1].value)),))


def _edited(children) -> list[Node]:
    when = normal_bound(_number(children[3].value))
    return scoped(_build(children[0]), until=(when,)) + scoped(_build(children[2]), after=(when,))


def _alternate(children) -> list[Node]:
    options = [c for c in children if hasattr(c, "data")]
    return [Alternation(tuple(tuple(_build(o)) for o in options))]


_GROUPS = {"weighted": _weighted, "emphasis": _emphasis, "deemphasis": _deemphasis,
           "added": _added, "edited": _edited, "alternate": _alternate}


def parse(prompt: str, where: str = "prompt") -> tuple[Node, ...]:
    """The parts of an A1111 prompt (normal form); a syntax error names its column."""
    if not isinstance(prompt, str):
        raise InputError(f"{where}: a prompt must be text but is {type(prompt).__name__}")
    nodes, problem = _parse_once(prompt)
    if problem is not None:
        raise InputError(f"{where}: column {problem[0]}: {problem[1]}")
    return nodes


@functools.lru_cache(maxsize=1 << 16)
def _parse_once(prompt: str) -> tuple[tuple[Node, ...], tuple[int, str] | None]:
    """(nodes, None) or ((), (column, reason)); cached: a plan repeats each prompt per seed
    and checkpoint, and the runner checks every unit's prompt before it starts."""
    import lark

    if _LITERAL.fullmatch(prompt):  # text and escapes only (most prompts): no tree needed
        return normalize([Leaf(_UNESCAPE.sub(r"\1", prompt))]), None
    try:
        tree = _parser().parse(prompt)
    except lark.exceptions.UnexpectedInput as exc:
        return (), _explain(prompt, exc)
    return normalize(_build(tree.children[0])), None


def _open_brackets(prompt: str, end: int) -> list[tuple[str, int]]:
    """The brackets still open before ``end``: (bracket, 1-based column), escapes skipped."""
    stack: list[tuple[str, int]] = []
    index = 0
    while index < end:
        char = prompt[index]
        if char == "\\":
            index += 2
            continue
        if char in "([":
            stack.append((char, index + 1))
        elif char in ")]" and stack:
            stack.pop()
        index += 1
    return stack


def _explain(prompt: str, exc) -> tuple[int, str]:
    """(1-based column, a sentence) for a syntax error, with the text around it."""
    import lark

    position = exc.pos_in_stream
    if isinstance(exc, lark.exceptions.UnexpectedToken) and exc.token.type == "$END":
        position = len(prompt)
    char = prompt[position] if position < len(prompt) else ""
    stack = _open_brackets(prompt, position)
    innermost = stack[-1] if stack else None
    if not char:
        bracket, column = innermost or ("(", 0)
        reason = f"the prompt ends inside the {bracket!r} of column {column} (close it, or write \\{bracket})"
    elif char in ")]" and innermost is None:
        reason = f"{char!r} closes nothing (write \\{char} for the character)"
    elif char in ")]" and innermost[0] == "[" and char == "]":
        reason = "[a:b] needs a step: [a:b:N], [a:N] or [a::N] (write \\: for a literal colon)"
    elif char in ")]":
        reason = f"{char!r} cannot close the {innermost[0]!r} of column {innermost[1]}"
    elif char in ":|":
        reason = (f"{char!r} inside [...] must be [a:b:N], [a:N], [a::N] or [a|b] "
                  f"(write \\{char} for the character)")
    elif char == "\\":
        reason = "a backslash at the end escapes nothing (write \\\\ for the character)"
    else:
        reason = f"unexpected {char!r}"
    near = prompt[max(0, position - 12): position + 12]
    return position + 1, f"{reason}; near {near!r}"


# ------------------------------------------------------------------ render

_ESCAPED_ALWAYS = "\\()[]"
_ESCAPED_NESTED = ":|"


def escape(text: str, nested: bool) -> str:
    """Literal text in prompt syntax: ``\\ ( ) [ ]`` escaped, and ``: |`` inside brackets."""
    special = _ESCAPED_ALWAYS + (_ESCAPED_NESTED if nested else "")
    return "".join("\\" + c if c in special else c for c in text)


def format_number(value: float | int) -> str:
    """A weight or bound as A1111 reads it back to the same value ("1.21", "0.4", "10")."""
    if isinstance(value, int):
        return str(value)
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _weighted_text(leaf: Leaf, nested: bool) -> str:
    if leaf.weight == 1.0:
        return escape(leaf.text, nested)
    return f"({escape(leaf.text, True)}:{format_number(leaf.weight)})"


def _with_bounds(text: str, after: tuple[Bound, ...], until: tuple[Bound, ...]) -> str:
    for bound in reversed(until):
        text = f"[{text}::{format_number(bound)}]"
    for bound in reversed(after):
        text = f"[{text}:{format_number(bound)}]"
    return text


def _edit_pair(first: Node, second: Node) -> bool:
    """``first`` is the a and ``second`` the b of one ``[a:b:N]``."""
    return (isinstance(first, Leaf) and isinstance(second, Leaf) and not first.after and not second.until
            and len(first.until) == 1 and first.until == second.after)


def render(nodes: Sequence[Node], nested: bool = False) -> str:
    """The canonical A1111 text of ``nodes``."""
    nodes = list(nodes)
    pieces: list[str] = []
    index = 0
    while index < len(nodes):
        node = nodes[index]
        if isinstance(node, Alternation):
            pieces.append("[" + "|".join(render(option, nested=True) for option in node.options) + "]")
        elif index + 1 < len(nodes) and _edit_pair(node, nodes[index + 1]):
            other = nodes[index + 1]
            pieces.append(f"[{_weighted_text(node, True)}:{_weighted_text(other, True)}:"
                          f"{format_number(node.until[0])}]")
            index += 1
        else:
            bounded = bool(node.after or node.until)
            pieces.append(_with_bounds(_weighted_text(node, nested or bounded), node.after, node.until))
        index += 1
    return "".join(pieces)
