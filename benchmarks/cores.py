"""Forward+backward time of every memory core against torch's nn.LSTM (nn.GRU for the GRU family), on one CPU thread.

For each size (T, B, input, H) and each core, one training-style call (``out, _ = core(x, hx, episode_starts)``,
``out.sum().backward()``) is timed, without resets and with resets inside the sequence (one episode start per
batch element at a random step in 1..T-1), in the thread's CPU time (robust on a shared machine). All variants are
measured interleaved, repeat by repeat in a shuffled order, in one run (a sample averages enough calls to last
~20 ms); the table shows the median time relative to the median of torch's own module of the same family without resets
(nn.LSTM for the LSTM family, nn.GRU for gru/ugru/urgru; neither can reset inside a sequence). The cores with a
compiled CPU kernel are also timed on their fallback (``URGATE_DISABLE_KERNEL=1``): the pure-torch loop, or nn.GRU's
own forward for gru/ugru. ``om`` is also timed with ``chunk_size=8`` (``OPTION_VARIANTS``).

Usage: ``PYTHONPATH=. python benchmarks/cores.py [--repeats 7] [--seed 0]``
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policies import CORE_NAMES, GatedGRU, RefineGRU, make_core, ordered_kernels  # noqa: E402
from policies.kernels import DISABLE_ENV, kernel_available  # noqa: E402

SIZES = ((32, 8, 64, 64), (64, 16, 64, 128), (128, 32, 128, 256))
COMPILED_CORES = ("r", "ur", "urgru", "gru", "ugru", "o", "or", "om", "um")
OPTION_VARIANTS = {"om": ("chunk_size", 8)}  # also timed with this option: Shen et al.'s chunked master gates
FALLBACK = {"gru": "nn.GRU path", "ugru": "nn.GRU path"}  # what runs with the kernel disabled; else "pure torch"
BASELINES = {"nn.LSTM": nn.LSTM, "nn.GRU": nn.GRU}


def baseline_of(core: nn.Module) -> str:
    """The torch module a core is measured against: nn.GRU for the GRU family, else nn.LSTM."""
    return "nn.GRU" if isinstance(core, GatedGRU | RefineGRU) else "nn.LSTM"


def inner_resets(T: int, B: int, generator: torch.Generator) -> torch.Tensor:
    """(T, B) episode starts: one per batch element, at a random step in 1..T-1."""
    starts = torch.zeros(T, B)
    if T > 1:
        starts[torch.randint(1, T, (B,), generator=generator), torch.arange(B)] = 1.0
    return starts


def make_step(module: nn.Module, x: torch.Tensor, starts: torch.Tensor | None, pure_torch: bool):
    """A closure running one forward+backward pass of ``module`` and returning its time in seconds: the calling
    thread's CPU time (one torch thread does all the work, backward included), so that other jobs on a shared
    machine do not count, as wall time does."""
    kwargs = {} if starts is None else {"episode_starts": starts}

    def step(calls: int = 1) -> float:
        if pure_torch:
            os.environ[DISABLE_ENV] = "1"
        try:
            total = 0.0
            for _ in range(calls):
                module.zero_grad(set_to_none=True)
                x.grad = None
                t0 = time.thread_time()
                out, _ = module(x, **kwargs)
                out.sum().backward()
                total += time.thread_time() - t0
            return total / calls
        finally:
            if pure_torch:
                os.environ.pop(DISABLE_ENV, None)

    return step


def bench_size(
    T: int, B: int, I: int, H: int, repeats: int, seed: int
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Median time (s) of each torch baseline and, per variant, its (no resets, inner resets) ratios to its own."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, requires_grad=True)
    starts = inner_resets(T, B, gen)
    steps = {(label, False): make_step(cls(I, H), x, None, False) for label, cls in BASELINES.items()}
    variants = [(name, name, False, {}) for name in CORE_NAMES]
    variants += [(f"{name}, {k}={v}", name, False, {k: v}) for name, (k, v) in OPTION_VARIANTS.items()]
    variants += [(f"{name} ({FALLBACK.get(name, 'pure torch')})", name, True, {}) for name in COMPILED_CORES]
    base_of = {}
    for label, name, pure, kwargs in variants:
        core = make_core(name, I, H, **kwargs)
        base_of[label] = baseline_of(core)
        steps[(label, False)] = make_step(core, x, None, pure)
        steps[(label, True)] = make_step(core, x, starts, pure)
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in steps}
    for step in steps.values():  # warm-up (allocator, first dispatch)
        step()
    # Each sample averages enough calls to last ~20 ms, so that small sizes are not timer noise.
    calls = max(1, round(0.02 / steps[("nn.LSTM", False)](3)))
    order = list(steps)
    rng = random.Random(seed)
    for _ in range(repeats):
        rng.shuffle(order)  # no variant always runs right after the same one
        for key in order:
            times[key].append(steps[key](calls))
    base = {label: statistics.median(times[(label, False)]) for label in BASELINES}
    ratios = {
        label: tuple(statistics.median(times[(label, resets)]) / base[base_of[label]] for resets in (False, True))
        for label, *_ in variants
    }
    return base, ratios


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per variant (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    def kernel(available: bool) -> str:
        return "compiled kernel" if available else "PURE-TORCH FALLBACK (compiled kernel unavailable)"

    print(
        f"torch {torch.__version__}, 1 thread, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"refine/GRU kernels: {kernel(kernel_available())}, ordered kernel: {kernel(ordered_kernels.kernel_available())}; "
        f"forward+backward, median of {args.repeats}"
    )
    results = [(size, *bench_size(*size, repeats=args.repeats, seed=args.seed)) for size in SIZES]

    head = ["core"] + [f"T={T} B={B} in={I} H={H}" for T, B, I, H in SIZES]
    rows = [[f"{label} (ms)"] + [f"{1e3 * base[label]:.2f} ms" for _, base, _ in results] for label in BASELINES]
    for label in results[0][2]:
        rows.append([label] + [f"{r[label][0]:.2f}x / {r[label][1]:.2f}x" for _, _, r in results])
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    print("ratio to nn.LSTM (GRU family: nn.GRU) without resets: no resets / with resets inside the sequence")
    print(fmt.format(*head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(fmt.format(*row))


if __name__ == "__main__":
    main()
