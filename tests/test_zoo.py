"""The zoo's plumbing that runs without a GPU: the oracle's weight tables cover every learned tensor
of their specs exactly once, the zoo specs' sequence values, and docs/zoo.md's generator on a small
synthetic results file."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))

import oracle  # noqa: E402
import oracle_maps  # noqa: E402
import zoo_doc  # noqa: E402

from archdsl.lang.checker import instantiate  # noqa: E402
from archdsl.lang.parser import parse_file  # noqa: E402
from archdsl.layer import RecurrentLayer  # noqa: E402


def learned_tensors(ir) -> set[str]:
    names = {"out", *(p.name for p in ir.params)}
    for p in ir.projections:
        names |= {name for name, _ in p.outputs}
        names |= {f"bias:{name}" for name, _ in p.outputs} if p.bias else set()
    return names


@pytest.mark.parametrize("spec", list(oracle_maps.LAYERS))
def test_weight_table_covers_every_learned_tensor_once(spec):
    _, preset, _, rows = oracle_maps.LAYERS[spec]
    ir = instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), preset).layer
    sources = [s for _, srcs in rows for s in srcs]
    assert len(sources) == len(set(sources)), "a spec tensor is copied twice"
    assert set(sources) == learned_tensors(ir)
    assert len({name for name, _ in rows}) == len(rows), "a library parameter has two rows"


@pytest.mark.parametrize("spec", list(oracle_maps.LAYERS))
def test_gather_reads_the_rows_of_the_table(spec):
    """The oracle's gather concatenates exactly the spec's numbers (the test preset, so it is small)."""
    import oracle

    _, _, _, rows = oracle_maps.LAYERS[spec]
    m = RecurrentLayer(instantiate(parse_file(ROOT / "specs" / f"{spec}.rnn"), "test").layer, seed=0)
    total = sum(oracle.gather(m, srcs).numel() for _, srcs in rows)
    assert total == sum(p.numel() for p in m.parameters())
    if "out" in [s for _, srcs in rows for s in srcs]:
        torch.testing.assert_close(oracle.gather(m, ["out"]), m.out.weight.reshape(-1))


def test_convolutions_are_sequence_values():
    ir = instantiate(parse_file(ROOT / "specs" / "gdn.rnn"), "test").layer
    assert set(ir.sequence) == {"qc", "kc", "vc"}
    assert {"qc", "kc", "vc"} <= set(ir.inputs()) and not {"q", "k", "v"} & set(ir.inputs())


def synthetic() -> dict:
    agreement = [
        {"B": 1, "T": 64, "dtype": "float32", "errors": {"y": 3e-6}, "worst": "y", "max": 3e-6},
        {"B": 1, "T": 37, "dtype": "float32", "errors": {"dA_log": 4e-4}, "worst": "dA_log", "max": 4e-4},
        {"B": 1, "T": 37, "dtype": "bfloat16", "errors": {"y": 5e-3}, "worst": "y", "max": 5e-3},
    ]
    return {
        "meta": {
            "device": "Test GPU",
            "date": "2026-11-26",
            "torch": "2",
            "fla": "0.6.0",
            "mamba_ssm": "2.3.2",
            "triton": "3",
            "quick": True,
            "command": "python benchmarks/oracle.py",
        },
        "results": [
            {
                "spec": "gdn",
                "library": "fla GatedDeltaNet",
                "preset": "GDN_100m",
                "precision": "TF32",
                "strategy": "loop",
                "agreement": agreement,
                "time": {
                    "B": 2,
                    "T": 128,
                    "dtype": "bfloat16",
                    "archdsl_ms": 1.5,
                    "library_ms": 3.0,
                    "ratio": 0.5,
                },
            },
            {"spec": "gla", "library": "fla GatedLinearAttention", "error": "RuntimeError: boom"},
        ],
    }


def _itself(ir):
    """(build, rows): the spec's own reference layer standing in for a library, and its weight table."""
    rows = []
    for key, p in zip(RecurrentLayer(ir, backend="reference").proj_keys, ir.projections):
        names = [name for name, _ in p.outputs]
        rows.append((f"proj.{key}.weight", names))
        if p.bias:
            rows.append((f"proj.{key}.bias", [f"bias:{n}" for n in names]))
    rows += [(f"params.{p.name}", [p.name]) for p in ir.params] + [("out.weight", ["out"])]
    return (lambda ir, mode="chunk": RecurrentLayer(ir, backend="reference", seed=1)), rows


