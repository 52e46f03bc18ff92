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

``--tasks grid`` measures the grid memory tasks, MiniGrid-MemoryS17Random (``configs/minigrid.yaml``) and Passive
Visual Match with cue 15 and distractor 60 (``configs/visual_match.yaml``), for each core in ``--cores`` (default
``ur,lstm,chrono``), two ways side by side: ``old``, SB3's DummyVecEnv over the single envs with the family config's
first rollout sizes (8 envs, n_steps 128, batch 256), and ``new``, the family's vectorised VecEnv with the T-maze's
recipe (64 envs, ``n_steps: auto`` so whole episodes lie in one training sequence, ``batch_size: auto``, one core
per step: ``shared_lstm``). Each cell runs in a fresh child process, as for the T-maze, and learns ``--steps`` env
steps or one rollout, whichever is more (64 x 1472 steps for S17Random); random-action rows of both VecEnvs give the env's ceiling. ``--quick``:
one round, 10k steps (random actions: 100k). ``--grid-paths`` may add the new path with another model size,
``new_UNITSxFEATURES`` (core units x extractor outputs: 128x128, 128x64, 64x128, 64x64), measured in the same
rotation. Targets: the new path with ``ur`` >= 15,000 steps per CPU second on both tasks, the vectorised env alone
>= 200,000.

``--tasks extractor``: the symbolic extractor (``policies.extractors.SymbolicGridExtractor``) alone at its default
conv channels and smaller ones: CPU time per observation of the rollout's forward and of training's forward and
backward, and the steps per CPU second they alone allow at 4 epochs.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
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
from policies import CORE_NAMES, MlpGatedPolicy, MultiInputGatedPolicy, kernels, make_core  # noqa: E402

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


def product_weights(policy: torch.nn.Module) -> int:
    """Weights that enter a matrix product once per observation: every 2-D parameter of the policy but an
    embedding table (the bag extractor looks rows up and sums them, it multiplies nothing)."""
    tables = {id(m.weight) for m in policy.modules() if isinstance(m, torch.nn.EmbeddingBag | torch.nn.Embedding)}
    return sum(p.numel() for p in policy.parameters() if p.dim() == 2 and id(p) not in tables)


def flop_per_step(weights: int, n_epochs: int) -> int:
    """Floating-point operations of the products per env step: a multiply-add per weight in the rollout's forward
    pass, and three per weight (forward, input gradient, weight gradient) in each of ``n_epochs`` training passes."""
    return 2 * weights * (1 + 3 * n_epochs)


