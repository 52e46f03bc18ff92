"""Statistics of the actor core's effective forget gates on the rollout just collected (the paper's Figure 5 in RL
form): the core's inputs replayed from the rollout buffer, the gates, their timescales 1/(1-g) and quantiles."""

from __future__ import annotations

import numpy as np
import torch as th
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.utils import obs_as_tensor

from policies.gates import timescale

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
TIMESCALE_CAP = 1e6  # 1 / (1 - g) is infinite at g = 1 in float32; histograms need finite values
NEAR_BINARY = 0.05  # a gate within this of 0 or 1 counts as near-binary (the paper's "gates become binary")


def replay_inputs(model) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor], th.Tensor]:
    """What the actor core saw during the rollout just collected: ``(features (T, B, F), (h0, c0), starts (T, B))``.

    The rollout buffer's observations go through the actor's features extractor; ``(h0, c0)`` is the core state
    before the rollout's first step, and ``starts`` marks the steps where an episode began (the state is zeroed).
    """
    policy, buf = model.policy, model.rollout_buffer
    T, B = buf.episode_starts.shape
    # Reshape to the env's own observation shapes (the buffer stores a Discrete entry as (1,)), as at rollout time.
    space = policy.observation_space
    if isinstance(buf.observations, dict):
        flat = {k: v.reshape(T * B, *space[k].shape) for k, v in buf.observations.items()}
    else:
        flat = buf.observations.reshape(T * B, *space.shape)
    with th.no_grad():
        obs = obs_as_tensor(flat, policy.device)
        features = BaseModel.extract_features(policy, obs, policy.pi_features_extractor).reshape(T, B, -1)
    h0 = th.as_tensor(buf.hidden_states_pi[0], device=policy.device)
    c0 = th.as_tensor(buf.cell_states_pi[0], device=policy.device)
    starts = th.as_tensor(buf.episode_starts, dtype=th.float32, device=policy.device)
    return features, (h0, c0), starts


def rollout_gates(model) -> np.ndarray:
    """Effective forget gates of the actor core on the rollout just collected, shape (num_layers, T, B, H)."""
    features, state, starts = replay_inputs(model)
    return model.policy.lstm_actor.gate_trace(features, state, episode_starts=starts).float().cpu().numpy()


def timescales(gates: np.ndarray) -> np.ndarray:
    """Timescales 1/(1-g) in steps (``policies.gates.timescale``), capped at ``TIMESCALE_CAP``."""
    with np.errstate(divide="ignore"):
        return np.minimum(timescale(np.asarray(gates, dtype=np.float64)), TIMESCALE_CAP)


def near_binary(gates: np.ndarray, within: float = NEAR_BINARY) -> float:
    """The share of gates within ``within`` of 0 or 1 (``g < within`` or ``g > 1 - within``)."""
    g = np.asarray(gates, dtype=np.float64).ravel()
    return float(np.mean((g < within) | (g > 1 - within)))


def gate_summary(gates: np.ndarray) -> dict[str, float]:
    """Quantiles of the gates and of their timescales 1/(1-g), as scalars for TensorBoard."""
    g = gates.astype(np.float64).ravel()
    tau = timescales(g)
    out = {}
    for q in QUANTILES:
        out[f"gates/forget_q{int(q * 100):02d}"] = float(np.quantile(g, q))
        out[f"gates/timescale_q{int(q * 100):02d}"] = float(np.quantile(tau, q))
    out["gates/forget_mean"] = float(g.mean())
    out["gates/near_binary"] = near_binary(g)
    return out
