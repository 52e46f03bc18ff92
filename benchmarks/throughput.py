"""End-to-end training throughput (env steps per second) of stock RecurrentPPO against ours, per core.

Three ways to train, on the same env, seed and hyperparameters, one torch thread:

- ``stock``: sb3-contrib ``RecurrentPPO`` with its own LSTM policy;
- ``policy``: the same stock ``RecurrentPPO`` with our gated policy (one core call per minibatch);
- ``fast``: ``agents.FastRecurrentPPO`` with our gated policy (whole unpadded sequences built once per rollout).

Tasks:

- ``cartpole``: CartPole-v1 with the velocity entries zeroed and RL Zoo's CartPoleNoVel-v1 hyperparameters for
  RecurrentPPO (8 envs, n_steps 32, batch 256, 20 epochs, gae 0.8, gamma 0.98, linear lr 1e-3,
  lstm_hidden_size 64, critic LSTM, net_arch pi/vf [64], ReLU, no orthogonal init);
- ``minigrid``: MiniGrid-MemoryS7-v0 through ``envs.make_vec_env`` (Dict observation: symbolic 7x7x3 view and
  direction), 8 envs, with RecurrentPPO's and the MultiInput policy's default sizes and hyperparameters
  (lstm_hidden_size 256, net_arch [64, 64], n_steps 128, batch 128, 10 epochs).

Every variant trains a fresh model for ``--steps`` env steps; variants run interleaved, round after round in a
rotated order, all in this one process, so a change in machine load hits all of them. Reported: the best round
of each variant in env steps per CPU second of this process (robust on a shared machine: with one thread it is
the speed on an idle core) and per wall second, and the ratio to stock's best.

Usage: ``PYTHONPATH=. python benchmarks/throughput.py [--tasks cartpole,minigrid] [--cores lstm,chrono,u,r,ur]
[--rounds 3] [--steps 4096,2048]``

``--tasks tmaze`` measures the long-horizon job instead: what ``python run_rl.py train --config tmaze_long --set
env_kwargs.length=L --core C`` builds (configs/tmaze_long.yaml, its ``auto`` rollout sizes), for each length in
``--lengths`` and core, each ``model.learn`` in a fresh child process (so its peak RSS is its own; the compiled
kernel is loaded before timing), plus the same VecEnv stepped with random actions (the ceiling). Reported: env steps
per CPU second and per wall second (best round), the share of time in ``collect_rollouts`` and ``train``, the
rollout buffer's bytes per step and the child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sb3_contrib import RecurrentPPO  # noqa: E402
from stable_baselines3.common.vec_env import VecEnv  # noqa: E402

import envs  # noqa: E402
from agents import FastRecurrentPPO  # noqa: E402
from benchmarks.learning import cartpole_novel_env  # noqa: E402
from policies import CORE_NAMES, MlpGatedPolicy, MultiInputGatedPolicy, make_core  # noqa: E402

# The targets: ratio to stock for (path, core); the policy-path target holds on cartpole.
TARGETS = {
    ("policy", "lstm"): 2.5,
    **{("fast", c): 4.0 for c in ("lstm", "chrono", "u")},
    **{("fast", c): 3.0 for c in ("r", "ur")},
}


@dataclass
class Task:
    """One benchmark task: env factory, stock and gated policies, and shared hyperparameters."""

    name: str
    make_env: Callable[[int], VecEnv]
    stock_policy: str
    gated_policy: type
    algo_kwargs: dict[str, Any]
    policy_kwargs: dict[str, Any] = field(default_factory=dict)


TASKS = {
    "cartpole": Task(
        "cartpole",
        lambda seed: cartpole_novel_env(8, seed),
        "MlpLstmPolicy",
        MlpGatedPolicy,
        dict(
            n_steps=32,
            batch_size=256,
            n_epochs=20,
            gae_lambda=0.8,
            gamma=0.98,
            learning_rate=lambda progress: 1e-3 * progress,
        ),
        dict(
            lstm_hidden_size=64,
            enable_critic_lstm=True,
            net_arch=dict(pi=[64], vf=[64]),
            activation_fn=torch.nn.ReLU,
            ortho_init=False,
        ),
    ),
    "minigrid": Task(
        "minigrid",
        lambda seed: envs.make_vec_env("MiniGrid-MemoryS7-v0", n_envs=8, seed=seed),
        "MultiInputLstmPolicy",
        MultiInputGatedPolicy,
        {},
    ),
}


def build(task: Task, path: str, core: str | None, seed: int) -> RecurrentPPO:
    """A fresh model for one variant: ``path`` in stock/policy/fast, ``core`` None for stock."""
    policy_kwargs = dict(task.policy_kwargs)
    if core is not None:
        policy_kwargs["core"] = core
    algo = FastRecurrentPPO if path == "fast" else RecurrentPPO
    policy = task.stock_policy if core is None else task.gated_policy
    return algo(policy, task.make_env(seed), policy_kwargs=policy_kwargs, seed=seed, **task.algo_kwargs)


def measure(model: RecurrentPPO, steps: int) -> tuple[float, float]:
    """(env steps per CPU second, env steps per wall second) of ``model.learn(steps)``."""
    cpu, wall = time.process_time(), time.perf_counter()
    model.learn(steps)
    return steps / (time.process_time() - cpu), steps / (time.perf_counter() - wall)


def warm_up() -> None:
    """Load the compiled refine kernel (built on first use) and torch's kernels before anything is timed."""
    for name in CORE_NAMES:
        core = make_core(name, 4, 8)
        out, _ = core(torch.zeros(3, 2, 4), episode_starts=torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
        out.sum().backward()


def run_task(task: Task, cores: list[str], paths: list[str], rounds: int, steps: int, seed: int) -> None:
    variants: list[tuple[str, str | None]] = [("stock", None)] + [(p, c) for p in paths for c in cores]
    results: dict[tuple[str, str | None], list[tuple[float, float]]] = {v: [] for v in variants}
    for r in range(rounds):
        shift = r % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            results[variant].append(measure(build(task, *variant, seed), steps))
            print(
                f"  round {r + 1}: {variant[0]:6s} {variant[1] or '-':6s} {results[variant][-1][0]:7.0f} /cpu-s",
                file=sys.stderr,
            )

    stock_cpu = max(c for c, _ in results[("stock", None)])
    stock_wall = max(w for _, w in results[("stock", None)])
    print(f"\n### {task.name}: {steps} env steps per run, best of {rounds} rounds, seed {seed}\n")
    print("| path | core | steps/s (CPU) | x stock | steps/s (wall) | x stock | target |")
    print("|---|---|---|---|---|---|---|")
    for path, core in variants:
        cpu = max(c for c, _ in results[(path, core)])
        wall = max(w for _, w in results[(path, core)])
        target = TARGETS.get((path, core or ""))
        if target is None or (path == "policy" and task.name != "cartpole"):
            verdict = ""
        else:
            verdict = f">= {target:g}x: {'ok' if cpu / stock_cpu >= target else 'MISSED'}"
        label = {"stock": "stock RecurrentPPO", "policy": "RecurrentPPO + ours", "fast": "FastRecurrentPPO"}[path]
        print(
            f"| {label} | {core or task.stock_policy} | {cpu:.0f} | {cpu / stock_cpu:.2f} | {wall:.0f} | "
            f"{wall / stock_wall:.2f} | {verdict} |"
        )


# -- the long-horizon T-maze job ---------------------------------------------------------------------------------


def tmaze_child(length: int, core: str, steps: int, extra: list[str] | None = None) -> dict[str, float]:
    """One measurement (in its own process): the T-maze config's model, or random actions for ``core="random"``."""
    import numpy as np

    from agents.run import factory
    from agents.run.config import load_config

    torch.set_num_threads(1)
    overrides = [f"env_kwargs.length={length}", *(extra or [])]
    cfg = load_config("tmaze_long", None, overrides + ([f"core={core}"] if core != "random" else []))
    env = factory.make_training_env(cfg)
    if core == "random":
        env.reset()
        rng = np.random.default_rng(0)
        actions = rng.integers(0, 3, size=(steps // env.num_envs, env.num_envs))
        cpu, wall = time.process_time(), time.perf_counter()
        for a in actions:
            env.step(a)
        n = actions.size
        return dict(cpu=n / (time.process_time() - cpu), wall=n / (time.perf_counter() - wall), collect=1.0, train=0.0)
    warm_up()
    model = factory.build_model(cfg, env)
    spent = {"collect": 0.0, "train": 0.0}

    def timed(name: str, fn: Callable) -> Callable:
        def call(*args, **kwargs):
            t = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - t

        return call

    model.collect_rollouts = timed("collect", model.collect_rollouts)
    model.train = timed("train", model.train)
    rollout = model.n_steps * model.n_envs
    cpu, wall = time.process_time(), time.perf_counter()
    model.learn(max(steps, rollout))
    n = model.num_timesteps
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    buf = model.rollout_buffer
    arrays = [v for v in vars(buf).values() if isinstance(v, np.ndarray)]
    return dict(
        cpu=n / cpu,
        wall=n / wall,
        collect=spent["collect"] / cpu,
        train=spent["train"] / cpu,
        n_steps=model.n_steps,
        n_envs=model.n_envs,
        batch_size=model.batch_size,
        sequence_length=buf.sequence_length,
        bytes_per_step=sum(a.nbytes for a in arrays) / (buf.buffer_size * buf.n_envs),
        state_bytes_per_step=sum(
            a.nbytes for a in (buf.hidden_states_pi, buf.cell_states_pi, buf.hidden_states_vf, buf.cell_states_vf)
        )
        / (buf.buffer_size * buf.n_envs),
    )


def run_tmaze(lengths: list[int], cores: list[str], rounds: int, steps: int, extra: list[str]) -> None:
    variants = [(n, c) for n in lengths for c in [*cores, "random"]]
    results: dict[tuple[int, str], list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(rounds):
        shift = r % len(variants)
        for length, core in variants[shift:] + variants[:shift]:
            cmd = [sys.executable, __file__, "--child", f"{length},{core},{steps}", *(f"--set={o}" for o in extra)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results[(length, core)].append(json.loads(out))
            print(
                f"  round {r + 1}: T-maze {length} {core:6s} {results[(length, core)][-1]['cpu']:8.0f} /cpu-s",
                file=sys.stderr,
            )
    print(
        f"\n### T-maze, configs/tmaze_long.yaml (auto rollout sizes): {steps} env steps per run, best of {rounds} rounds\n"
    )
    print(
        "| length | core | rollout (envs x n_steps), minibatch | steps/s (CPU) | steps/s (wall) | collect | train "
        "| buffer B/step (h, c) | peak RSS MB |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for length, core in variants:
        best = max(results[(length, core)], key=lambda m: m["cpu"])
        wall = max(m["wall"] for m in results[(length, core)])
        if core == "random":
            print(
                f"| {length} | random actions (ceiling) | - | {best['cpu']:.0f} | {wall:.0f} | - | - | - | {best['rss']:.0f} |"
            )
            continue
        print(
            f"| {length} | {core} | {best['n_envs']} x {best['n_steps']}, {best['batch_size']} "
            f"(sequences of {best['sequence_length']}) | {best['cpu']:.0f} | {wall:.0f} | {best['collect']:.0%} | "
            f"{best['train']:.0%} | {best['bytes_per_step']:.0f} ({best['state_bytes_per_step']:.0f}) | "
            f"{best['rss']:.0f} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="cartpole,minigrid", help="comma-separated: cartpole, minigrid")
    parser.add_argument("--cores", default=",".join(CORE_NAMES), help="comma-separated core names")
    parser.add_argument("--paths", default="policy,fast", help="comma-separated: policy, fast")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", default="4096,2048", help="env steps per run, per task (one value: all tasks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lengths", default="100,1000", help="T-maze lengths for --tasks tmaze")
    parser.add_argument("--set", action="append", default=[], help="config override for --tasks tmaze, repeatable")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.child:
        length, core, steps = args.child.split(",")
        result = tmaze_child(int(length), core, int(steps), args.set)
        result["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    if args.tasks == "tmaze":
        cores = (
            [c for c in args.cores.split(",") if c] if args.cores != ",".join(CORE_NAMES) else ["lstm", "chrono", "ur"]
        )
        run_tmaze(
            [int(n) for n in args.lengths.split(",")], cores, args.rounds, int(args.steps.split(",")[0]), args.set
        )
        return
    tasks = [TASKS[t] for t in args.tasks.split(",") if t]
    steps = [int(s) for s in args.steps.split(",")]
    steps += [steps[-1]] * (len(tasks) - len(steps))
    cores = [c for c in args.cores.split(",") if c]
    warm_up()
    print(f"torch {torch.__version__}, 1 thread; stock = sb3-contrib RecurrentPPO with its LSTM policy")
    for task, n in zip(tasks, steps, strict=False):
        run_task(task, cores, [p for p in args.paths.split(",") if p], args.rounds, n, args.seed)


if __name__ == "__main__":
    main()
