"""``archdsl bench``: one fresh process per model, a results table (Markdown, JSON) and a loss plot."""

import json
import sys
import textwrap
from pathlib import Path

import pytest

from archdsl.cli import main
from archdsl.train import bench, benchtable

ROOT = Path(__file__).resolve().parent.parent
VAL = ROOT / "tests" / "data" / "corpus-val.txt.xz"

FAKE_TRAIN = textwrap.dedent("""
    # Stands in for 'archdsl train': writes <out>/result.json like the trainer, or fails like it.
    import json, sys
    from pathlib import Path
    argv = sys.argv[1:]
    model, out = argv[0], Path(argv[argv.index("--out") + 1])
    if "--sleep" in argv:
        import time
        time.sleep(float(argv[argv.index("--sleep") + 1]))
    if model == "nn-gru":
        print("error: the device ran out of memory", file=sys.stderr)
        sys.exit(2)
    dim = int(argv[argv.index("--dim") + 1]) if "--dim" in argv else 0
    curve = [(0.5 * i, 10 * i, 5.5 - 0.1 * i - 0.01 * dim) for i in range(1, 20)]
    speed = 12345.6 * {"reduce-overhead": 3, "default": 2}.get(
        argv[argv.index("--compile-mode") + 1] if "--compile-mode" in argv else "default", 1
    ) if "--compile" in argv else 12345.6
    if model == "lstm" and "--compile-mode" in argv:
        print("error: CUDA graphs could not capture the step", file=sys.stderr)
        sys.exit(1)
    result = {"status": "ok", "steps": 190, "tokens": 190 * 64, "tokens_per_s": speed, "last100_loss": 3.21,
              "val_bpb": 4.56, "peak_mem_bytes": 2**30, "peak_reserved_bytes": 3 * 2**30, "params": 4242,
              "state_per_layer": 64,
              "curve": curve, "info": {"model": model, "dim": dim, "depth": 2, "backend": "reference"},
              "argv": argv}
    print("step 190 loss 3.21")
    out.mkdir(parents=True, exist_ok=True)
    (out / "result.json").write_text(json.dumps(result))
""")


@pytest.fixture
def fake_trainer(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    real = bench.train_command

    def command(cfg, args, out):
        return [sys.executable, str(script), *real(cfg, args, out)[4:]]  # drop "python -m archdsl.cli train"

    monkeypatch.setattr(bench, "train_command", command)
    return script


def test_bench_tabulates_every_model_and_keeps_going(fake_trainer, tmp_path, capsys):
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "e88:heads=2,n=8",
            "nn-gru",
            "fooo",
            "llama",
            "--params",
            "250K",
            "--depth",
            "2",
            "--steps",
            "3",
            "--batch",
            "2",
            "--seq",
            "16",
            "--out",
            str(out),
        ]
    )
    assert rc == 1  # two models failed, the others ran
    doc = json.loads((out / "results.json").read_text())
    rows = {r["model"]: r for r in doc["rows"]}
    assert list(rows) == ["e88:heads=2,n=8", "nn-gru", "fooo", "llama"]
    ok = rows["e88:heads=2,n=8"]
    assert ok["status"] == "ok" and ok["last100_loss"] == 3.21 and ok["steps"] == 190
    assert ok["heads"] == 2 and ok["n_state"] == 8
    assert rows["nn-gru"]["status"] == "failed" and "ran out of memory" in rows["nn-gru"]["reason"]
    assert rows["fooo"]["status"] == "failed" and "unknown model 'fooo'" in rows["fooo"]["reason"]
    assert rows["llama"]["status"] == "failed" and "smallest reachable count" in rows["llama"]["reason"]
    md = (out / "results.md").read_text()
    header = "| " + " | ".join(benchtable.COLUMNS) + " |"
    assert header in md and md.count("\n| ") == 5  # header + 4 rows
    assert "| 3.2100 | 4.5600 | 12.3K |" in md
    assert "| 128 | 1.0 GiB | 3.0 GiB | ok |" in md  # state per layer, peak memory, reserved
    assert (out / "loss_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    argv = doc["runs"]["e88:heads=2,n=8"]["argv"]  # what the child was given
    assert argv[argv.index("--steps") + 1] == "3" and argv[argv.index("--seed") + 1] == "0"
    assert (out / "e88_heads_2_n_8" / "train.log").read_text().count("step 190 loss 3.21") == 1


def test_a_run_past_its_timeout_is_stopped(fake_trainer, tmp_path):
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "nn-lstm",
            "--depth",
            "1",
            "--steps",
            "1",
            "--timeout",
            "1",
            "--out",
            str(out),
            "--train-args",
            "--sleep 60",
        ]
    )
    (r,) = json.loads((out / "results.json").read_text())["rows"]
    assert rc == 1 and r["status"] == "failed" and "stopped after 1 s" in r["reason"]


