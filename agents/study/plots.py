"""Figures for an experiment directory (``agents.study.experiments``), from the numbers of ``agents.study.results``.

``plot_experiment(exp_dir)`` writes into ``exp_dir/plots/``, as PNG and SVG:

- ``learning_curves_<env>``: success rate (or mean return where the task defines no success) against environment
  steps, one panel per grid cell, one line per core: the interquartile mean over seeds with a 95 % stratified
  bootstrap band (``agents.stats``), and the memoryless ceiling dashed;
- ``frontier_<env>``: success rate at the end of the budget against the task's memory length (``length``,
  ``distractor_steps``), one line per core, with the memoryless ceiling;
- ``gates_<env>``: histograms of the effective forget gates and of their timescales 1 / (1 - g) per core, at the
  start and the end of training (the paper's Figure 5, in RL form);

and ``results.md`` (``agents.study.results``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import EngFormatter

from policies import CORE_NAMES

from .. import paths
from ..errors import ConfigValueError, UrgateError
from ..run import rundir
from ..run.gate_stats import timescales
from .experiments import RUNS_DIR, Experiment
from .results import (
    RunData,
    aggregate_curves,
    ceiling,
    cell_key,
    cell_label,
    format_steps,
    frontier_table,
    load_runs,
    memory_kwarg,
    uses_success,
    write_results,
)

PLOTS_DIR = "plots"

matplotlib.use("Agg")  # files only: no window, no display needed (pyplot resolves its backend at the first figure)


def _core_colors(cores: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    order = list(CORE_NAMES) + [c for c in cores if c not in CORE_NAMES]
    return {c: cmap(order.index(c) % 10) for c in cores}


def _style() -> None:
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


def _save(fig, out_dir: Path, stem: str, dpi: int) -> list[Path]:
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=dpi, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
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


# -- figures -----------------------------------------------------------------------------------------------------


def plot_learning_curves(exp: Experiment, runs: list[RunData], env_id: str, out_dir: Path, dpi: int) -> list[Path]:
    _style()
    env_runs = [r for r in runs if r.spec.env_id == env_id]
    success = uses_success(env_runs)
    column = "success_rate" if success else "mean_return"
    cells: dict[tuple, list[RunData]] = {}
    for r in env_runs:
        cells.setdefault(cell_key(r.spec.params), []).append(r)
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


def plot_frontier(exp: Experiment, runs: list[RunData], env_id: str, out_dir: Path, dpi: int) -> list[Path]:
    key = memory_kwarg(exp, env_id)
    if key is None or len(exp.grid[key]) < 2:  # a frontier needs at least two memory lengths
        return []
    _style()
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
    steps = f" after {format_steps(budget[0])} steps" if len(budget) == 1 else ""
    ax.set_title(f"{env_id}: memory frontier{steps}\nIQM over seeds, 95% bootstrap CI")
    ax.legend(frameon=False, loc="best")
    fig.tight_layout()
    return _save(fig, out_dir, f"frontier_{_slug(env_id)}", dpi)


def plot_gates(exp: Experiment, runs: list[RunData], env_id: str, out_dir: Path, dpi: int) -> list[Path]:
    env_runs = [r for r in runs if r.spec.env_id == env_id and r.gates is not None]
    if not env_runs:
        return []
    _style()
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
            label = f"{when} of training" + (f" ({format_steps(steps)} steps)" if np.isfinite(steps) else "")
            weights = np.full(g.size, 1.0 / g.size)
            ax_g.hist(np.clip(g, 0, 1), bins=np.linspace(0, 1, 41), weights=weights, label=label, **style)
            tau = timescales(np.clip(g, 0, 1))
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


# -- entry point -------------------------------------------------------------------------------------------------


def plot_experiment(exp_dir: str | Path, *, out_dir: str | Path | None = None, dpi: int = 130) -> list[Path]:
    """Write every figure (PNG + SVG) and ``results.md`` for an experiment directory.

    :param exp_dir: directory written by ``agents.study.experiments.run_experiment``
    :param out_dir: where to write (default ``exp_dir/plots``)
    :param dpi: resolution of the PNGs
    :return: the written paths
    """
    if isinstance(dpi, bool) or not isinstance(dpi, int) or dpi < 1:
        raise ConfigValueError("dpi", dpi, "an integer >= 1 (dots per inch of the PNGs)")
    out = paths.check_dir(out_dir if out_dir is not None else Path(exp_dir) / PLOTS_DIR, "plot folder")
    exp, runs = load_runs(exp_dir)
    if not any(r.evals is not None or r.summary is not None for r in runs):
        raise UrgateError(
            f"no run under {Path(exp_dir) / RUNS_DIR} has results yet ({rundir.EVALUATIONS} or {rundir.SUMMARY})"
        )
    paths.make_dir(out, "plot folder")
    written: list[Path] = []
    for env_id in exp.env_ids:
        written += plot_learning_curves(exp, runs, env_id, out, dpi)
        written += plot_frontier(exp, runs, env_id, out, dpi)
        written += plot_gates(exp, runs, env_id, out, dpi)
    written.append(write_results(exp, runs, out))
    return written
