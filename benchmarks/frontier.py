"""The T-maze memory-frontier tables (docs/experiments/tmaze.md; the README's short one) and the figure, from
the per-length experiments of ``benchmarks/experiments.sh frontier`` and ``frontier_extra``.

Every experiment directory under ``--root`` is one length (its ``length`` grid value) at one budget, with
``--set`` overrides that make a variant of a core (``ur`` with ``refine_bias=zero``, ``chrono`` with 32 envs). A
seed *solves* a length when its final greedy evaluation (100 episodes) has success >= ``--solved``; a variant's
frontier is the longest length solved by most of its seeds, with the median step at which those seeds first
evaluated at >= ``--solved``. Unfinished runs are listed as such and do not count as solved.

Usage::

    PYTHONPATH=. python benchmarks/frontier.py [--root experiments/tmaze_frontier_long] [--out DIR] [--solved 0.95]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.run.gate_stats import gate_summary, timescales  # noqa: E402
from agents.study import plots  # noqa: E402
from agents.study.experiments import Experiment  # noqa: E402
from agents.study.results import RunData, final_score, format_steps, load_runs  # noqa: E402
from policies import CORE_NAMES  # noqa: E402

# Ni et al. (NeurIPS 2023), passive T-maze: env steps of their budget at each length.
NI_BUDGETS = {50: 1_000_000, 100: 2_000_000, 250: 4_000_000, 500: 4_000_000, 750: 6_000_000, 1000: 8_000_000}


@dataclass
class Seed:
    seed: int
    finished: bool
    final: float  # final success (NaN while unfinished)
    best: float  # best periodic evaluation
    first_solved: int | None  # first evaluation step at >= the threshold
    steps: int  # steps reached


def variant_label(core: str, overrides: list[str]) -> str:
    """``ur`` or ``ur (refine_bias=zero)``: the core and its experiment's overrides, keys without their path."""
    short = [o.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + o.split("=", 1)[1] for o in overrides]
    return f"{core} ({', '.join(short)})" if short else core


def seed_result(run: RunData, solved: float) -> Seed:
    evals = run.evals
    if evals is None or not len(evals["timesteps"]):
        return Seed(run.spec.seed, run.finished, final_score(run, "success_rate"), float("nan"), None, 0)
    steps, success = evals["timesteps"], evals["success_rate"]
    hits = np.flatnonzero(success >= solved)
    return Seed(
        run.spec.seed,
        run.finished,
        final_score(run, "success_rate"),
        float(np.nanmax(success)),
        int(steps[hits[0]]) if hits.size else None,
        int(steps[-1]),
    )


def load_experiments(root: Path) -> list[tuple[Experiment, list[RunData]]]:
    """Every experiment directory under ``root`` with its runs, read once for all the tables."""
    return [load_runs(p.parent) for p in sorted(root.glob("*/experiment.yaml"))]


def collect(loaded: list[tuple[Experiment, list[RunData]]], solved: float) -> dict[str, dict[int, list[Seed]]]:
    """variant -> length -> its seeds, over the loaded experiments."""
    table: dict[str, dict[int, list[Seed]]] = {}
    for exp, runs in loaded:
        for run in runs:
            length = int(run.spec.params["length"])
            label = variant_label(run.spec.core, exp.overrides)
            table.setdefault(label, {}).setdefault(length, []).append(seed_result(run, solved))
    return table


def n_solved(seeds: list[Seed], solved: float) -> int:
    return sum(s.finished and s.final >= solved for s in seeds)


def cell(seeds: list[Seed], solved: float) -> str:
    """``3/3, from 205k, 410k, 508k`` or ``0/3 (best 0.59; final 0.41, 0.58, 0.44)``; unfinished runs say so."""
    seeds = sorted(seeds, key=lambda s: s.seed)
    done = [s for s in seeds if s.finished]
    k = n_solved(seeds, solved)
    text = f"{k}/{len(seeds)}"
    if k:
        text = f"**{text}**" if 2 * k > len(seeds) else text
        firsts = [format_steps(s.first_solved) for s in done if s.final >= solved and s.first_solved is not None]
        text += ", from " + ", ".join(firsts)
    failed = [s for s in done if not s.final >= solved]
    if failed:
        finals = ", ".join(f"{s.final:.2f}" for s in failed)
        best = max(s.best for s in failed)
        other = "the other" if len(failed) == 1 else "the others"
        text += f"; {other}: best {best:.2f}, final {finals}" if k else f" (best {best:.2f}; final {finals})"
    running = [s for s in seeds if not s.finished]
    if running:
        text += "; running: " + ", ".join(f"s{s.seed} at {format_steps(s.steps)}" for s in running)
    return text


def frontier(lengths: dict[int, list[Seed]], solved: float) -> tuple[int | None, float | None]:
    """The longest length solved by most seeds and the median first-solved step there."""
    best = None
    for length in sorted(lengths):
        seeds = lengths[length]
        if 2 * n_solved(seeds, solved) > len(seeds):
            best = length
    if best is None:
        return None, None
    firsts = [s.first_solved for s in lengths[best] if s.finished and s.final >= solved and s.first_solved]
    return best, float(np.median(firsts)) if firsts else None


def variant_rank(variant: str) -> tuple[int, str]:
    """Sort key: ``CORE_NAMES`` order (lstm, chrono, u, r, ur, gru, ...), each core's variants after it."""
    core = variant.split(" ")[0]
    return (CORE_NAMES.index(core) if core in CORE_NAMES else len(CORE_NAMES), variant)


def ordered(table: dict[str, dict[int, list[Seed]]]) -> list[str]:
    return sorted(table, key=variant_rank)


