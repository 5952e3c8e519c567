"""Decoding: ``layer.step`` token by token equals the full forward (the reference on every spec; each
compiled strategy on the representative specs of kernel_harness.REPRESENTATIVE, on every spec under
``pytest -m exhaustive``), the kernels take the length at run time (one length-1 variant serves every
step), the LM's states carry across calls, and ``archdsl sample`` prints text from a trained run."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
from archdsl.codegen import build_cell
from kernel_harness import assert_close, cases_params
from test_kernels import CASES, CHUNK, small

from archdsl import cli
from archdsl.lang.checker import instantiate
from archdsl.lang.parser import parse_file
from archdsl.layer import RecurrentLayer
from archdsl.lm.config import ModelConfig
from archdsl.train.data import ByteData, bits_per_byte
from archdsl.train.sample import load_trained
from archdsl.train.trainer import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
VAL = str(ROOT / "tests" / "data" / "corpus-val.txt.xz")
WIDE = {"dim": 40, "expansion": 2}  # the recurrent matrix leaves the registers: persistent and dense apply
DECODE = [(p, "reference") for p in sorted({p for p, _ in CASES})] + CASES
DECODE += [(ROOT / "specs" / f"{n}.rnn", s) for n in ("e1", "lstm") for s in ("persistent", "dense")]


def decode_layer(path: Path, strategy: str):
    if strategy in ("persistent", "dense"):
        return instantiate(parse_file(path), overrides=WIDE).layer
    return small(path, heads=2)


pytestmark = pytest.mark.usefixtures("cache")  # each test its own kernel cache (conftest.py)


def stepwise(layer: RecurrentLayer, x: torch.Tensor, state):
    ys = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, 1), state


@pytest.mark.parametrize(("path", "strategy"), cases_params(DECODE))
def test_step_equals_the_full_forward(path, strategy):
    """From a random state, 6 tokens one at a time against one forward of 6 (loop segments of 4 end
    mid-sequence; the chunked form pads a partial chunk), fp32, relative RMS <= 1e-5.

    By default: the reference on every spec (each spec's step semantics, convolution history
    included), the persistent and dense kernels on e1 and lstm, and the loop and chunked kernels on
    the specs of kernel_harness.REPRESENTATIVE, chosen so that each strategy meets every kind of state
    and history the specs have (one and several states, convolutions, gates, delta rule, scalar and
    per-channel decay). Stepping is the same kernel launched at length 1, so the other specs add
    only their cell's arithmetic, which test_kernels checks per spec; ``-m exhaustive`` runs them."""
    ir = decode_layer(path, strategy)
    if strategy == "reference":
        layer = RecurrentLayer(ir, seed=0)
    else:
        opts = dict(chunk=CHUNK.get(strategy, 4), num_warps=1, strategy=strategy)
        layer = RecurrentLayer(ir, backend="triton", seed=0, **opts)
    layer.eval()  # a spectral norm's power iteration advances on every call in training mode
    torch.manual_seed(0)
    x = torch.randn(2, 6, ir.dim)
    h0 = {s: 0.5 * torch.randn(2, *(ir.sizes[a] for a in ax)) for s, ax in ir.states.items()}
    with torch.no_grad():
        y, final = layer(x, h0)
        y_s, final_s = stepwise(layer, x, h0)
        y_z, _ = layer(x)  # no state: zeros, as init_state gives
        y_zs, _ = stepwise(layer, x, layer.init_state(2))
    assert_close("y", y_s, y, 1e-5)
    assert_close("y from zeros", y_zs, y_z, 1e-5)
    for s in final:
        assert_close(f"state {s}", final_s[s], final[s], 1e-5)


@pytest.mark.parametrize("strategy", ["loop", "persistent", "dense", "chunked"])
def test_kernels_take_the_length_at_run_time(strategy):
    """No Triton kernel of any strategy has the sequence length as a compile-time constant, so the
    length-1 launches of ``step`` reuse one compiled variant at every position."""
    spec = {"loop": "e88", "persistent": "e1", "dense": "e1", "chunked": "gdn"}[strategy]
    ir = decode_layer(ROOT / "specs" / f"{spec}.rnn", strategy)
    cc = build_cell(ir, CHUNK.get(strategy, 4), None, 1, strategy)
    paths = {Path(getattr(cc, "path", ""))} | {Path(p) for p in getattr(cc, "paths", ())}
    kernels = 0
    for path in [p for p in paths if p.is_file()]:
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef) and any("jit" in ast.unparse(d) for d in fn.decorator_list):
                kernels += 1
                for arg in fn.args.args:
                    if arg.arg in ("T", "t_lo", "t_hi", "NT"):
                        assert arg.annotation is None, f"{path.name}:{fn.name}: {arg.arg} is a constexpr"
    if kernels == 0:
        pytest.skip(f"the {strategy} cell keeps its kernels outside one generated module")


