"""A1111 prompt syntax: parse, canonical render, round trips and A1111's step semantics.

Expected values follow A1111's documented rules (prompt_parser.py and the wiki): ``(x)``
x1.1, ``[x]`` /1.1, ``(x:w)`` xw, nesting multiplies; ``[a:b:N]`` is a while the sampler's
step k <= N (N < 1: a fraction of the steps, truncated), ``[a|b]`` takes option (t-1) % n
with t = max(k, 1).
"""

from __future__ import annotations

import random

import pytest

from catalog.recipes.grammar import escape, parse, render
from catalog.recipes.parts import Alternation, Leaf, from_json, normalize, to_json
from catalog.recipes.schedule import chunks_at, schedule_steps, step_schedule
from evaluator.errors import InputError

CORPUS = [
    "a painting in the style of Claude Monet",
    "masterpiece: a cat | a dog",
    "a (red:1.2) car",
    "((masterpiece)), best quality, [[blurry]]",
    "(((house:1.3)) [on] a (hill:0.5), sun, (((sky))).)",
    "fantasy landscape with a [mountain:lake:0.25] and [an oak:a christmas tree:0.75]"
    "[ in foreground::0.6][ in background:0.25] [shoddy:masterful:0.5]",
    "a [b:3]",
    "a [b: 3]",
    "a [[[b]]:2]",
    "[(a:2):3]",
    "a [b : c : 1] d",
    "a[b:[c:d:2]:1]e",
    "[a|(b:1.1)]",
    "[cat|dog|[fox|wolf]] ears",
    "[(a [b|c]:1.3):d:0.5]",
    r"akira_\(coffee_curry\), solo",
    r"\[not a bracket\] \: \| \\ backslash",
    "(a: 1.2)",
    "(a:b)",
    "([a:b:4], c:0.8)",
    "[a::0.4] [b:0.4] [c:d:10]",
    "",
]


def _a1111_schedule(prompt: str, steps: int) -> list[list]:
    """[[t, text], ...] as A1111's get_learned_conditioning_prompt_schedules lists them."""
    nodes = parse(prompt)
    return [[t, "".join(text for text, _ in chunks_at(nodes, t, steps))] for t in schedule_steps(nodes, steps)]


@pytest.mark.parametrize("prompt", CORPUS)
def test_round_trip_over_the_corpus(prompt):
    parts = parse(prompt)
    canonical = render(parts)
    assert parse(canonical) == parts
    assert render(parse(canonical)) == canonical  # the canonical form is a fixed point
    assert from_json(to_json(parts)) == parts


def _random_nodes(rng: random.Random, depth: int = 0) -> list:
    alphabet = "ab c,:|()[]\\1."
    nodes = []
    for _ in range(rng.randint(1, 4)):
        if depth < 2 and rng.random() < 0.2:
            nodes.append(Alternation(tuple(tuple(_random_nodes(rng, depth + 1)) for _ in range(rng.randint(2, 3)))))
            continue
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        weight = rng.choice([1.0, 1.0, 1.1, 0.5, 1.331, 2.0, -0.3])
        after = tuple(rng.choice([0.25, 0.5, 3, 10]) for _ in range(rng.choice([0, 0, 1, 2])))
        until = tuple(rng.choice([0.75, 0.6, 5, 12]) for _ in range(rng.choice([0, 0, 1])))
        nodes.append(Leaf(text, weight, after, until))
    return nodes


def test_round_trip_of_random_parts():
    rng = random.Random(15)
    for _ in range(400):
        parts = normalize(_random_nodes(rng))
        text = render(parts)
        assert parse(text) == parts, text


@pytest.mark.parametrize(("prompt", "weight"), [
    ("(a:1.2)", 1.2), ("(a)", 1.1), ("((a))", 1.21), ("[a]", 0.909091), ("[[a]]", 0.826446),
    ("((a:1.2))", 1.32), ("[(a:1.5)]", 1.363636), ("(a:-1)", -1.0), ("(a:.5)", 0.5),
])
def test_attention_weights_multiply(prompt, weight):
    assert parse(prompt) == (Leaf("a", weight),)


def test_attention_needs_the_number_right_after_the_colon():
    # A1111's attention regex is ":([+-]?[.\d]+)\)": "(a: 1.2)" is (x) of the text "a: 1.2"
    assert parse("(a: 1.2)") == (Leaf("a: 1.2", 1.1),)


def test_mixed_weights_in_one_prompt():
    assert parse("a (b (c:1.5) d) e") == (
        Leaf("a "), Leaf("b ", 1.1), Leaf("c", 1.65), Leaf(" d", 1.1), Leaf(" e"))


