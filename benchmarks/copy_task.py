"""The paper's copy task (Gu et al. 2020, after Hochreiter & Schmidhuber 1997): supervised, no RL.

A sequence has ``delay + 20`` steps: 10 tokens drawn uniformly from {1..8}, then ``delay`` blanks (0), then ten
cue tokens (9). During the last 10 steps (the cues) the model must output the 10 tokens in order; the loss is the
cross-entropy over those steps, and a memoryless model cannot beat log 8 = 2.079 (the baseline). Setting as the
paper: delay 500 (length 520), one layer of 256 units, batch 10, Adam with learning rate 1e-3, gradient-norm
clipping at 1, fresh random sequences every step; inputs are one-hot over the 10 symbols and a linear read-out
gives the 8 token classes.

Every (core, seed) run trains for ``--steps`` steps and records the mean training loss of every ``--log-every``
steps. Runs are restartable: each keeps its model, optimiser and data-generator state under ``--work-dir`` (written
atomically at every log point) and its loss curve as ``<out>/curves/<core>-s<seed>.csv``; a run already at
``--steps`` is skipped, a cut run resumes where it stopped (raising ``--steps`` later extends finished runs). A
core may carry keywords: ``chrono:t_max=520``, ``ur:refine_bias=zero`` (any keyword ``make_core`` accepts for it).

    PYTHONPATH=. python benchmarks/copy_task.py --cores lstm,chrono,ur,u,r --seeds 0,1 --steps 2000
    PYTHONPATH=. python benchmarks/copy_task.py --report     # table (stdout) and figure from the finished curves
    PYTHONPATH=. python benchmarks/copy_task.py --eval 200   # per-position accuracy and timescales of saved runs
    PYTHONPATH=. python benchmarks/copy_task.py --time 5     # seconds per step of every core, then exit
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies import CORE_NAMES, PolicyConfigError, make_core  # noqa: E402
from policies.gates import timescale  # noqa: E402

N_TOKENS = 10  # tokens to copy
N_CLASSES = 8  # token values 1..8
BLANK, CUE = 0, 9
N_SYMBOLS = 10  # one-hot input width: blank, 8 tokens, cue
BASELINE = math.log(N_CLASSES)
CSV_FIELDS = ("step", "loss", "seconds")


def copy_batch(batch: int, delay: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of the copy task.

    :param batch: sequences
    :param delay: blanks between the tokens and the cues
    :param gen: random generator (the only source of randomness, so a run's data is reproducible)
    :return: ``(x, target)``: one-hot inputs (delay + 20, batch, 10) and the token classes (10, batch) in 0..7
    """
    tokens = torch.randint(1, N_CLASSES + 1, (N_TOKENS, batch), generator=gen)
    seq = torch.full((delay + 2 * N_TOKENS, batch), BLANK, dtype=torch.long)
    seq[:N_TOKENS] = tokens
    seq[-N_TOKENS:] = CUE
    return F.one_hot(seq, N_SYMBOLS).float(), tokens - 1


