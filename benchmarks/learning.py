"""Does every core learn CartPole without velocities? sb3-contrib's own RecurrentPPO learning check, per core.

Settings are those of sb3-contrib's slow test ``test_ppo_lstm_performance``: 8 envs, n_steps 128, lr 7e-4,
batch 256, 10 epochs, max_grad_norm 1, gae_lambda 0.98, lstm_hidden_size 64, critic LSTM, net_arch vf [64] pi [],
no orthogonal init, VecNormalize, episodes cut at 500 steps, seed 1, 50k steps. The velocity entries of the
observation are zeroed (RL Zoo's CartPoleNoVel); sb3-contrib's env drops them instead, which is the same task.
After training, the deterministic policy is evaluated on fresh episodes (observation statistics frozen and copied
from training); sb3-contrib's test asks for a mean above 450 (a memoryless policy stays near 50).

Usage: ``PYTHONPATH=. python benchmarks/learning.py [--cores lstm,chrono,u,r,ur] [--algo fast|stock] [--seeds 1]``
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sb3_contrib import RecurrentPPO  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.vec_env import VecEnv, VecNormalize  # noqa: E402

from agents import FastRecurrentPPO  # noqa: E402
from policies import CORE_NAMES, MlpGatedPolicy  # noqa: E402

THRESHOLD = 450.0


class MaskVelocity(gym.ObservationWrapper):
    """CartPole with the cart and pole velocities zeroed (RL Zoo's ``CartPoleNoVel-v1``): needs memory."""

    _MASK = np.array([1.0, 0.0, 1.0, 0.0], dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation * self._MASK


def cartpole_novel_env(n_envs: int, seed: int) -> VecEnv:
    """``n_envs`` CartPole-v1 copies (500-step limit) with velocities zeroed, each in a Monitor.

    :param n_envs: number of copies
    :param seed: env ``i`` is seeded with ``seed + i``
    """
    return make_vec_env("CartPole-v1", n_envs=n_envs, seed=seed, wrapper_class=MaskVelocity)


@dataclass
class LearningResult:
    """Evaluation of one trained agent."""

    core: str
    algo: str
    mean_reward: float
    std_reward: float
    train_seconds: float


def train_and_evaluate(
    core: str | None,
    algo: str = "fast",
    seed: int = 1,
    total_timesteps: int = 50_000,
    n_eval_episodes: int = 20,
    core_kwargs: dict | None = None,
) -> LearningResult:
    """Train one agent with sb3-contrib's CartPole-without-velocity settings and evaluate it deterministically.

    :param core: core name, or None for stock ``MlpLstmPolicy``
    :param algo: ``"fast"`` (FastRecurrentPPO) or ``"stock"`` (sb3-contrib RecurrentPPO)
    :param seed: seed of the model and the training envs
    :param total_timesteps: training steps
    :param n_eval_episodes: evaluation episodes
    :param core_kwargs: the core's own options, e.g. ``{"t_max": 128}`` for chrono
    """
    torch.set_num_threads(1)
    env = VecNormalize(cartpole_novel_env(8, seed))
    policy_kwargs = dict(net_arch=dict(vf=[64], pi=[]), lstm_hidden_size=64, ortho_init=False, enable_critic_lstm=True)
    if core is not None:
        policy_kwargs["core"] = core
        policy_kwargs["core_kwargs"] = dict(core_kwargs or {})
    algo_cls = {"fast": FastRecurrentPPO, "stock": RecurrentPPO}[algo]
    model = algo_cls(
        "MlpLstmPolicy" if core is None else MlpGatedPolicy,
        env,
        n_steps=128,
        learning_rate=7e-4,
        batch_size=256,
        n_epochs=10,
        max_grad_norm=1,
        gae_lambda=0.98,
        policy_kwargs=policy_kwargs,
        seed=seed,
    )
    start = time.perf_counter()
    model.learn(total_timesteps)
    train_seconds = time.perf_counter() - start
    eval_env = VecNormalize(cartpole_novel_env(4, seed + 1000), training=False, norm_reward=False)
    eval_env.obs_rms = env.obs_rms.copy()
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=n_eval_episodes, deterministic=True)
    return LearningResult(core or "stock MlpLstmPolicy", algo, float(mean), float(std), train_seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", default=",".join(CORE_NAMES), help="comma-separated core names")
    parser.add_argument("--algo", choices=("fast", "stock"), default="fast", help="FastRecurrentPPO or RecurrentPPO")
    parser.add_argument("--stock-policy", action="store_true", help="also train stock MlpLstmPolicy")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds (one row each)")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--t-max", type=float, default=None, help="chrono's t_max (default: the core's, 500)")
    args = parser.parse_args(argv)
    cores: list[str | None] = [c for c in args.cores.split(",") if c]
    if args.stock_policy:
        cores.insert(0, None)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"CartPole without velocities, {args.steps} steps, algo {args.algo}, 1 torch thread")
    print("| core | seed | mean deterministic reward (20 episodes) | std | > 450 | train time (s) |")
    print("|---|---|---|---|---|---|")
    passed: dict[str, list[bool]] = {}
    for core in cores:
        for seed in seeds:
            kwargs = {"t_max": args.t_max} if core == "chrono" and args.t_max is not None else None
            r = train_and_evaluate(core, args.algo, seed, args.steps, core_kwargs=kwargs)
            ok = r.mean_reward > THRESHOLD
            passed.setdefault(r.core, []).append(ok)
            row = f"| {r.core} | {seed} | {r.mean_reward:.1f} | {r.std_reward:.1f} | {'yes' if ok else 'NO'} |"
            print(f"{row} {r.train_seconds:.0f} |", flush=True)
    if len(seeds) > 1:
        print("\n" + ", ".join(f"{core}: {sum(v)}/{len(v)} seeds above {THRESHOLD:g}" for core, v in passed.items()))


if __name__ == "__main__":
    main()
