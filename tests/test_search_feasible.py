"""The feasible region of a search space: decided up front, equal to the budget solver's verdict, the
only configurations the sampler hands out, and a space without one refused before any trial."""

from __future__ import annotations

import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from archdsl.search.feasible import MIN_DIM, FeasibleSampler, feasible  # noqa: E402
from archdsl.search.space import Space, parse_range  # noqa: E402

from archdsl.errors import ArchdslError  # noqa: E402
from archdsl.lm.budget import solve  # noqa: E402
from archdsl.lm.config import ModelConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def solver_says(point: dict, budget: int, tolerance: float = 0.01) -> bool:
    sets = {k: v for k, v in point.items() if k != "depth"}
    cfg = ModelConfig(model="e88", sets=sets, depth=int(point.get("depth", 20)))
    try:
        return solve(cfg, budget, tolerance=tolerance).dim >= MIN_DIM
    except ArchdslError:
        return False


@pytest.mark.parametrize("budget", [100_000, 200_000])
def test_region_agrees_with_the_budget_solver(budget):
    """The region (a polynomial count over the whole grid) against the solver, point by point."""
    space = Space(["e88"], {"heads": parse_range("heads", "4:40"), "depth": parse_range("depth", "2,20")})
    region = feasible(space, budget, 0.01)
    (r,) = region.regions
    assert not r.unchecked and 0 < len(r.points) < r.total
    inside = {tuple(p) for p in r.points}
    rng = random.Random(1)
    grid = [
        {"heads": h, "n": n, "nonlin": "tanh", "gate": g, "depth": d}
        for h in range(4, 41)
        for n in (16, 24, 32, 48, 64)
        for g in ("none", "silu", "sigmoid")
        for d in (2, 20)
    ]
    for point in rng.sample(grid, 40) + [dict(zip(r.names, p)) for p in rng.sample(r.points, 10)]:
        key = tuple(point[n] for n in r.names)
        assert (key in inside) == solver_says(point, budget), point


def test_the_acceptance_space_has_points_and_says_so():
    """At 100K and the default depth of 20 only widths under 16 would meet the budget (the trial
    solved to a width of 1 with 38 heads ran out its timeout); at depths 2..20 there are points."""
    assert feasible(Space(["e88"]), 100_000, 0.01).count() == 0
    region = feasible(Space(["e88"], {"depth": parse_range("depth", "2:20")}), 100_000, 0.01)
    (line,) = region.describe()
    assert region.count() > 0 and "of 71,250 configurations can meet the budget" in line
    assert "heads 4.." in line and "..128" not in line  # the spec's 128 heads cannot meet it


def test_an_empty_region_says_how_far_off_it_is():
    region = feasible(Space(["e88"]), 1_000, 0.01)
    assert region.count() == 0
    text = region.empty_message()
    assert "smallest count is 87,792" in text and "--tolerance" in text


def test_the_sampler_hands_out_only_feasible_configurations():
    """TPE's random start-up trials and its joint proposals afterwards alike."""
    space = Space(["e88"], {"depth": parse_range("depth", "2:20")})
    region = feasible(space, 100_000, 0.01)
    base = optuna.samplers.TPESampler(seed=3, multivariate=True, group=True, n_startup_trials=5)
    study = optuna.create_study(sampler=FeasibleSampler(base, region, seed=3))
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        cand = space.sample(trial)
        point = {**cand.sets, "depth": cand.depth}
        assert solver_says(point, 100_000), point
        return cand.sets["heads"] * 0.01 + (cand.sets["n"] == 32)

    study.optimize(objective, n_trials=25)
    assert len({t.params["heads"] for t in study.trials}) > 3  # it explores, within the region