class CopyModel(nn.Module):
    """A memory core and a linear read-out of its output at every cue step."""

    def __init__(self, core: nn.Module) -> None:
        super().__init__()
        self.core = core
        self.head = nn.Linear(core.hidden_size, N_CLASSES)

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the last 10 steps (the cue steps)."""
        out, _ = self.core(x)
        logits = self.head(out[-N_TOKENS:])
        return F.cross_entropy(logits.reshape(-1, N_CLASSES), target.reshape(-1))


def parse_core(spec: str) -> tuple[str, dict]:
    """``"name"`` or ``"name:key=value:key=value"`` -> (name, keywords); values read as YAML scalars."""
    name, *pairs = spec.split(":")
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise PolicyConfigError(f"core spec {spec!r}: expected name:key=value, got {pair!r}")
        kwargs[key] = yaml.safe_load(value)
    return name, kwargs


def build(spec: str, hidden: int, seed: int) -> CopyModel:
    name, kwargs = parse_core(spec)
    torch.manual_seed(seed)
    return CopyModel(make_core(name, N_SYMBOLS, hidden, **kwargs))


class Run:
    """One (core, seed) training run whose state survives being cut at any point."""

    def __init__(self, spec: str, seed: int, args: argparse.Namespace) -> None:
        self.spec, self.seed, self.args = spec, seed, args
        tag = f"{spec.replace(':', '_').replace('=', '-')}-s{seed}"
        self.state_path = Path(args.work_dir) / f"{tag}.pt"
        self.csv_path = Path(args.out) / "curves" / f"{tag}.csv"
        self.model = build(spec, args.hidden, seed)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=args.lr)
        self.gen = torch.Generator().manual_seed(10_000 + seed)
        self.step, self.seconds, self.curve = 0, 0.0, []
        if self.state_path.exists():
            state = torch.load(self.state_path, weights_only=False)
            for key in ("delay", "hidden", "batch", "lr", "clip"):
                if state["config"][key] != getattr(args, key):
                    raise PolicyConfigError(
                        f"{self.state_path} was trained with --{key} {state['config'][key]}, not {getattr(args, key)}: "
                        "pass the same value or another --work-dir/--out"
                    )
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
            self.gen.set_state(state["gen"])
            self.step, self.seconds, self.curve = state["step"], state["seconds"], state["curve"]

    def save(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "step": self.step,
            "seconds": self.seconds,
            "curve": self.curve,
            "config": {"spec": self.spec, "seed": self.seed, **vars(self.args)},
        }
        _atomic(self.state_path, lambda p: torch.save(state, p))

        def write_csv(p: Path) -> None:
            with p.open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(CSV_FIELDS)
                w.writerows(self.curve)

        _atomic(self.csv_path, write_csv)

    def train(self, steps: int) -> None:
        a = self.args
        losses = []
        while self.step < steps:
            t0 = time.perf_counter()
            x, target = copy_batch(a.batch, a.delay, self.gen)
            loss = self.model.loss(x, target)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.model.parameters(), a.clip)
            self.opt.step()
            self.seconds += time.perf_counter() - t0
            self.step += 1
            losses.append(loss.item())
            if self.step % a.log_every == 0 or self.step == steps:
                self.curve.append((self.step, round(sum(losses) / len(losses), 5), round(self.seconds, 1)))
                losses = []
                self.save()
                print(
                    f"{self.spec} s{self.seed} step {self.step}: loss {self.curve[-1][1]:.4f} "
                    f"({self.seconds / self.step:.3f} s/step)",
                    flush=True,
                )


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def read_curves(out: Path) -> dict[tuple[str, int], list[tuple[int, float]]]:
    curves = {}
    for p in sorted((out / "curves").glob("*.csv")):
        label, _, seed = p.stem.rpartition("-s")
        with p.open() as f:
            curves[(label, int(seed))] = [(int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)]
    return curves


def report(out: Path, checkpoints: list[int], title: str) -> None:
    """Print the loss table at the checkpoint steps and write ``<out>/copy_task.png``."""
    curves = read_curves(out)
    print(f"mean training loss of the logging interval ending at each step (baseline log 8 = {BASELINE:.3f})")
    print("| core | seed | " + " | ".join(str(s) for s in checkpoints) + " |")
    print("|---|---|" + "---|" * len(checkpoints))
    for (label, seed), curve in sorted(curves.items()):
        at = dict(curve)
        print(f"| {label} | {seed} | " + " | ".join(f"{at[s]:.3f}" if s in at else "-" for s in checkpoints) + " |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({label for label, _ in curves})
    fig, ax = plt.subplots(figsize=(7, 4))
    styles = ("-", "--", ":", "-.")
    for i, label in enumerate(labels):
        seeds = sorted(seed for lab, seed in curves if lab == label)
        for j, seed in enumerate(seeds):
            steps, losses = zip(*curves[(label, seed)], strict=True)
            ax.plot(steps, losses, color=f"C{i}", lw=1.2, ls=styles[j % 4], label=f"{label} s{seed}")
    ax.axhline(BASELINE, color="grey", ls=":", lw=1, label="memoryless (log 8)")
    ax.set_xlabel("training step (batch 10)")
    ax.set_ylabel("cross-entropy on the 10 cue steps")
    ax.set_title(title)
    lowest = min(loss for curve in curves.values() for _, loss in curve)
    ax.set_ylim(max(0.0, lowest - 0.2), BASELINE + 0.1)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "copy_task.png", dpi=120)
    print(f"figure: {out / 'copy_task.png'}")


@torch.no_grad()
def evaluate(run: Run, n: int) -> dict:
    """Per-position accuracy on ``n`` fresh sequences and the units' timescales over the blank phase.

    The timescale of a unit is ``1 / (1 - g)`` of its median effective forget gate over the blank steps and the
    sequences (``gate_trace``): how long it holds what it stored during the delay.
    """
    a = run.args
    x, target = copy_batch(n, a.delay, torch.Generator().manual_seed(99))
    out, _ = run.model.core(x)
    logits = run.model.head(out[-N_TOKENS:])
    loss = F.cross_entropy(logits.reshape(-1, N_CLASSES), target.reshape(-1)).item()
    acc = (logits.argmax(-1) == target).float().mean(1)  # per position
    g = run.model.core.gate_trace(x[:, : min(n, 32)])[0, N_TOKENS : N_TOKENS + a.delay]
    tau = timescale(g.flatten(0, 1).median(0).values)
    return {"loss": loss, "acc": acc, "tau": tau}


def print_evaluations(specs: list[str], seeds: list[int], args: argparse.Namespace) -> None:
    print(f"evaluation on {args.eval} fresh sequences (chance accuracy 1/8); unit timescales over the blank phase")
    print("| core | seed | step | loss | accuracy per position 1..10 | units tau >= 100 | tau >= 500 | max tau |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in specs:
        for seed in seeds:
            run = Run(spec, seed, args)
            if run.step == 0:
                continue
            e = evaluate(run, args.eval)
            accs = " ".join(f"{v:.2f}" for v in e["acc"].tolist())
            tau = e["tau"]
            print(
                f"| {spec} | {seed} | {run.step} | {e['loss']:.3f} | {accs} | {(tau >= 100).float().mean():.3f} | "
                f"{(tau >= 500).float().mean():.3f} | {tau.max():.0f} |",
                flush=True,
            )


def time_steps(specs: list[str], args: argparse.Namespace, calls: int) -> None:
    gen = torch.Generator().manual_seed(0)
    for spec in specs:
        model = build(spec, args.hidden, 0)
        x, target = copy_batch(args.batch, args.delay, gen)
        model.loss(x, target).backward()  # warm-up (kernel build on first use)
        t0 = time.perf_counter()
        for _ in range(calls):
            model.zero_grad(set_to_none=True)
            model.loss(x, target).backward()
        print(f"{spec}: {(time.perf_counter() - t0) / calls:.3f} s per forward+backward", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cores", default=",".join(CORE_NAMES), help="comma-separated: name or name:key=value:...")
    p.add_argument("--seeds", default="0,1", help="comma-separated integers")
    p.add_argument("--steps", type=int, default=2000, help="training steps per run (the paper: 10,000)")
    p.add_argument("--delay", type=int, default=500)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold")
    p.add_argument("--log-every", type=int, default=50, help="steps per point of the loss curve (and state save)")
    p.add_argument("--out", default=str(ROOT / "docs/results/copy_task"), help="curves, table and figure")
    p.add_argument("--work-dir", default=str(ROOT / "runs/copy_task"), help="resumable training state")
    p.add_argument("--report", action="store_true", help="only print the table and write the figure")
    p.add_argument("--table-steps", default="", help="comma-separated steps for the table (default: 8 columns)")
    p.add_argument("--eval", type=int, default=0, metavar="N", help="evaluate the saved runs on N sequences and exit")
    p.add_argument("--time", type=int, default=0, metavar="CALLS", help="time CALLS steps of every core and exit")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    try:
        specs = [s for s in args.cores.split(",") if s]
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s]
        except ValueError:
            raise PolicyConfigError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
        for spec in specs:
            build(spec, 4, 0)  # every spec is checked before any run starts
    except PolicyConfigError as e:
        print(f"copy_task.py: {e}", file=sys.stderr)
        sys.exit(2)
    if args.eval:
        print_evaluations(specs, seeds, args)
        return
    if args.time:
        time_steps(specs, args, args.time)
        return
    if args.report:
        if args.table_steps:
            checkpoints = [int(s) for s in args.table_steps.split(",")]
        else:
            curves = read_curves(Path(args.out))
            if not curves:
                print(f"copy_task.py: no curves under {Path(args.out) / 'curves'}", file=sys.stderr)
                sys.exit(2)
            last = max(c[-1][0] for c in curves.values())
            checkpoints = sorted(
                {max(args.log_every, round(last * k / 8 / args.log_every) * args.log_every) for k in range(1, 9)}
            )
        report(Path(args.out), checkpoints, f"copy task, delay {args.delay}, {args.hidden} units, batch {args.batch}")
        return
    for spec in specs:
        for seed in seeds:
            try:
                run = Run(spec, seed, args)
            except PolicyConfigError as e:
                print(f"copy_task.py: {e}", file=sys.stderr)
                sys.exit(2)
            if run.step >= args.steps:
                print(f"{spec} s{seed}: done ({run.step} steps), skipped", flush=True)
                continue
            run.train(args.steps)


if __name__ == "__main__":
    main()
