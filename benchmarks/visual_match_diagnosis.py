"""What makes Visual Match's final choice hard to learn: measurements on a fresh or trained agent.

Prints three tables for a config (and optionally a trained model of that config):

1. **Do the box colours survive the extractor?** The features extractor's output for the first step of the choice
   room under each of the 3! orders of the boxes, and for the cue room under each cue colour: the mean distance
   between the features of two different orders (or cues) divided by the mean feature norm, next to the same
   ratio for two observations that differ by one step of the agent in the distractor room (a change the policy
   must not treat as decisive).
2. **Whose gradient trains what?** On one rollout of the agent (no update made), the gradient norms of the policy
   loss, ``vf_coef`` x the value loss and ``ent_coef`` x the entropy loss on each part of the policy (extractor,
   actor core, critic core, heads), and the factor by which ``max_grad_norm`` scales the whole gradient.
3. **What does the agent choose?** Episodes played greedily, with sampled actions and with random actions: the
   share of choices of the left, middle (nearest: two steps straight ahead) and right box, of episodes that ended
   without a choice, the success rate, the share of episodes whose cue was in view at some step of the cue phase
   (Active Visual Match hides it), and the success rate of those episodes.

Usage (the commands behind docs/results/visual_match_diagnosis/results.md)::

    PYTHONPATH=. python benchmarks/visual_match_diagnosis.py --set env_kwargs.distractor_steps=0
    PYTHONPATH=. python benchmarks/visual_match_diagnosis.py --model RUN_DIR/final_model.zip --set ...
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

sys.path[0] = str(Path(__file__).resolve().parents[1])  # the repository, not benchmarks/ (whose envs.py shadows)

from agents.run.config import load_config  # noqa: E402
from agents.run.evaluate import run_episodes  # noqa: E402
from agents.run.factory import build_model, make_training_env, set_threads  # noqa: E402
from agents.run.loading import load_model  # noqa: E402
from envs.cue import CUE_INFO  # noqa: E402
from envs.visual_match import CHOICE, DISTRACTOR, VisualMatchEnv, make_visual_match  # noqa: E402


def features(model, obs: list[dict[str, Any]]) -> np.ndarray:
    """The features extractor's output for a list of single observations."""
    policy = model.policy
    batch = {
        "image": th.as_tensor(np.stack([o["image"] for o in obs])).float(),
        "direction": th.as_tensor(np.array([o["direction"] for o in obs])).long(),
    }
    with th.no_grad():
        extractor = getattr(policy, "pi_features_extractor", None) or policy.features_extractor
        return extractor(batch).numpy()


def observation(env: VisualMatchEnv) -> dict[str, Any]:
    """The current observation of a one-copy env, read without stepping it."""
    return {"image": env.copies.view()[0], "direction": env.dir}


def relative_spread(feats: np.ndarray) -> float:
    """Mean pairwise distance of the rows over their mean norm."""
    pairs = list(itertools.combinations(range(len(feats)), 2))
    dist = np.mean([np.linalg.norm(feats[i] - feats[j]) for i, j in pairs])
    return float(dist / np.mean(np.linalg.norm(feats, axis=1)))


def extractor_table(model, env_kwargs: dict[str, Any], env_id: str) -> list[tuple[str, float]]:
    env: VisualMatchEnv = make_visual_match(env_id, **env_kwargs)
    choice: dict[tuple[int, ...], dict[str, Any]] = {}
    cues: dict[int, dict[str, Any]] = {}
    seed = 0
    while len(choice) < 6 or len(cues) < env.n_colours:
        obs, info = env.reset(seed=seed)
        seed += 1
        if CUE_INFO in info:  # the cue in view at the start (Active: where the episode put it)
            cues.setdefault(env.cue_colour, obs)
        env.copies.enter(0, CHOICE)
        choice.setdefault(tuple(env.choice_order), observation(env))
    # One step of the agent in the distractor room (turning on the spot: the view rotates).
    env.reset(seed=1)
    env.copies.enter(0, DISTRACTOR)
    before = observation(env)
    env.step(0)
    after = observation(env)
    rows = [
        ("choice room, 6 box orders", relative_spread(features(model, list(choice.values())))),
        ("distractor room, one turn", relative_spread(features(model, [before, after]))),
    ]
    if cues:
        rows.insert(1, (f"cue room, {len(cues)} cue colours", relative_spread(features(model, list(cues.values())))))
    return rows