def archdsl(*argv, cwd):
    return subprocess.run(
        [sys.executable, "-m", "archdsl.cli", *argv], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_an_infeasible_space_is_refused_before_any_trial(tmp_path):
    r = archdsl("search", "e88", "--budget", "1K", "--minutes", "0.1", "--trials", "4", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "no configuration of the search space can meet the budget of 1,000" in r.stderr
    assert re.search(r"smallest count is [0-9,]+ \(at the narrowest width, 16", r.stderr)
    assert not (tmp_path / "runs").exists()  # no study, no folder


def test_tolerance_flag(tmp_path):
    r = archdsl("search", "e88", "--budget", "100K", "--tolerance", "150", cwd=tmp_path)
    assert r.returncode == 2 and "--tolerance: expected a fraction between 0 and 1" in r.stderr
    # the nearest heads 4, n 16 at depth 20 gets to 100K is -1.25% (width 18)
    space = Space(["e88"], {"heads": parse_range("heads", "4:5")}, {"n": 16, "gate": "none"})
    assert feasible(space, 100_000, 0.01).count() == 0
    assert feasible(space, 100_000, 0.013).count() > 0


# ---- the report draws every plot -----------------------------------------------------------------
def report_of(tmp_path, curves):
    import argparse

    from archdsl.search import report
    from archdsl.search import study as st

    settings = st.Settings(models=["e88"], budget=100_000, minutes=0.1, trials=4)
    study = st.create("s", st.open_storage("s", None, tmp_path), settings)
    dist = {
        "heads": optuna.distributions.IntDistribution(4, 75),
        "n": optuna.distributions.CategoricalDistribution((16, 24, 32)),
    }
    long = "archdsl train e88 " + " ".join(f"--set k{i}=v{i}" for i in range(40))
    for i, (heads, n, value) in enumerate(((4, 16, 2.1), (9, 24, 1.9), (20, 32, 2.3), (13, 16, 2.0))):
        ua = {
            "curve": curves(i),
            "params": 100_100,
            "command": long,
            "model_config": {"model": "e88", "dim": 24, "depth": 20},
        }
        study.add_trial(
            optuna.trial.create_trial(
                value=value, params={"heads": heads, "n": n}, distributions=dist, user_attrs=ua
            )
        )
    args = argparse.Namespace(study="s", storage=None, runs=str(tmp_path), dest=None)
    assert report.run(args) == 0
    return (tmp_path / "s" / "report.html").read_text(), (tmp_path / "s" / "report.md").read_text()


def images(page: str) -> dict:
    """alt text -> the decoded RGB(A) pixels of every image the page embeds."""
    import base64
    import io
    import re

    import matplotlib.image

    out = {}
    for alt, data in re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page):
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG") and len(png) > 1000, alt
        out[alt] = matplotlib.image.imread(io.BytesIO(png), format="png")
    assert page.count("<img") == len(out)  # every image is an embedded PNG that decodes
    return out


def colored(pixels) -> int:
    """Pixels of a data colour (not white, grey or black): what a drawn series leaves."""
    rgb = pixels[..., :3]
    return int(((rgb.max(-1) - rgb.min(-1)) > 0.25).sum())


def test_report_draws_every_plot_even_single_point_curves(tmp_path):
    page, md = report_of(tmp_path, lambda i: [[3.0 + i, 10, 2.5 - 0.1 * i]])  # one point a curve
    pics = images(page)
    expected = {"trial values", "loss curves", "slice plot", "parallel coordinates", "parameter importances"}
    assert expected <= set(pics)
    for alt, pixels in pics.items():
        assert colored(pixels) > 30, f"{alt}: nothing drawn"
    assert "Caution: from 4 complete trials only" in md
    # the reproduce command is wrapped: no line of the Markdown's code longer than the page
    code = md[md.index("### Commands") :].split("```")[1]
    assert max(map(len, code.splitlines())) <= 100 and "\\\n    --set" in code
    assert "white-space:pre-wrap" in page


def test_metric_names_for_the_dashboard(tmp_path):
    from archdsl.search import study as st

    settings = st.Settings(models=["e88"], budget=100_000, minutes=0.1, trials=4, multi=["tokens_per_s"])
    study = st.create("m", st.open_storage("m", None, tmp_path), settings)
    assert study.metric_names == ["held-out bpb", "tokens_per_s"]


def test_report_renders_in_a_headless_browser(tmp_path):
    import shutil

    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no headless Chromium here; the embedded images are checked by the test above")
    page, _ = report_of(tmp_path, lambda i: [[1.0, 1, 2.5], [2.0, 2, 2.4]])
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", f"--screenshot={shot}", "--window-size=1200,4000"]
    subprocess.run([*cmd, (tmp_path / "s" / "report.html").as_uri()], capture_output=True, timeout=120)
    import matplotlib.image

    assert colored(matplotlib.image.imread(shot)) > 1000


def test_a_curve_of_one_point_is_drawn(monkeypatch):
    from archdsl.search import plots

    class Trial:
        number, values, user_attrs = 0, [2.0], {"curve": [[3.0, 10, 2.5]]}

    drawn = {}
    monkeypatch.setattr(plots, "_png", lambda fig: drawn.setdefault("fig", fig) and b"png")
    assert plots.curves([Trial()], "bpb") == b"png"
    (line,) = drawn["fig"].axes[0].get_lines()
    assert len(line.get_xdata()) == 1 and line.get_marker() not in (None, "None", "", " ")
