"""Environment steps per second, one representative id per family, random actions.

    PYTHONPATH=. python benchmarks/envs.py                 # every family that is installed
    PYTHONPATH=. python benchmarks/envs.py --families tmaze visual_match --seconds 3

Two columns: one env from ``envs.make_env`` (the family's wrappers included, stepped in a plain loop with resets),
and ``envs.make_vec_env`` with ``--n-envs`` in-process copies (SB3's DummyVecEnv + Monitor: what a rollout pays
per env step). Memory Maze is measured as one env only (each copy costs ~1.4 GB), after its maze is built.
Requirements from issue 4: T-maze >= 50,000 steps/s and Visual Match >= 5,000 steps/s for one env.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# This file is named envs.py too: put the repository root first so that `import envs` finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import envs  # noqa: E402

CASES = {  # family -> (id, kwargs)
    "tmaze": ("urgate/TMaze-v0", {"length": 100}),
    "minigrid": ("MiniGrid-MemoryS7-v0", {}),
    "visual_match": ("urgate/PassiveVisualMatch-v0", {}),
    "visual_match (active)": ("urgate/ActiveVisualMatch-v0", {}),
    "popgym": ("popgym-RepeatPreviousEasy-v0", {}),
    "memory_maze": ("urgate/MemoryMaze-9x9-v0", {}),
}


def _actions(space, n: int, seed: int) -> list:
    space.seed(seed)
    return [space.sample() for _ in range(n)]


def single_env_rate(env_id: str, kwargs: dict, seconds: float, chunk: int = 256) -> float:
    env = envs.make_env(env_id, seed=0, **kwargs)
    env.reset()
    actions = _actions(env.action_space, 4096, 0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for action in actions[:chunk]:  # the clock is read once per chunk
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        steps += chunk
        actions = actions[chunk:] + actions[:chunk]
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def vec_env_rate(env_id: str, kwargs: dict, n_envs: int, seconds: float) -> float:
    venv = envs.make_vec_env(env_id, n_envs=n_envs, seed=0, **kwargs)
    venv.reset()
    actions = [np.array(_actions(venv.action_space, n_envs, i)) for i in range(64)]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for action in actions:
            venv.step(action)
        steps += len(actions) * n_envs
    rate = steps / (time.perf_counter() - start)
    venv.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", default=list(CASES), help=f"subset of {list(CASES)}")
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per cell")
    parser.add_argument("--n-envs", type=int, default=8, help="copies in the vectorised column")
    args = parser.parse_args()
    unknown = set(args.families) - set(CASES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {list(CASES)}")

    print(
        f"# `{' '.join(['python', *sys.argv])}`  ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    )
    print()
    print(f"| family | id | steps/s, one env | steps/s, {args.n_envs} envs (DummyVecEnv) |")
    print("|---|---|---:|---:|")
    for name in args.families:
        env_id, kwargs = CASES[name]
        family = envs.family_of(env_id)
        if family.requires is not None and importlib.util.find_spec(family.requires) is None:
            print(f"| {name} | `{env_id}` | not installed ({family.install_hint()}) | |")
            continue
        shown = env_id + "".join(f", {k}={v}" for k, v in kwargs.items())
        slow = family.name == "memory_maze"
        single = single_env_rate(env_id, kwargs, args.seconds * (5 if slow else 1), chunk=4 if slow else 256)
        vec = (
            "n/a (1.4 GB per env)"
            if family.name == "memory_maze"
            else f"{vec_env_rate(env_id, kwargs, args.n_envs, args.seconds):,.0f}"
        )
        print(f"| {name} | `{shown}` | {single:,.0f} | {vec} |", flush=True)


if __name__ == "__main__":
    main()
