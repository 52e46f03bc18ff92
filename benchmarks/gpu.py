"""The refine cores on a GPU: Triton kernels against the pure-torch loop and cuDNN's LSTM, then end-to-end PPO.

Part 1, per size (T, B, input, H): the median time of one training-style call (``out, _ = core(x)``,
``out.sum().backward()``, synchronised) of ``ur`` through the Triton kernels, of ``ur`` through the pure-torch loop
(``recurrence.refine_recurrence_reference``) and of torch's ``nn.LSTM`` (cuDNN), plus the largest difference between the Triton
and pure-torch outputs and input gradients at that size (the interpreter-run tests cannot check the GPU's memory
model at scale; this does). Sizes: the three of ``benchmarks/cores.py`` plus (128, 64, 128, 256) and
(1024, 16, 64, 128).

Part 2: end-to-end ``agents.FastRecurrentPPO`` training (``run_rl.py train --device cuda``) of lstm and ur on the
T-maze and on MiniGrid-MemoryS7 with their configs, periodic evaluation and checkpoints off; reported: summary.json's
fps (env steps per second of ``learn()``), and whether the run warned that it fell back to pure torch.

Usage (GPU machine, under 5 minutes): ``bash benchmarks/gpu.sh`` (= ``python benchmarks/gpu.py``).
``--dry-run`` runs the same code on this CPU with tiny sizes and step counts: the Triton kernels under Triton's
interpreter, the PPO runs on ``--device cpu``; it checks the script, not any speed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cores import SIZES as CORE_SIZES  # noqa: E402
from policies import cores, make_core, triton_refine  # noqa: E402
from policies.recurrence import refine_recurrence_reference  # noqa: E402

SIZES = (*CORE_SIZES, (128, 64, 128, 256), (1024, 16, 64, 128))
DRY_SIZES = ((3, 2, 4, 8), (5, 17, 3, 20))
# (env id, config, timesteps on the GPU): each run a few tens of seconds at the expected GPU rates.
PPO_RUNS = (("urgate/TMaze-v0", "tmaze_long", 20480), ("MiniGrid-MemoryS7-v0", "minigrid", 10240))
PPO_CORES = ("lstm", "ur")
DRY_TIMESTEPS = 1024
FALLBACK_WARNING = "pure-torch recurrence"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` synchronised calls, after two warm-up calls."""
    for _ in range(2):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def core_variants(T: int, B: int, I: int, H: int, device: torch.device):
    """Callables running one forward+backward pass per variant, and a function returning the outputs+gradients."""
    torch.manual_seed(0)
    x = torch.randn(T, B, I, device=device, requires_grad=True)
    ur = make_core("ur", I, H).to(device)
    lstm = nn.LSTM(I, H).to(device)

    def run(module, recurrence=None):
        # The refine core's recurrence is swapped in directly, so each row times the path it names.
        def step():
            saved = cores.refine_recurrence
            if recurrence is not None:
                cores.refine_recurrence = recurrence
            try:
                module.zero_grad(set_to_none=True)
                x.grad = None
                out, _ = module(x)
                out.sum().backward()
                return [out.detach(), x.grad] + [p.grad for p in module.parameters()]
            finally:
                cores.refine_recurrence = saved

        return step

    return {
        "ur (triton)": run(ur, triton_refine.refine_recurrence_triton),
        "ur (pure torch)": run(ur, refine_recurrence_reference),
        "nn.LSTM (cuDNN)" if device.type == "cuda" else "nn.LSTM": run(lstm),
    }


def bench_cores(sizes, device: torch.device, repeats: int) -> None:
    print(f"\n## fwd+bwd of one call, median of {repeats} (ms); ratio to nn.LSTM; max |triton - pure torch|")
    print("| T | B | in | H | ur (triton) | ur (pure torch) | nn.LSTM | triton / LSTM | torch / LSTM | max diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for T, B, I, H in sizes:
        variants = core_variants(T, B, I, H, device)
        names = list(variants)
        ms = {name: 1e3 * time_call(variants[name], device, repeats) for name in names}
        fast, slow = variants[names[0]](), variants[names[1]]()
        diff = max((a - b).abs().max().item() for a, b in zip(fast, slow, strict=True))
        base = ms[names[2]]
        print(
            f"| {T} | {B} | {I} | {H} | {ms[names[0]]:.2f} | {ms[names[1]]:.2f} | {base:.2f} | "
            f"{ms[names[0]] / base:.2f}x | {ms[names[1]] / base:.2f}x | {diff:.1e} |",
            flush=True,
        )


def bench_ppo(device: str, dry_run: bool) -> None:
    print(f"\n## end-to-end FastRecurrentPPO (run_rl.py train --device {device}), env steps/s of learn()")
    print("| env | core | steps | fps | fell back to pure torch |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="urgate_gpu_bench_") as tmp:
        for env_id, config, timesteps in PPO_RUNS:
            steps = DRY_TIMESTEPS if dry_run else timesteps
            for core in PPO_CORES:
                run_dir = Path(tmp) / f"{config}-{core}"
                cmd = [
                    sys.executable,
                    str(ROOT / "run_rl.py"),
                    "train",
                    "--env",
                    env_id,
                    "--config",
                    config,
                    "--core",
                    core,
                    "--device",
                    device,
                    "--timesteps",
                    str(steps),
                    "--run-dir",
                    str(run_dir),
                    "--no-progress",
                    "--set",
                    "eval.freq=0",
                    "--set",
                    "eval.n_episodes=1",
                    "--set",
                    "checkpoint_freq=0",
                ]
                done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
                if done.returncode != 0:
                    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
                    print(f"| {env_id} | {core} | {steps} | FAILED (exit {done.returncode}): {' / '.join(tail)} | |")
                    continue
                summary = json.loads((run_dir / "summary.json").read_text())
                fell_back = "YES" if FALLBACK_WARNING in done.stderr else "no"
                print(
                    f"| {env_id} | {core} | {summary['timesteps']} | {summary['fps']:.0f} | {fell_back} |", flush=True
                )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per variant and size (median)")
    parser.add_argument(
        "--dry-run", action="store_true", help="this CPU, tiny sizes, the interpreter: checks the script"
    )
    parser.add_argument("--skip-ppo", action="store_true", help="only the core timings")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.dry_run:
        if not triton_refine.INTERPRETED:
            sys.exit("--dry-run needs Triton's interpreter (no CUDA device, or TRITON_INTERPRET=1)")
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run on a GPU machine, or pass --dry-run to check the script on this CPU")
        device = torch.device("cuda")
    if triton_refine.triton is None:
        sys.exit(triton_refine._IMPORT_ERROR)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter, dry run)"
    print(f"# {name}; torch {torch.__version__}, triton {triton_refine.triton.__version__}")
    verdict = triton_refine.self_check(device, torch.float32)
    print(f"self-check (float32): {verdict or 'passed'}")
    if verdict is not None:
        sys.exit(1)
    torch.set_num_threads(1)
    bench_cores(DRY_SIZES if args.dry_run else SIZES, device, 1 if args.dry_run else args.repeats)
    if not args.skip_ppo:
        bench_ppo(device.type, args.dry_run)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
