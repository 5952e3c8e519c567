"""Local worker processes of a search: one per GPU or N on the CPU, restarted if one dies.

The pool polls the study while its workers run (for the live table), fails and queues again the
trial of a worker that died (the journal storage has no heartbeat; a database storage also fails it
on its own after the grace period), and runs the top-k re-runs with more seeds after the search.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from . import study as st
from .repro import job, model_config, train_command, train_config
from .space import Candidate
from .trial import child_env
from .worker import fits, objective_values, run_process, trial_env

MAX_RESTARTS = 3


@dataclass
class Slot:
    index: int
    gpu: str | None
    proc: subprocess.Popen | None = None
    restarts: int = 0

    def name(self) -> str:
        return f"{socket.gethostname()}:{self.proc.pid}:w{self.index}" if self.proc else ""


def slot_env(slot: Slot, n_slots: int, base: dict) -> dict:
    env = dict(base)
    if slot.gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot.gpu
    else:  # CPU workers share the cores
        threads = max(1, (os.cpu_count() or 1) // n_slots)
        env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


class Pool:
    def __init__(
        self,
        study: optuna.Study,
        storage: str | None,
        runs: Path,
        gpus: list[str] | None,
        workers: int,
        first: int = 0,
        deadline: float | None = None,
    ):
        """``first``: index of the first worker (it seeds the sampler: a joining host picks another);
        ``deadline``: time.time() after which no trial (or re-run) may still be training."""
        self.study, self.storage, self.runs, self.deadline = study, storage, runs, deadline
        gpus = gpus or [None] * workers
        self.slots = [Slot(first + i, g) for i, g in enumerate(gpus)]
        self.base_env = trial_env(runs, study.study_name)

    def start(self, slot: Slot) -> None:
        argv = [sys.executable, "-m", "archdsl.search.worker", "--study", self.study.study_name]
        argv += ["--runs", str(self.runs), "--worker", str(slot.index)]
        argv += ["--storage", self.storage] if self.storage else []
        argv += ["--deadline", repr(self.deadline)] if self.deadline else []
        env = child_env(slot_env(slot, len(self.slots), self.base_env))
        slot.proc = subprocess.Popen(argv, env=env)

    def run(self, on_tick=None) -> None:
        """Start the workers and wait for them, calling ``on_tick()`` every second or so."""
        for slot in self.slots:
            self.start(slot)
        try:
            while any(s.proc is not None for s in self.slots):
                for slot in self.slots:
                    if slot.proc is not None and slot.proc.poll() is not None:
                        self.reap(slot)
                if on_tick:
                    on_tick()
                time.sleep(1.0)
        except KeyboardInterrupt:
            self.stop()
            raise

    def reap(self, slot: Slot) -> None:
        rc, name = slot.proc.returncode, slot.name()
        slot.proc = None
        if rc == 0:
            return
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker") == name:
                st.fail_and_retry(self.study, t, f"its worker {name} died (exit status {rc})")
        settings = st.settings_of(self.study)
        done = st.counts(self.study).finished >= settings.trials or not fits(
            self.deadline, self.study, settings
        )
        if not done and slot.restarts < MAX_RESTARTS and rc != 2:
            slot.restarts += 1
            print(
                f"archdsl search: worker {slot.index} exited with status {rc}; restarting it", file=sys.stderr
            )
            self.start(slot)

    def stop(self) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.terminate()
        for slot in self.slots:
            if slot.proc is not None:
                try:
                    slot.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    slot.proc.kill()

    # ---- top-k re-runs ----------------------------------------------------------------------------
    def reseed(self, settings: st.Settings, top: list, on_tick=None) -> None:
        """Re-train each of ``top`` (frozen trials) with ``settings.seeds`` more seeds, in parallel."""
        jobs = []
        for t in top:
            for k in range(1, settings.seeds + 1):
                seed = settings.seed + k
                if seed_key(t.number, seed) not in self.study.user_attrs:
                    jobs.append((t, seed))
        if not jobs:
            return
        envs = [slot_env(s, len(self.slots), self.base_env) for s in self.slots]

        def work(i: int) -> None:
            while jobs:
                try:
                    t, seed = jobs.pop(0)
                except IndexError:
                    return
                if not fits(self.deadline, self.study, settings):
                    return
                self.rerun(settings, t, seed, envs[i])
                if on_tick:
                    on_tick()

        with ThreadPoolExecutor(len(self.slots)) as ex:
            list(ex.map(work, range(len(self.slots))))

    def rerun(self, settings: st.Settings, t, seed: int, env: dict) -> None:
        cand = candidate_of(t)
        out = self.runs / self.study.study_name / "seeds" / f"trial-{t.number}-seed-{seed}"
        # a re-run stopped before it was recorded starts over in its folder
        tcfg = train_config(cand, settings, out, seed, force=True)
        spec = job(model_config(cand, settings, seed), tcfg, settings, report=False)
        solved = {}
        res = run_process(
            spec,
            out,
            env,
            lambda model, params: solved.update(model=model, params=params),
            lambda *_: "go",
            settings.timeout_s(),
        )
        record = {
            "seed": seed,
            "status": res["status"],
            "reason": res.get("reason"),
            "params": solved.get("params"),
        }
        if solved:
            record["command"] = train_command(solved["model"], tcfg)
        if res["status"] == "ok":
            record["values"] = objective_values(settings, res["result"], cand.depth)
            record["tokens_per_s"] = res["result"].get("tokens_per_s")
        self.study.set_user_attr(seed_key(t.number, seed), record)


def seed_key(number: int, seed: int) -> str:
    return f"seed_run:{number}:{seed}"


def candidate_of(t) -> Candidate:
    """The configuration a finished trial trained (from its recorded, solved model config)."""
    mc = t.user_attrs["model_config"]
    lr = t.user_attrs.get("lr") or _lr_of(t)
    return Candidate(mc["model"], dict(mc.get("sets") or {}), int(mc["depth"]), float(lr), mc.get("dim"))


def _lr_of(t) -> float:
    from .space import DEFAULT_LR

    for k, v in t.params.items():
        if k == "lr" or k.endswith(".lr"):
            return float(v)
    return DEFAULT_LR
