"""``archdsl report STUDY``: a study's report as Markdown and a self-contained HTML page.

The report is built from the storage alone (settings, trials, curves and seed re-runs all live in the
study), so it can be regenerated at any time, also while the search runs, and from any host that
reaches a database storage. The HTML page inlines its figures (base64 PNG); the Markdown file refers to
PNG files written beside it.
"""

from __future__ import annotations

import base64
import datetime
import html
import shlex
import warnings
from pathlib import Path

from archdsl import args as A
from archdsl.errors import ArchdslError

from . import plots, results
from . import study as st
from .space import Space, parse_range

CURVES = 5  # best trials whose loss curves are drawn
FEW_TRIALS = 20  # below this many complete trials, importances carry a caution
CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;"
    "padding:3px 7px;text-align:left;vertical-align:top}th{background:#f3f3f3}"
    "pre{background:#f6f6f6;padding:8px;font-size:12px;white-space:pre-wrap;overflow-wrap:anywhere}"
    "img{max-width:100%}"
)


class Doc:
    """Markdown and HTML written side by side, one block at a time."""

    def __init__(self, out: Path):
        self.out, self.md, self.html, self.files = out, [], [], {}

    def h(self, level: int, text: str) -> None:
        self.md.append("#" * level + " " + text + "\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def p(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{html.escape(text)}</p>")

    def code(self, text: str) -> None:
        self.md.append(f"```sh\n{text}\n```\n")
        self.html.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, headers: list[str], rows: list[list]) -> None:
        cells = [[str(c).replace("|", "\\|").replace("\n", " ") for c in r] for r in rows]
        self.md.append(
            "| "
            + " | ".join(headers)
            + " |\n|"
            + "---|" * len(headers)
            + "\n"
            + "".join("| " + " | ".join(r) + " |\n" for r in cells)
        )
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        self.html.append(f"<table><tr>{head}</tr>{body}</table>")

    def image(self, name: str, png: bytes | None, alt: str) -> None:
        if png is None:
            return
        self.files[name] = png
        self.md.append(f"![{alt}]({name})\n")
        data = base64.b64encode(png).decode()
        self.html.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')

    def write(self, title: str) -> tuple[Path, Path]:
        self.out.mkdir(parents=True, exist_ok=True)
        for name, png in self.files.items():
            (self.out / name).write_bytes(png)
        md, page = self.out / "report.md", self.out / "report.html"
        md.write_text("\n".join(self.md))
        page.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(self.html)}</body></html>\n"
        )
        return md, page


def wrap(command: str, width: int = 88) -> str:
    """A long shell command over several lines (``\\`` continuations between its words): a reproduce
    command runs to 300 characters, off the page in Markdown viewers that do not wrap code."""
    lines, line = [], ""
    for word in shlex.split(command):
        word = shlex.quote(word)
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = "    " + word
        else:
            line = f"{line} {word}" if line else word
    return " \\\n".join([*lines, line])


# ---- sections --------------------------------------------------------------------------------------
def overview(doc: Doc, study, s: st.Settings) -> None:
    c = st.counts(study)
    doc.h(1, f"archdsl search: {study.study_name}")
    multi = f"; second objective(s): {', '.join(s.multi)} (Pareto front)" if s.multi else ""
    fractions = ", ".join(f"{f:.0%}" for f in s.report_fractions)
    pruning = (
        f"on (median rule on held-out bpb at {fractions} of the budget)"
        if s.prune and not s.multi and s.report_fractions
        else "off"
    )
    doc.p(
        f"Models {', '.join(s.models)} at a budget of {s.budget:,} parameters (every trial's width solved "
        f"to within {s.tolerance:.1%}), {s.minutes:g} training minutes per trial, objective {s.objective} "
        f"(lower is better){multi}; sampler {s.sampler}; pruning {pruning}."
    )
    doc.p(
        f"Trials: {c.finished} of {s.trials} ended: {c.complete} complete, {c.pruned} pruned, {c.failed} "
        f"failed; {c.running} running, {c.waiting} waiting. "
        f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M}."
    )
    space = Space(s.models, {k: parse_range(k, v) for k, v in s.overrides.items()}, s.fixed).describe()
    doc.table(["model", "search space"], [line.split(": ", 1) for line in space])


