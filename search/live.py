"""The live view of a running search: a rich table on a terminal, one line per ended trial otherwise."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.table import Table

from . import results
from . import study as st

REFRESH_S = 2.0
SHOWN = 20  # table rows: running trials, then the best, then the latest


class Progress:
    def __init__(self, study, settings: st.Settings, quiet: bool = False):
        self.study, self.settings, self.quiet = study, settings, quiet
        self.console = Console(stderr=True, soft_wrap=True)
        self.live: Live | None = None
        self.last = 0.0
        self.printed: set[int] = set()
        self.t0 = time.monotonic()
        self.phase = ""  # what runs after the trials (the top-k re-runs)

    def header(self, space: list[str], workers: int, region: list[str] = ()) -> None:
        s = self.settings
        multi = f" + {', '.join(s.multi)}" if s.multi else ""
        self.console.print(
            f"[bold]archdsl search[/] {self.study.study_name}: {', '.join(s.models)} at "
            f"{s.budget:,} parameters, {s.minutes:g} min per trial, {s.trials} trials, "
            f"{workers} worker(s), objective {s.objective}{multi}, sampler {s.sampler}"
        )
        for line in space:
            self.console.print(f"  space  {line}")
        for line in region:
            self.console.print(f"  budget {line} (±{s.tolerance:.1%})")

    def __enter__(self) -> Progress:
        if self.console.is_terminal and not self.quiet:
            self.live = Live(self.table(), console=self.console, auto_refresh=False, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.tick(force=True)
        if self.live is not None:
            self.live.__exit__(*exc)

    def tick(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last < REFRESH_S:
            return
        self.last = time.monotonic()
        if self.live is not None:
            self.live.update(self.table(), refresh=True)
        elif not self.quiet:
            self.print_ended()

    def print_ended(self) -> None:
        for r in results.rows(self.study.get_trials(deepcopy=False), self.settings):
            if r["number"] in self.printed or r["state"] in ("running", "waiting"):
                continue
            self.printed.add(r["number"])
            value = f"{r['value']:.4f}" if r["value"] is not None else "-"
            self.console.print(
                f"trial {r['number']:>3} {r['state']:<8} {r['model']} {r['searched']}  "
                f"params {r['params']}  value {value}  {r['note']}",
                highlight=False,
            )

    def table(self) -> Table:
        s, c = self.settings, st.counts(self.study)
        elapsed = time.monotonic() - self.t0
        title = (
            f"{self.study.study_name}: {c.finished}/{s.trials} ended ({c.complete} complete, "
            f"{c.pruned} pruned, {c.failed} failed), {c.running} running, {elapsed / 60:.1f} min"
        )
        if self.phase:
            title += f"; {self.phase}"
        table = Table(title=title, title_justify="left")
        for col in ("#", "state", "model", "searched", "params", s.objective, "tok/s", "s", "note"):
            table.add_column(col, no_wrap=col != "note", overflow="fold")
        for r in self.rows():
            value = f"{r['value']:.4f}" if r["value"] is not None else ""
            tps = f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else ""
            secs = f"{r['seconds']:.0f}" if r["seconds"] else ""
            table.add_row(
                str(r["number"]),
                r["state"],
                r["model"],
                r["searched"],
                r["params"],
                value,
                tps,
                secs,
                r["note"][:80],
            )
        return table

    def rows(self) -> list[dict]:
        rows = results.rows(self.study.get_trials(deepcopy=False), self.settings)
        running = [r for r in rows if r["state"] == "running"]
        best = sorted((r for r in rows if r["value"] is not None), key=lambda r: r["value"])
        latest = sorted((r for r in rows if r["state"] in ("pruned", "failed")), key=lambda r: -r["number"])
        out, seen = [], set()
        for r in running + best + latest:
            if r["number"] not in seen and len(out) < SHOWN:
                out.append(r)
                seen.add(r["number"])
        return out

    def summary(self, md, html) -> None:
        c = st.counts(self.study)
        self.console.print(
            f"{c.complete} complete, {c.pruned} pruned, {c.failed} failed; report: {md} and {html}"
        )
