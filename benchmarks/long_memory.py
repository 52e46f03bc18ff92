"""Does a freshly initialised core carry the T-maze's cue to the junction, and does the gradient carry it back?

For each core (at its initialisation, no training), the passive T-maze's inputs of one episode walked straight:
``[cue, 0]`` at step 0, ``[0, 0]`` in the corridor and ``[0, 1]`` at the junction (step ``length``), with the cue
+s and -s (s = 1 raw; s ~ sqrt(length + 1) is what VecNormalize makes of it, the cue being non-zero once per
episode). Reported, averaged over 3 initialisations:

- ``cue in h``: |h_J(+s) - h_J(-s)| / mean |h_J| at the junction: how much of the cue survives in the state the
  policy reads (the policy-gradient signal for the turn is proportional to it);
- ``grad to cue``: |d (random unit readout of h_J) / d cue| against ``grad 1 step``, the same derivative for an input
  one step before the junction: how much weaker the gradient that must build the memory is at the cue.

Usage: ``PYTHONPATH=. python benchmarks/long_memory.py [--lengths 20,100,1000] [--hidden 128]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies import make_core  # noqa: E402

CORES = (
    ("lstm", {}),
    ("chrono", "t_max=length"),
    ("chrono", {}),
    ("u", {}),
    ("r", {}),
    ("ur", {}),
    ("ur", {"refine_bias": "zero"}),
)


def cue_signal(
    core: str, kwargs: dict, length: int, hidden: int, scale: float, seed: int
) -> tuple[float, float, float]:
    """(cue in h, grad to cue, grad 1 step) for one initialisation (see the module docstring)."""
    torch.manual_seed(seed)
    model = make_core(core, 2, hidden, **kwargs)
    x = torch.zeros(length + 1, 2, 2)
    x[0, 0, 0], x[0, 1, 0] = scale, -scale
    x[length, :, 1] = scale
    x.requires_grad_(True)
    out, _ = model(x)
    h = out[length]
    cue = ((h[0] - h[1]).norm() / h.norm(dim=-1).mean()).item()
    readout = torch.randn(hidden) / hidden**0.5
    (grad,) = torch.autograd.grad((h[0] * readout).sum(), x)
    return cue, grad[0, 0, 0].abs().item(), grad[length - 1, 0, 0].abs().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="20,100,1000")
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"hidden {args.hidden}, 3 initialisations each; s = cue magnitude (sqrt(length + 1): VecNormalize's)\n")
    print("| length | core | cue in h, s=1 | grad to cue / grad 1 step, s=1 | cue in h, s=sqrt(L+1) |")
    print("|---:|---|---:|---:|---:|")
    for length in (int(n) for n in args.lengths.split(",")):
        for core, kwargs in CORES:
            kw = {"t_max": length} if kwargs == "t_max=length" else kwargs
            label = core + (f" (t_max={kw['t_max']})" if "t_max" in kw else " (t_max=500)" if core == "chrono" else "")
            label += f" (refine_bias={kw['refine_bias']})" if "refine_bias" in kw else ""
            raw = np.array([cue_signal(core, kw, length, args.hidden, 1.0, s) for s in range(3)]).mean(axis=0)
            normed = np.mean([cue_signal(core, kw, length, args.hidden, (length + 1) ** 0.5, s)[0] for s in range(3)])
            print(f"| {length} | {label} | {raw[0]:.1e} | {raw[1] / raw[2]:.1e} | {normed:.1e} |")


if __name__ == "__main__":
    main()