def best_section(doc: Doc, study, s: st.Settings, top: list) -> None:
    multi = len(study.directions) > 1
    doc.h(2, "Pareto front" if multi else "Best configurations")
    if not top:
        doc.p("No trial has completed yet.")
        return
    stats = [(t, results.seed_stats(study, t)) for t in top]
    headers = ["rank", "trial", "model", "searched", "dim", "depth", "params (vs budget)", s.objective]
    headers += [*s.multi] if multi else ["over seeds (mean ± std)"]
    headers += [] if "tokens_per_s" in s.multi else ["tokens/s"]
    rows = []
    for i, (t, ss) in enumerate(stats, 1):
        mc = t.user_attrs.get("model_config") or {}
        row = [
            i,
            t.number,
            results.model_of(t),
            results.searched(t),
            mc.get("dim"),
            mc.get("depth"),
            results.count_text(t, s.budget),
            f"{t.values[0]:.4f}",
        ]
        row += [results.fmt(v) for v in t.values[1:]] if multi else [ss.text()]
        row += [] if "tokens_per_s" in s.multi else [f"{t.user_attrs.get('tokens_per_s', 0):,.0f}"]
        rows.append(row)
    doc.table(headers, rows)
    if not multi:
        doc.p(results.verdict(stats))
        failed = [f"trial {t.number} {f}" for t, ss in stats for f in ss.failed]
        if failed:
            doc.p("Re-runs that failed: " + "; ".join(failed))
    doc.h(3, "Commands that reproduce them")
    doc.code(
        "\n".join(
            f"# trial {t.number}\n{wrap(t.user_attrs.get('command', '(no command recorded)'))}" for t in top
        )
    )


def figures(doc: Doc, study, s: st.Settings, top: list) -> None:
    trials = study.get_trials(deepcopy=False)
    if len(study.directions) > 1:
        front = study.best_trials
        doc.h(2, "Pareto plots")
        for k, second in enumerate(s.multi, 1):
            png = plots.pareto(trials, front, s.objective, second, k)
            doc.image(f"pareto-{second}.png", png, f"{s.objective} against {second}")
    else:
        doc.h(2, "Progress")
        doc.image("history.png", plots.history(results.completed(study), s.objective), "trial values")
    doc.h(2, "Loss against time")
    png = plots.curves(top[:CURVES], s.objective)
    doc.image("curves.png", png, "loss curves") if png else doc.p("No loss curves recorded yet.")
    doc.h(2, "Parameter importances")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        imp, why = results.importances(study)
    if imp:
        n = len(results.completed(study))
        if n < FEW_TRIALS:
            doc.p(
                f"Caution: from {n} complete trials only. Importances rank how much each parameter's values "
                f"explain the spread of the objective among the trials seen; with fewer than {FEW_TRIALS} "
                f"they move a lot from one trial to the next and are not evidence that a parameter matters."
            )
        doc.table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in imp.items()])
        doc.image("importances.png", plots.importances(imp), "parameter importances")
    else:
        doc.p(f"Not available: {why}.")
    params = searched_params(study)
    if results.completed(study) and params:
        doc.h(2, "The objective against each parameter")
        png = plots.slices(study, s.objective, params)
        doc.image("slice.png", png, "slice plot") if png else doc.p("Nothing to draw yet.")
        png = plots.parallel(study, s.objective, params)
        if png:
            doc.h(2, "Parallel coordinates")
            doc.image("parallel.png", png, "parallel coordinates")


