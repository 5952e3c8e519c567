"""No spec name can break the generated code: every spec, its axes, states, inputs and params renamed
onto the emitter's own vocabulary (``i_b`` -> axis ``b``, ``b_dS`` -> a state ``C`` beside ``dC``) or
onto Python's keywords and builtins, still matches the reference.

The vocabulary is read from the generated source itself (every identifier of the spec's module, and
what is left of it after a role prefix such as ``p_`` or ``b_d``), so a name the emitter starts to use
tomorrow is covered without anyone editing this test.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import random
import re

import pytest
import torch
from archdsl.codegen.emit.names import Namespace, identifier, module_name
from kernel_harness import compare_backends

from archdsl.errors import ArchdslError
from archdsl.lang.checker import declarations, instantiate
from archdsl.lang.parser import parse
from archdsl.layer import ParamTable

ROLES = ("p_d", "b_d", "p_", "b_", "o_", "m_", "l_", "i_", "n", "b", "p_h0_", "p_ht_", "p_ck_", "p_dht_")
ROLES += ("p_scr_", "p_dh0_", "p_hs_", "p_hv_", "p_dh_", "b_dn_", "p_stash", "p_w", "p_mv", "p_g")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
RNN_WORDS = {"rnn", "hyper", "let", "axis", "choice", "in", "project", "bias", "init", "spectral_norm"}
RNN_WORDS |= {"param", "state", "output", "preset", "search", "require", "if", "else", "and", "or", "not"}
RNN_WORDS |= {"log", "x"}
# the names the listed defects used, tried first for each kind of entity
FIRST = {
    "axis": ["b", "s", "c", "t", "r", "bb", "L"],
    "state": ["C", "sync", "y"],
    "input": ["dC", "dy", "y", "t", "dt", "h0_C", "ht_C", "ck_C", "mv0", "c0", "w0", "stash1"],
    "param": ["type", "values", "items", "keys", "get", "update", "to", "float", "forward", "c0"],
}


def entities(spec_text: str, layer) -> dict[str, list[str]]:
    """The spec's renameable names by kind (those that are not also compile-time names)."""
    decl = declarations(parse(spec_text))
    fixed = set(decl.hypers) | set(decl.choices) | set(layer.numbers)
    inputs = [n for p in layer.projections for n, _ in p.outputs]
    kinds = {"axis": list(layer.sizes), "state": list(layer.states), "input": inputs}
    kinds["param"] = [p.name for p in layer.params]
    return {k: [n for n in v if n not in fixed] for k, v in kinds.items()}


def renamed(text: str, mapping: dict[str, str]) -> str:
    """``text`` with each name of ``mapping`` replaced, whole words only, comments dropped."""
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, mapping)) + r")\b")
    lines = (line.partition("#")[0] for line in text.splitlines())
    return "\n".join(pattern.sub(lambda m: mapping[m.group(1)], line) for line in lines)


def vocabulary(source: str) -> list[str]:
    """Every identifier of a generated module, and its remainder after each role prefix."""
    words = set()
    for node in ast.walk(ast.parse(source)):
        for ident in (getattr(node, "id", None), getattr(node, "arg", None), getattr(node, "name", None)):
            if isinstance(ident, str):
                words.add(ident)
                words.update(ident[len(r) :] for r in ROLES if ident.startswith(r))
    return sorted(w for w in words if NAME.match(w) and w not in RNN_WORDS)


def small(text: str):
    spec = parse(text)
    decl = declarations(spec)
    preset = "test" if "test" in decl.presets else None
    overrides = {"heads": 1} if "heads" in decl.hypers else {}
    return instantiate(spec, preset, overrides).layer


def rename_onto(text: str, pool: list[str], seed: int, first: bool = True):
    """A renaming of every entity onto names of ``pool`` (with ``first``, the ``FIRST`` ones before
    them), each target tried alone first so that a name the language itself refuses is skipped."""
    layer = small(text)
    kinds = entities(text, layer)
    existing = {n for names in kinds.values() for n in names} | set(layer.values)
    rng = random.Random(seed)
    rest = [w for w in pool if w not in existing]
    rng.shuffle(rest)
    mapping: dict[str, str] = {}
    for kind, names in kinds.items():
        candidates = (FIRST[kind] if first else []) + rest
        for name in names:
            for target in candidates:
                if target in existing or target in mapping.values():
                    continue
                try:
                    small(renamed(text, {name: target}))
                except ArchdslError:
                    continue
                mapping[name] = target
                break
    return mapping, small(renamed(text, mapping))


def _source_of(layer) -> str:
    from archdsl.codegen import build_cell

    return build_cell(layer, 4, None, 1).path.read_text()


@pytest.mark.slow
def test_every_spec_renamed_onto_the_emitters_vocabulary(spec_path):
    text = spec_path.read_text()
    words = vocabulary(_source_of(small(text)))
    mapping, layer = rename_onto(text, words, seed=hash(spec_path.stem) % 1000)
    assert len(mapping) >= 3, mapping
    print(spec_path.stem, mapping)
    compare_backends(layer, B=2, T=3, chunk=2)


