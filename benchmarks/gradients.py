"""Gradient saturation check: how much gradient reaches the first step of a long sequence, per memory core.

The paper's mechanism: a forget gate ``f`` near 1 keeps memory but its own gradient vanishes (``f (1 - f) -> 0``),
so long timescales are hard to learn; the refine gate multiplies the gate's slope by up to 2 and the uniform
initialisation spreads timescales so some units already remember. This script measures, for every core, on a
T-maze-like sequence (a cue at step 0, random inputs afterwards) of length T:

- ``grad x0``: norm of the gradient of a fixed unit projection of the final output w.r.t. the first input (the
  cue): whether a long-range error signal reaches what must be remembered;
- ``grad Pf1``: the same w.r.t. the forget-gate pre-activations of step 1 (the update gate's for GRU cores), the
  first gate that acts on the stored cue (``grad Pr1`` for the refine gate of R/UR/UR-GRU cores): whether that signal can still move the gates that must
  hold the memory;
- ``sat``: the fraction of effective forget gates within 0.01 of 0 or 1, and ``tau50``/``tau90``: the median
  and 90th percentile of the timescales 1 / (1 - g), in steps;

at initialisation and after training: either cores trained briefly here on a supervised delay task (recall the
cue after T steps; chance loss log K), or the cores of an experiment's runs (``--experiment DIR``, the actor
core of every run's ``checkpoints/latest.zip``). Medians are over sequences (and seeds).

    PYTHONPATH=. python benchmarks/gradients.py                      # init + briefly trained, T = 100, 300, 1000
    PYTHONPATH=. python benchmarks/gradients.py --experiment experiments/tmaze_frontier --match length=40
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from agents.run import rundir
from agents.study.experiments import RUNS_DIR
from policies import CORE_NAMES, GatedGRU, RefineGRU, RefineLSTM, make_core
from policies.gates import gru_cell, lstm_cell, refine_cell, refine_gru_cell, timescale

N_CUES = 4
SAT_EPS = 0.01


@dataclass
class Measure:
    grad_x0: float
    grad_pf1: float
    grad_pr1: float
    sat: float
    tau50: float
    tau90: float


def delay_batch(batch: int, length: int, input_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A cue (one of ``N_CUES`` one-hot symbols) at step 0, N(0, 1) noise on the other features at every step.

    Cores with ``input_size <= N_CUES`` (e.g. a trained T-maze core fed 2 features) get noise only, which is all the
    gradient probe needs.

    :return: ``(x, cue)`` with x of shape (length, batch, input_size) and cue (batch,)
    """
    cue = torch.randint(0, N_CUES, (batch,), generator=gen)
    if input_size <= N_CUES:
        return torch.randn(length, batch, input_size, generator=gen), cue
    x = torch.zeros(length, batch, input_size)
    x[:, :, N_CUES:] = torch.randn(length, batch, input_size - N_CUES, generator=gen)
    x[0, torch.arange(batch), cue] = 1.0
    return x, cue


# The cell of each core class, and the block of its refine gate (the forget / update gate is block 1 everywhere).
_CELLS = {RefineLSTM: refine_cell, GatedGRU: gru_cell, RefineGRU: refine_gru_cell}
_REFINE_BLOCK = {RefineLSTM: 0, RefineGRU: 3}