def searched_params(study) -> list[str]:
    """Parameters that took more than one value among the complete trials."""
    done = results.completed(study)
    names = sorted({k for t in done for k in t.params})
    return [k for k in names if len({str(t.params.get(k)) for t in done}) > 1]


def trials_section(doc: Doc, study, s: st.Settings) -> None:
    rows = results.rows(study.get_trials(deepcopy=False), s)
    failed = [r for r in rows if r["state"] == "failed"]
    if failed:
        doc.h(2, "Failed trials")
        doc.table(
            ["trial", "model", "searched", "reason"],
            [[r["number"], r["model"], r["searched"], r["note"]] for r in failed],
        )
    doc.h(2, "All trials")
    doc.table(
        [
            "trial",
            "state",
            "model",
            "searched",
            "dim",
            "params (vs budget)",
            s.objective,
            "tokens/s",
            "seconds",
            "note",
        ],
        [
            [
                r["number"],
                r["state"],
                r["model"],
                r["searched"],
                r["dim"] or "",
                r["params"],
                f"{r['value']:.4f}" if r["value"] is not None else "",
                f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "",
                f"{r['seconds']:.0f}" if r["seconds"] else "",
                r["note"],
            ]
            for r in rows
        ],
    )


def inspect_section(doc: Doc, study, storage: str) -> None:
    doc.h(2, "Inspect")
    doc.p(
        "Regenerate this report, or browse the study interactively with optuna-dashboard "
        "(pip install optuna-dashboard) on the same storage:"
    )
    if st.is_url(storage):
        shown = st.hide_password(storage)
        doc.code(f"archdsl report {study.study_name} --storage {shown}\noptuna-dashboard {shown}")
    else:
        doc.code(f"archdsl report {storage}\noptuna-dashboard {storage}")


def write_report(study, out: Path, storage: str | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` (+ PNGs) and ``report.html`` under ``out``."""
    s = st.settings_of(study)
    top = results.top_trials(study, s.top_k)
    doc = Doc(out)
    overview(doc, study, s)
    best_section(doc, study, s, top)
    figures(doc, study, s, top)
    trials_section(doc, study, s)
    inspect_section(doc, study, storage or str(out / st.JOURNAL))
    return doc.write(f"archdsl search: {study.study_name}")


# ---- the command -----------------------------------------------------------------------------------
def add_arguments(p) -> None:
    p.add_argument("study", help="study name (runs/<study>/study.journal), a run directory or a journal file")
    p.add_argument("--storage", type=A.storage, help="database URL of the study (postgresql://…)")
    p.add_argument("--runs", type=A.writable_dir, help="root of the study folders (default runs/)")
    p.add_argument("--dest", type=A.writable_dir, help="where to write the report (default runs/<study>/)")


def run(args) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = st.runs_dir(args.runs)
    name, storage, dest = args.study, args.storage, runs / args.study
    if not storage:  # a study name under runs/, a run directory, or a journal file
        given = Path(args.study)
        journal = (
            given / st.JOURNAL
            if given.is_dir()
            else given
            if given.is_file()
            else st.journal_path(runs, name)
        )
        if not journal.is_file():
            raise ArchdslError(
                f"no study '{name}': {journal} does not exist",
                hint="pass --storage URL for a study in a database, or --runs for another root",
            )
        storage, name, dest = str(journal), journal.resolve().parent.name, journal.parent
    store = st.open_storage(name, storage, runs)
    if not st.study_exists(name, store):
        names = [x.study_name for x in optuna.get_all_study_summaries(store, include_best_trial=False)]
        raise ArchdslError(
            f"no study '{name}' in {storage or st.journal_path(runs, name)}",
            hint="studies there: " + (", ".join(names) or "none"),
        )
    study = optuna.load_study(study_name=name, storage=store)
    md, page = write_report(study, Path(args.dest) if args.dest else dest, storage)
    print(f"{md}\n{page}")
    return 0
