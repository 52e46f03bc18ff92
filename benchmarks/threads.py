"""A user's own SB3 script with the gated policy, on torch's default thread count against one thread.

The script is what the README's SB3 section shows (the table: docs/speed.md, Torch threads): stock sb3-contrib
``RecurrentPPO`` with ``MlpGatedPolicy`` (core ``ur``, 128 units) on the T-maze, 8 envs x 128 steps, batch 256, ``--steps`` environment steps. Each setting
runs in a fresh process (torch's thread pool is fixed once it has started), alternating default / 1 thread
``--repeats`` times, so a busy machine slows both alike; the table shows the median steps/s of each.

Usage: ``PYTHONPATH=. python benchmarks/threads.py [--steps 8192] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

USER_SCRIPT = """
import json, sys, time
import torch
threads = int(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
from sb3_contrib import RecurrentPPO
import envs
from policies import MlpGatedPolicy

env = envs.make_vec_env("urgate/TMaze-v0", n_envs=8, seed=0, length=20)
model = RecurrentPPO(MlpGatedPolicy, env, n_steps=128, batch_size=256, n_epochs=4, seed=0,
                     policy_kwargs=dict(core="ur", lstm_hidden_size=128), device="cpu")
t0 = time.perf_counter()
model.learn(int(sys.argv[1]))
print(json.dumps({"threads": torch.get_num_threads(), "fps": model.num_timesteps / (time.perf_counter() - t0)}))
"""


def run(steps: int, threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # torch's own default, as in a user's shell
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run(
        [sys.executable, "-c", USER_SCRIPT, str(steps), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    fps: dict[str, list[float]] = {"default": [], "1": []}
    used = {}
    for _ in range(args.repeats):
        for name, threads in (("default", 0), ("1", 1)):
            result = run(args.steps, threads)
            fps[name].append(result["fps"])
            used[name] = result["threads"]
    base = statistics.median(fps["default"])
    print(f"| torch threads | steps/s (median of {args.repeats}) | runs | vs default |")
    print("|---|---|---|---|")
    for name in ("default", "1"):
        med = statistics.median(fps[name])
        runs = ", ".join(f"{f:.0f}" for f in fps[name])
        label = f"default ({used[name]})" if name == "default" else "1 (`torch.set_num_threads(1)`)"
        print(f"| {label} | {med:.0f} | {runs} | {med / base:.2f}x |")
    print(f"({os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} at the end)")


if __name__ == "__main__":
    main()
