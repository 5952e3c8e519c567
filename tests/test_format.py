"""Every generated module is written as ruff's formatter writes it (codegen/emit/format.py): the file
in the kernel cache is a fixed point of the formatter for each strategy that emits one, its name's hash
is of that text, and an emitter's invalid Python is an internal error naming the spec."""

from __future__ import annotations

import hashlib

import pytest
from archdsl.codegen import build_cell
from archdsl.codegen.emit.format import EmitError, format_source

from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file

CASES = [
    ("e88", {}, "loop"),  # per-token part hoisted before the loop
    ("e1", {"dim": 40, "expansion": 2}, "persistent"),
    ("e1", {"dim": 40, "expansion": 2}, "dense"),  # its step cell: the loop's module, one step a launch
]


@pytest.mark.parametrize(("spec", "overrides", "strategy"), CASES, ids=[c[2] for c in CASES])
def test_the_written_module_is_a_fixed_point_of_the_formatter(spec, overrides, strategy):
    layer = instantiate(parse_file(f"specs/{spec}.rnn"), "test" if not overrides else None, overrides).layer
    cc = build_cell(layer, 4, None, 1, strategy=strategy)
    assert cc.strategy == strategy
    text = cc.path.read_text()
    assert format_source(text) == text
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == cc.hash  # the cache key: the written text
    code = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert max(map(len, code)) <= 110  # comments (the header's spec text) stay as they are


def test_a_users_ruff_configuration_does_not_change_the_text(tmp_path, monkeypatch):
    src = "def f(alpha, beta, gamma):\n    return {'alpha': alpha, 'beta': beta, 'gamma': gamma}\n"
    before = format_source(src)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.ruff]\nline-length = 30\n[tool.ruff.format]\nquote-style = "single"\n'
    )
    monkeypatch.chdir(tmp_path)
    assert format_source(src) == before
    assert '"alpha": alpha' in before and before.count("\n") == 2  # double quotes, one line at 110


def test_invalid_python_from_an_emitter_is_an_internal_error_naming_the_spec():
    with pytest.raises(EmitError, match=r"internal error: the module generated for spec 'e88' is not valid"):
        format_source("def e88_fwd(:\n    pass\n", "e88")