def test_lm_states_carry_across_calls():
    """A prompt in two pieces, then byte by byte, gives the logits of the whole sequence at once."""
    from archdsl.lm.zoo import build_model

    lm = build_model(ModelConfig("e88", dim=16, depth=2, sets={"heads": 2, "n": 4})).eval()
    idx = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole = lm(idx)
        a, states = lm.forward_state(idx[:, :3])
        b, states = lm.forward_state(idx[:, 3:5], states)
        steps = []
        for t in range(5, 9):
            logits, states = lm.step(idx[:, t], states)
            steps.append(logits[:, None])
    assert len(states) == 2 and set(states[0]) == {"S"}
    assert_close("logits", torch.cat([a, b, *steps], 1), whole, 1e-5)


def test_generate_is_seeded_greedy_is_deterministic_and_baselines_refuse():
    from archdsl.errors import ArchdslError
    from archdsl.lm.zoo import build_model

    lm = build_model(ModelConfig("e88", dim=16, depth=1, sets={"heads": 2, "n": 4}))
    a, b = lm.generate("ab", 12, seed=1), lm.generate("ab", 12, seed=1)
    assert a == b and a.startswith("ab")
    t = lm.generate(torch.tensor([[97, 98], [99, 100]]), 5, temperature=0)
    assert t.shape == (2, 7) and torch.equal(t[:, :2], torch.tensor([[97, 98], [99, 100]]))
    assert lm.generate(b"ab", 3, top_k=1) == lm.generate(b"ab", 3, temperature=0)
    with pytest.raises(ArchdslError, match="prompt"):
        lm.generate("", 3)
    llama = build_model(ModelConfig("llama", dim=64, depth=1))
    with pytest.raises(ArchdslError, match="no one-step path"):
        llama.generate("ab", 3)


