"""The compiled refine kernel of this checkout against the one of another git revision, in one process.

Both kernels are built (the other revision's ``policies/csrc`` is taken with ``git show`` and its ops renamed to
``torch.ops.urgate_base``) and run on the same inputs, forward (saving for backward) plus backward, alternating in
a shuffled order. Times are thread CPU seconds, which other processes on a shared machine disturb far less than
wall time; the table shows medians and the ratio this checkout / the other revision.

Usage: ``PYTHONPATH=. python benchmarks/kernel_ab.py [--against 4f0b331] [--repeats 21] [--base-flavour avx2]``
(``--base-flavour``: build the other revision for another CPU flavour, e.g. this checkout's own kernel for AVX2
against this machine's AVX-512 with ``--against HEAD``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies import extensions, kernels  # noqa: E402

# (T, B, H); B = 2: the default T-maze job; 8 sequences of 256 and 1472 steps: a training minibatch of
# configs/tmaze_long.yaml at length 100 and of MiniGrid-MemoryS17Random with 64 envs and `n_steps: auto`; 64 rows:
# a minibatch of 64 sequences
SIZES = ((32, 8, 64), (64, 16, 128), (64, 64, 128), (128, 32, 256), (128, 2, 256), (256, 8, 128), (1472, 8, 128))


def base_extension(revision: str, folder: Path, flavour: bool | str = True) -> extensions.CompiledExtension:
    """The refine kernel of ``revision``, its sources written to ``folder``, registering ``torch.ops.urgate_base``,
    compiled for the CPU ``flavour`` (``extensions.FLAVOUR_FLAGS``; True: this machine's)."""
    names = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{revision}:policies/csrc"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in names:
        text = subprocess.run(
            ["git", "show", f"{revision}:policies/csrc/{name}"], cwd=ROOT, check=True, capture_output=True, text=True
        ).stdout
        for macro in ("TORCH_LIBRARY", "TORCH_LIBRARY_FRAGMENT"):
            text = text.replace(f"{macro}(urgate, m)", f"{macro}(urgate_base, m)")
        (folder / name).write_text(text)
    return extensions.CompiledExtension(
        "refine_base",
        ["refine.cpp"],
        description=f"refine kernel of {revision}",
        source_dir=folder,
        cpu_flavour=flavour,
    )


def thread_seconds(fn, calls: int) -> float:
    t0 = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - t0) / calls


def time_size(ops: dict, T: int, B: int, H: int, repeats: int) -> dict[str, list[float]]:
    """Thread CPU seconds per forward+backward call of each kernel in ``ops``, ``repeats`` samples each."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, 4 * H, generator=gen)
    w = torch.randn(4 * H, H, generator=gen) / H**0.5
    h0, c0, no_resets = torch.zeros(B, H), torch.zeros(B, H), torch.zeros(0)
    grads = [torch.randn(T, B, H, generator=gen), torch.randn(B, H, generator=gen), torch.randn(B, H, generator=gen)]

    def step(o) -> None:
        _, _, _, acts, _, cprev, tanhc = o.refine_forward(x, w, h0, c0, no_resets, True)
        o.refine_backward(*grads, w, acts, cprev, tanhc, no_resets)

    runs = {label: (lambda o=o: step(o)) for label, o in ops.items()}
    for run in runs.values():  # warm-up
        run()
    calls = max(1, round(0.05 / thread_seconds(runs[list(runs)[-1]], 1)))  # samples of ~50 ms
    times: dict[str, list[float]] = {label: [] for label in runs}
    order, rng = list(runs), random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)  # neither kernel always runs right after the other
        for label in order:
            times[label].append(thread_seconds(runs[label], calls))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="main", help="git revision to compare with (default: main)")
    parser.add_argument("--repeats", type=int, default=21, help="timed samples per kernel and size (median shown)")
    parser.add_argument(
        "--base-flavour",
        choices=list(extensions.FLAVOUR_FLAGS),
        help="compile the other revision for this CPU flavour (default: this machine's, as this checkout)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        base = base_extension(args.against, Path(folder), args.base_flavour or True)
        if not base.load() or not kernels.REFINE.load():
            sys.exit(f"error: a kernel did not build: {base.error or kernels.REFINE.error}")
    label = args.against + (f" ({args.base_flavour})" if args.base_flavour else "")
    ops = {label: torch.ops.urgate_base, f"this checkout ({extensions.machine_flavour()})": torch.ops.urgate}
    print(
        f"torch {torch.__version__}, 1 thread, {torch.backends.cpu.get_cpu_capability()}; forward+backward, "
        f"thread CPU time, median of {args.repeats}"
    )
    print(f"| T, B, H | {' (ms) | '.join(ops)} (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for T, B, H in SIZES:
        times = time_size(ops, T, B, H, args.repeats)
        a, b = (statistics.median(times[label]) for label in ops)
        print(f"| {T}, {B}, {H} | {1e3 * a:.3f} | {1e3 * b:.3f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