@pytest.mark.parametrize("moved", [False, True])
def test_oracle_says_which_side_a_bf16_difference_comes_from(monkeypatch, moved):
    """Each bf16 row measures both sides against the library in fp32 on the same rounded weights: a
    library whose weights were moved is far from that fp32 run, the spec's layer is not."""
    monkeypatch.setattr(oracle, "DEVICE", "cpu")
    ir = instantiate(parse_file(ROOT / "specs" / "mingru.rnn"), "test", {}).layer
    build, rows = _itself(ir)
    ours, lib = RecurrentLayer(ir, backend="reference", seed=0), build(ir)
    oracle.copy_weights(ours, lib, rows)
    truth = oracle.fp32_truth("itself", ir, ours, build, rows)
    if moved:
        with torch.no_grad():
            lib.out.weight.mul_(1.5)
    row = oracle.compare("itself", ir, ours, lib, rows, 2, 7, torch.bfloat16, truth)
    assert row["archdsl_vs_fp32"]["max"] < 2e-2 and row["reference_vs_fp32"]["max"] < 2e-2
    assert row["archdsl_vs_reference"]["max"] == 0.0  # ours is the reference backend here
    if moved:
        assert row["max"] > 0.2 and row["library_vs_fp32"]["max"] > 0.2
    else:
        assert row["max"] < 2e-2 and row["library_vs_fp32"]["max"] < 2e-2


def test_zoo_doc_renders_a_results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(synthetic()))
    out = tmp_path / "zoo.md"
    assert zoo_doc.main([str(path), "-o", str(out)]) == 0
    text = out.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "4.0e-04 (> 0.0001: dA_log); TF32" in rows["gdn"] and "5.0e-03 |" in rows["gdn"]
    # the strategy archdsl picks today; the time says it was measured under another one
    assert "| chunked | 0.50× (1.50 / 3.00 ms), Test, measured on the loop strategy |" in rows["gdn"]
    assert "failed: RuntimeError: boom" in rows["gla"]
    assert "no library layer" in rows["mingru"] and "not in these results" in rows["mamba"]
    assert f"| gdn | {zoo_doc.spec_lines('gdn')} |" in rows["gdn"]
    assert "Test GPU" in text and "--quick" in text


@pytest.mark.parametrize("order", ["as-run", "reversed"])
def test_zoo_doc_merges_runs_the_latest_row_winning(tmp_path, order):
    """Specs run in separate processes (one per GPU lane) give one page: a spec's row from the latest
    run that has it, whatever the order of the files given, every run's date and command in the header."""
    first, second = synthetic(), synthetic()
    second["meta"] = dict(second["meta"], date="2026-11-27 00:00 UTC", command="python later.py")
    second["results"] = [{"spec": "gla", "library": "fla GatedLinearAttention", "error": "ValueError: later"}]
    docs = {"a.json": first, "b.json": second}
    paths = [tmp_path / name for name in (docs if order == "as-run" else reversed(docs))]
    for path in paths:
        path.write_text(json.dumps(docs[path.name]))
    out = tmp_path / "zoo.md"
    assert zoo_doc.main([*map(str, paths), "-o", str(out)]) == 0
    text = out.read_text()
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "failed: ValueError: later" in rows["gla"] and "| chunked | 0.50×" in rows["gdn"]
    assert "python later.py" in text and "2026-11-27 00:00 UTC" in text


