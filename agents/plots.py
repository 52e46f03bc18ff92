"""Figures and a results table for an experiment directory (see ``agents.experiments``).

``plot_experiment(exp_dir)`` writes into ``exp_dir/plots/``, as PNG and SVG:

- ``learning_curves_<env>``: success rate (or mean return where the task defines no success) against environment
  steps, one panel per grid cell, one line per core: the interquartile mean over seeds with a 95 % stratified
  bootstrap band (``agents.stats``), and the memoryless ceiling dashed;
- ``frontier_<env>``: success rate at the end of the budget against the task's memory length (``length``,
  ``distractor_steps``), one line per core, with the memoryless ceiling;
- ``gates_<env>``: histograms of the effective forget gates and of their timescales 1 / (1 - g) per core, at the
  start and the end of training (the paper's Figure 5, in RL form);

and ``results.md``, the final numbers with confidence intervals. Runs that have not finished are left out of the
final numbers (their partial learning curves are drawn) and listed in the table's notes.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UrgateError
from .experiments import RUNS_DIR, Experiment, RunSpec, load_experiment, read_summary
from .stats import Estimate, bootstrap_ci, curve_ci

PLOTS_DIR = "plots"
EVAL_COLUMNS = ("timesteps", "mean_return", "std_return", "success_rate", "episodes")
CURVE_POINTS = 60


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


def read_evaluations(path: Path) -> dict[str, np.ndarray] | None:
    """``evaluations.csv`` as columns (None if missing or empty); blank success rates become NaN."""
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return None
    if not rows:
        return None

    def num(x: str | None) -> float:
        try:
            return float(x) if x not in (None, "") else math.nan
        except ValueError:
            return math.nan

    cols = {c: np.array([num(r.get(c)) for r in rows]) for c in EVAL_COLUMNS}
    order = np.argsort(cols["timesteps"], kind="stable")
    return {c: v[order] for c, v in cols.items()}


def read_gates(path: Path) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError):
        return None


def load_runs(exp_dir: str | Path) -> tuple[Experiment, list[RunData]]:
    """The experiment and, for every cell of its grid, whatever its run directory holds."""
    exp_dir = Path(exp_dir)
    exp = load_experiment(exp_dir)
    data = []
    for spec in exp.runs():
        d = exp_dir / RUNS_DIR / spec.name
        data.append(
            RunData(spec, read_summary(d), read_evaluations(d / "evaluations.csv"), read_gates(d / "gates.npz"))
        )
    return exp, data


# -- helpers ---------------------------------------------------------------------------------------------------


def _family(env_id: str):
    try:
        import envs

        return envs.family_of(env_id)
    except (ImportError, ValueError):
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
        if r.summary is not None and r.summary.get("final_eval", {}).get("success_rate") is not None:
            return True
    return False


def final_score(run: RunData, metric: str) -> float:
    if not run.finished:
        return math.nan
    value = run.summary.get("final_eval", {}).get(metric)
    return math.nan if value is None else float(value)


def cell_label(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {v}" for k, v in params.items()) or "all runs"


def _key(params: dict[str, Any]) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def _core_colors(cores: list[str]) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    from policies import CORE_NAMES

    cmap = plt.get_cmap("tab10")
    order = list(CORE_NAMES) + [c for c in cores if c not in CORE_NAMES]
    return {c: cmap(order.index(c) % 10) for c in cores}


def _mpl():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 10,
            "axes.titlesize": 10,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "svg.fonttype": "none",
        }
    )
    return plt


def _save(fig, out_dir: Path, stem: str, dpi: int) -> list[Path]:
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=dpi, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _slug(env_id: str) -> str:
    return env_id.split("/")[-1]


def _grid_shape(n: int) -> tuple[int, int]:
    rows = math.ceil(n / 4)
    return rows, math.ceil(n / rows)


def _figure_legend(fig, axes, **kwargs) -> None:
    """One legend for the figure, from the labelled artists of all panels (first occurrence of each label)."""
    seen: dict[str, Any] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), frameon=False, ncol=len(seen), **kwargs)


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


# -- figures -----------------------------------------------------------------------------------------------------


def plot_learning_curves(exp: Experiment, runs: list[RunData], env_id: str, out_dir: Path, dpi: int) -> list[Path]:
    plt = _mpl()
    from matplotlib.ticker import EngFormatter

    env_runs = [r for r in runs if r.spec.env_id == env_id]
    success = uses_success(env_runs)
    column = "success_rate" if success else "mean_return"
    cells: dict[tuple, list[RunData]] = {}
    for r in env_runs:
        cells.setdefault(_key(r.spec.params), []).append(r)
    rows, cols = _grid_shape(len(cells))
    single = len(cells) == 1
    size = (5.6, 3.8) if single else (3.7 * cols, 2.9 * rows)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, sharey=success)
    colors = _core_colors(exp.cores)
    ceil = ceiling(env_runs, env_id) if success else None
    for ax, cell_runs in zip(axes.flat, cells.values(), strict=False):
        for core in exp.cores:
            core_runs = [r for r in cell_runs if r.spec.core == core]
            steps, value, lo, hi = aggregate_curves(core_runs, column)
            if not steps.size:
                continue
            n = sum(r.evals is not None for r in core_runs)
            ax.plot(steps, value, color=colors[core], lw=1.8, label=f"{core} (n={n})")
            ax.fill_between(steps, lo, hi, color=colors[core], alpha=0.2, lw=0)
        if ceil is not None:
            ax.axhline(ceil, color="0.35", ls="--", lw=1.1, label="memoryless ceiling")
        if cell_runs[0].spec.params:
            ax.set_title(cell_label(cell_runs[0].spec.params))
        ax.set_xlabel("environment steps")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        if success:
            ax.set_ylim(-0.03, 1.03)
    for ax in axes.flat[len(cells) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("success rate" if success else "mean episode return")
    what = "success rate" if success else "return"
    title = f"{env_id}: evaluation {what}, IQM over seeds with 95% stratified-bootstrap CI"
    if cols < 3:  # a narrow figure: the title on two lines
        title = title.replace(": ", "\n", 1)
    if single:
        axes[0, 0].legend(frameon=False, loc="best")
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
    else:
        _figure_legend(fig, axes, loc="lower center", bbox_to_anchor=(0.5, -0.02))
        fig.suptitle(title, fontsize=11)
        fig.tight_layout(rect=(0, 0.06 if rows == 1 else 0.035, 1, 1))
    return _save(fig, out_dir, f"learning_curves_{_slug(env_id)}", dpi)


def frontier_table(
    exp: Experiment, runs: list[RunData], env_id: str, key: str, metric: str
) -> dict[str, list[tuple[Any, Estimate]]]:
    """Series label -> [(memory length, final score estimate)], one series per core (and other grid values)."""
    series: dict[str, list[tuple[Any, Estimate]]] = {}
    env_runs = [r for r in runs if r.spec.env_id == env_id]
    others = sorted({_key({k: v for k, v in r.spec.params.items() if k != key}) for r in env_runs})
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
                    and _key({k: v for k, v in r.spec.params.items() if k != key}) == other
                ]
                scores = np.array([final_score(r, metric) for r in cell])
                points.append((value, bootstrap_ci(scores)))
            series[label] = points
    return series


def plot_frontier(exp: Experiment, runs: list[RunData], env_id: str, out_dir: Path, dpi: int) -> list[Path]:
    key = memory_kwarg(exp, env_id)
    if key is None or len(exp.grid[key]) < 2:  # a frontier needs at least two memory lengths
        return []
    plt = _mpl()
    env_runs = [r for r in runs if r.spec.env_id == env_id]
    success = uses_success(env_runs)
    metric = "success_rate" if success else "mean_return"
    series = frontier_table(exp, runs, env_id, key, metric)
    colors = _core_colors(exp.cores)
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    xs = [float(v) for v in exp.grid[key]]
    line_styles = ["-", ":", "-.", (0, (5, 1))]
    seen: dict[str, int] = {}
    for label, points in series.items():
        core = label.split(" ")[0]
        style = line_styles[seen.setdefault(core, 0) % len(line_styles)]
        seen[core] += 1
        x = np.array([float(v) for v, _ in points])
        y = np.array([e.value for _, e in points])
        err = np.array([[e.value - e.lo for _, e in points], [e.hi - e.value for _, e in points]])
        ok = np.isfinite(y)
        if not ok.any():
            continue
        ax.errorbar(
            x[ok],
            y[ok],
            yerr=err[:, ok],
            color=colors[core],
            ls=style,
            marker="o",
            ms=4,
            lw=1.8,
            capsize=3,
            label=label,
        )
    ceil = ceiling(env_runs, env_id) if success else None
    if ceil is not None:
        ax.axhline(ceil, color="0.35", ls="--", lw=1.1, label="memoryless ceiling")
    if min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(v) for v in exp.grid[key]])
    ax.minorticks_off()
    ax.set_xlabel(f"memory length: {key} (steps between cue and choice)")
    ax.set_ylabel("final success rate" if success else "final mean return")
    if success:
        ax.set_ylim(-0.03, 1.03)
    budget = sorted({r.summary.get("timesteps") for r in env_runs if r.finished and r.summary.get("timesteps")})
    steps = f" after {_steps(budget[0])} steps" if len(budget) == 1 else ""
    ax.set_title(f"{env_id}: memory frontier{steps}\nIQM over seeds, 95% bootstrap CI")
    ax.legend(frameon=False, loc="best")
    fig.tight_layout()
    return _save(fig, out_dir, f"frontier_{_slug(env_id)}", dpi)


def plot_gates(exp: Experiment, runs: list[RunData], env_id: str, out_dir: Path, dpi: int) -> list[Path]:
    from policies.gates import timescale

    env_runs = [r for r in runs if r.spec.env_id == env_id and r.gates is not None]
    if not env_runs:
        return []
    plt = _mpl()
    import torch

    key = memory_kwarg(exp, env_id)
    where, length = "all runs", None
    if key is not None:  # the longest memory length is where the gates have the most to do
        longest = max(exp.grid[key], key=float)
        env_runs = [r for r in env_runs if r.spec.params.get(key) == longest] or env_runs
        where, length = f"{key} = {longest}", float(longest)
    cores = [c for c in exp.cores if any(r.spec.core == c for r in env_runs)]
    colors = _core_colors(exp.cores)
    fig, axes = plt.subplots(len(cores), 2, figsize=(10, 2.2 * len(cores) + 0.5), squeeze=False)
    tau_bins = np.logspace(0, 5, 51)
    styles = {
        "initial": dict(color="0.6", alpha=0.45, histtype="stepfilled"),
        "final": dict(histtype="step", lw=1.8),
    }
    for row, core in enumerate(cores):
        core_runs = [r for r in env_runs if r.spec.core == core]
        ax_g, ax_t = axes[row]
        for phase, style in styles.items():
            g = np.concatenate([np.ravel(r.gates[f"{phase}_gates"]) for r in core_runs if f"{phase}_gates" in r.gates])
            if not g.size:
                continue
            if phase == "final":
                style = {**style, "color": colors[core]}
            steps = np.mean([float(np.ravel(r.gates.get(f"{phase}_timesteps", [np.nan]))[0]) for r in core_runs])
            when = "start" if phase == "initial" else "end"
            label = f"{when} of training" + (f" ({_steps(steps)} steps)" if np.isfinite(steps) else "")
            weights = np.full(g.size, 1.0 / g.size)
            ax_g.hist(np.clip(g, 0, 1), bins=np.linspace(0, 1, 41), weights=weights, label=label, **style)
            tau = timescale(torch.from_numpy(np.clip(g, 0, 1 - 1e-9).astype(np.float64))).numpy()
            ax_t.hist(np.clip(tau, 1, tau_bins[-1]), bins=tau_bins, weights=weights, **style)
        ax_g.set_ylabel(f"{core}\nfraction of gates", color=colors[core])
        for ax in (ax_g, ax_t):  # headroom for the legends above the bars
            ax.set_ylim(0, ax.get_ylim()[1] * 1.35)
        ax_g.legend(frameon=False, loc="upper center", fontsize=8, ncol=2, columnspacing=1.0, handlelength=1.5)
        ax_t.set_xscale("log")
        if length is not None:
            ax_t.axvline(length, color="k", ls=":", lw=1.2, label=f"memory length ({key} = {length:g})")
    axes[0, 0].set_title("effective forget gate g")
    axes[0, 1].set_title("timescale 1/(1-g); the last bin holds all >= 1e5")
    axes[-1, 0].set_xlabel("g")
    axes[-1, 1].set_xlabel("steps (log scale)")
    if length is not None:
        axes[0, 1].legend(frameon=False, loc="upper right", fontsize=8)
    fig.suptitle(f"{env_id} ({where}): actor-core forget gates on rollout data, start vs end of training", fontsize=11)
    fig.tight_layout()
    return _save(fig, out_dir, f"gates_{_slug(env_id)}", dpi)


def _steps(n: float) -> str:
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


# -- table -------------------------------------------------------------------------------------------------------


def results_markdown(exp: Experiment, runs: list[RunData]) -> str:
    """Final numbers per env, grid cell and core: success rate and return as IQM [95 % CI] over finished seeds."""
    lines = ["# Results", ""]
    lines.append(
        "Final evaluation of each run (`summary.json`), aggregated over seeds: interquartile mean "
        "[95% stratified-bootstrap CI]. Wall time and fps are means over runs."
    )
    for env_id in exp.env_ids:
        env_runs = [r for r in runs if r.spec.env_id == env_id]
        ceil = ceiling(env_runs, env_id)
        lines += ["", f"## {env_id}", ""]
        if ceil is not None:
            lines += [f"Memoryless ceiling (success rate): {ceil:.3g}", ""]
        keys = list(exp.grid)
        head = [*keys, "core", "seeds", "success rate", "return", "steps", "wall time / run", "fps"]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "---|" * len(head))
        cells: dict[tuple, dict[str, list[RunData]]] = {}
        for r in env_runs:
            cells.setdefault(_key(r.spec.params), {}).setdefault(r.spec.core, []).append(r)
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
                row = [str(params.get(k, "")) for k in keys] + [
                    core,
                    f"{len(done)}/{len(group)}",
                    _est(sr),
                    _est(ret),
                    ", ".join(_steps(s) for s in steps) or "-",
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


# -- entry point -------------------------------------------------------------------------------------------------


def plot_experiment(exp_dir: str | Path, *, out_dir: str | Path | None = None, dpi: int = 130) -> list[Path]:
    """Write every figure (PNG + SVG) and ``results.md`` for an experiment directory.

    :param exp_dir: directory written by ``agents.experiments.run_experiment``
    :param out_dir: where to write (default ``exp_dir/plots``)
    :param dpi: resolution of the PNGs
    :return: the written paths
    """
    exp, runs = load_runs(exp_dir)
    if not any(r.evals is not None or r.summary is not None for r in runs):
        raise UrgateError(f"no run under {Path(exp_dir) / RUNS_DIR} has results yet (evaluations.csv or summary.json)")
    out = Path(out_dir) if out_dir is not None else Path(exp_dir) / PLOTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for env_id in exp.env_ids:
        written += plot_learning_curves(exp, runs, env_id, out, dpi)
        written += plot_frontier(exp, runs, env_id, out, dpi)
        written += plot_gates(exp, runs, env_id, out, dpi)
    table = out / "results.md"
    table.write_text(results_markdown(exp, runs))
    written.append(table)
    return written