def markdown(table: dict[str, dict[int, list[Seed]]], solved: float) -> str:
    variants = ordered(table)
    lengths = sorted({n for per in table.values() for n in per})
    lines = [
        "| length (Ni et al.'s budget) | " + " | ".join(variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for n in lengths:
        budget = f" ({format_steps(NI_BUDGETS[n])})" if n in NI_BUDGETS else ""
        row = [cell(table[v][n], solved) if n in table[v] else "not run" for v in variants]
        lines.append(f"| {n}{budget} | " + " | ".join(row) + " |")
    lines += [
        "",
        "| core | longest length solved on most seeds | median steps to first solve there | Ni et al.'s budget |",
    ]
    lines.append("|---|---|---|---|")
    for v in variants:
        best, steps = frontier(table[v], solved)
        tried = sorted(table[v])
        if best is None:
            lines.append(f"| {v} | none of {', '.join(map(str, tried))} | - | - |")
        else:
            first = format_steps(steps) if steps is not None else "-"
            lines.append(f"| {v} | {best} | {first} | {format_steps(NI_BUDGETS.get(best, 0))} |")
    return "\n".join(lines)


def gate_rows(loaded: list[tuple[Experiment, list[RunData]]]) -> str:
    """Per variant and length, the actor core's effective forget gates on rollout data at the start and the end
    of training (``gates.npz``), means over the seeds: the fraction near-binary (``gate_stats.near_binary``: within 0.05 of 0 or 1), the median
    timescale 1/(1-g), and the fraction of gates whose timescale reaches the length (those can carry the cue)."""
    cells: dict[tuple[str, int], list[tuple[float, ...]]] = {}
    for exp, runs in loaded:
        for run in runs:
            if run.gates is None or "final_gates" not in run.gates:
                continue
            length = int(run.spec.params["length"])
            stats = []
            for key in ("initial_gates", "final_gates"):
                g = run.gates[key]
                summary = gate_summary(g)
                stats += [
                    summary["gates/near_binary"],
                    summary["gates/timescale_q50"],
                    float(np.mean(timescales(g) >= length)),
                ]
            cells.setdefault((variant_label(run.spec.core, exp.overrides), length), []).append(tuple(stats))
    lines = [
        "| core | length | seeds | near-binary, start -> end | median timescale, start -> end | timescale >= length, start -> end |",
        "|---|---|---|---|---|---|",
    ]
    for (v, n), rows in sorted(cells.items(), key=lambda kv: (variant_rank(kv[0][0]), kv[0][1])):
        m = np.mean(rows, axis=0)
        lines.append(
            f"| {v} | {n} | {len(rows)} | {m[0]:.0%} -> {m[3]:.0%} | {m[1]:.1f} -> {m[4]:.1f} | {m[2]:.1%} -> {m[5]:.1%} |"
        )
    return "\n".join(lines)


def figure(table: dict[str, dict[int, list[Seed]]], out: Path, solved: float, dpi: int) -> list[Path]:
    """Final success per seed (dots) and its mean (line) against length, one colour per variant."""
    import matplotlib.pyplot as plt

    plots._style()
    variants = ordered(table)
    colors = plots._core_colors([v.split(" ")[0] for v in variants])
    lengths = sorted({n for per in table.values() for n in per})
    x = {n: i for i, n in enumerate(lengths)}
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for j, v in enumerate(variants):
        offset = (j - (len(variants) - 1) / 2) * 0.06
        style = "--" if "(" in v else "-"
        pts = sorted((n, [s.final for s in seeds if s.finished]) for n, seeds in table[v].items())
        pts = [(n, f) for n, f in pts if f]
        if not pts:
            continue
        for n, finals in pts:
            ax.scatter([x[n] + offset] * len(finals), finals, color=colors[v.split(" ")[0]], s=14, alpha=0.7)
        ax.plot(
            [x[n] + offset for n, _ in pts], [np.mean(f) for _, f in pts], style, color=colors[v.split(" ")[0]], label=v
        )
    ax.axhline(solved, color="k", lw=0.8, ls=":")
    ax.axhline(0.5, color="0.5", lw=0.8, ls=":")
    ax.set_xticks(range(len(lengths)))
    ax.set_xticklabels([f"{n}\n({format_steps(NI_BUDGETS[n])})" if n in NI_BUDGETS else str(n) for n in lengths])
    ax.set_xlabel("T-maze length (Ni et al.'s budget in env steps)")
    ax.set_ylabel("final greedy success (100 episodes)")
    ax.set_ylim(-0.03, 1.05)
    ax.set_title(f"passive T-maze frontier: dots are seeds, lines their mean; dotted: solved ({solved}) and memoryless")
    ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    out.mkdir(parents=True, exist_ok=True)
    return plots._save(fig, out, "frontier", dpi)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("experiments/tmaze_frontier_long"))
    parser.add_argument("--out", type=Path, default=None, help="write frontier.png/.svg here (default: no figure)")
    parser.add_argument("--solved", type=float, default=0.95)
    parser.add_argument("--dpi", type=int, default=100)
    parser.add_argument("--gates", action="store_true", help="also print the gate statistics table")
    args = parser.parse_args(argv)
    loaded = load_experiments(args.root)
    table = collect(loaded, args.solved)
    if not table:
        parser.error(f"--root {args.root}: no experiment directories (*/experiment.yaml) there")
    print(markdown(table, args.solved))
    if args.gates:
        print()
        print(gate_rows(loaded))
    if args.out is not None:
        for path in figure(table, args.out, args.solved, args.dpi):
            print(f"figure: {path}")


if __name__ == "__main__":
    main()