def test_docs_zoo_is_generated_from_the_committed_oracle_results(tmp_path):
    """docs/zoo.md is the generator's output on benchmarks/results/oracle/*.json, nothing by hand
    (after a new oracle run or a spec's edit:
    ``python benchmarks/zoo_doc.py benchmarks/results/oracle/*.json``)."""
    results = sorted((ROOT / "benchmarks" / "results" / "oracle").glob("*.json"))
    out = tmp_path / "zoo.md"
    assert zoo_doc.main([*map(str, results), "-o", str(out)]) == 0
    assert out.read_text() == (ROOT / "docs" / "zoo.md").read_text()


def test_zoo_doc_says_which_side_a_bf16_difference_comes_from(tmp_path):
    doc = synthetic()
    doc["results"][0]["agreement"][2] |= {
        "max": 5e-2,
        "worst": "dx",
        "archdsl_vs_fp32": {"max": 4e-3, "worst": "y"},
        "library_vs_fp32": {"max": 4.8e-2, "worst": "dx"},
    }
    path, out = tmp_path / "r.json", tmp_path / "zoo.md"
    path.write_text(json.dumps(doc))
    assert zoo_doc.main([str(path), "-o", str(out)]) == 0
    gdn = next(line for line in out.read_text().splitlines() if line.startswith("| gdn |"))
    assert "5.0e-02 (> 0.02: dx); to fp32: archdsl 4.0e-03 (y), library 4.8e-02 (dx)" in gdn


