"""Gate statistics of trained runs, one row per run, from the ``gates.npz`` every run writes (the actor core's
effective forget gates on its own rollout data at the start and at the end of training).

For each run: the median timescale 1/(1 - g), the share of gates whose timescale reaches ``--long`` steps and the
share of near-binary gates (g > 1 - ``--binary`` or g < ``--binary``), first rollout -> last rollout.

Usage (the tables of docs/experiments/visual-match.md)::

    PYTHONPATH=. python benchmarks/gate_table.py "experiments/avm_presence_cue_curriculum*/runs/*"
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not benchmarks/ (whose envs.py shadows)

from agents.run.gate_stats import near_binary, timescales  # noqa: E402
from agents.run.rundir import GATES, read_gates  # noqa: E402


def gate_stats(gates: np.ndarray, long: int, binary: float) -> tuple[float, float, float]:
    """(median timescale, share of timescales >= ``long``, share of gates within ``binary`` of 0 or 1)."""
    tau = timescales(np.asarray(gates, dtype=np.float64).ravel())
    return float(np.median(tau)), float(np.mean(tau >= long)), near_binary(gates, binary)


def rows(run_dirs: list[Path], long: int, binary: float) -> list[str]:
    """One markdown row per run directory holding a ``gates.npz`` with final gates."""
    out = []
    for run in run_dirs:
        data = read_gates(run)
        if data is None or "final_gates" not in data:
            continue
        start = gate_stats(data["initial_gates"], long, binary)
        end = gate_stats(data["final_gates"], long, binary)
        out.append(
            f"| {run.name} | {int(data['final_timesteps']):,} | {start[0]:.1f} -> {end[0]:.1f} | "
            f"{start[1]:.1%} -> {end[1]:.1%} | {start[2]:.1%} -> {end[2]:.1%} |"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories, or glob patterns of them")
    parser.add_argument("--long", type=int, default=100, help="timescale counted as long, in steps (100)")
    parser.add_argument("--binary", type=float, default=0.01, help="distance from 0 or 1 counted as binary (0.01)")
    args = parser.parse_args(argv)
    run_dirs = sorted({Path(p) for pattern in args.runs for p in (glob.glob(pattern) or [pattern])})
    lines = rows(run_dirs, args.long, args.binary)
    if not lines:
        print(f"error: no {GATES} with final gates under {', '.join(args.runs)}", file=sys.stderr)
        raise SystemExit(2)
    print(
        f"| run | steps | median timescale, first -> last rollout | timescale >= {args.long} steps | "
        f"near-binary (g > {1 - args.binary:g} or < {args.binary:g}) |"
    )
    print("|---|---:|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
