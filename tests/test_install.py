"""What installing archdsl asks for (pyproject.toml), and the GPU set-up's pointers where a user
meets them (fla's Hopper refusal, explained before a run starts)."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

from archdsl.errors import ArchdslError

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = (ROOT / "pyproject.toml").read_text()


def table(name: str) -> list[str]:
    block = re.search(rf"^{re.escape(name)} = \[(.*?)\]$", PYPROJECT, re.S | re.M).group(1)
    return re.findall(r'"([^"]+)"', block)


def test_triton_only_on_linux_and_plotting_optional():
    deps = table("dependencies")
    assert "triton>=3.2; sys_platform == 'linux'" in deps
    assert not any(d.startswith("matplotlib") for d in deps)
    assert any(d.startswith("matplotlib") for d in table("plots"))


def test_dev_pulls_what_the_tests_import_and_ruff_is_pinned_at_run_time():
    dev = {re.split(r"[<>=\[; ]", d)[0] for d in table("dev")}
    assert {"pytest", "pytest-xdist", "hypothesis", "optuna", "scipy", "matplotlib"} <= dev
    # every generated module is formatted by ruff (codegen/emit/format.py): one exact version, installed
    # with archdsl itself, so that a spec's module text and cache key are the same on every machine
    assert any(re.fullmatch(r"ruff==[0-9.]+", d) for d in table("dependencies"))
    assert not any(d.startswith("ruff") for d in table("dev"))


def test_the_readme_gpu_section_names_what_mamba_and_fla_need():
    readme = (ROOT / "README.md").read_text()
    gpu = readme[readme.index("### GPU set-up") :]
    for needed in ("--no-build-isolation", "causal-conv1d", "ARCHDSL_FLA_TRITON_BWD", "download.pytorch.org"):
        assert needed in gpu


@pytest.mark.parametrize("tilelang", [False, True])
def test_fla_hopper_refusal_is_explained_before_the_run(monkeypatch, tilelang):
    from archdsl.lm import baselines

    utils = types.SimpleNamespace(IS_NVIDIA_HOPPER=True, TRITON_ABOVE_3_4_0=True, TRITON_ABOVE_3_7_1=False)
    backend = types.SimpleNamespace(TileLangBackend=types.SimpleNamespace(can_use=lambda: tilelang))
    monkeypatch.setitem(sys.modules, "fla.utils", utils)
    monkeypatch.setitem(sys.modules, "fla.ops.common.backends.tilelang", backend)
    monkeypatch.delenv("ARCHDSL_FLA_TRITON_BWD", raising=False)
    if tilelang:  # fla runs the backward through TileLang: nothing to refuse
        baselines._check_fla_backward()
        return
    with pytest.raises(ArchdslError) as e:
        baselines._check_fla_backward()
    assert "refuses GatedDeltaNet's backward on this Hopper GPU" in e.value.message
    assert "ARCHDSL_FLA_TRITON_BWD=1" in e.value.hint and "triton >= 3.7.1" in e.value.hint