def _step_one(core: nn.Module, x1: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
    """Step 1 through the cell definition: ``(h, c, pre)`` with ``pre`` a tensor whose gradient in the forget and
    refine blocks is that of their pre-activations (the whole pre-activation for LSTM cells; the input projection
    for GRU cells, whose recurrent projection is added inside the cell)."""
    cell = _CELLS.get(type(core), lstm_cell)
    if isinstance(core, GatedGRU | RefineGRU):
        pre = x1 @ core.weight_ih_l0.t() + core.bias_ih_l0
        pre.retain_grad()
        h2, _ = cell(pre, h @ core.weight_hh_l0.t() + core.bias_hh_l0, h)
        return h2, torch.zeros_like(h2), pre
    pre = x1 @ core.weight_ih_l0.t() + h @ core.weight_hh_l0.t() + core.bias_ih_l0 + core.bias_hh_l0
    pre.retain_grad()
    h2, c2, _ = cell(pre, c)
    return h2, c2, pre


def early_step_gradients(core: nn.Module, x: torch.Tensor, v: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Per-sequence gradient norms of ``v . y_T`` w.r.t. ``x_0`` and the gate pre-activations of step 1.

    Step 1 is the first step whose forget gate acts on a stored memory (``c_0`` is zero, so the gate of step 0
    multiplies nothing): it is computed with the cell definition from ``policies.gates`` so that its
    pre-activations are a tensor we can read the gradient of. Steps 0 and 2..T-1 run through the core's own
    forward (fused nn.LSTM or the refine kernel), the path training uses.

    :return: ``(|dy/dx0|, |dy/dPf1|, |dy/dPr1|)`` arrays of shape (B,); the last is NaN for cells without a refine
        gate
    """
    if core.num_layers != 1 or x.shape[0] < 2:
        raise ValueError("the gradient probe handles one-layer cores and sequences of at least 2 steps")
    H, B = core.hidden_size, x.shape[1]
    x0 = x[:1].clone().requires_grad_(True)
    _, (h, c) = core(x0)
    h2, c2, pre = _step_one(core, x[1], h[0], c[0])
    out = core(x[2:], (h2.unsqueeze(0), c2.unsqueeze(0)))[0] if x.shape[0] > 2 else h2.unsqueeze(0)
    (out[-1] @ v).sum().backward()
    gx = x0.grad[0].norm(dim=1).numpy()
    gp = pre.grad.view(B, -1, H)
    gf = gp[:, 1].norm(dim=1).numpy()  # the forget (update) block is slot 1 in every layout
    block = _REFINE_BLOCK.get(type(core))
    gr = gp[:, block].norm(dim=1).numpy() if block is not None else np.full(B, np.nan)
    core.zero_grad(set_to_none=True)
    return gx, gf, gr


def measure(cores: list[nn.Module], length: int, batch: int, seed: int) -> Measure:
    """Pool the gradient and gate statistics of ``cores`` (e.g. one per seed) on fresh delay sequences."""
    gen = torch.Generator().manual_seed(seed)
    gx, gf, gr, gates = [], [], [], []
    for core in cores:
        x, _ = delay_batch(batch, length, core.input_size, gen)
        v = torch.randn(core.hidden_size, generator=gen)
        v /= v.norm()
        a, b, c = early_step_gradients(core, x, v)
        gx.append(a)
        gf.append(b)
        gr.append(c)
        gates.append(core.gate_trace(x[: min(length, 200)])[0].flatten())
    g = torch.cat(gates).double()
    tau = timescale(g.clamp(max=1 - 1e-12)).numpy()
    sat = float(((g < SAT_EPS) | (g > 1 - SAT_EPS)).double().mean())
    return Measure(
        grad_x0=float(np.median(np.concatenate(gx))),
        grad_pf1=float(np.median(np.concatenate(gf))),
        grad_pr1=float(np.median(np.concatenate(gr))),
        sat=sat,
        tau50=float(np.percentile(tau, 50)),
        tau90=float(np.percentile(tau, 90)),
    )


class DelayModel(nn.Module):
    """Core plus a linear read-out of the final output: recall the cue shown at step 0."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core
        self.head = nn.Linear(core.hidden_size, N_CUES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.core(x)
        return self.head(out[-1])


def train_delay(core: nn.Module, length: int, steps: int, batch: int, lr: float, seed: int) -> tuple[float, float]:
    """Train ``core`` (in place) on the delay task; returns the last 20 steps' mean loss and accuracy."""
    gen = torch.Generator().manual_seed(seed + 10_000)
    model = DelayModel(core)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses, accs = [], []
    for _ in range(steps):
        x, cue = delay_batch(batch, length, core.input_size, gen)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, cue)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        accs.append(float((logits.argmax(1) == cue).float().mean()))
    return float(np.mean(losses[-20:])), float(np.mean(accs[-20:]))


def load_experiment_cores(exp_dir: Path, match: str = "") -> dict[str, list[nn.Module]]:
    """The actor core of every run under ``exp_dir/runs`` (or ``exp_dir`` itself if it is one run), by core name.

    :param match: keep only runs whose directory name contains this (e.g. ``length=40``)

    Reads only the weights (``policy.pth`` inside the SB3 zip, loaded with ``weights_only=True``) and rebuilds the
    core with ``make_core`` from the sizes of the saved tensors, so no pickled code is executed.
    """
    run_dirs = (
        [exp_dir] if rundir.is_run_dir(exp_dir) else sorted(p for p in (exp_dir / RUNS_DIR).glob("*") if p.is_dir())
    )
    found: dict[str, list[nn.Module]] = {}
    for run in run_dirs:
        if match not in run.name:
            continue
        ckpt, cfg_path = rundir.checkpoint_path(run), rundir.config_path(run)
        if not (ckpt.exists() and cfg_path.exists()):
            continue
        name = yaml.safe_load(cfg_path.read_text())["core"]
        found.setdefault(name, []).append(core_from_checkpoint(ckpt, name))
    if not found:
        raise SystemExit(
            f"no run with {rundir.CONFIG} and a checkpoint ({rundir.CHECKPOINTS}/{rundir.LATEST}) under {exp_dir}"
        )
    return found


def core_from_checkpoint(path: Path, name: str, prefix: str = "lstm_actor") -> nn.Module:
    """Rebuild the ``prefix`` core (one layer) of an SB3 model zip from its weights alone."""
    with zipfile.ZipFile(path) as zf:
        state = torch.load(io.BytesIO(zf.read("policy.pth")), map_location="cpu", weights_only=True)
    sub = {k[len(prefix) + 1 :]: v for k, v in state.items() if k.startswith(prefix + ".")}
    if "weight_ih_l0" not in sub:
        raise SystemExit(f"{path}: no '{prefix}.weight_ih_l0' in the saved policy (keys: {sorted(state)[:8]} ...)")
    hidden, inp = sub["weight_hh_l0"].shape[1], sub["weight_ih_l0"].shape[1]
    layers = sum(1 for k in sub if k.startswith("weight_ih_l"))
    core = make_core(name, inp, hidden, num_layers=layers)
    core.load_state_dict(sub)
    return core


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2e}"


def print_table(title: str, rows: list[tuple[str, int, Measure]], extra: dict[str, str] | None = None) -> None:
    print(f"\n{title}")
    cols = ["core", "T", "grad x0", "grad Pf1", "grad Pr1", "sat", "tau50", "tau90"]
    cols += ["train loss / acc"] if extra else []
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for name, length, m in rows:
        cells = [name, str(length), _fmt(m.grad_x0), _fmt(m.grad_pf1), _fmt(m.grad_pr1)]
        cells += [f"{m.sat:.2f}", f"{m.tau50:.1f}", f"{m.tau90:.1f}"]
        if extra:
            cells.append(extra.get(name, "-"))
        print("| " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cores", default=",".join(CORE_NAMES), help="comma-separated core names")
    p.add_argument("--lengths", default="100,300,1000", help="sequence lengths T to probe")
    p.add_argument("--hidden", type=int, default=64, help="hidden size H")
    p.add_argument("--input-size", type=int, default=8, help="features per step (4 cue + noise)")
    p.add_argument("--batch", type=int, default=16, help="sequences per core and seed")
    p.add_argument("--seeds", type=int, default=3, help="independently initialised cores per name")
    p.add_argument("--train-steps", type=int, default=300, help="Adam steps on the delay task (0: skip)")
    p.add_argument("--train-length", type=int, default=100, help="delay length T of the training task")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--experiment", type=Path, help="probe the trained actor cores of this experiment instead")
    p.add_argument("--match", default="", help="with --experiment: only runs whose name contains this, e.g. length=40")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    names = [c.strip() for c in args.cores.split(",") if c.strip()]
    lengths = [int(t) for t in args.lengths.split(",")]
    print(f"# gradient saturation check: H={args.hidden}, F={args.input_size}, batch={args.batch}, seeds={args.seeds}")

    cores = {}
    for name in names:
        cores[name] = []
        for s in range(args.seeds):
            torch.manual_seed(s)
            cores[name].append(make_core(name, args.input_size, args.hidden))
    rows = [(n, t, measure(cores[n], t, args.batch, seed=1)) for t in lengths for n in names]
    print_table("## at initialisation", rows)

    if args.experiment is not None:
        trained = load_experiment_cores(args.experiment, args.match)
        rows = [(n, t, measure(trained[n], t, args.batch, seed=1)) for t in lengths for n in trained]
        print_table(
            f"## trained cores from {args.experiment} ({', '.join(f'{k}: {len(v)}' for k, v in trained.items())} runs)",
            rows,
        )
        return
    if args.train_steps <= 0:
        return
    results, t0 = {}, time.perf_counter()
    for name in names:
        outcomes = [
            train_delay(c, args.train_length, args.train_steps, 32, args.lr, seed=s) for s, c in enumerate(cores[name])
        ]
        loss, acc = np.mean(outcomes, axis=0)
        results[name] = f"{loss:.3f} / {acc:.2f}"
    rows = [(n, t, measure(cores[n], t, args.batch, seed=1)) for t in lengths for n in names]
    title = (
        f"## after {args.train_steps} Adam steps on the delay task, T={args.train_length} "
        f"(chance loss {math.log(N_CUES):.3f}, acc {1 / N_CUES:.2f}); {time.perf_counter() - t0:.0f} s"
    )
    print_table(title, rows, results)


if __name__ == "__main__":
    main(sys.argv[1:])