class _Stop(BaseCallback):
    def _on_step(self) -> bool:
        return True


def gradient_table(model) -> tuple[list[tuple[str, float, float, float]], float, dict[str, float]]:
    """Gradient norms per loss term and policy part on the first minibatch of one fresh rollout."""
    policy = model.policy
    groups = {
        # features_extractor is the actor's when the critic has its own (share_features_extractor=False)
        "extractor (shared)" if policy.share_features_extractor else "actor extractor": [
            p for n, p in policy.named_parameters() if n.startswith(("features_extractor.", "pi_features_extractor."))
        ],
        "critic extractor": [p for n, p in policy.named_parameters() if n.startswith("vf_features_extractor.")],
        "actor core": list(policy.lstm_actor.parameters()),
        "critic core": list(policy.lstm_critic.parameters()) if policy.lstm_critic is not None else [],
        "policy head": list(policy.action_net.parameters()) + list(policy.mlp_extractor.policy_net.parameters()),
        "value head": list(policy.value_net.parameters()) + list(policy.mlp_extractor.value_net.parameters()),
    }
    result: dict[str, Any] = {}

    def measure() -> None:
        batch = next(iter(model.rollout_buffer.sequence_minibatches(model.batch_size)))
        vf, ent = model.vf_coef, model.ent_coef

        def grads(vf_coef: float, ent_coef: float) -> dict[str, th.Tensor]:
            model.vf_coef, model.ent_coef = vf_coef, ent_coef
            policy.zero_grad()
            loss, stats = model._minibatch_loss(batch, 0.2, None)
            loss.backward()
            result.setdefault("stats", stats)
            return {n: p.grad.clone() if p.grad is not None else th.zeros_like(p) for n, p in policy.named_parameters()}

        g_pi = grads(0.0, 0.0)
        g_pv = grads(vf, 0.0)
        g_pe = grads(0.0, ent)
        g_all = grads(vf, ent)
        model.vf_coef, model.ent_coef = vf, ent
        names = {id(p): n for n, p in policy.named_parameters()}
        rows = []
        for group, params in groups.items():
            if not params:
                continue
            ns = [names[id(p)] for p in params]

            def norm(g: dict[str, th.Tensor], ns=ns) -> float:
                return float(th.sqrt(sum((g[n] ** 2).sum() for n in ns))) if ns else 0.0

            value = {n: g_pv[n] - g_pi[n] for n in ns}
            entropy = {n: g_pe[n] - g_pi[n] for n in ns}
            rows.append((group, norm(g_pi), norm(value), norm(entropy)))
        total = float(th.sqrt(sum((g**2).sum() for g in g_all.values())))
        result["rows"], result["clip"] = rows, min(1.0, model.max_grad_norm / total)
        policy.zero_grad()

    model.train = measure  # collect one rollout, measure instead of updating
    model.learn(model.n_steps * model.n_envs, callback=_Stop(), reset_num_timesteps=True)
    stats = result["stats"]
    return (
        result["rows"],
        result["clip"],
        {"policy_loss": float(stats.policy_loss), "value_loss": float(stats.value_loss)},
    )


class RandomActions:
    """Uniformly random actions, with a recurrent model's ``predict`` signature."""

    def __init__(self, n_actions: int, seed: int) -> None:
        self.n_actions, self.rng = n_actions, np.random.default_rng(seed)

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        return self.rng.integers(self.n_actions, size=len(obs["direction"])), state


