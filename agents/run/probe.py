"""Memory probe: how long does a trained agent's recurrent state still hold the cue it saw?

The agent plays held-out episodes of its task (greedy by default) in envs that say where the cue is shown
(``envs.cue``: ``info["memory_cue"]``). At every step the actor core's state after that step's observation (``h``
and ``c`` of every layer, concatenated) is recorded with the cue class and the steps since the cue was last shown.
Per number of steps since the cue, a linear decoder (multinomial logistic regression on standardised states, L2
penalty), reading the state through Gaussian noise of a tenth of its spread, is fitted on half of the episodes and
scored on the other half: decoding accuracy against steps since the
cue is the memory curve. Chance is the held-out share of the most frequent cue class. Beside it, the timescales
``1 / (1 - g)`` of the actor's units (``g``: a unit's median effective forget gate over the steps after the cue,
``policies.gates``) say how long each unit could hold anything.

A decoder that reads the cue at step ``k`` proves the state still holds it there; one that does not proves only
that no linear read-out finds it (the policy's own heads are linear on ``h``, so a cue the decoder cannot find in
``h`` and ``c`` is hard for the policy to use).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.policies import BaseModel

from envs.cue import CUE_INFO

from ..errors import ConfigValueError, UrgateError
from . import factory
from .evaluate import opened
from .gate_stats import timescales

MIN_EPISODES = 10  # per half (fit, test) at a number of steps since the cue; fewer leave it out of the curve
CSV_FIELDS = ("steps_since_cue", "accuracy", "chance", "fit_episodes", "test_episodes")


@dataclass
class ProbeResult:
    """The memory curve of one agent: decoding accuracy of the cue per number of steps since it was shown."""

    env_id: str
    steps: np.ndarray  # steps since the cue, ascending
    accuracy: np.ndarray  # held-out decoding accuracy at each
    chance: np.ndarray  # held-out share of the most frequent cue class at each
    fit_episodes: np.ndarray
    test_episodes: np.ndarray
    unit_timescales: np.ndarray  # per actor unit (all layers), from its median effective gate after the cue
    episodes: int
    success_rate: float | None
    deterministic: bool
    info: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        return [
            dict(zip(CSV_FIELDS, (int(k), float(a), float(c), int(f), int(t)), strict=True))
            for k, a, c, f, t in zip(
                self.steps, self.accuracy, self.chance, self.fit_episodes, self.test_episodes, strict=True
            )
        ]

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the curve, the timescale quantiles and how the episodes went."""
        tau = self.unit_timescales
        return {
            "env_id": self.env_id,
            "episodes": self.episodes,
            "deterministic": self.deterministic,
            "success_rate": self.success_rate,
            "curve": self.rows(),
            "unit_timescale_quantiles": {
                f"q{int(q * 100):02d}": float(np.quantile(tau, q)) for q in (0.05, 0.25, 0.5, 0.75, 0.95)
            },
            "unit_timescale_max": float(tau.max()),
            **self.info,
        }


def probe_steps(max_steps: int, points: int) -> np.ndarray:
    """Steps since the cue at which to decode: 0, 1, ..., then about ``points`` in all, spaced geometrically up
    to ``max_steps``."""
    return np.unique(np.concatenate([[0], np.geomspace(1, max_steps, points).round().astype(int)]))