def test_train_command_passes_the_solved_config():
    args = bench_args(
        [
            "E88_d12h32",
            "--params",
            "100M",
            "--align",
            "128",
            "--minutes",
            "2",
            "--batch",
            "32",
            "--seq",
            "512",
            "--data",
            "a.txt",
            "b.txt",
            "--device",
            "cuda",
            "--backend",
            "triton",
            "--train-args",
            "--precision bf16",
        ]
    )
    (entry,) = bench.entries(args)
    cmd = bench.train_command(entry.cfg, args, Path("runs/x"))
    assert cmd[1:5] == ["-m", "archdsl.cli", "train", "e88"]
    cmd.remove("--force")  # a benchmark replaces a run an earlier one left in its folder
    flags = dict(zip(cmd[5::2], cmd[6::2]))
    assert flags["--preset"] == "E88_d12h32" and flags["--dim"] == "3200" and flags["--minutes"] == "2.0"
    assert flags["--backend"] == "triton" and flags["--device"] == "cuda" and flags["--depth"] == "20"
    assert cmd[cmd.index("--data") + 1 : cmd.index("--data") + 3] == ["a.txt", "b.txt"]
    assert cmd[-2:] == ["--precision", "bf16"]


def bench_args(argv):
    import argparse

    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(argv)


@pytest.mark.parametrize(
    ("text", "model", "preset", "sets"),
    [
        ("mamba2", "mamba2", None, {}),
        ("E88_h32n16", "e88", "E88_h32n16", {}),
        ("e88:E88_h8n64,gate=silu", "e88", "E88_h8n64", {"gate": "silu"}),
        ("e75:heads=8", "e75", None, {"heads": 8}),
    ],
)
def test_model_arguments(text, model, preset, sets):
    cfg = bench.parse_model(text, bench_args(["x"]))
    assert (cfg.model, cfg.preset, cfg.sets) == (model, preset, sets)


