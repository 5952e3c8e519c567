"""Property: whatever the text, ``parse`` + ``check_spec`` either succeed or raise an ArchdslError that
points into the file (``fuzz.rnn:LINE:COL``) — never a traceback of any other kind.

Inputs are the bundled specs mutated at the token and line level (delete, duplicate, swap, replace,
insert a stray character, truncate) and random text over the language's alphabet.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from archdsl.errors import ArchdslError
from archdsl.lang.checker import check_spec, declarations, instantiate
from archdsl.lang.parser import parse

SPECS = {p.name: p.read_text() for p in sorted((Path(__file__).parent.parent / "specs").glob("*.rnn"))}
TOKEN = re.compile(r"\s+|\w+|\.\.|->|//|[=!<>]=|.", re.S)
LOCATED = re.compile(r"^fuzz\.rnn:\d+:\d+: error: ")
#: replacements that stress sizes, names and types: zero, negative, huge, fractional, wrong kind
WORDS = [
    "0",
    "-1",
    "1e308",
    "1e999",
    "0.5",
    "99999999999",
    "x",
    "S",
    "h",
    "i",
    "sum",
    "tanh",
    "tahn",
    "dim",
    "state",
    "if",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    "'",
    ",",
    "=",
    "..",
    "log",
    "\n",
]
#: a longer, randomised run: ARCHDSL_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/test_fuzz.py
LONG = int(os.environ.get("ARCHDSL_FUZZ_EXAMPLES", "0"))


def fuzz(examples: int):
    """CI: a fixed, deterministic sample; with ARCHDSL_FUZZ_EXAMPLES, that many random ones."""
    return settings(
        max_examples=LONG or examples,
        deadline=None,
        derandomize=not LONG,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


def check_text(text: str) -> None:
    """The property itself."""
    try:
        check_spec(parse(text, "fuzz.rnn"))
    except ArchdslError as e:
        message = str(e)
        assert LOCATED.match(message), f"error without a location:\n{message}\n--- input ---\n{text}"


@st.composite
def mutated_spec(draw) -> str:
    text = SPECS[draw(st.sampled_from(sorted(SPECS)))]
    for _ in range(draw(st.integers(1, 3))):
        text = draw(_mutation(text))
    return text


def _mutation(text: str):
    tokens = TOKEN.findall(text) or [""]
    lines = text.split("\n")
    at_token = st.integers(0, len(tokens) - 1)
    at_line = st.integers(0, len(lines) - 1)

    def tokens_with(i, j, how):
        t = list(tokens)
        if how == "delete":
            del t[i]
        elif how == "duplicate":
            t.insert(i, t[j])
        elif how == "swap":
            t[i], t[j] = t[j], t[i]
        return "".join(t)

    def lines_with(i, j, how):
        ls = list(lines)
        if how == "delete":
            del ls[i]
        elif how == "duplicate":
            ls.insert(i, ls[j])
        else:
            ls[i], ls[j] = ls[j], ls[i]
        return "\n".join(ls)

    def replace(i, word):
        return "".join(tokens[:i] + [word] + tokens[i + 1 :])

    how = st.sampled_from(["delete", "duplicate", "swap"])
    return st.one_of(
        st.builds(tokens_with, at_token, at_token, how),
        st.builds(lines_with, at_line, at_line, how),
        st.builds(replace, at_token, st.sampled_from(WORDS)),
        st.builds(lambda i, c: text[:i] + c + text[i:], st.integers(0, len(text)), st.characters()),
        st.builds(lambda i: text[:i], st.integers(0, len(text))),
    )


@fuzz(250)
@given(mutated_spec())
def test_mutated_specs_fail_with_located_errors(text):
    check_text(text)


ALPHABET = st.sampled_from(list("abdehilmnoprstuvxyz_0123456789 \n\t#'\"=+-*/%()[]{},.<>!é") + WORDS)


@fuzz(150)
@given(st.lists(ALPHABET, max_size=80).map("".join))
def test_random_text_fails_with_located_errors(text):
    check_text(text)


@fuzz(100)
@given(
    st.lists(
        st.sampled_from(
            WORDS
            + [
                "hyper",
                "axis",
                "state",
                "project",
                "param",
                "output",
                "let",
                "choice",
                "preset",
                "search",
                "require",
                "in",
                "->",
                "+",
                "*",
                "a",
                "b",
                "dim",
                "4",
                "n",
            ]
        ),
        max_size=40,
    ).map(" ".join)
)
def test_random_statements_fail_with_located_errors(text):
    check_text("hyper dim = 8\naxis h = 4\n" + text)


SET_VALUES = [
    "0",
    "-3",
    "1",
    "2.5",
    "nan",
    "inf",
    "-inf",
    "1e999",
    "",
    "abc",
    "tanh",
    "99999999999",
    "1e-300",
]


@fuzz(150)
@given(st.sampled_from(sorted(SPECS)), st.data())
def test_set_overrides_fail_with_clear_errors(name, data):
    """``--set KEY=VALUE`` with any key and value: a config or an error that names the --set or a line."""
    spec = parse(SPECS[name], name)
    decl = declarations(spec)
    keys = [*decl.hypers, *decl.choices, "depth", "nosuch"]
    overrides = data.draw(
        st.dictionaries(st.sampled_from(keys), st.sampled_from(SET_VALUES), min_size=1, max_size=3)
    )
    try:
        instantiate(spec, overrides=overrides)
    except ArchdslError as e:
        message = str(e)
        assert message.startswith("error: --set ") or re.match(rf"^{re.escape(name)}:\d+:\d+: ", message), (
            message
        )


def test_regression_state_axes_listed_out_of_declaration_order():
    """Fuzzing found `state S[h, i, j]` with `axis j` declared before `axis i` failing the IR verifier
    (and an update transposed onto the state). Stored tensors now follow the declaration order."""
    text = (
        "hyper dim = 8\naxis h = 2\naxis j = 3\naxis i = 4\nproject x -> k[h, i], v[h, j]\n"
        "param W[i, h] = xavier()\nstate S[h, i, j]\nS' = tanh(S + k * v * W)\no = sum[i](S' * k)\noutput o\n"
    )
    layer = instantiate(parse(text, "order.rnn")).layer
    assert layer.states == {"S": ("h", "j", "i")}
    assert [p.axes for p in layer.params] == [("h", "i")]
    assert layer.projections[0].outputs == (("k", ("h", "i")), ("v", ("h", "j")))
    assert not any(n.op.value == "rename" for n in layer.graph.nodes)  # nothing is transposed
    listed_in_order = text.replace("W[i, h]", "W[h, i]").replace("S[h, i, j]", "S[h, j, i]")
    assert instantiate(parse(listed_in_order, "order.rnn")).layer.fingerprint() == layer.fingerprint()