def probe_memory(
    model_or_path: Any,
    n_episodes: int = 200,
    *,
    max_steps: int = 1000,
    points: int = 40,
    deterministic: bool = True,
    seed: int = 54321,
    env_id: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    n_envs: int = 100,
    device: str = "cpu",
    l2: float = 1e-2,
    noise: float = 0.1,
) -> ProbeResult:
    """Fit and score a linear decoder of the cue from the actor's state, per number of steps since the cue.

    Loading a model zip unpickles code stored in it (SB3's format): load only files you trust.

    :param model_or_path: a loaded model, a model ``.zip`` or a run directory
    :param n_episodes: held-out episodes (each env plays one episode per round), half to fit and half to score
    :param max_steps: the longest delay after the cue to decode at
    :param points: about this many delays, geometrically spaced (``probe_steps``)
    :param deterministic: greedy actions (default) or sampled ones
    :param seed: seed of the probe's envs (env ``i`` gets ``seed + i``; use another than the training seed)
    :param env_id: environment id; default: the one the model was trained on
    :param env_kwargs: env keywords; default: those the model was trained with
    :param n_envs: envs stepped side by side
    :param device: torch device for a model loaded here
    :param l2: L2 penalty of the decoder (on standardised states)
    :param noise: the decoder reads the state through Gaussian noise of this many times the state's spread (the
        root-mean-square over units of each unit's standard deviation over all recorded steps): the resolution
        of the read-out. Without it, a difference of float rounding size between the two cues' states (left by
        an exponentially fading memory in a task whose other inputs never vary, such as the T-maze) would decode
        perfectly; at 0.01 a T-maze agent that failed its length (greedy success 0.58) still decoded at 0.99
        after 84 steps, at 0.1 (the default) its accuracy fell to chance by 41 while a solved one held 1.00.
    """
    for key, value, low in (("n_episodes", n_episodes, 2 * MIN_EPISODES), ("max_steps", max_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigValueError(key, value, f"an integer >= {low}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ConfigValueError("points", points, "an integer >= 2")
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ConfigValueError("n_envs", n_envs, "an integer >= 1")
    if not (isinstance(noise, int | float) and 0 <= noise < float("inf")):
        raise ConfigValueError("noise", noise, "a number >= 0 (read-out noise as a share of the state's spread)")
    factory.check_device(device)
    wanted = probe_steps(max_steps, points)
    n_envs = min(n_envs, n_episodes)
    with opened(model_or_path, env_id, env_kwargs=env_kwargs, n_envs=n_envs, seed=seed, device=device) as (
        model,
        venv,
        env_id,
        _,
    ):
        record = _play(model, venv, n_episodes, wanted, deterministic)
    if not record.cue_seen:
        raise UrgateError(
            f"{env_id} did not show a cue in {n_episodes} episodes (no info[{CUE_INFO!r}]): the probe needs a "
            "memory task that says its cue (the T-maze, Visual Match, MiniGrid Memory)"
        )
    spread = float(np.sqrt(np.mean(record.state.var(axis=0)))) if len(record.state) else 0.0
    rng = np.random.default_rng(seed)
    states = record.state + rng.normal(0.0, noise * spread, record.state.shape) if noise > 0 else record.state
    fit = record.episode % 2 == 0  # even episodes fit the decoder, odd ones score it
    steps, acc, chance, n_fit, n_test = [], [], [], [], []
    for k in wanted:
        at = record.age == k
        f, t = at & fit, at & ~fit
        if f.sum() < MIN_EPISODES or t.sum() < MIN_EPISODES:
            continue
        pred = _fit_predict(states[f], record.label[f], states[t], l2)
        steps.append(k)
        acc.append(float(np.mean(pred == record.label[t])))
        chance.append(float(np.bincount(record.label[t]).max() / t.sum()))
        n_fit.append(int(f.sum()))
        n_test.append(int(t.sum()))
    if not steps:
        raise UrgateError(
            f"too few episodes of {env_id} lasted past the cue to decode it: raise the number of episodes "
            f"(now {n_episodes}; each delay needs {MIN_EPISODES} to fit and {MIN_EPISODES} to score)"
        )
    return ProbeResult(
        env_id=env_id,
        steps=np.array(steps),
        accuracy=np.array(acc),
        chance=np.array(chance),
        fit_episodes=np.array(n_fit),
        test_episodes=np.array(n_test),
        unit_timescales=timescales(np.median(np.concatenate(record.gates, axis=0), axis=0)),
        episodes=n_episodes,
        success_rate=float(np.mean(record.successes)) if record.successes else None,
        deterministic=deterministic,
        info={"core": getattr(model.policy, "core_name", None), "noise": noise, "state_spread": spread},
    )


@dataclass
class _Record:
    """The recorded states: one row per (episode, recorded step)."""

    state: np.ndarray
    label: np.ndarray
    age: np.ndarray
    episode: np.ndarray
    gates: list[np.ndarray]  # (steps, units) effective gates after the cue, per round
    successes: list[float]
    cue_seen: bool


def _play(model, venv, n_episodes: int, wanted: np.ndarray, deterministic: bool) -> _Record:
    """Play ``n_episodes`` episodes, one per env per round, recording the actor's state at the wanted delays."""
    policy = model.policy
    n = venv.num_envs
    keep = np.zeros(int(wanted.max()) + 1, dtype=bool)
    keep[wanted] = True
    states, labels, ages, episodes, gates, successes = [], [], [], [], [], []
    done_episodes, cue_seen = 0, False
    while done_episodes < n_episodes:
        playing = min(n, n_episodes - done_episodes)
        obs = venv.reset()
        infos = venv.unwrapped.reset_infos
        label = np.full(n, -1)
        age = np.full(n, -1)
        active = np.arange(n) < playing
        state, starts = None, np.ones(n, dtype=bool)
        round_gates = []
        while active.any():
            for i in np.flatnonzero(active):
                if CUE_INFO in infos[i]:
                    label[i], age[i] = int(infos[i][CUE_INFO]), 0
                    cue_seen = True
                elif age[i] >= 0:
                    age[i] += 1
            before = state
            actions, state = model.predict(obs, state=state, episode_start=starts, deterministic=deterministic)
            after = np.concatenate([state[0], state[1]], axis=0)  # (2 * layers, n, H)
            rows = np.flatnonzero(active & (age >= 0) & (age < keep.size))
            rows = rows[keep[age[rows]]]
            if rows.size:
                states.append(after[:, rows].transpose(1, 0, 2).reshape(rows.size, -1))
                labels.append(label[rows])
                ages.append(age[rows])
                episodes.append(done_episodes + rows)
            post = np.flatnonzero(active & (age >= 1))
            if post.size:
                g = _gates(policy, obs, before, starts)  # (layers, n, H)
                round_gates.append(g[:, post].transpose(1, 0, 2).reshape(post.size, -1))
            obs, _, dones, infos = venv.step(actions)
            for i in np.flatnonzero(dones & active):
                if infos[i].get("is_success") is not None:
                    successes.append(float(infos[i]["is_success"]))
            active &= ~dones
            starts = dones
        if round_gates:
            gates.append(np.concatenate(round_gates))
        done_episodes += playing
    width = 2 * policy.lstm_hidden_state_shape[0] * policy.lstm_hidden_state_shape[2]
    return _Record(
        state=np.concatenate(states) if states else np.zeros((0, width), dtype=np.float32),
        label=np.concatenate(labels) if labels else np.zeros(0, dtype=int),
        age=np.concatenate(ages) if ages else np.zeros(0, dtype=int),
        episode=np.concatenate(episodes) if episodes else np.zeros(0, dtype=int),
        gates=gates or [np.ones((1, width // 2))],
        successes=successes,
        cue_seen=cue_seen,
    )


def _gates(policy, obs, state, starts: np.ndarray) -> np.ndarray:
    """The actor core's effective forget gates at this step, (layers, n, H), from the state before it."""
    n = starts.shape[0]
    with th.no_grad():
        obs_t, _ = policy.obs_to_tensor(obs)
        features = BaseModel.extract_features(policy, obs_t, policy.pi_features_extractor)
        if state is None:
            zeros = th.zeros(policy.lstm_hidden_state_shape[0], n, policy.lstm_hidden_state_shape[2])
            hx = (zeros, zeros)
        else:
            hx = tuple(th.as_tensor(s, dtype=th.float32, device=policy.device) for s in state)
        start = th.as_tensor(starts, dtype=th.float32, device=policy.device).reshape(1, n)
        g = policy.lstm_actor.gate_trace(features.reshape(1, n, -1), hx, episode_starts=start)
    return g[:, 0].float().cpu().numpy()


def _fit_predict(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, l2: float) -> np.ndarray:
    """Multinomial logistic regression (L-BFGS, L2 on the weights) on standardised features: test predictions."""
    classes = np.unique(y)
    if classes.size == 1:
        return np.full(len(x_test), classes[0])
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std < 1e-8] = 1.0  # a constant feature carries nothing; leave it at zero
    xt = th.as_tensor((x - mean) / std, dtype=th.float64)
    yt = th.as_tensor(np.searchsorted(classes, y))
    w = th.zeros(xt.shape[1], classes.size, dtype=th.float64, requires_grad=True)
    b = th.zeros(classes.size, dtype=th.float64, requires_grad=True)
    opt = th.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = th.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with th.no_grad():
        logits = th.as_tensor((x_test - mean) / std, dtype=th.float64) @ w + b
    return classes[logits.argmax(dim=1).numpy()]


def write_probe(result: ProbeResult, out: Path, title: str | None = None, dpi: int = 130) -> list[Path]:
    """``probe.csv`` (the curve), ``probe.json`` (the summary) and ``probe.png`` in ``out``; each file is written
    whole or not at all."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "probe.csv", out / "probe.json", out / "probe.png"]

    def write_csv(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
            writer.writeheader()
            writer.writerows(result.rows())

    _atomic(paths[0], write_csv)
    _atomic(paths[1], lambda tmp: tmp.write_text(json.dumps(result.summary(), indent=2) + "\n"))
    _atomic(paths[2], lambda tmp: plot_probe(result, tmp, title=title, dpi=dpi))
    return paths


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def plot_probe(result: ProbeResult, path: Path, title: str | None = None, dpi: int = 130) -> None:
    """Decoding accuracy against steps since the cue (left) and the units' timescales on the same axis (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    x = np.maximum(result.steps, 0.5)  # step 0 drawn at 0.5 on the log axis
    ax.plot(x, result.accuracy, "o-", label="decoder (held-out episodes)")
    ax.plot(x, result.chance, "--", color="grey", label="chance (most frequent cue)")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("steps since the cue (0 drawn at 0.5)")
    ax.set_ylabel("cue decoding accuracy")
    ax.legend(loc="lower left", fontsize=8)
    tau = np.sort(result.unit_timescales)
    grid = np.geomspace(0.5, max(float(result.steps.max()), 1.0), 200)
    ax2.plot(grid, [(tau >= t).mean() for t in grid])
    ax2.set_ylim(0, 1.02)
    ax2.set_xlabel("steps")
    ax2.set_ylabel("share of units with timescale >= steps")
    success = f", success {result.success_rate:.2f}" if result.success_rate is not None else ""
    fig.suptitle(title or f"{result.env_id}: memory probe ({result.episodes} episodes{success})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, format="png")
    plt.close(fig)