def test_zoo_doc_rejects_a_file_that_is_not_results(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert zoo_doc.main([str(bad), "-o", str(tmp_path / "zoo.md")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


LERP_SPEC = """rnn lerp
hyper dim = 6
axis d = dim
axis h = 3
axis c = 2
param mu[d] = uniform(0, 1)
xs = x[d] + (shift(x[d]) - x[d]) * mu
project xs -> u[h]
state s[h]
s' = 0.5 * s + u * sum[c](x[h, c])
y = s'
output y
"""


def test_the_layer_input_read_in_the_step():
    """x[d] is the layer input itself: RWKV's token shift mixes it with the previous token before a
    projection (a sequence value), and the cell reads it directly on other axes (x[h, c])."""
    from archdsl.lang.parser import parse

    ir = instantiate(parse(LERP_SPEC, "lerp.rnn")).layer
    assert ir.inputs()["x"] == ("h", "c")
    m = RecurrentLayer(ir, seed=0).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    xs = x + (torch.nn.functional.pad(x, (0, 0, 1, 0))[:, :-1] - x) * m.params["mu"]
    (lin,) = m.proj.values()
    u = lin(xs)
    s, ys = torch.zeros(2, 3, dtype=torch.float64), []
    for t in range(5):
        s = 0.5 * s + u[:, t] * x[:, t].reshape(2, 3, 2).sum(-1)
        ys.append(s)
    torch.testing.assert_close(m(x)[0], m.out(torch.stack(ys, 1)))


def test_a_readout_of_the_state_before_the_update_is_not_chunked():
    """RWKV-6 reads S before this token's write (o = r^T (S + u k v^T)): the chunked form, which
    reads the new state, must decline it (it once accepted it and computed the wrong output)."""
    from archdsl.codegen.classify import classification

    ir = instantiate(parse_file(ROOT / "specs" / "rwkv6.rnn"), "test").layer
    assert classification(ir) == "the readout reads the state before the update: not yet"


def test_zoo_doc_keeps_tf32_off_rows_and_time_only_runs_apart(tmp_path):
    """A later run with the libraries' TF32 off adds its fp32 number beside the TF32 one (neither
    replacing it nor the library's stated precision), and a later timing-only run adds its time
    without dropping the agreement."""
    first, off, timed = synthetic(), synthetic(), synthetic()
    off["meta"] = dict(off["meta"], date="2026-11-27 00:00 UTC", tf32_off=True)
    fp32 = {"B": 1, "T": 37, "dtype": "float32", "errors": {"y": 2e-6}, "worst": "y", "max": 2e-6}
    off["results"] = [dict(off["results"][0], agreement=[fp32], precision="TF32 off", time=None)]
    del off["results"][0]["time"]
    timed["meta"] = dict(timed["meta"], date="2026-11-27 01:00 UTC")
    t = dict(first["results"][0]["time"], archdsl_ms=2.0, ratio=2 / 3)
    timed["results"] = [{k: v for k, v in first["results"][0].items() if k != "agreement"} | {"time": t}]
    paths = []
    for name, doc in {"a.json": first, "b.json": off, "c.json": timed}.items():
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(doc))
    out = tmp_path / "zoo.md"
    assert zoo_doc.main([*map(str, paths), "-o", str(out)]) == 0
    gdn = next(line for line in out.read_text().splitlines() if line.startswith("| gdn |"))
    assert "4.0e-04 (> 0.0001: dA_log); TF32; TF32 off: 2.0e-06" in gdn
    assert "| 5.0e-03 |" in gdn and "0.67× (2.00 / 3.00 ms)" in gdn


@pytest.mark.parametrize("products", [True, "ieee", "tf32x3"])
def test_zoo_doc_says_when_the_tf32_off_row_used_3xtf32(tmp_path, products):
    """Runs before --tf32-off took a value recorded True (exact products); a tf32x3 run is marked."""
    first, off = synthetic(), synthetic()
    off["meta"] = dict(off["meta"], date="2026-11-27 00:00 UTC", tf32_off=products)
    fp32 = {"B": 1, "T": 37, "dtype": "float32", "errors": {"y": 2e-6}, "worst": "y", "max": 2e-6}
    off["results"] = [{k: v for k, v in off["results"][0].items() if k != "time"} | {"agreement": [fp32]}]
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, doc in zip(paths, (first, off)):
        path.write_text(json.dumps(doc))
    out = tmp_path / "zoo.md"
    assert zoo_doc.main([*map(str, paths), "-o", str(out)]) == 0
    gdn = next(line for line in out.read_text().splitlines() if line.startswith("| gdn |"))
    how = " (3×TF32 products)" if products == "tf32x3" else ""
    assert f"; TF32 off{how}: 2.0e-06" in gdn


@pytest.mark.parametrize("precision", ["ieee", "tf32x3"])
def test_tf32_off_sets_the_default_product(monkeypatch, precision):
    import oracle_env

    monkeypatch.delenv("TRITON_F32_DEFAULT", raising=False)
    oracle_env.tf32_off(precision)
    assert os.environ["TRITON_F32_DEFAULT"] == precision
    monkeypatch.delenv("TRITON_F32_DEFAULT")


def test_first_config_narrows_only_the_named_modules_autotuners(monkeypatch):
    """--first-config keeps fla's first autotune configuration and leaves other libraries' (mamba_ssm's
    first SSD configuration does not fit an H100's shared memory) with all of theirs."""
    import oracle_env
    import triton
    import triton.language as tl
    import triton.runtime.autotuner as autotuner

    monkeypatch.setattr(autotuner.Autotuner, "__init__", autotuner.Autotuner.__init__)

    def tuned():
        @triton.autotune(configs=[triton.Config({"B": 16}), triton.Config({"B": 32})], key=[])
        @triton.jit
        def kernel(x, B: tl.constexpr):
            pass

        return kernel

    oracle_env.first_config(("fla.",))
    assert len(tuned().configs) == 2
    oracle_env.first_config((__name__,))
    assert len(tuned().configs) == 1


def _cpu_oracle(monkeypatch, out=None, fail_after: int | None = None) -> list:
    """The oracle's main on the CPU: mingru's own reference layer stands in for its library, at two
    tiny shapes; with ``fail_after``, the comparison after that many rows raises. Returns the rows
    ``out/results.json`` held at each comparison's start."""
    ir = instantiate(parse_file(ROOT / "specs" / "mingru.rnn"), "test", {}).layer
    build, rows = _itself(ir)
    monkeypatch.setattr(oracle, "DEVICE", "cpu")
    monkeypatch.setattr(oracle, "SHAPES", [(1, 5), (1, 3)])
    monkeypatch.setattr(oracle, "LAYERS", {"mingru": ("itself", "test", build, rows)})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "CPU standing in")
    compare, on_disk = oracle.compare, []

    def counted(*args):
        path = out / "results.json" if out else None
        results = json.loads(path.read_text())["results"] if path and path.exists() else []
        on_disk.append([r["T"] for r in results[0]["agreement"]] if results else [])
        if fail_after is not None and len(on_disk) > fail_after:
            raise RuntimeError("cut off")
        return compare(*args)

    monkeypatch.setattr(oracle, "compare", counted)
    return on_disk


def test_oracle_dtypes_choose_the_rows(monkeypatch, tmp_path):
    _cpu_oracle(monkeypatch)
    assert oracle.main(["--out", str(tmp_path), "--specs", "mingru", "--no-time", "--dtypes", "fp32"]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["results"][0]["agreement"]
    assert [(r["dtype"], r["T"]) for r in rows] == [("float32", 5), ("float32", 3)]
    assert all(r["max"] < 1e-5 for r in rows)


def test_oracle_keeps_the_rows_of_a_spec_that_fails_midway(monkeypatch, tmp_path):
    """Each row is written as it is measured: a process cut off during its second comparison has the
    first in results.json already, and a spec that fails keeps its rows beside the error."""
    on_disk = _cpu_oracle(monkeypatch, tmp_path, fail_after=1)
    assert oracle.main(["--out", str(tmp_path), "--specs", "mingru", "--no-time"]) == 1
    assert on_disk == [[], [5]]
    result = json.loads((tmp_path / "results.json").read_text())["results"][0]
    assert [r["T"] for r in result["agreement"]] == [5]
    assert result["error"] == "RuntimeError: cut off" and result["strategy"]


def test_oracle_control_measures_the_library_against_its_other_mode(monkeypatch):
    """--control: each bf16 row says how far the library's layer in another mode is from its own (a
    layer 1% off shows 1e-2 on its output)."""
    monkeypatch.setattr(oracle, "DEVICE", "cpu")
    ir = instantiate(parse_file(ROOT / "specs" / "mingru.rnn"), "test", {}).layer
    build, rows = _itself(ir)
    ours, lib, other = RecurrentLayer(ir, backend="reference", seed=0), build(ir), build(ir)
    for layer in (lib, other):
        oracle.copy_weights(ours, layer, rows)
    with torch.no_grad():
        other.out.weight.mul_(1.01)
    row = oracle.compare("itself", ir, ours, lib, rows, 2, 7, torch.bfloat16, None, ("scaled", other))
    control = row["library_control"]
    assert control["mode"] == "scaled" and 5e-3 < control["errors"]["y"] < 2e-2


def test_oracle_control_runs_from_the_command_line(monkeypatch, tmp_path):
    _cpu_oracle(monkeypatch)
    args = ["--specs", "mingru", "--no-time", "--dtypes", "bf16", "--control", "again"]
    assert oracle.main(["--out", str(tmp_path), *args]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["results"][0]["agreement"]
    assert [r["library_control"]["mode"] for r in rows] == ["again", "again"]
    assert all(r["library_control"]["max"] == 0 for r in rows)  # the same layer, weights copied in
    text = (tmp_path / "results.md").read_text()
    assert "the library's again layer to its own: 0.00e+00" in text
    assert "archdsl to its reference in bf16: " in text and all("archdsl_vs_reference" in r for r in rows)
    assert zoo_doc.main([str(tmp_path / "results.json"), "-o", str(tmp_path / "zoo.md")]) == 0
    lines = (tmp_path / "zoo.md").read_text().splitlines()
    mingru = next(line for line in lines if line.startswith("| mingru"))
    assert "the library's again kernel to its own: 0.0e+00 (y)" in mingru


def test_oracle_rejects_an_unknown_dtype(capsys, tmp_path):
    assert oracle.main(["--out", str(tmp_path), "--dtypes", "fp32,fp16"]) == 2
    assert "--dtypes: expected names from fp32, bf16; found 'fp32,fp16'" in capsys.readouterr().err
