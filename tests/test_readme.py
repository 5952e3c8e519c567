"""The spec in the README's front page parses and checks."""

import re
from pathlib import Path

from archdsl.lang.checker import check_spec
from archdsl.lang.parser import parse


def test_readme_spec_checks():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## A layer in a dozen lines\n\n```\n(.*?)```", text, re.S).group(1)
    result = check_spec(parse(block, "README.rnn"))
    assert result.default.layer.param_count() == 4 * 768 * 12 * 32 + 768 * 12 + 2 * 12
    assert [d.name for d in result.search] == ["heads", "n", "nonlin"]
