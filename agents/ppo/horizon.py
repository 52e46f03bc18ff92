"""Rollout and minibatch sizes derived from how long an environment's episodes are.

Backpropagation through time reaches from a step to an earlier one only when both lie in one training sequence,
and FastRecurrentPPO's sequences are at most one env's ``n_steps`` rollout. A cue at an episode's first step can
therefore be credited from its last only in episodes that lie whole inside a rollout; with rollouts of ``n``
steps and episodes of ``E``, about ``(n - E) / n`` of them do, and none when ``n < E``. What has to lie in one
sequence is the stretch between a cue and the step that needs it: the whole episode for the T-maze and Visual
Match (``episode_limit``), much less for a task whose env declares a shorter ``memory_span`` (MiniGrid's Memory
tasks: an agent walks from the cue to its choice in a few dozen steps of an episode limit of hundreds).
``ppo.n_steps: auto`` sizes the rollout from that span, ``ppo.batch_size: auto`` splits it into
``AUTO_MINIBATCHES`` minibatches of whole env rollouts, and ``check_sequences`` warns when training sequences are
shorter than the span.
"""

from __future__ import annotations

import logging
import math

from stable_baselines3.common.vec_env import VecEnv

from ..errors import UrgateError

log = logging.getLogger("urgate")

AUTO = "auto"
AUTO_MULTIPLE = 64  # rollouts are a multiple of this, so they hold a whole number of 64-step chunks
AUTO_MINIBATCHES = 8  # 64 envs -> minibatches of 8 whole sequences (docs/experiments/tmaze.md)


def episode_limit(venv: VecEnv) -> int | None:
    """The most steps an episode of ``venv`` can last: its envs' ``max_steps`` (T-maze, MiniGrid) or the
    gymnasium spec's ``max_episode_steps``; None when neither is known."""
    for name in ("max_steps", "spec"):
        # Ask first: a subprocess worker (SB3's and ours) dies on get_attr of an attribute its env lacks.
        try:
            if not venv.has_attr(name):
                continue
            value = venv.get_attr(name, [0])[0]
        except (AttributeError, NotImplementedError):
            continue
        if name == "spec":
            value = getattr(value, "max_episode_steps", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def memory_span(venv: VecEnv) -> tuple[int | None, bool]:
    """The most steps a cue of ``venv``'s task must be carried by an agent that acts on it: the envs' declared
    ``memory_span`` where they declare one, else the episode limit (a cue may be needed from the first step to the
    last). Returns ``(span, declared)``; the span is None when neither is known."""
    try:
        if venv.has_attr("memory_span"):
            span = venv.get_attr("memory_span", [0])[0]
            if isinstance(span, int) and span > 0:
                return span, True
    except (AttributeError, NotImplementedError):
        pass
    return episode_limit(venv), False


def auto_n_steps(limit: int) -> int:
    """Rollout length for episodes of at most ``limit`` steps: ``limit`` rounded up to a multiple of 64, so an
    episode of the limit fits whole and a T-maze's shortest episodes (half the limit) fit at least twice."""
    return AUTO_MULTIPLE * math.ceil(limit / AUTO_MULTIPLE)


def resolve(n_steps: int | str, batch_size: int | str, n_envs: int, venv: VecEnv, env_id: str) -> tuple[int, int]:
    """``(n_steps, batch_size)`` with ``"auto"`` values derived from ``venv``'s episode limit.

    :param n_steps: steps per env per rollout, or ``"auto"`` (``auto_n_steps`` of the memory span: the declared one,
        else the episode limit)
    :param batch_size: transitions per minibatch, or ``"auto"`` (the rollout in ``AUTO_MINIBATCHES`` minibatches,
        fewer with fewer envs, of whole env rollouts)
    :param n_envs: number of training envs
    :param venv: the training envs (asked for their episode limit)
    :param env_id: for messages
    :raises UrgateError: ``n_steps: auto`` for an env whose episode limit is unknown
    """
    if n_steps == AUTO:
        limit, _ = memory_span(venv)
        if limit is None:
            raise UrgateError(
                f"ppo.n_steps: auto needs the episode limit of {env_id}, which it does not declare (no max_steps "
                "or max_episode_steps): give ppo.n_steps as a number"
            )
        n_steps = auto_n_steps(limit)
    if batch_size == AUTO:  # at most one minibatch per env, so every sequence is a whole env rollout
        batch_size = -(-n_steps * n_envs // min(AUTO_MINIBATCHES, n_envs))
    log.debug("rollout %d steps x %d envs, minibatches of %d transitions", n_steps, n_envs, batch_size)
    return int(n_steps), int(batch_size)


def check_sequences(sequence_length: int, venv: VecEnv, env_id: str) -> str | None:
    """Warn (logger ``urgate``) when training sequences are shorter than ``venv``'s memory span (``memory_span``:
    its episodes, unless the envs declare a shorter span).

    :param sequence_length: steps per training sequence (``FastRecurrentPPO``'s, after planning)
    :param venv: the training envs
    :param env_id: for the message
    :return: the warning, or None
    """
    limit, declared = memory_span(venv)
    if limit is None or sequence_length >= limit:
        return None
    if declared:
        message = (
            f"training sequences hold {sequence_length} steps but {env_id} asks an agent to carry its cue up to "
            f"{limit} steps: backpropagation through time cannot link steps more than {sequence_length} apart, so "
            f"the cue cannot be learned; set ppo.n_steps: auto (or >= {limit}) and a batch_size that keeps whole "
            "rollouts (auto)"
        )
        log.warning(message)
        return message
    message = (
        f"training sequences hold {sequence_length} steps but episodes of {env_id} last up to {limit}: "
        f"backpropagation through time cannot link steps more than {sequence_length} apart, so what must be "
        f"remembered longer is not learnable; set ppo.n_steps: auto (or >= {limit}) and a batch_size that keeps "
        "whole rollouts (auto)"
    )
    log.warning(message)
    return message