def test_escapes_are_literal_characters():
    assert parse(r"\(x\) \[y\] a\:b \| \\") == (Leaf(r"(x) [y] a:b | \ "[:-1]),)
    assert parse(r"(a\:1.2)") == (Leaf("a:1.2", 1.1),)
    assert escape("a(b)[c]:d|e\\", nested=True) == r"a\(b\)\[c\]\:d\|e\\"
    assert escape("a: b | c", nested=False) == "a: b | c"


def test_edit_at_an_integer_step_switches_after_that_step():
    schedule = step_schedule(parse("[a:b:10]"), 20)
    texts = [schedule.prompts[i] for i in schedule.per_step]
    assert texts[:11] == [(("a", 1.0),)] * 11  # steps 0..10: A1111 uses a while k <= 10
    assert texts[11:] == [(("b", 1.0),)] * 9
    assert schedule.switches() == [11]


def test_edit_at_a_fraction_is_that_fraction_of_the_steps():
    assert step_schedule(parse("[a:b:0.4]"), 20).switches() == [9]  # int(0.4 * 20) = 8
    assert step_schedule(parse("[a:b:0.4]"), 10).switches() == [5]
    assert step_schedule(parse("[a:0.5]"), 4).prompts == ((), (("a", 1.0),))
    assert step_schedule(parse("x[a::0.5]"), 4).prompts == ((("xa", 1.0),), (("x", 1.0),))


def test_alternation_changes_option_every_step():
    schedule = step_schedule(parse("[a|b]"), 6)
    assert [schedule.prompts[i][0][0] for i in schedule.per_step] == ["a", "a", "b", "a", "b", "a"]
    three = step_schedule(parse("x [a|b|c]"), 7)
    assert ["".join(t for t, _ in three.prompts[i]) for i in three.per_step] == [
        "x a", "x a", "x b", "x c", "x a", "x b", "x c"]


def test_schedules_match_a1111_documented_examples():
    assert _a1111_schedule("test", 10) == [[10, "test"]]
    assert _a1111_schedule("a [b:3]", 10) == [[3, "a "], [10, "a b"]]
    assert _a1111_schedule("a [b: 3]", 10) == [[3, "a "], [10, "a b"]]
    assert _a1111_schedule("a [b : c : 1] d", 10) == [[1, "a b  d"], [10, "a  c  d"]]
    assert _a1111_schedule("a[b:[c:d:2]:1]e", 10) == [[1, "abe"], [2, "ace"], [10, "ade"]]
    assert _a1111_schedule("a [b:.5] c", 10) == [[5, "a  c"], [10, "a b c"]]
    assert _a1111_schedule("[a|b]", 4) == [[1, "a"], [2, "b"], [3, "a"], [4, "b"]]


def test_weights_inside_a_schedule_keep_their_weight():
    schedule = step_schedule(parse("[(a:1.5):b:1]"), 3)
    assert schedule.prompts == ((("a", 1.5),), (("b", 1.0),))
    assert schedule.per_step == (0, 0, 1)


def test_render_is_canonical():
    assert render(parse("((a)) (b:1.0) [c:d:5] [e:0.5] [f::0.5]")) == "(a:1.21) b [c:d:5] [e:0.5] [f::0.5]"
    assert render(parse("(a)(b)")) == "(ab:1.1)"  # equal weights merge, as A1111 merges runs
    assert render(parse("[a:1.0]")) == "[a:1]"  # 1.0 is step 1 to A1111, not "the end"


@pytest.mark.parametrize(("prompt", "column", "words"), [
    ("a (b", 5, "ends inside the '(' of column 3"),
    ("a ]", 3, "closes nothing"),
    ("[a:b]", 5, "needs a step"),
    ("(a]", 3, "cannot close the '('"),
    ("[a:b:c:0.5]", 5, "inside [...]"),
    ("x\\", 2, "backslash"),
])
def test_syntax_errors_name_the_column(prompt, column, words):
    with pytest.raises(InputError) as caught:
        parse(prompt)
    assert f"column {column}: " in str(caught.value) and words in str(caught.value)


@pytest.mark.parametrize("prompt", [r"akira_\(coffee_curry\), solo", "masterpiece: a cat | a dog",
                                    r"a\\b \[x\] \: y", "plain text", ""])
def test_the_literal_shortcut_reads_as_the_grammar_does(prompt):
    from catalog.recipes.grammar import _build, _parser

    assert parse(prompt) == normalize(_build(_parser().parse(prompt).children[0]))