def test_dry_run_prints_the_solved_sizes(capsys):
    assert main(["bench", "E88_d12h32", "mamba2", "--params", "100M", "--align", "128", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("E88_d12h32: dim 3200, depth 20, heads 12, n 32")
    assert "99,958,880 parameters" in out[0] and "99,629,968 parameters" in out[1]


@pytest.mark.slow
def test_bench_trains_for_real(tmp_path):
    """A spec and a baseline, two seconds each, through the real 'archdsl train' on the test corpus."""
    out = tmp_path / "bench"
    rc = main(
        [
            "bench",
            "e88:demo",
            "nn-gru",
            "--params",
            "60K",
            "--depth",
            "2",
            "--minutes",
            "0.03",
            "--batch",
            "4",
            "--seq",
            "32",
            "--data",
            str(VAL),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--train-args",
            "--eval-bytes 4K --log-every 1",
        ]
    )
    doc = json.loads((out / "results.json").read_text())
    assert rc == 0, doc["rows"]
    for r in doc["rows"]:
        assert r["status"] == "ok" and r["steps"] > 0 and r["val_bpb"] > 0 and r["tokens_per_s"] > 0
        assert abs(r["params"] - 60_000) <= 0.1 * 60_000
        run = doc["runs"][r["model"]]
        assert run["params"] == r["params"] and len(run["curve"]) == r["steps"]
    assert doc["rows"][0]["heads"] == 4 and doc["rows"][0]["n_state"] == 16  # the demo preset's
    assert (out / "loss_vs_time.png").stat().st_size > 10_000


def test_bench_needs_a_training_budget(capsys):
    assert main(["bench", "nn-gru"]) == 2
    assert "--minutes, --steps or --tokens" in capsys.readouterr().err


def test_train_args_without_a_space():
    args = bench_args(["nn-gru", "--steps", "1", "--train-args=--compile"])
    (entry,) = bench.entries(args)
    assert bench.train_command(entry.cfg, args, Path("x"))[-1] == "--compile"


@pytest.mark.parametrize("model", ["E88_d12h32", "e88:heads=32,n=16", "llama", "nn-gru:expansion=1.5"])
def test_each_run_is_started_with_its_exact_configs(model):
    """The bench's configs of a run -> its ``archdsl train`` command -> the trainer's flags give the
    same configs back (one encoding, archdsl/config.py), the solved width standing for the budget."""
    import argparse
    import dataclasses

    from archdsl.config import apply_overrides, to_argv
    from archdsl.lm.config import ModelConfig
    from archdsl.train import cli
    from archdsl.train.config import TrainConfig

    argv = [model, "--params", "1M", "--depth", "2", "--tokens", "50K", "--batch", "4", "--seq", "64"]
    args = bench_args([*argv, "--seed", "3", "--data", "a.txt", "b.txt", "--device", "cpu"])
    (entry,) = bench.entries(args)
    train_cfg = bench.train_config(entry.cfg, args, Path("runs/x"))
    for cfg in (entry.cfg, train_cfg):
        assert apply_overrides(type(cfg)(), to_argv(cfg)) == cfg
    data = ["a.txt", "b.txt"]
    assert train_cfg == TrainConfig(
        tokens=50_000, batch=4, seq=64, data=data, device="cpu", seed=3, out="runs/x", force=True
    )
    cmd = bench.train_command(entry.cfg, args, Path("runs/x"))
    p = argparse.ArgumentParser()
    cli.add_arguments(p)
    model_cfg, cfg = cli.configs(p.parse_args(cmd[4:]))
    assert model_cfg == dataclasses.replace(entry.cfg, params=None, align=1) and cfg == train_cfg
    assert isinstance(model_cfg, ModelConfig) and model_cfg.dim and model_cfg.seed == 3


def test_every_model_runs_with_the_same_step_settings(fake_trainer, tmp_path):
    """--compile and --compile-mode reach every model's train command, baseline or spec, and the
    table says how each model's step ran."""
    out = tmp_path / "bench"
    argv = ["bench", "e88:heads=2,n=8", "llama", "--depth", "1", "--steps", "1", "--out", str(out)]
    assert main([*argv, "--compile", "--compile-mode", "reduce-overhead"]) == 0
    doc = json.loads((out / "results.json").read_text())
    for r in doc["rows"]:
        child = doc["runs"][r["model"]]["argv"]
        assert "--compile" in child and child[child.index("--compile-mode") + 1] == "reduce-overhead"
        assert r["settings"] == "compile+cudagraphs"
    assert "| Settings |" in (out / "results.md").read_text()
    assert (out / "results.md").read_text().count("| compile+cudagraphs |") == 2


def test_the_settings_column_reads_the_run_and_the_train_args(capsys):
    args = bench_args(["nn-gru", "--steps", "1", "--train-args=--compile"])
    (entry,) = bench.entries(args)
    assert bench.planned_settings(entry, args) == "compile"
    assert bench.planned_settings(entry, bench_args(["nn-gru", "--steps", "1"])) == "eager"
    ran = {"status": "ok", "config": {"compile": True, "compile_mode": "max-autotune-no-cudagraphs"}}
    assert bench.row(entry, ran, "compile")["settings"] == "compile+autotune"  # what ran, not the plan
    assert bench.cells(bench.row(entry, None))[benchtable.COLUMNS.index("Settings")] == "-"


def test_a_compile_mode_without_compile_is_refused_before_any_run(tmp_path, capsys):
    argv = ["bench", "nn-gru", "--steps", "1", "--compile-mode", "reduce-overhead", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "error: --compile-mode reduce-overhead is given without --compile" in err
    assert not (tmp_path / "results.json").exists()


def test_a_failed_run_under_a_watchdog_keeps_its_own_reason(fake_trainer, tmp_path):
    """A time budget arms the watchdog; a run that fails before it fires is not called timed out."""
    out = tmp_path / "bench"
    assert main(["bench", "nn-gru", "--depth", "1", "--minutes", "1", "--out", str(out)]) == 1
    (r,) = json.loads((out / "results.json").read_text())["rows"]
    assert "ran out of memory" in r["reason"] and "--timeout" not in r["reason"]


def test_modes_train_every_model_in_each_mode_and_tabulate_each_at_its_best(fake_trainer, tmp_path):
    """--modes: one run per model and mode, each with its own step flags; the best table takes each
    model's fastest run that finished (lstm's CUDA-graph run fails, so its best is plain compile)."""
    out = tmp_path / "bench"
    argv = ["bench", "e88:heads=2,n=8", "lstm", "--depth", "1", "--steps", "1", "--out", str(out)]
    assert main([*argv, "--modes", "eager,cudagraphs,compile"]) == 1  # lstm's cudagraphs run failed
    doc = json.loads((out / "results.json").read_text())
    labels = [r["model"] for r in doc["rows"]]
    assert labels == [
        f"{m} [{mode}]" for m in ("e88:heads=2,n=8", "lstm") for mode in ("eager", "cudagraphs", "compile")
    ]
    settings = {r["model"]: r["settings"] for r in doc["rows"]}
    assert (
        settings["lstm [eager]"] == "eager"
        and settings["e88:heads=2,n=8 [cudagraphs]"] == "compile+cudagraphs"
    )
    for label, run in doc["runs"].items():
        child = run.get("argv")
        if child is not None:
            assert ("--compile" in child) == (not label.endswith("[eager]"))
    best = {r["model"]: (r["settings"], r["tokens_per_s"]) for r in doc["best"]}
    assert best == {"e88:heads=2,n=8": ("compile+cudagraphs", 3 * 12345.6), "lstm": ("compile", 2 * 12345.6)}
    md = (out / "results.md").read_text()
    assert "## Each model at its best mode" in md and "| lstm |" in md


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--modes", "eager,cudagraps"],
            "argument --modes: unknown mode 'cudagraps' (did you mean 'cudagraphs'",
        ),
        (["--modes", "eager,eager"], "expected distinct modes"),
        (["--modes", "eager", "--compile"], "--modes sets each run's step mode"),
    ],
)
def test_bad_modes_are_refused_before_any_run(tmp_path, capsys, extra, message):
    argv = ["bench", "nn-gru", "--steps", "1", "--out", str(tmp_path / "b"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "b" / "results.json").exists()


def test_products_is_a_models_setting_that_reaches_its_train_command():
    """``gdn:products=half`` sets the kernels' products for that model alone (archdsl train --products);
    a model that cannot take it is a row with its reason, found before anything trains."""
    argv = ["gdn:GDN_100m,products=half", "gdn:GDN_100m", "e88:products=half", "mamba2:products=half"]
    args = bench_args([*argv, "--minutes", "1", "--backend", "triton"])
    half, plain, e88, mamba2 = bench.entries(args)
    assert (half.cfg.products, half.cfg.sets, plain.cfg.products) == ("half", {}, None)
    cmd = bench.train_command(half.cfg, args, Path("runs/x"))
    assert cmd[cmd.index("--products") + 1] == "half"
    assert "--products" not in bench.train_command(plain.cfg, args, Path("runs/y"))
    assert e88.cfg is None and "only the chunked strategy reads it, and 'e88'" in e88.error
    assert mamba2.cfg is None and "'mamba2' is a baseline" in mamba2.error
    (reference,) = bench.entries(bench_args(["gdn:products=half", "--minutes", "1"]))
    assert "add --backend triton" in reference.error