PYTHON = sorted(
    w
    for w in set(keyword.kwlist) | {"type", "float", "len", "range", "min", "max", "self", "torch", "tl"}
    if w not in RNN_WORDS
)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["e88", "lstm", "mamba2", "e74"])
def test_specs_renamed_onto_python_keywords_and_builtins(name):
    from conftest import ROOT

    text = (ROOT / "specs" / f"{name}.rnn").read_text()
    pool = PYTHON + [w for w in dir(builtins) if w.islower() and not w.startswith("_")]
    mapping, layer = rename_onto(text, pool, seed=1, first=False)
    assert any(keyword.iskeyword(t) for t in mapping.values()), mapping
    compare_backends(layer, B=2, T=3, chunk=2)


E88 = """
hyper dim = 6
hyper heads = 2
hyper n = 3
axis h = heads
axis i = n
axis j = n + 1
project x -> q[h, i], k[h, i], v[h, j]
project x -> a[h]
param A_log[h] = log(uniform(0, 16))
state S[h, i, j]
kh = l2norm[i](silu(k))
alpha = exp(-exp(A_log) * softplus(a))
S' = tanh(alpha * S + kh * (silu(v) - sum[i](S * kh)))
y = sum[i](S' * l2norm[i](silu(q)))
output y
"""


@pytest.mark.parametrize(
    "mapping",
    [
        {"j": "b"},  # the batch index i_b
        {"j": "s"},  # the tile index i_s, the segment step s
        {"j": "c"},  # the segment c and its counter i_c
        {"S": "C", "a": "dC"},  # the cotangent block b_dC
        {"q": "t", "k": "dt"},  # p_dt: the gradient of t and the input dt
        {"q": "dq"},
        {"q": "dy"},  # the readout's cotangent p_dy
        {"S": "C", "q": "h0_C", "k": "ht_C", "v": "ck_C"},  # the state's buffers
        {"A_log": "type"},  # a parameter named like a module attribute
        {"A_log": "to", "a": "forward"},
        # names the generated module gives values itself: hoisted values without a spec name (t0),
        # constants (c0), the new state's block (b_S_next), the sizes (H, T, CHUNK), the launchers'
        # words (B, torch)
        {"kh": "t0", "alpha": "c0"},
        {"kh": "S_next"},
        {"a": "H", "v": "torch", "k": "B"},
        {"i": "t"},
        {"i": "chunk", "j": "nc"},
        {"q": "dtypes"},  # the per-token launcher's output types
    ],
    ids=lambda m: ",".join(f"{a}->{b}" for a, b in m.items()),
)
def test_names_the_emitter_uses_itself(mapping):
    layer = instantiate(parse(renamed(E88, mapping))).layer
    compare_backends(layer, B=2, T=5, chunk=2)


def test_a_contraction_input_of_the_dense_strategy_is_no_spec_name():
    """The persistent dense kernels replace each contraction by an input: a spec input that used to
    share its name (``mv0``) was dropped from the kernel's arguments."""
    from archdsl.codegen import build_cell
    from archdsl.codegen.run.persistent import PersistentCell
    from conftest import ROOT

    text = renamed((ROOT / "specs" / "e1.rnn").read_text(), {"wx": "mv0", "xt": "w0"})
    assert "mv0" in text and "w0" in text
    layer = instantiate(parse(text), overrides={"dim": 40, "expansion": 2}).layer
    assert isinstance(build_cell(layer, 4, None, 1), PersistentCell)
    compare_backends(layer, B=2, T=3, chunk=4)


@pytest.mark.parametrize("stem", ["2layer", "e88.v2", "e88 copy", "bad\nname", "token", "for"])
def test_a_layer_named_after_any_file_compiles(stem):
    """Without an ``rnn`` line the name is the file's stem: it reaches the module's and kernels' names
    only as an identifier, and the header only as a quoted string."""
    layer = instantiate(parse(E88, path=f"/tmp/{stem}.rnn")).layer
    assert layer.name == stem
    ident = module_name(stem)
    assert ident.isidentifier() and not keyword.iskeyword(ident), ident
    source = _source_of(layer)
    ast.parse(source)  # the whole module is valid Python
    assert f"def {ident}_fwd_kernel(" in source
    compare_backends(layer, B=1, T=3, chunk=2)


def test_namespace_gives_every_key_its_own_name():
    ns = Namespace()
    assert ns(("in", "k"), "p_k") == "p_k"
    assert ns(("in", "k"), "p_k") == "p_k"  # the same key, the same name
    assert ns(("din", "C"), "p_dC") == "p_dC"
    assert ns(("in", "dC"), "p_dC") == "p_dC_1"  # another key that reads the same
    assert ns(("in", "dC_1"), "p_dC_1") == "p_dC_1_1"
    assert ns(("i", "b"), "i_b") == "i_b_1"  # the emitter's batch index keeps i_b
    assert ns(("in", "d:y"), "p_d:y") == "p_dy"
    assert identifier("p_x.y") == "p_x_y"
    with pytest.raises(AssertionError):
        ns(("x",), "noprefix")


def test_param_table_takes_any_spec_name():
    names = ["type", "to", "float", "forward", "values", "items", "keys", "get", "update", "training"]
    names += ["A_log", "x_", "x", "x__"]
    table = ParamTable({n: torch.nn.Parameter(torch.full((1,), float(i))) for i, n in enumerate(names)})
    assert [table[n].item() for n in names] == [float(i) for i in range(len(names))]
    assert len(set(table.state_dict())) == len(names)
    assert "A_log" in table.state_dict() and "x" in table.state_dict()
