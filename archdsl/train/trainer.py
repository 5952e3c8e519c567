"""Fixed-budget training of the byte-level LM (variants.md §6), the modded-nanogpt way.

``train()`` builds the model, warms it up (and compiles it, if asked) before the clock starts, then
resets it to its initial weights; the clock times training steps only (with a device sync), never
warm-up, evaluation or checkpoints. Held-out bits per byte are measured off the clock on a fixed
number of bytes. Every run writes ``<out>/log.jsonl``, ``<out>/checkpoint.safetensors`` and
``<out>/result.json`` (``asdict(TrainResult)``), holding a lock on ``<out>`` while it runs
(rundir.py: one run per folder; a finished run is replaced only with ``force``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from archdsl.layer import RecurrentLayer
from archdsl.train import checkpoint, trainlog
from archdsl.train.config import CHOICES, CUDA_GRAPH_MODES, TrainConfig, resolve  # noqa: F401 (importable here)
from archdsl.train.data import bits_per_byte, default_corpus
from archdsl.train.export import export
from archdsl.train.nonfinite import diagnose
from archdsl.train.packing import open_data, packed_logits
from archdsl.train.plots import run_loss_plot
from archdsl.train.rundir import LOG, RunDir, cut_log, identity
from archdsl.train.runinfo import environment
from archdsl.train.sinks import Sinks
from archdsl.train.trainlog import RunLog

if TYPE_CHECKING:
    from archdsl.lm.config import ModelConfig

LAST = 100  # "last-100 loss": the mean training loss over this many final steps
LONG_FIELDS = ("curve", "info", "environment", "config", "model_config")  # left out of the "end" line


class Pruned(Exception):
    """Raised by an ``on_report`` callback to stop a run early (the search prunes trials with it)."""


@dataclass
class TrainResult:
    status: str  # "ok" | "nonfinite" | "pruned" | "interrupted"
    steps: int
    tokens: int
    tokens_per_s: float  # batch * seq * steps / timed seconds
    last100_loss: float | None  # nats per byte, mean training loss of the last 100 steps
    val_bpb: float | None  # held-out bits per byte at the end (or at pruning)
    peak_mem_bytes: int | None  # peak CUDA memory of the timed steps' tensors; None on CPU
    #: peak CUDA memory the process held in the timed steps: the caching allocator's pools, CUDA
    #: graphs' private pools included (a replayed graph's tensors are not counted in peak_mem_bytes)
    peak_reserved_bytes: int | None
    params: int
    state_per_layer: int | None
    wall_s: float  # wall clock of the whole run, warm-up and evaluation included
    train_s: float  # timed seconds of training steps (what a minutes budget counts)
    curve: list[tuple[float, int, float]]  # (timed seconds, step, mean loss since the previous point)
    info: dict  # model.info: spec text, kernel hash, sizes, ...
    environment: dict  # versions, git commit, device, GPU, date, command line
    message: str = ""  # why the run stopped early, e.g. the step and first non-finite tensor
    reports: list[tuple[float, float]] = field(default_factory=list)  # (fraction, bpb) given to on_report
    config: dict = field(default_factory=dict)  # TrainConfig, with device and precision resolved
    model_config: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)  # files, held-out split, bytes scored


def train(
    model_cfg: ModelConfig, cfg: TrainConfig, on_report: Callable[[float, float], None] | None = None
) -> TrainResult:
    """Train ``model_cfg`` for the budget of ``cfg``; see the module docstring."""
    return Trainer(model_cfg, cfg).run(on_report)


def compiled(model: torch.nn.Module, cfg: TrainConfig):
    """``torch.compile`` of the model at ``cfg``'s mode and backend. The custom ops of the compiled
    cells (codegen/run/ops.py) keep the graph whole, each one node that inductor fuses around; the
    cells are built (and their launch plans tuned) by the first warm-up step, run eagerly, so that
    tracing never enters the code generator. The layers' own recomputation of saved values is turned
    off (``archdsl/recompute.py``): the compiler chooses what its backward recomputes."""
    for m in model.modules():
        if isinstance(m, RecurrentLayer):
            m.recompute = False
    if cfg.compile_backend != "inductor":
        return torch.compile(model, backend=cfg.compile_backend)
    return torch.compile(model, mode=cfg.compile_mode)


class Trainer:
    """One run: built in ``__init__`` (nothing timed), trained in ``run``."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig):
        self.t0 = time.perf_counter()
        self.model_cfg, self.cfg = model_cfg, resolve(cfg)
        cfg = self.cfg
        self.out = Path(cfg.out)
        self.dir = RunDir.open(self.out, cfg.resume, cfg.force)  # one run per folder, none overwritten
        try:
            self.build(model_cfg, cfg)
        except BaseException:
            self.dir.close()
            raise

    def build(self, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
        from archdsl.lm.zoo import build_model

        path = self.out / checkpoint.NAME
        # a resume checks its checkpoint's settings before anything is built, its identity after
        self.resumed = checkpoint.load(path, model_cfg, cfg) if cfg.resume else None
        train_files, val = (list(cfg.data), cfg.val) if cfg.data else default_corpus()
        self.data = open_data(cfg, model_cfg, train_files, val)  # packed windows with cfg.pack
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda":
            torch.set_float32_matmul_precision("high")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        model = build_model(model_cfg)
        self.model = model.to(self.device, torch.bfloat16 if cfg.weights == "bf16" else torch.float32)
        self.forward = compiled(self.model, cfg) if cfg.compile else self.model
        self.graphs = cfg.compile and cfg.compile_mode in CUDA_GRAPH_MODES  # replayed CUDA graphs
        self.autocast = torch.autocast(self.device.type, torch.bfloat16, enabled=cfg.precision == "bf16")
        self.info = dict(getattr(model, "info", {}))
        self.params = int(self.info.get("params") or sum(p.numel() for p in model.parameters()))
        self.identity = identity(self.info, train_files, val) if cfg.checkpoint or cfg.resume else {}
        if self.resumed is not None:
            checkpoint.check_identity(path, self.resumed["identity"], self.identity)
            cut_log(self.out / LOG, self.resumed["progress"]["step"])
        self.progress = checkpoint.Progress()
        self.wall_base = 0.0  # wall seconds of the segments before a resume
        self.log = RunLog(self.out / LOG, cfg.progress, append=cfg.resume)
        config = {"model": asdict(model_cfg), "train": asdict(cfg), "params": self.params}
        step = self.resumed["progress"]["step"] if self.resumed is not None else 0
        self.log.sinks = Sinks(list(cfg.log_to), self.out, config, append=cfg.resume, step=step)

    # ---- one step, one evaluation --------------------------------------------------------------
    def loss(self, x: torch.Tensor, y: torch.Tensor, cu_seqlens=None) -> torch.Tensor:
        if self.graphs:  # a new step: the graphs may overwrite the previous step's outputs
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast:  # packed: the targets that cross a document are ignored (packing.IGNORE)
            logits = self.forward(x) if cu_seqlens is None else packed_logits(self.forward, x, cu_seqlens)
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))

    def step(self, opt, x, y, cu_seqlens=None, lr: float | None = None) -> tuple[float, float]:
        """Forward, backward, clip and (when loss and gradients are finite) update; returns both numbers."""
        loss = self.loss(x, y, cu_seqlens)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        loss_v, norm_v = torch.stack([loss.detach().float(), norm.float()]).tolist()  # one sync
        if math.isfinite(loss_v) and math.isfinite(norm_v):  # else the gradients stay for the diagnosis
            if lr is not None:
                for group in opt.param_groups:
                    group["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)
        return loss_v, norm_v

    @torch.no_grad()
    def evaluate(self, opt) -> float:
        """Held-out bits per byte on ``eval_bytes`` bytes (schedule-free: at the averaged weights)."""
        cfg = self.cfg
        self.model.eval()
        if hasattr(opt, "eval"):
            opt.eval()
        total, n = torch.zeros((), dtype=torch.float64, device=self.device), 0
        for x, y in self.data.eval_batches(cfg.eval_bytes, cfg.batch, cfg.seq, self.device):
            if self.graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with self.autocast:
                logits = self.forward(x)
            total += F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"
            )
            n += y.numel()
        self.model.train()
        if hasattr(opt, "train"):
            opt.train()
        return bits_per_byte(total.item(), n)

    def optimizer(self):
        cfg, params = self.cfg, [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "adamw":  # on CUDA one fused kernel updates every parameter
            fused = True if self.device.type == "cuda" else None
            return torch.optim.AdamW(
                params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, fused=fused
            )
        import schedulefree

        # schedule-free updates all parameters together (its foreach path, on by default)
        opt = schedulefree.AdamWScheduleFree(
            params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup
        )
        opt.train()
        return opt

    def lr(self) -> float | None:
        """AdamW: linear warm-up, then cosine over the budget fraction down to lr / 10."""
        cfg = self.cfg
        if cfg.optimizer != "adamw":
            return None
        warm = min(1.0, (self.progress.step + 1) / cfg.warmup) if cfg.warmup else 1.0
        return cfg.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(self.fraction(), 1.0))))

    def fraction(self) -> float:
        """How much of the budget is spent (>= 1: done)."""
        cfg, p = self.cfg, self.progress
        if cfg.minutes is not None:
            return p.train_s / (60.0 * cfg.minutes)
        if cfg.steps is not None:
            return p.step / cfg.steps
        return p.tokens / cfg.tokens

    # ---- before the clock ----------------------------------------------------------------------
    def warm_up(self, stop: checkpoint.StopSignals | None = None) -> None:
        """Run a few steps (compiles, autotunes, allocates), then restore the initial weights; a
        signal ends the warm-up at once (the loop then stops before its first step). A compiled
        model's first step is eager (see ``compiled``), and at least one compiled step follows
        (three with CUDA graphs: torch warms, records, then replays them)."""
        n = self.cfg.warm_steps
        if n <= 0:
            return
        if self.cfg.compile:
            n = max(n, 4 if self.graphs else 2)
        initial = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        rng = checkpoint.rng_states()
        opt = self.optimizer()
        compiled, self.forward = self.forward, self.model
        for k in range(n):
            if stop is not None and stop.received:
                break
            self.step(opt, *self.data.batch(k, self.cfg.batch, self.cfg.seq, self.device))
            self.forward = compiled
        self.forward = compiled
        self.model.zero_grad(set_to_none=True)
        self.model.load_state_dict(initial)
        checkpoint.set_rng_states(rng)
        self.sync()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    # ---- the run ------------------------------------------------------------------------------
    def run(self, on_report: Callable[[float, float], None] | None = None) -> TrainResult:
        # a SIGINT/SIGTERM from here on stops the run at the next step, with a checkpoint
        with checkpoint.StopSignals() as stop:
            try:
                self.warm_up(stop)
                opt = self.optimizer()
                if self.resumed is not None:
                    self.resume_from(self.resumed, opt)
                else:
                    self.log.event(
                        "start",
                        model=self.info.get("model"),
                        params=self.params,
                        config=asdict(self.cfg),
                        model_config=asdict(self.model_cfg),
                    )
                if self.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(self.device)
                status, message, bpb = self.loop(opt, stop, on_report)
                return self.finish(opt, status, message, bpb, on_report)
            finally:
                self.log.close()
                self.dir.close()

    def loop(self, opt, stop, on_report) -> tuple[str, str, float | None]:
        """Timed steps until the budget is spent; returns (status, message, bpb of a pruning report)."""
        cfg, p = self.cfg, self.progress
        last_save = time.monotonic()
        done = p.reports[-1][0] if p.reports else 0.0
        fractions = [f for f in cfg.report_fractions if done < f < 1.0]
        while self.fraction() < 1.0:
            if stop.received:
                return "interrupted", f"stopped by {stop.name} after step {p.step}; --resume continues", None
            t = time.perf_counter()
            batch = self.data.batch(p.step, cfg.batch, cfg.seq, self.device)  # (x, y[, cu_seqlens])
            loss, norm = self.step(opt, *batch, lr=self.lr())
            self.sync()
            p.train_s += time.perf_counter() - t
            if not (math.isfinite(loss) and math.isfinite(norm)):
                return "nonfinite", self.nonfinite_message(loss, norm, batch[0]), None
            p.step, p.tokens = p.step + 1, p.tokens + cfg.batch * cfg.seq
            p.losses = (p.losses + [loss])[-LAST:]
            p.pending.append(loss)  # in the checkpoint: a signal loses no curve point
            self.log.update(self.fraction(), p.step, loss, p.tokens / p.train_s)
            if p.step % cfg.log_every == 0:
                self.log_step(p.pending)
                p.pending = []
            if cfg.eval_every and p.step % cfg.eval_every == 0 and self.fraction() < 1.0:
                bpb = self.evaluate(opt)  # off the clock: only the steps are timed
                self.log.event("eval", step=p.step, val_bpb=bpb, bytes=self.eval_bytes())
            while fractions and self.fraction() >= fractions[0]:
                try:
                    self.report(opt, fractions.pop(0), on_report)
                except Pruned as e:
                    where, bpb = p.reports[-1]
                    return "pruned", f"pruned at {where:.0%} of the budget {e}".strip(), bpb
            every = cfg.checkpoint_every if cfg.checkpoint else None
            if every and time.monotonic() - last_save >= every:
                self.save(opt)
                last_save = time.monotonic()
        if p.pending:
            self.log_step(p.pending)
            p.pending = []
        return "ok", "", None

    def log_step(self, losses: list[float]) -> None:
        p = self.progress
        p.curve.append((round(p.train_s, 3), p.step, sum(losses) / len(losses)))
        tok_s = round(p.tokens / p.train_s, 1)
        fields = dict(step=p.step, loss=p.curve[-1][2], tokens=p.tokens, train_s=round(p.train_s, 3))
        self.log.event("step", **fields, tokens_per_s=tok_s, lr=self.lr() or self.cfg.lr)

    def report(self, opt, fraction: float, on_report) -> float:
        bpb = self.evaluate(opt)
        self.progress.reports.append((fraction, bpb))
        self.log.event("report", fraction=fraction, step=self.progress.step, val_bpb=bpb)
        if on_report is not None:
            on_report(fraction, bpb)
        return bpb

    def nonfinite_message(self, loss: float, norm: float, x: torch.Tensor) -> str:
        step = self.progress.step + 1
        message = diagnose(self.model, loss, norm, x, self.autocast, step)
        self.log.event("nonfinite", step=step, loss=loss, grad_norm=norm, message=message)
        return message

    # ---- checkpoints and the result -------------------------------------------------------------
    def save(self, opt) -> None:
        self.progress.wall_s = self.wall_base + time.perf_counter() - self.t0
        checkpoint.save(
            self.out / checkpoint.NAME,
            self.model,
            opt,
            self.progress,
            self.model_cfg,
            self.cfg,
            self.identity,
        )
        self.log.event("checkpoint", step=self.progress.step, train_s=round(self.progress.train_s, 3))

    def resume_from(self, blob: dict, opt) -> None:
        self.resumed = None  # not kept in memory for the whole run
        self.progress = checkpoint.restore(blob, self.model, opt, self.out / checkpoint.NAME)
        self.wall_base = self.progress.wall_s
        self.log.event("resume", step=self.progress.step, train_s=round(self.progress.train_s, 3))
        self.log.say(
            f"resuming {self.out} at step {self.progress.step:,} ({self.fraction():.0%} of the budget spent)"
        )

    def finish(self, opt, status: str, message: str, bpb: float | None, on_report) -> TrainResult:
        cfg, p = self.cfg, self.progress
        if status == "ok":
            bpb = self.evaluate(opt)
            self.log.event("eval", step=p.step, val_bpb=bpb, bytes=self.eval_bytes())
            if 1.0 in cfg.report_fractions:
                p.reports.append((1.0, bpb))
                try:
                    if on_report is not None:
                        on_report(1.0, bpb)
                except Pruned as e:
                    status, message = "pruned", f"pruned at the end of the budget {e}".strip()
        if cfg.checkpoint and status in ("ok", "interrupted"):
            self.save(opt)
        result = self.result(status, message, bpb)
        tmp = self.out / "result.json.tmp"
        tmp.write_text(trainlog.dumps(asdict(result), indent=1) + "\n")
        tmp.replace(self.out / "result.json")
        if status == "ok":
            extra = {"params": self.params, "steps": p.step, "val_bpb": bpb, "info": self.info}
            export(self.model, opt, self.out, self.model_cfg, cfg, extra)
        run_loss_plot(self.out, p.curve, self.model_cfg.model)
        self.log.event("end", **{k: v for k, v in asdict(result).items() if k not in LONG_FIELDS})
        return result

    def eval_bytes(self) -> int:
        return self.data.eval_windows(self.cfg.eval_bytes, self.cfg.seq) * self.cfg.seq

    def result(self, status: str, message: str, bpb: float | None) -> TrainResult:
        cfg, p = self.cfg, self.progress
        cuda = self.device.type == "cuda"
        peak = torch.cuda.max_memory_allocated(self.device) if cuda else None
        reserved = torch.cuda.max_memory_reserved(self.device) if cuda else None
        split = asdict(self.data.split)
        return TrainResult(
            status=status,
            steps=p.step,
            tokens=p.tokens,
            tokens_per_s=p.tokens / p.train_s if p.train_s else 0.0,
            last100_loss=sum(p.losses) / len(p.losses) if p.losses else None,
            val_bpb=bpb,
            peak_mem_bytes=peak,
            peak_reserved_bytes=reserved,
            params=self.params,
            state_per_layer=self.info.get("state_per_layer"),
            wall_s=self.wall_base + time.perf_counter() - self.t0,
            train_s=p.train_s,
            curve=p.curve,
            info=self.info,
            environment=environment(cfg.device),
            message=message,
            reports=p.reports,
            config=asdict(cfg),
            model_config=asdict(self.model_cfg),
            data={**split, "default_corpus": not cfg.data, "eval_bytes": self.eval_bytes()},
        )
