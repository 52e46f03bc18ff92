"""The numbers of an experiment, without matplotlib: every run's files loaded, learning curves aggregated over seeds,
the memory frontier, and ``results.md`` (final numbers with confidence intervals, ``agents.stats``).

Runs that have not finished are left out of the final numbers (their partial learning curves still count) and
listed in the table's notes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import envs

from ..run import rundir
from ..stats import Estimate, bootstrap_ci, curve_ci
from .experiments import Experiment, RunSpec, load_experiment
from .experiments.store import run_dir

CURVE_POINTS = 60
RESULTS_FILE = "results.md"


@dataclass
class RunData:
    """What one run left on disk."""

    spec: RunSpec
    summary: dict[str, Any] | None
    evals: dict[str, np.ndarray] | None
    gates: dict[str, np.ndarray] | None

    @property
    def finished(self) -> bool:
        return self.summary is not None and self.summary.get("status") == "finished"


def load_runs(exp_dir: str | Path) -> tuple[Experiment, list[RunData]]:
    """The experiment and, for every cell of its grid, whatever its run directory holds."""
    exp_dir = Path(exp_dir)
    exp = load_experiment(exp_dir)
    data = []
    for spec in exp.runs():
        d = run_dir(exp_dir, spec.name)
        data.append(RunData(spec, rundir.read_summary(d), rundir.read_evaluations(d), rundir.read_gates(d)))
    return exp, data


# -- helpers ---------------------------------------------------------------------------------------------------


def _family(env_id: str) -> envs.EnvFamily | None:
    try:
        return envs.family_of(env_id)
    except envs.EnvConfigError:  # an experiment of an env id this install does not know: no family facts
        return None


def memory_kwarg(exp: Experiment, env_id: str) -> str | None:
    """The grid key that is this env's memory length, if the grid sweeps it."""
    fam = _family(env_id)
    key = getattr(fam, "memory_kwarg", None)
    return key if key in exp.grid else None


def ceiling(runs: list[RunData], env_id: str) -> float | None:
    """The memoryless ceiling: from a run's summary, else from the env family."""
    for r in runs:
        if r.summary is not None and r.summary.get("memoryless_ceiling") is not None:
            return float(r.summary["memoryless_ceiling"])
    return getattr(_family(env_id), "memoryless_ceiling", None)


def uses_success(runs: list[RunData]) -> bool:
    """Whether the task reports success (then success rate is the metric, else mean return)."""
    for r in runs:
        if r.evals is not None and np.isfinite(r.evals["success_rate"]).any():
            return True
        if rundir.final_metric(r.summary, "success_rate") is not None:
            return True
    return False


def final_score(run: RunData, metric: str) -> float:
    """A finished run's final ``metric``; NaN for an unfinished run or a metric the task does not define."""
    value = rundir.final_metric(run.summary, metric) if run.finished else None
    return math.nan if value is None else value


def cell_label(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in params.items()) or "all runs"