def choice_table(model, env_id: str, env_kwargs: dict[str, Any], episodes: int, seed: int) -> list[tuple[str, ...]]:
    rows = []
    for label, agent, deterministic in (
        ("greedy", model, True),
        ("sampled", model, False),
        ("random actions", None, False),  # uniform over the env's own actions
    ):
        # One-copy envs, so that each box order can be read before the step that ends an episode (auto-reset).
        venv = DummyVecEnv([lambda: Monitor(make_visual_match(env_id, **env_kwargs)) for _ in range(16)])
        if agent is None:
            agent = RandomActions(int(venv.action_space.n), seed)
        venv.seed(seed)
        counts = {"left": 0, "middle": 0, "right": 0, "none": 0}
        infos: list[dict[str, Any]] = []
        original = venv.step_wait
        seen: list[bool] = []  # per env: whether its episode in progress has shown the cue

        def step_wait(original=original, venv=venv, infos=infos, seen=seen):
            if not seen:  # the first step: the episodes began at the reset
                seen.extend(CUE_INFO in info for info in venv.reset_infos)
            orders = [list(env.unwrapped.choice_order) for env in venv.envs]
            obs, rew, done, info = original()
            for i in range(venv.num_envs):
                if done[i]:
                    infos.append(
                        {
                            "choice": info[i].get("choice"),
                            "order": orders[i],
                            "seen": seen[i],
                            "ok": info[i]["is_success"],
                        }
                    )
                    seen[i] = CUE_INFO in venv.reset_infos[i]
                else:
                    seen[i] = seen[i] or CUE_INFO in info[i]
            return obs, rew, done, info

        venv.step_wait = step_wait
        stats = run_episodes(agent, venv, episodes, deterministic=deterministic)
        for item in infos[:episodes]:
            if item["choice"] is None:
                counts["none"] += 1
            else:
                counts[("left", "middle", "right")[item["order"].index(item["choice"])]] += 1
        n = sum(counts.values())
        shown = [item["ok"] for item in infos[:episodes] if item["seen"]]
        rows.append(
            (
                label,
                *(f"{counts[k] / n:.2f}" for k in ("left", "middle", "right", "none")),
                f"{np.mean(stats.successes):.2f}",
                f"{np.mean(stats.returns):.2f}",
                f"{len(shown) / n:.2f}",
                f"{np.mean(shown):.2f}" if shown else "-",
                str(len(stats.successes)),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="urgate/PassiveVisualMatch-v0")
    parser.add_argument("--config", default="visual_match")
    parser.add_argument("--core", default="ur")
    parser.add_argument("--model", help="a trained model zip of this config (default: a fresh agent)")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--episodes", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    set_threads(1)
    cfg = load_config(args.config, args.env, [f"core={args.core}", f"seed={args.seed}", *args.overrides])
    env = make_training_env(cfg)
    if args.model:
        model = load_model(args.model, env=env)
        model.set_env(env)  # loading leaves the env detached; the gradient table collects a rollout in it
    else:
        model = build_model(cfg, env)
    what = args.model or f"fresh {cfg.core} agent, seed {cfg.seed}"
    print(f"## {cfg.env_id} {cfg.env_kwargs}: {what}\n")
    print("| observations compared | mean distance / mean norm of the extractor's features |\n|---|---:|")
    for name, value in extractor_table(model, cfg.env_kwargs, cfg.env_id):
        print(f"| {name} | {value:.3f} |")
    print(
        "\n| episodes | left | middle (nearest) | right | no choice | success | return | cue seen | success if seen | n |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in choice_table(model, cfg.env_id, cfg.env_kwargs, args.episodes, args.seed + 1000):
        print("| " + " | ".join(row) + " |")
    rows, clip, losses = gradient_table(model)
    print("\n| part | grad norm: policy loss | vf_coef x value loss | ent_coef x entropy |\n|---|---:|---:|---:|")
    for name, pi, v, e in rows:
        print(f"| {name} | {pi:.3g} | {v:.3g} | {e:.3g} |")
    print(
        f"\npolicy loss {losses['policy_loss']:.3g}, value loss {losses['value_loss']:.3g}; max_grad_norm scales the "
        f"whole gradient by {clip:.3f}"
    )


if __name__ == "__main__":
    main()