def product_rate(rows: int, inner: int, cols: int, seconds: float = 1.0, product: Callable = torch.mm) -> float:
    """GFLOP per CPU second of one thread's (rows x inner) @ (inner x cols) ``product`` (torch's by default), best of 5
    timings."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    best = float("inf")
    for _ in range(5):
        n, start = 0, time.process_time()
        while time.process_time() - start < seconds / 5:
            product(a, b)
            n += 1
        best = min(best, (time.process_time() - start) / n)
    return 2 * rows * inner * cols / best / 1e9


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


def config_child(
    config: str,
    env_id: str | None,
    overrides: list[str],
    core: str,
    steps: int,
    dummy: bool = False,
    profile: str | None = None,
) -> dict[str, float]:
    """One measurement (in its own process): the model a config builds, or random actions for ``core="random"``.

    :param config: config name (``configs/<config>.yaml``)
    :param env_id: env id overriding the config's, or None
    :param overrides: ``key=value`` config overrides
    :param core: memory core, or ``"random"`` for the VecEnv alone with random actions
    :param steps: env steps to learn (at least one rollout) or to step
    :param dummy: SB3's DummyVecEnv over single envs instead of the family's vectorised VecEnv
    :param profile: write cProfile's top functions of ``model.learn`` (by own time, then cumulative) to this file
    """
    import numpy as np

    from agents.run import factory
    from agents.run.config import load_config

    torch.set_num_threads(1)
    cfg = load_config(config, env_id, overrides + ([f"core={core}"] if core != "random" else []))
    if dummy:
        from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
        from stable_baselines3.common.vec_env import DummyVecEnv

        from envs.registry import _Builder

        env = sb3_make_vec_env(
            _Builder(cfg.env_id, cfg.env_kwargs), n_envs=cfg.n_envs, seed=cfg.seed, vec_env_cls=DummyVecEnv
        )
    else:
        env = factory.make_training_env(cfg)
    if core == "random":
        env.reset()
        rng = np.random.default_rng(0)
        actions = rng.integers(0, env.action_space.n, size=(max(steps // env.num_envs, 1), env.num_envs))
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
    profiler = cProfile.Profile(time.process_time) if profile else None
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.runcall(model.learn, max(steps, rollout))
    else:
        model.learn(max(steps, rollout))
    n = model.num_timesteps
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if profiler is not None:
        with open(profile, "w") as f:
            f.write(f"{' '.join(overrides)} core={core}: cProfile of model.learn({n}), CPU seconds\n")
            stats = pstats.Stats(profiler, stream=f).strip_dirs()
            stats.sort_stats("tottime").print_stats(25)
            stats.sort_stats("cumulative").print_stats(40)
    buf = model.rollout_buffer
    arrays = [v for v in vars(buf).values() if isinstance(v, np.ndarray)]
    return dict(
        cpu=n / cpu,
        wall=n / wall,
        collect=spent["collect"] / cpu,
        train=spent["train"] / cpu,
        n_steps=model.n_steps,
        n_envs=model.n_envs,
        units=model.policy.lstm_output_dim,
        features=model.policy.features_dim,
        flop=flop_per_step(product_weights(model.policy), model.n_epochs),
        batch_size=model.batch_size,
        sequence_length=buf.sequence_length,
        bytes_per_step=sum(a.nbytes for a in arrays) / (buf.buffer_size * buf.n_envs),
        state_bytes_per_step=sum(
            a.nbytes for a in (buf.hidden_states_pi, buf.cell_states_pi, buf.hidden_states_vf, buf.cell_states_vf)
        )
        / (buf.buffer_size * buf.n_envs),
    )


def child(spec: dict[str, Any]) -> dict[str, float]:
    """Run ``config_child(**spec)`` in a fresh process; its result with the child's peak RSS (MB)."""
    cmd = [sys.executable, __file__, "--child", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def run_tmaze(lengths: list[int], cores: list[str], rounds: int, steps: int, extra: list[str]) -> None:
    variants = [(n, c) for n in lengths for c in [*cores, "random"]]
    results: dict[tuple[int, str], list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(rounds):
        shift = r % len(variants)
        for length, core in variants[shift:] + variants[:shift]:
            overrides = [f"env_kwargs.length={length}", *extra]
            results[(length, core)].append(
                child(dict(config="tmaze_long", env_id=None, overrides=overrides, core=core, steps=steps))
            )
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


# -- the grid memory tasks: DummyVecEnv with the first config against the vectorised VecEnv with the T-maze recipe --

GRID_TASKS = {  # name -> (label, config, env id, overrides)
    "memory": ("MiniGrid-MemoryS17Random", "minigrid", "MiniGrid-MemoryS17Random-v0", []),
    "visual_match": (
        "Passive Visual Match, cue 15, distractor 60",
        "visual_match",
        "urgate/PassiveVisualMatch-v0",
        # the task itself; the extractor as measured before configs/visual_match.yaml turned presence on
        [
            "env_kwargs.cue_steps=15",
            "env_kwargs.distractor_steps=60",
            "curriculum.start=null",
            "policy_kwargs.features_extractor_kwargs.presence=false",
        ],
    ),
}
_NEW_PATH = [
    "n_envs=64",
    "ppo.n_steps=auto",
    "ppo.batch_size=auto",
    "policy_kwargs.shared_lstm=true",
    "policy_kwargs.enable_critic_lstm=false",
]
GRID_PATHS = {  # path -> (DummyVecEnv over single envs?, overrides)
    "old": (True, ["n_envs=8", "ppo.n_steps=128", "ppo.batch_size=256"]),
    "new": (False, _NEW_PATH),
    # the new path with a core of UNITS units over FEATURES extractor outputs (new_UNITSxFEATURES)
    **{
        f"new_{units}x{features}": (
            False,
            [
                *_NEW_PATH,
                f"policy_kwargs.lstm_hidden_size={units}",
                f"policy_kwargs.features_extractor_kwargs.features_dim={features}",
            ],
        )
        for units, features in ((128, 128), (128, 64), (64, 128), (64, 64))
    },
}
GRID_TARGET_CPU = 15_000  # steps per CPU second, new path, ur, end to end
GRID_TARGET_ENV = 200_000  # steps per CPU second, vectorised env alone


def run_grid(
    tasks: list[str],
    paths: list[str],
    cores: list[str],
    rounds: int,
    steps: int,
    extra: list[str],
    profile: Path | None = None,
) -> None:
    """The grid table: each (task, core, path) cell in a fresh child process, round after round in rotated order.

    :param profile: a folder: each training cell also writes its cProfile there (rates then include its overhead)
    """
    # the env alone once per VecEnv: the new_* paths differ from new only in the model
    variants = [
        (t, p, c) for t in tasks for c in [*cores, "random"] for p in paths if c != "random" or p in ("old", "new")
    ]
    results: dict[tuple[str, str, str], list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(rounds):
        shift = r % len(variants)
        for task, path, core in variants[shift:] + variants[:shift]:
            _, config, env_id, task_overrides = GRID_TASKS[task]
            dummy, path_overrides = GRID_PATHS[path]
            spec = dict(
                config=config,
                env_id=env_id,
                overrides=[*task_overrides, *path_overrides, *extra],
                core=core,
                steps=steps,
                dummy=dummy,
            )
            if core == "random":  # the env alone is cheap: more steps for a stable rate
                spec["steps"] = max(steps, 100_000)
            elif profile is not None:
                profile.mkdir(parents=True, exist_ok=True)
                spec["profile"] = str(profile / f"{task}-{path}-{core}.txt")
            results[(task, path, core)].append(child(spec))
            print(
                f"  round {r + 1}: {task:12s} {path} {core:6s} {results[(task, path, core)][-1]['cpu']:8.0f} /cpu-s",
                file=sys.stderr,
            )
    print(f"\n### Grid memory tasks: at least {steps} env steps (one rollout) per run, best of {rounds} rounds\n")
    print(
        "| task | core | path: VecEnv, envs x n_steps, minibatch | steps/s (CPU) | x old | steps/s (wall) | x old "
        "| collect | train | MFLOP/step | GFLOP/CPU-s | target |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for task, path, core in variants:
        best = max(results[(task, path, core)], key=lambda m: m["cpu"])
        wall = max(m["wall"] for m in results[(task, path, core)])
        old = results.get((task, "old", core)) or [dict(cpu=float("nan"), wall=float("nan"))]
        old_cpu, old_wall = max(m["cpu"] for m in old), max(m["wall"] for m in old)
        venv = "DummyVecEnv" if GRID_PATHS[path][0] else "vectorised"
        if core == "random":
            target = GRID_TARGET_ENV if path == "new" else None
            label, sizes, phases = (
                "random actions (env alone)",
                f"{path}: {venv}, {GRID_PATHS[path][1][0][7:]}",
                "- | - | - | -",
            )
        else:
            target = GRID_TARGET_CPU if path.startswith("new") and core == "ur" else None
            label = core
            phases = (
                f"{best['collect']:.0%} | {best['train']:.0%} | {best['flop'] / 1e6:.2f} | "
                f"{best['flop'] * best['cpu'] / 1e9:.1f}"
            )
            sizes = (
                f"{path}: {venv}, {best['n_envs']} x {best['n_steps']}, {best['batch_size']}; "
                f"{best['units']} units, {best['features']} features"
            )
        verdict = "" if target is None else f">= {target:,}: {'ok' if best['cpu'] >= target else 'MISSED'}"
        print(
            f"| {GRID_TASKS[task][0]} | {label} | {sizes} | {best['cpu']:,.0f} | {best['cpu'] / old_cpu:.1f} | {wall:,.0f} | "
            f"{wall / old_wall:.1f} | {phases} | {verdict} |"
        )
    print(
        "\nMFLOP/step: the products' floating-point operations per env step (`flop_per_step`: 2 per weight in the "
        "rollout, 6 per weight in each training epoch; the bag's lookups and elementwise work not counted). For "
        "comparison, a 512 x 128 x 512 product (the core's input projection of a 512-step minibatch) on one thread ran "
        f"at {product_rate(512, 128, 512):.0f} GFLOP/CPU-s with torch's BLAS and at "
        f"{product_rate(512, 128, 512, product=kernels.matmul):.0f} with `policies.kernels.matmul` (the compiled "
        "loop where the kernels are built for AVX-512, else torch's) in this process."
    )
    print(f"\nload average (1 min) after the table: {os.getloadavg()[0]:.1f}")


def extractor_table(channel_sets: list[tuple[int, int, int]], n_epochs: int = 4, repeats: int = 20) -> None:
    """The symbolic extractors alone, on Visual Match's observation space: microseconds per observation for the
    rollout's forward (64 envs, no gradient) and a training minibatch's forward and backward (1024), and the env
    steps per CPU second those two alone would allow with ``n_epochs`` epochs (each step is seen once in the rollout
    and ``n_epochs`` times in training): a ceiling for the whole learner. The bag extractor is measured twice: with
    its ``BagSum`` backward and with torch's ``nn.EmbeddingBag`` backward (the same gradient), and with ``presence``."""
    import numpy as np
    from torch.nn import functional as F

    from policies.extractors import SymbolicGridBagExtractor, SymbolicGridExtractor

    class StockBagBackward(SymbolicGridBagExtractor):
        def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
            return F.relu(self.bag(self.one_hot_slots(observations)) + self.bias)

    space = envs.make_vec_env("urgate/PassiveVisualMatch-v0", n_envs=1, seed=0).observation_space
    space.seed(0)

    def batch(n: int) -> dict[str, torch.Tensor]:
        image = torch.as_tensor(np.stack([space["image"].sample() for _ in range(n)])).float()
        return {"image": image, "direction": F.one_hot(torch.arange(n) % 4, 4).float()}

    def per_obs(fn: Callable[[], Any], n: int) -> float:
        fn()
        best = float("inf")
        for _ in range(3):
            t = time.process_time()
            for _ in range(repeats):
                fn()
            best = min(best, (time.process_time() - t) / repeats / n * 1e6)
        return best

    print(f"\n### Symbolic extractors alone (7x7 view), CPU microseconds per observation, {n_epochs} epochs\n")
    print("| extractor | parameters | rollout forward (64) | train forward+backward (1024) | steps/s ceiling |")
    print("|---|---:|---:|---:|---:|")
    small, large = batch(64), batch(1024)
    extractors: list[tuple[str, torch.nn.Module]] = [
        (f"conv {', '.join(map(str, c))}", SymbolicGridExtractor(space, channels=c)) for c in channel_sets
    ]
    extractors += [
        ("bag, BagSum backward", SymbolicGridBagExtractor(space)),
        ("bag, nn.EmbeddingBag backward", StockBagBackward(space)),
        ("bag with presence (configs/visual_match.yaml)", SymbolicGridBagExtractor(space, presence=True)),
    ]
    for label, extractor in extractors:

        def forward(extractor: torch.nn.Module = extractor) -> None:
            with torch.no_grad():
                extractor(small)

        fwd = per_obs(forward, 64)
        train = per_obs(lambda extractor=extractor: extractor(large).sum().backward(), 1024)
        params = sum(p.numel() for p in extractor.parameters())
        print(f"| {label} | {params:,} | {fwd:.1f} | {train:.1f} | {1e6 / (fwd + n_epochs * train):,.0f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tasks", default="cartpole,minigrid", help="comma-separated: cartpole, minigrid; or tmaze; or grid"
    )
    parser.add_argument("--cores", default=",".join(CORE_NAMES), help="comma-separated core names")
    parser.add_argument("--paths", default="policy,fast", help="comma-separated: policy, fast")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--steps", help="env steps per run, per task (one value: all tasks); default 4096,2048, grid 40000"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lengths", default="100,1000", help="T-maze lengths for --tasks tmaze")
    parser.add_argument(
        "--set", action="append", default=[], help="config override for --tasks tmaze or grid, repeatable"
    )
    parser.add_argument("--quick", action="store_true", help="--tasks grid: one round of 10k steps per cell")
    parser.add_argument("--grid-tasks", default=",".join(GRID_TASKS), help="--tasks grid: memory, visual_match")
    parser.add_argument(
        "--grid-paths",
        default="old,new",
        help="--tasks grid, comma-separated: old, new (the family config's sizes), or new at other sizes: "
        + ", ".join(p for p in GRID_PATHS if p.startswith("new_")),
    )
    parser.add_argument("--profile", type=Path, help="--tasks grid: write each training cell's cProfile here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.child:
        result = config_child(**json.loads(args.child))
        result["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return
    if args.tasks == "tmaze":
        cores = (
            [c for c in args.cores.split(",") if c] if args.cores != ",".join(CORE_NAMES) else ["lstm", "chrono", "ur"]
        )
        run_tmaze(
            [int(n) for n in args.lengths.split(",")],
            cores,
            args.rounds,
            int((args.steps or "4096").split(",")[0]),
            args.set,
        )
        return
    if args.tasks == "extractor":
        warm_up()
        extractor_table([(32, 64, 32), (16, 32, 16), (8, 16, 8)])
        return
    if args.tasks == "grid":
        cores = (
            [c for c in args.cores.split(",") if c] if args.cores != ",".join(CORE_NAMES) else ["ur", "lstm", "chrono"]
        )
        rounds, steps = (1, 10_000) if args.quick else (args.rounds, int((args.steps or "40000").split(",")[0]))
        grid_tasks = [t for t in args.grid_tasks.split(",") if t]
        grid_paths = [p for p in args.grid_paths.split(",") if p]
        for name, valid in ((grid_tasks, GRID_TASKS), (grid_paths, GRID_PATHS)):
            if not set(name) <= set(valid):
                parser.error(f"unknown {', '.join(sorted(set(name) - set(valid)))}; valid: {', '.join(valid)}")
        run_grid(grid_tasks, grid_paths, cores, rounds, steps, args.set, args.profile)
        return
    tasks = [TASKS[t] for t in args.tasks.split(",") if t]
    steps = [int(s) for s in (args.steps or "4096,2048").split(",")]
    steps += [steps[-1]] * (len(tasks) - len(steps))
    cores = [c for c in args.cores.split(",") if c]
    warm_up()
    print(f"torch {torch.__version__}, 1 thread; stock = sb3-contrib RecurrentPPO with its LSTM policy")
    for task, n in zip(tasks, steps, strict=False):
        run_task(task, cores, [p for p in args.paths.split(",") if p], args.rounds, n, args.seed)


if __name__ == "__main__":
    main()
