"""The cases of ``adversarial.py``: (group, name, function of a fresh folder -> (outcome, detail))."""

from __future__ import annotations

import json
import os
import pickle
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from adversarial import ROOT, archdsl, error_expected, sh, success_expected, verify_expected

from archdsl.train.checkpoint import NAME as CHECKPOINT  # the file a run checkpoints to

SPECS = ROOT / "specs"
TINY = ["--batch", "2", "--seq", "16", "--eval-bytes", "256", "--device", "cpu", "--no-progress"]


def data(tmp: Path) -> list[str]:
    rng = random.Random(0)
    words = ["state", "kernel", "gate", "decay", "head", "the", "a", "of", "scan", "token"]
    for name, n in (("data.txt", 60_000), ("val.txt", 6_000)):
        (tmp / name).write_text(" ".join(rng.choice(words) for _ in range(n // 5)))
    return ["--data", "data.txt", "--val", "val.txt"]


def tiny_train(tmp: Path, out: str = "run", model: str = "e88", steps: str = "4", extra=()) -> list[str]:
    preset = ["--preset", "test"] if model == "e88" else []
    return [
        "train",
        model,
        *preset,
        "--depth",
        "1",
        "--steps",
        steps,
        "--out",
        out,
        *TINY,
        *data(tmp),
        *extra,
    ]


# ---- flags ----------------------------------------------------------------------------------------
FLAGS = [
    ["train", "e88", "--steps", "1", "--heads", "0", "--params", "100K"],
    ["train", "e88", "--steps", "1", "--n", "0", "--params", "100K"],
    ["train", "e88", "--steps", "1", "--set", "n=0", "--params", "100K"],
    ["train", "e88", "--steps", "1", "--threads", "-1"],
    ["train", "e88", "--steps", "1", "--threads", "0"],
    ["train", "e88", "--steps", "1", "--out", "FILE"],
    ["train", "e88", "--steps", "1", "--out", "FILE/sub"],
    ["train", "e88", "--minutes", "inf"],
    ["train", "e88", "--minutes", "nan"],
    ["train", "e88", "--minutes=-1"],
    ["train", "e88", "--steps", "1", "--lr=-1"],
    ["train", "e88", "--steps", "1", "--warmup=-1"],
    ["train", "e88", "--steps", "1", "--checkpoint-every=-1"],
    ["train", "e88", "--steps", "1", "--device", "gpu"],
    ["train", "e88", "--preset", "test", "--steps", "1", "--batch", "100000000", "--device", "cpu"],
    ["verify", "e88", "--preset", "test", "--seq", "0"],
    ["verify", "e88", "--preset", "test", "--seq=-3"],
    ["verify", "e88", "--preset", "test", "--batch", "0"],
    ["verify", "e88", "--preset", "test", "--device", "gpu"],
    ["compile", "e88", "--chunk", "0"],
    ["compile", "e88", "--chunk=-1"],
    ["compile", "e88", "--warps", "0"],
    ["compile", "e88", "--tile", "3"],
    ["compile", "e88", "-o", "FILE/sub"],
    ["compile", "e88", "--set", "n=1000000"],
    ["search", "--budget", "100K", "--storage", "garbage", "--quiet"],
    ["search", "--budget", "100K", "--storage", ".", "--quiet"],
    ["search", "--budget", "100K", "--minutes", "inf", "--quiet"],
    ["report", "FILE"],
    ["bench", "e88", "--minutes", "nan"],
]


def flag_case(argv: list[str]):
    def run(tmp: Path):
        (tmp / "FILE").write_text("not a directory, not a journal\n")
        kind, detail = error_expected(archdsl(argv, tmp, timeout=90))
        if "garbage" in argv and (tmp / "garbage").exists():
            return "silently-wrong", "made a journal file ./garbage"
        return kind, detail

    return run


# ---- specs --------------------------------------------------------------------------------------------
def spec_verify(text: str, name: str = "s.rnn", args=()):
    def run(tmp: Path):
        (tmp / name).write_text(text)
        return verify_expected(archdsl(["verify", name, "--device", "cpu", "--seq", "5", *args], tmp, 600))

    return run


def spec_check_error(text: str, command: str = "check"):
    def run(tmp: Path):
        (tmp / "s.rnn").write_text(text)
        argv = [command, "s.rnn"] + (["--device", "cpu", "--seq", "3"] if command == "verify" else [])
        return error_expected(archdsl(argv, tmp, 300))

    return run


E88 = (SPECS / "e88.rnn").read_text()


def rename(text: str, old: str, new: str) -> str:
    code = [line.split("#")[0] for line in text.splitlines()]
    return "\n".join(re.sub(rf"\b{old}\b", new, line) for line in code) + "\n"


def two(u: str, v: str, state: str = "h", extra: str = "") -> str:
    return (
        f"rnn two\nhyper dim = 6\naxis i = dim\nproject x -> {u}[i], {v}[i]\nstate {state}[i]\n{extra}"
        f"{state}' = tanh({u} + {v} * {state})\nout = {state}'\noutput out\n"
    )


PARAM = "rnn p\nhyper dim = 6\naxis i = dim\nproject x -> wx[i]\nparam {p}[i] = zeros()\nstate h[i]\n"
PARAM += "h' = tanh(wx + {p} * h)\ny = h'\noutput y\n"
NO_RNN = "hyper dim = 6\naxis i = dim\nproject x -> wx[i]\nstate h[i]\nh' = tanh(wx + h)\ny = h'\noutput y\n"
NAN_INIT = (
    "rnn n\nhyper dim = 6\naxis i = dim\nproject x -> wx[i]\nparam a[i] = logit(linspace[i](0.8, 1.5))\n"
)
NAN_INIT += "state h[i]\nh' = sigmoid(a) * h + wx\ny = h'\noutput y\n"
XAVIER3 = "rnn x\nhyper dim = 6\naxis k = 2\naxis i = dim\naxis j = dim\nproject x -> wx[i]\n"
XAVIER3 += (
    "param W[k, i, j] = xavier()\nstate h[i]\nh' = tanh(wx + sum[j](sum[k](W) * h[j]))\ny = h'\noutput y\n"
)
NOSTATE = (
    "rnn z\nhyper dim = 6\naxis i = dim\nproject x -> wx[i]\nstate h[i]\nh' = tanh(wx)\ny = h'\noutput y\n"
)
TWO_STATES = "rnn cs\nhyper dim = 6\naxis i = dim\nproject x -> a[i], b2[i]\nstate C[i]\nstate dC[i]\n"
TWO_STATES += "C' = tanh(a + 0.5 * C)\ndC' = tanh(b2 + dC * C')\ny = C' + dC'\noutput y\n"


def nostate_verify(tmp: Path):
    (tmp / "s.rnn").write_text(NOSTATE)
    r = archdsl(["verify", "s.rnn", "--device", "cpu", "--seq", "3"], tmp, 300)
    kind, detail = success_expected(r)
    if kind == "ok" and "not verified" not in r.out:
        return "silently-wrong", "verified a gradient that nothing depends on without saying so"
    return kind, detail if kind != "ok" else "says what it cannot verify"


# ---- files ------------------------------------------------------------------------------------------
class Planted:
    """Unpickling this runs code: it creates the file ``pwned`` beside the checkpoint."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def pickled_checkpoint(tmp: Path):
    archdsl(tiny_train(tmp), tmp, 300)
    marker = tmp / "pwned"
    # the pickle where a checkpoint is read from, and under the old pickled checkpoint's name
    for name in (CHECKPOINT, "checkpoint.pt"):
        with open(tmp / "run" / name, "wb") as f:
            pickle.dump({"x": Planted(str(marker))}, f)
    r = archdsl([*tiny_train(tmp), "--resume"], tmp, 300)
    if marker.exists():
        return "silently-wrong", "--resume ran the code pickled in the checkpoint"
    return error_expected(r)


def corrupt_checkpoint(how: str):
    def run(tmp: Path):
        archdsl(tiny_train(tmp), tmp, 300)
        ck = tmp / "run" / CHECKPOINT
        if not ck.exists():
            return "harness-error", f"the first run wrote no {CHECKPOINT}"
        blob = ck.read_bytes()
        ck.write_bytes({"empty": b"", "truncated": blob[: len(blob) // 2], "random": os.urandom(4096)}[how])
        return error_expected(archdsl([*tiny_train(tmp), "--resume"], tmp, 300))

    return run


def planted_cache(tmp: Path):
    cache = tmp / "cache"
    env = {**os.environ, "ARCHDSL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "archdsl.cli", "compile", "e88", "--preset", "test"]
    r = sh(argv, tmp, 300, env=env)
    module = next((line.split()[-1] for line in r.out.splitlines() if line.strip().startswith("module")), "")
    if not module or not Path(module).exists():
        return "harness-error", "no kernel module path in compile's output"
    marker = tmp / "pwned"
    with open(module, "a") as f:
        f.write(f"\nopen({str(marker)!r}, 'w').close()\n")
    r = sh([*argv, "-o", "copied"], tmp, 300, env=env)
    if marker.exists():
        return "silently-wrong", "code planted in the kernel cache ran on the next compile"
    if any("open(" in p.read_text() for p in (tmp / "copied").glob("*.py")):
        return "silently-wrong", "the planted code was copied out by -o"
    return success_expected(r, "the planted cache entry was not imported")


# ---- runs ----------------------------------------------------------------------------------------
def edited_spec(tmp: Path):
    (tmp / "m.rnn").write_text(E88)
    archdsl(tiny_train(tmp, model="m.rnn", extra=["--preset", "test"]), tmp, 300)
    (tmp / "m.rnn").write_text(E88.replace("= tanh\n", "= identity\n"))
    return error_expected(
        archdsl([*tiny_train(tmp, model="m.rnn", extra=["--preset", "test"]), "--resume"], tmp)
    )


def changed_shapes(tmp: Path):
    archdsl(tiny_train(tmp), tmp, 300)
    return error_expected(archdsl([*tiny_train(tmp), "--set", "n=4", "--resume"], tmp, 300))


def replaced_data(tmp: Path):
    argv = tiny_train(tmp)
    archdsl(argv, tmp, 300)
    (tmp / "data.txt").write_text("something else entirely " * 3000)
    return error_expected(archdsl([*argv, "--resume"], tmp, 300))


def dot_slash_data(tmp: Path):
    archdsl(tiny_train(tmp), tmp, 300)
    argv = tiny_train(tmp)
    argv[argv.index("val.txt")] = "./val.txt"
    return success_expected(archdsl([*argv, "--resume"], tmp, 300), "./val.txt resumes a run on val.txt")


def two_runs_one_out(tmp: Path):
    argv = [sys.executable, "-m", "archdsl.cli", *tiny_train(tmp, steps="30")]
    from adversarial import env_for

    procs = [
        subprocess.Popen(
            argv, cwd=tmp, env=env_for(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in "ab"
    ]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    results = [(p.returncode, err) for p, err in zip(procs, errs)]
    if all(rc == 0 for rc, _ in results):
        return "silently-wrong", "both runs on one --out exited 0 (one result lost)"
    if any("Traceback" in err for _, err in results):
        return "traceback", next(err for _, err in results if "Traceback" in err).strip().splitlines()[-1]
    return "ok", "the second run was refused"


def overwrite_finished(tmp: Path):
    archdsl(tiny_train(tmp), tmp, 300)
    return error_expected(archdsl(tiny_train(tmp), tmp, 300))


def nan_json(tmp: Path):
    archdsl(tiny_train(tmp, extra=["--lr", "1e30"]), tmp, 300)
    for name in ("result.json", "log.jsonl"):
        path = tmp / "run" / name
        text = path.read_text() if path.exists() else ""
        for line in text.splitlines() if name.endswith("l") else [text]:
            if not line.strip():
                continue
            try:
                json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            except ValueError as e:
                return "silently-wrong", f"{name} is not strict JSON ({e})"
    return "ok", "strict JSON"


def kill9_log(tmp: Path):
    from adversarial import env_for

    argv = [
        sys.executable,
        "-m",
        "archdsl.cli",
        *tiny_train(tmp, steps="100000", extra=["--checkpoint-every", "3"]),
    ]
    proc = subprocess.Popen(
        argv, cwd=tmp, env=env_for(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (tmp / "run" / CHECKPOINT).exists():
        time.sleep(1)
    time.sleep(4)
    proc.kill()
    proc.wait()
    r = archdsl([*tiny_train(tmp, steps="100000", extra=["--checkpoint-every", "3"]), "--resume"], tmp, 20)
    # the curve points (event "step"); a checkpoint or resume event repeats the step it happened at
    records = [json.loads(line) for line in (tmp / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r.get("event") == "step"]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        return "silently-wrong", "log.jsonl repeats step numbers after kill -9 and --resume"
    if "Traceback" in r.err:
        return "traceback", r.err.strip().splitlines()[-1]
    return "ok", f"{len(steps)} log lines, steps increasing"


def closed_pipe(tmp: Path):
    read, write = os.pipe()
    os.close(read)
    try:
        r = sh([sys.executable, "-m", "archdsl.cli", "-h"], tmp, 60, stdout=write)
    finally:
        os.close(write)
    return success_expected(r, "no traceback on a closed pipe")


def data_case(kind: str):
    def run(tmp: Path):
        argv = tiny_train(tmp)
        if kind == "truncated-xz":
            import lzma

            blob = lzma.compress((tmp / "data.txt").read_bytes())
            (tmp / "d.xz").write_bytes(blob[: len(blob) // 2])
            target = "d.xz"
        else:  # a path that cannot be read as a file (every file is readable as root)
            (tmp / "adir").mkdir()
            target = "adir"
        argv[argv.index("data.txt")] = target
        return error_expected(archdsl(argv, tmp, 300))

    return run


def no_rnn_line(name: str):
    def run(tmp: Path):
        (tmp / name).write_text(NO_RNN)
        return success_expected(archdsl(["compile", name], tmp, 300), "compiled")

    return run


from adversarial_search import (  # noqa: E402
    search_kill9,
    search_resume_original,
    search_resume_repeats,
    search_same_name,
)

# ---- the list -----------------------------------------------------------------------------------
CASES = [("flags", " ".join(a), flag_case(a)) for a in FLAGS]
CASES += [
    ("flags", "archdsl -h | (closed pipe)", closed_pipe),
    ("specs", "initialiser yields NaN", spec_check_error(NAN_INIT, "verify")),
    ("specs", "xavier() on a 3-D param", spec_check_error(XAVIER3)),
    ("specs", "verify: update ignores the state", nostate_verify),
]
CASES += [
    ("codegen", f"split axis named {a}", spec_verify(rename(E88, "j", a), args=("--preset", "test")))
    for a in ("b", "s", "c")
]
CASES += [
    ("codegen", "states C and dC", spec_verify(TWO_STATES)),
    ("codegen", "inputs t and dt", spec_verify(two("t", "dt"))),
    ("codegen", "inputs q and dq", spec_verify(two("q", "dq"))),
    ("codegen", "input named dy", spec_verify(two("dy", "w"))),
    ("codegen", "projection named y", spec_verify(two("y", "w"))),
    ("codegen", "inputs h0_C, ht_C beside state C", spec_verify(two("h0_C", "ht_C", state="C"))),
    ("codegen", "input ck_C beside state C", spec_verify(two("ck_C", "w", state="C"))),
]
CASES += [
    ("codegen", f"no rnn line: '{n}'", no_rnn_line(n)) for n in ("2layer.rnn", "e88.v2.rnn", "e88 copy.rnn")
]
CASES += [
    ("codegen", f"param named {p}", spec_verify(PARAM.format(p=p)))
    for p in ("type", "values", "items", "keys", "get", "update", "to", "float", "forward")
]
CASES += [
    ("files", "checkpoint with a pickled payload", pickled_checkpoint),
    ("files", "code planted in the kernel cache", planted_cache),
    *(("files", f"checkpoint {how}", corrupt_checkpoint(how)) for how in ("empty", "truncated", "random")),
    ("files", "truncated .xz data", data_case("truncated-xz")),
    ("files", "unreadable data (a directory)", data_case("dir")),
    ("runs", "resume with an edited spec", edited_spec),
    ("runs", "resume with changed shapes", changed_shapes),
    ("runs", "resume with replaced data", replaced_data),
    ("runs", "resume naming ./val.txt for val.txt", dot_slash_data),
    ("runs", "two runs on one --out", two_runs_one_out),
    ("runs", "a finished run overwritten without --resume", overwrite_finished),
    ("runs", "NaN in JSON", nan_json),
    ("runs", "kill -9 then --resume: log steps", kill9_log),
    ("search", "--resume repeats trials", search_resume_repeats),
    ("search", "--resume with the original flags", search_resume_original),
    ("search", "kill -9 of the search leaves workers", search_kill9),
    ("search", "two searches, one study name", search_same_name),
]
CASES.append(
    (
        "codegen",
        "mLSTM-like spec in bf16",
        lambda tmp: ("skipped", "needs a CUDA GPU: see benchmarks/results/bf16-conditioning.md"),
    )
)