@pytest.mark.slow
def test_sample_prints_text_from_a_trained_run(tmp_path, capsys):
    """Train a tiny E88 on the test corpus, then `archdsl sample` it: the weights it loads are the
    ones the run's held-out evaluation scored (same bits per byte), and the text reads like the
    corpus (letters and spaces) far more than the uniform bytes of an untrained model would."""
    out = tmp_path / "run"
    cfg = TrainConfig(
        steps=60, batch=8, seq=32, lr=3e-3, device="cpu", threads=1, data=[VAL], val_fraction=0.05,
        eval_bytes=2048, log_every=20, out=str(out), progress=False, warm_steps=0,
    )  # fmt: skip
    result = train(ModelConfig("e88", preset="demo", depth=1), cfg)
    assert result.status == "ok"
    model = load_trained(out)
    assert model.info["precision"] == "fp32"  # the CPU run's, resolved from "auto"
    data = ByteData([VAL], None, val_fraction=0.05, seed=0)
    total, n = 0.0, 0
    with torch.no_grad():
        for x, y in data.eval_batches(cfg.eval_bytes, cfg.batch, cfg.seq):
            logits = model(x)
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, 256), y.reshape(-1), reduction="sum"
            )
            n += y.numel()
    saved = json.loads((out / "result.json").read_text())["val_bpb"]
    assert math.isclose(bits_per_byte(float(total), n), saved, rel_tol=1e-6)

    assert cli.main(["sample", str(out), "--prompt", "The ", "--bytes", "80", "--seed", "0"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("The ") and len(text.encode()) >= 80
    sampled = text[4:].rstrip("\n")
    plain = sum(c.isalpha() or c in " .,\n" for c in sampled) / len(sampled)
    assert plain > 0.8, repr(sampled)  # uniform bytes: about 0.2
    assert cli.main(["sample", str(tmp_path / "nothing")]) == 2
    assert "no trained run here" in capsys.readouterr().err


def test_sample_decodes_in_the_precision_its_evaluation_ran_in():
    """A run trained under bf16 autocast (the GPU's "auto") samples under it on a GPU; an fp32 run in
    fp32; on the CPU always fp32."""
    from archdsl.train.sample import decode_precision

    runs, devices = ("auto", "bf16", "fp32"), ("cuda", "cuda:1", "cpu")
    got = {(p, d): decode_precision(p, d) for p in runs for d in devices}
    assert got == {
        ("auto", "cuda"): "bf16", ("auto", "cuda:1"): "bf16", ("auto", "cpu"): "fp32",
        ("bf16", "cuda"): "bf16", ("bf16", "cuda:1"): "bf16", ("bf16", "cpu"): "fp32",
        ("fp32", "cuda"): "fp32", ("fp32", "cuda:1"): "fp32", ("fp32", "cpu"): "fp32",
    }  # fmt: skip


def _greedy(stepper, logits, n: int) -> bytes:
    """n bytes from a ``_Stepper`` after a prompt's ``logits``, each the most likely."""
    token, out = logits[:, -1].argmax(-1), []
    for _ in range(n - 1):
        out.append(int(token))
        token = stepper(token).argmax(-1)
    return bytes([*out, int(token)])


def test_generate_graphs_capture_once_the_states_keep_their_shapes(monkeypatch):
    """``generate``'s steps run eagerly while a spec's history of earlier inputs grows, then one
    captured step serves every later byte (here a stand-in that steps eagerly and counts: CUDA
    graphs need a GPU, tests/test_gpu.py replays real ones); a capture that fails warns and decodes on
    eagerly; either way the bytes are the eager steps' bytes."""
    from archdsl.errors import ArchdslError
    from archdsl.lm import generate as decoding
    from archdsl.lm.zoo import build_model

    made, replays = [], []

    class Counted:  # GraphedStep's contract: built once, the states carried inside from then on
        def __init__(self, model, token, states):
            made.append([s["x:history"].shape[1] for s in states])
            self.model, self.states = model, states

        def __call__(self, token):
            replays.append(token)
            logits, self.states = decoding.step(self.model, token, self.states)
            return logits

    lm = build_model(ModelConfig("gdn", dim=8, depth=2, sets={"heads": 2, "n": 4}))
    eager = bytes(lm.generate(torch.tensor([[97]]), 8, temperature=0, graphs=False)[0].tolist())
    monkeypatch.setattr(decoding, "GraphedStep", Counted)
    with torch.no_grad():
        logits, states = lm.forward_state(torch.tensor([[97]]))
        assert [s["x:history"].shape[1] for s in states] == [1, 1]  # one input seen, three to keep
        assert _greedy(decoding._Stepper(lm, states, graphs=True), logits, 8) == eager[1:]
    assert made == [[3, 3]]  # captured once, at the step after which the history stopped growing
    assert len(replays) == 7 - 3  # steps 1 and 2 grew it, step 3 kept it (and captured)

    def broken(*args):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(decoding, "GraphedStep", broken)
    with torch.no_grad(), pytest.warns(UserWarning, match="without CUDA graphs .operation not permitted"):
        logits, states = lm.forward_state(torch.tensor([[97]]))
        stepper = decoding._Stepper(lm, states, graphs=True)
        assert _greedy(stepper, logits, 8) == eager[1:]
    assert stepper.graphs is False
    with pytest.raises(ArchdslError, match="CUDA graphs need a model on a GPU, found one on cpu"):
        lm.generate("a", 3, graphs=True)


def test_history_is_the_longest_chain_of_shifts():
    """A layer keeps as many earlier inputs as its longest chain of shifts reaches back: a convolution
    over 4 tokens beside a token shift, 3; the token shift of that convolution's output, 3 + 1. With
    no more history than that, token-by-token steps still equal the whole forward."""
    import shift_oracles

    from archdsl.layer_io import lookback

    beside = shift_oracles.SPEC
    chained = beside.replace("rs = r + 0.5 * (shift(r) - r)", "rs = r + 0.5 * (shift(uc) - r)")
    assert chained != beside
    for spec, reach in ((beside, 3), (chained, 4)):
        ir = shift_oracles.layer_of(spec, "shifts.rnn")
        assert lookback(ir) == reach
        layer = RecurrentLayer(ir, seed=0)
        x = torch.randn(2, 7, ir.dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y, _ = layer(x)
            y_s, final = stepwise(layer, x, None)
        assert final["x:history"].shape[1] == reach
        assert_close("y", y_s, y, 1e-6)
