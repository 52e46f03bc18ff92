"""Figures (agents.study.plots) and numbers (agents.study.results) from experiment directories whose run directories are
written with the trainer's own writers (tests/fake_runs.py)."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from fake_runs import evaluation, write_run

from agents.errors import UrgateError
from agents.run import rundir
from agents.stats import bootstrap_ci, iqm
from agents.study.experiments import RUNS_DIR, Experiment, prepare
from agents.study.plots import plot_experiment
from agents.study.results import RunData, aggregate_curves, frontier_table, load_runs, results_markdown, uses_success


def make_experiment(root, *, cores=("lstm", "ur"), seeds=(0, 1, 2, 3), lengths=(10, 100), **run_kwargs):
    exp = Experiment(env_ids=["urgate/TMaze-v0"], cores=list(cores), seeds=list(seeds), grid={"length": list(lengths)})
    prepare(exp, root)
    for spec in exp.runs():
        write_run(root / RUNS_DIR / spec.name, core=spec.core, seed=spec.seed, env_kwargs=spec.params, **run_kwargs)
    return exp


def set_final_success(root, exp, core, length, values):
    runs = [s for s in exp.runs() if s.core == core and s.params["length"] == length]
    for spec, v in zip(runs, values, strict=True):
        path = root / RUNS_DIR / spec.name / "summary.json"
        summary = json.loads(path.read_text())
        summary["final_eval"]["success_rate"] = v
        path.write_text(json.dumps(summary))


def test_plot_experiment_writes_labelled_figures_and_table(tmp_path):
    make_experiment(tmp_path)
    paths = plot_experiment(tmp_path)
    names = sorted(p.name for p in paths)
    assert names == sorted(
        f"{kind}_TMaze-v0.{ext}" for kind in ("learning_curves", "frontier", "gates") for ext in ("png", "svg")
    ) + ["results.md"]
    for p in paths:
        assert p.parent == tmp_path / "plots" and p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = (tmp_path / "plots" / "learning_curves_TMaze-v0.svg").read_text()
    for text in ("environment steps", "success rate", "memoryless ceiling", "length = 100", "lstm (n=4)", "ur (n=4)"):
        assert text in curves
    frontier = (tmp_path / "plots" / "frontier_TMaze-v0.svg").read_text()
    assert "memory length" in frontier and "final success rate" in frontier and "memoryless ceiling" in frontier
    gates = (tmp_path / "plots" / "gates_TMaze-v0.svg").read_text()
    assert "effective forget gate" in gates and "timescale" in gates and "length = 100" in gates


def test_results_table_reports_iqm_of_final_success(tmp_path):
    exp = make_experiment(tmp_path)
    set_final_success(tmp_path, exp, "ur", 100, [0.2, 1.0, 0.6, 0.4])  # IQM: mean of 0.4 and 0.6
    _, runs = load_runs(tmp_path)
    table = results_markdown(exp, runs)
    row = next(line for line in table.splitlines() if line.startswith("| 100 | ur |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "4/4"
    assert cells[4].startswith("0.50 [")
    lo, hi = (float(x) for x in cells[4][6:-1].split(", "))
    assert 0.2 <= lo <= 0.5 <= hi <= 1.0
    assert "Memoryless ceiling (success rate): 0.5" in table


def test_unfinished_runs_are_left_out_of_final_numbers_and_listed(tmp_path):
    exp = make_experiment(tmp_path, cores=("ur",), lengths=(10,))
    name = exp.runs()[0].name
    write_run(tmp_path / RUNS_DIR / name, core="ur", seed=0, env_kwargs={"length": 10}, status="interrupted")
    _, runs = load_runs(tmp_path)
    table = results_markdown(exp, runs)
    assert "| 10 | ur | 3/4 |" in table
    assert f"- {name}" in table.split("Not finished")[1]
    plot_experiment(tmp_path)  # partial curves still plot


def test_frontier_points_are_bootstrap_iqm_of_final_scores(tmp_path):
    exp = make_experiment(tmp_path)
    set_final_success(tmp_path, exp, "lstm", 100, [0.5, 0.55, 0.45, 0.9])
    _, runs = load_runs(tmp_path)
    series = frontier_table(exp, runs, "urgate/TMaze-v0", "length", "success_rate")
    assert list(series) == ["lstm", "ur"]
    assert [x for x, _ in series["lstm"]] == [10, 100]
    est = series["lstm"][1][1]
    assert est.value == pytest.approx(iqm(np.array([0.5, 0.55, 0.45, 0.9])))
    assert est == bootstrap_ci(np.array([0.5, 0.55, 0.45, 0.9]))


def test_curves_of_seeds_evaluated_at_different_steps_are_aligned():
    def run(steps, values):
        evals = {
            "timesteps": np.array(steps, float),
            "success_rate": np.array(values, float),
            "mean_return": np.zeros(len(steps)),
        }
        return RunData(spec=None, summary=None, evals=evals, gates=None)

    runs = [run([100, 200, 300], [0.0, 0.5, 1.0]), run([150, 250], [0.25, 0.75]), run([100, 300], [0.0, 1.0])]
    steps, value, lo, hi = aggregate_curves(runs, "success_rate")
    # Common span: from the latest first evaluation (150) to the earliest last one (250).
    assert steps.min() == 150 and steps.max() == 250
    # All three curves are the same line (step / 200 - 0.5), so the IQM and the band follow it exactly.
    np.testing.assert_allclose(value, steps / 200 - 0.5)
    np.testing.assert_allclose(lo, value)
    np.testing.assert_allclose(hi, value)


def test_return_is_plotted_where_the_task_defines_no_success(tmp_path):
    make_experiment(tmp_path, cores=("ur",), seeds=(0, 1), with_success=False, ceiling=None)
    plot_experiment(tmp_path)
    assert "mean episode return" in (tmp_path / "plots" / "learning_curves_TMaze-v0.svg").read_text()
    assert "final mean return" in (tmp_path / "plots" / "frontier_TMaze-v0.svg").read_text()
    assert "memoryless ceiling" not in (tmp_path / "plots" / "learning_curves_TMaze-v0.svg").read_text()


def test_evaluations_csv_blank_success_is_nan(tmp_path):
    p = tmp_path / rundir.EVALUATIONS
    p.write_text("timesteps,mean_return,std_return,success_rate,episodes\n200,1.5,0.1,,10\n100,0.5,0.2,,10\n")
    ev = rundir.read_evaluations(tmp_path)
    np.testing.assert_array_equal(ev["timesteps"], [100, 200])  # sorted by steps
    assert np.isnan(ev["success_rate"]).all()
    assert rundir.read_evaluations(tmp_path / "missing") is None


def test_plot_without_results_or_experiment_is_a_user_error(tmp_path):
    with pytest.raises(UrgateError, match="not an experiment directory"):
        plot_experiment(tmp_path)
    prepare(Experiment(env_ids=["urgate/TMaze-v0"], cores=["ur"], seeds=[0]), tmp_path)
    with pytest.raises(UrgateError, match="no run .* has results yet"):
        plot_experiment(tmp_path)


def test_no_frontier_for_a_single_memory_length(tmp_path):
    make_experiment(tmp_path, cores=("ur",), seeds=(0, 1), lengths=(40,))
    names = {p.name for p in plot_experiment(tmp_path)}
    assert "learning_curves_TMaze-v0.png" in names and not any(n.startswith("frontier") for n in names)


# Every state the trainer can leave a run in: (status, periodic evaluations written). None: still running, no
# summary yet; 0 evaluations: stopped (or still running) before the first one.
RUN_STATES = [("finished", 10), ("interrupted", 4), ("diverged", 4), ("interrupted", 0), (None, 3), (None, 0)]


@pytest.mark.parametrize("with_success", [True, False], ids=["success", "return-only"])
def test_every_run_state_plots_and_counts_only_finished_runs(tmp_path, with_success):
    # A task without success rate (popgym, memory_maze) with interrupted or diverged runs, whose summaries say
    # "final_eval": null, crashed `plot` with AttributeError.
    ceiling = 0.5 if with_success else None
    exp = Experiment(env_ids=["urgate/TMaze-v0"], cores=["ur"], seeds=list(range(len(RUN_STATES))))
    prepare(exp, tmp_path)
    for spec, (status, n_evals) in zip(exp.runs(), RUN_STATES, strict=True):
        write_run(
            tmp_path / RUNS_DIR / spec.name,
            seed=spec.seed,
            status=status,
            n_evals=n_evals,
            with_success=with_success,
            ceiling=ceiling,
            checkpoint=n_evals > 0,
        )
    paths = {p.name for p in plot_experiment(tmp_path)}
    assert {"learning_curves_TMaze-v0.png", "gates_TMaze-v0.png", "results.md"} <= paths
    _, runs = load_runs(tmp_path)
    assert uses_success(runs) is with_success
    assert [r.finished for r in runs] == [s == "finished" for s, _ in RUN_STATES]
    table = (tmp_path / "plots" / "results.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| ur |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    finished = json.loads((tmp_path / RUNS_DIR / exp.runs()[0].name / rundir.SUMMARY).read_text())
    assert cells[1] == f"1/{len(RUN_STATES)}"
    if with_success:  # a solved column (seeds that reached 0.95, and when) comes before the success rate
        assert re.fullmatch(rf"\d/{len(RUN_STATES)} \(.*\)", cells[2]), cells[2]
        cells = cells[:2] + cells[3:]
        assert cells[2].startswith(f"{finished['final_eval']['success_rate']:.2f} [")
    else:
        assert cells[2] == "-"
    assert cells[3].startswith(f"{finished['final_eval']['mean_return']:.2f} [")
    not_finished = table.split("Not finished")[1]
    assert all(f"- {s.name}" in not_finished for s in exp.runs()[1:])
    curves = (tmp_path / "plots" / "learning_curves_TMaze-v0.svg").read_text()
    assert ("success rate" in curves) is with_success and ("mean episode return" in curves) is not with_success


def test_results_do_not_import_matplotlib_and_plots_do_not_import_the_process_pool():
    code = (
        "import sys, agents.study.results; assert 'matplotlib' not in sys.modules, 'results imports matplotlib'; "
        "import agents.study.plots; bad = [m for m in ('agents.study.experiments.backends', 'ray', 'concurrent.futures.process') "
        "if m in sys.modules]; assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_results_table_counts_seeds_solved_and_the_step_each_first_reached_it(tmp_path):
    """The solved column: per seed, the first evaluation at success >= 0.95 (not the final one)."""
    exp = make_experiment(tmp_path, cores=("ur",), seeds=(0, 1, 2), lengths=(100,))
    curves = {0: [0.5, 0.96, 0.9, 1.0], 1: [0.5, 0.6, 0.8, 0.95], 2: [0.5, 0.5, 0.5, 0.5]}
    for spec in exp.runs():
        evals = rundir.evaluations_path(tmp_path / RUNS_DIR / spec.name)
        evals.unlink()
        for i, rate in enumerate(curves[spec.seed]):
            rundir.append_evaluation(tmp_path / RUNS_DIR / spec.name, (i + 1) * 1000, evaluation(rate, True))
    _, runs = load_runs(tmp_path)
    row = next(line for line in results_markdown(exp, runs).splitlines() if line.startswith("| 100 | ur |"))
    assert [c.strip() for c in row.strip("|").split("|")][3] == "2/3 (2k, 4k, -)"