def cell_key(params: dict[str, Any]) -> tuple:
    """A hashable key of a grid cell's parameters."""
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def aggregate_curves(runs: list[RunData], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """IQM and 95 % bootstrap band of ``column`` across runs, on a common step grid.

    Each run's curve is interpolated onto ``CURVE_POINTS`` steps between the first evaluation and the last step
    that every run has reached, so seeds evaluated at slightly different steps line up.

    :return: ``(steps, iqm, lo, hi)``
    """
    curves = [(r.evals["timesteps"], r.evals[column]) for r in runs if r.evals is not None]
    curves = [(t[np.isfinite(y)], y[np.isfinite(y)]) for t, y in curves]
    curves = [(t, y) for t, y in curves if t.size]
    if not curves:
        empty = np.array([])
        return empty, empty, empty, empty
    start = max(t[0] for t, _ in curves)
    end = min(t[-1] for t, _ in curves)
    steps = np.unique(np.concatenate([t for t, _ in curves]))
    steps = steps[(steps >= start) & (steps <= end)]
    if steps.size > CURVE_POINTS:
        steps = np.linspace(start, end, CURVE_POINTS)
    matrix = np.stack([np.interp(steps, t, y) for t, y in curves])
    value, lo, hi = curve_ci(matrix)
    return steps, value, lo, hi


def frontier_table(
    exp: Experiment, runs: list[RunData], env_id: str, key: str, metric: str
) -> dict[str, list[tuple[Any, Estimate]]]:
    """Series label -> [(memory length, final score estimate)], one series per core (and other grid values)."""
    series: dict[str, list[tuple[Any, Estimate]]] = {}
    env_runs = [r for r in runs if r.spec.env_id == env_id]
    others = sorted({cell_key({k: v for k, v in r.spec.params.items() if k != key}) for r in env_runs})
    for core in exp.cores:
        for other in others:
            label = core + ("" if not other else " (" + ", ".join(f"{k}={v}" for k, v in other) + ")")
            points = []
            for value in exp.grid[key]:
                cell = [
                    r
                    for r in env_runs
                    if r.spec.core == core
                    and r.spec.params.get(key) == value
                    and cell_key({k: v for k, v in r.spec.params.items() if k != key}) == other
                ]
                scores = np.array([final_score(r, metric) for r in cell])
                points.append((value, bootstrap_ci(scores)))
            series[label] = points
    return series


SOLVED = 0.95  # the success rate at which results.md counts a run as solved


def first_solved(run: RunData, threshold: float = SOLVED) -> int | None:
    """The step count of ``run``'s first evaluation whose success rate reaches ``threshold`` (None: never)."""
    if run.evals is None or "success_rate" not in run.evals:
        return None
    rates = np.asarray(run.evals["success_rate"], dtype=float)
    hits = np.flatnonzero(rates >= threshold)
    return int(run.evals["timesteps"][hits[0]]) if hits.size else None


def format_steps(n: float) -> str:
    """``1.5M``, ``300k``, ``64``."""
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


# -- results.md -------------------------------------------------------------------------------------------------------


def results_markdown(exp: Experiment, runs: list[RunData]) -> str:
    """Final numbers per env, grid cell and core: success rate and return as IQM [95 % CI] over finished seeds."""
    lines = ["# Results", ""]
    lines.append(
        f"Final evaluation of each run (`{rundir.SUMMARY}`), aggregated over seeds: interquartile mean "
        "[95% stratified-bootstrap CI]. Wall time and fps are means over runs. Solved (tasks with a success "
        f"flag): the seeds whose evaluations reached a success rate of {SOLVED}, with each seed's first such step."
    )
    for env_id in exp.env_ids:
        env_runs = [r for r in runs if r.spec.env_id == env_id]
        ceil = ceiling(env_runs, env_id)
        lines += ["", f"## {env_id}", ""]
        if ceil is not None:
            lines += [f"Memoryless ceiling (success rate): {ceil:.3g}", ""]
        keys = list(exp.grid)
        success = uses_success(env_runs)
        head = [*keys, "core", "seeds", *(["solved"] * success), "success rate", "return", "steps", "wall time / run"]
        head.append("fps")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        cells: dict[tuple, dict[str, list[RunData]]] = {}
        for r in env_runs:
            cells.setdefault(cell_key(r.spec.params), {}).setdefault(r.spec.core, []).append(r)
        for by_core in cells.values():
            for core in exp.cores:
                group = by_core.get(core, [])
                done = [r for r in group if r.finished]
                sr = bootstrap_ci(np.array([final_score(r, "success_rate") for r in group]))
                ret = bootstrap_ci(np.array([final_score(r, "mean_return") for r in group]))
                params = group[0].spec.params if group else {}
                wall = [r.summary.get("wall_time_s") for r in done if r.summary.get("wall_time_s") is not None]
                fps = [r.summary.get("fps") for r in done if r.summary.get("fps") is not None]
                steps = sorted({r.summary.get("timesteps") for r in done if r.summary.get("timesteps") is not None})
                solved = [first_solved(r) for r in sorted(group, key=lambda r: r.spec.seed)]
                hits = [format_steps(s) if s is not None else "-" for s in solved]
                row = [str(params.get(k, "")) for k in keys] + [
                    core,
                    f"{len(done)}/{len(group)}",
                    *([f"{sum(s is not None for s in solved)}/{len(group)} ({', '.join(hits)})"] * success),
                    _est(sr),
                    _est(ret),
                    ", ".join(format_steps(s) for s in steps) or "-",
                    f"{np.mean(wall) / 60:.1f} min" if wall else "-",
                    f"{np.mean(fps):.0f}" if fps else "-",
                ]
                lines.append("| " + " | ".join(row) + " |")
    unfinished = [r.spec.name for r in runs if not r.finished]
    if unfinished:
        lines += ["", f"Not finished ({len(unfinished)}; left out of the numbers above):", ""]
        lines += [f"- {name}" for name in unfinished]
    return "\n".join(lines) + "\n"


def _est(e: Estimate) -> str:
    if not math.isfinite(e.value):
        return "-"
    v, lo, hi = (round(x, 2) + 0.0 for x in (e.value, e.lo, e.hi))  # + 0.0 turns -0.0 into 0.0
    return f"{v:.2f} [{lo:.2f}, {hi:.2f}]"


def write_results(exp: Experiment, runs: list[RunData], out_dir: Path) -> Path:
    """Write ``results.md`` (``results_markdown``) into ``out_dir``; returns its path."""
    path = Path(out_dir) / RESULTS_FILE
    path.write_text(results_markdown(exp, runs))
    return path
