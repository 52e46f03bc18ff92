"""Rollout buffers that hand out whole, unpadded sequences, built once per rollout.

sb3-contrib's recurrent buffers cut every minibatch into sequences at episode starts and pad them to the longest
one, in Python, once per minibatch and epoch (about 2x more samples computed than used). These buffers store the
same data (they subclass the stock buffers, so stock ``get`` still works) and add ``sequence_minibatches``:

- each env's ``n_steps`` rollout is cut into chunks of ``sequence_length`` consecutive steps (a divisor of
  ``n_steps``; ``plan_sequences`` picks the longest that keeps stock's minibatch count);
- a chunk starts from the recurrent state stored at its first step during the rollout (as stock starts its
  sequences), and episode starts inside a chunk are passed on as ``episode_starts`` so the core resets there;
- ``batch_size`` keeps RecurrentPPO's meaning, transitions per minibatch: an epoch makes stock's
  ``ceil(n_steps * n_envs / batch_size)`` minibatches, each a random set of whole chunks (as even as whole chunks
  allow), so the number of gradient steps is stock's and nothing is padded.

The tensors are laid out once per rollout, sequence-major, on the buffer's device; a minibatch is one index per
tensor.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RNNStates

from ..errors import UrgateError

FLOAT_BYTES = 4  # the stock buffers store everything as float32


def available_memory() -> int | None:
    """Bytes of memory the machine can still give this process: ``MemAvailable`` of ``/proc/meminfo`` (Linux),
    else the free physical pages; None where neither is known."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def rollout_bytes(n_steps: int, n_envs: int, obs_size: int, action_dim: int, state_size: int) -> int:
    """Memory a rollout takes at its peak: the stock arrays (observations, actions, six per-step scalars, four
    recurrent states per step) twice, for stock's buffer that ``FastRecurrentPPO`` replaces by its own at setup, and
    for the sequence-major copy ``sequence_minibatches`` lays out for training.

    :param n_steps: steps per env per rollout
    :param n_envs: envs
    :param obs_size: observation elements per step (all keys of a dict observation)
    :param action_dim: action elements per step
    :param state_size: elements of one recurrent state (layers x hidden size) of one env
    """
    return 2 * FLOAT_BYTES * n_steps * n_envs * (obs_size + action_dim + 6 + 4 * state_size)


def check_rollout_fits(n_steps: int, n_envs: int, obs_size: int, action_dim: int, state_size: int) -> None:
    """Fail with one line, before anything is allocated, when a rollout needs more memory than the machine has
    available (numpy would fail with a traceback, or the kernel's out-of-memory killer end the run later)."""
    need = rollout_bytes(n_steps, n_envs, obs_size, action_dim, state_size)
    have = available_memory()
    if have is not None and need > have:
        gib = 2**30
        raise UrgateError(
            f"a rollout of ppo.n_steps {n_steps} x {n_envs} envs needs about {need / gib:.1f} GiB of memory, but "
            f"{have / gib:.1f} GiB is available: lower ppo.n_steps or n_envs (ppo.n_steps: auto follows the "
            "episode limit, e.g. a T-maze's env_kwargs.length)"
        )


class SequenceSamples(NamedTuple):
    """A minibatch of ``n_seq`` whole sequences of length ``T``; per-step fields are sequence-major (n_seq * T)."""

    observations: th.Tensor | dict[str, th.Tensor]
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    lstm_states: RNNStates
    episode_starts: th.Tensor


def n_minibatches(n_steps: int, n_envs: int, batch_size: int) -> int:
    """Minibatches per epoch of stock RecurrentPPO: ``ceil(n_steps * n_envs / batch_size)``.

    :param n_steps: steps per env per rollout
    :param n_envs: number of envs
    :param batch_size: transitions per minibatch
    """
    return -(-(n_steps * n_envs) // batch_size)


def _divisors(n: int) -> list[int]:
    """The divisors of ``n`` in increasing order (trial division up to its square root)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def plan_sequences(n_steps: int, n_envs: int, batch_size: int, sequence_length: int | None = None) -> int:
    """The training sequence length for a rollout of ``n_steps`` x ``n_envs`` cut into stock's minibatch count.

    A minibatch is a set of whole sequences, so there must be at least ``n_minibatches(...)`` of them. With
    ``sequence_length=None`` the longest divisor of ``n_steps`` that gives enough sequences is chosen (long
    sequences let backpropagation through time reach far back: with ``n_envs * ... >= batch_size`` sequences of
    ``n_steps``, one whole rollout per env).

    :param n_steps: steps per env per rollout
    :param n_envs: number of envs
    :param batch_size: transitions per minibatch, RecurrentPPO's meaning
    :param sequence_length: a requested length (checked), or None to choose
    :return: the sequence length
    :raises UrgateError: for a length that is not a positive divisor of ``n_steps``, or one that gives fewer
        sequences than minibatches, naming the lengths that would work
    """
    wanted = n_minibatches(n_steps, n_envs, batch_size)
    fitting = [d for d in _divisors(n_steps) if n_envs * (n_steps // d) >= wanted]
    if sequence_length is None:
        return fitting[-1]
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, int | np.integer):
        raise UrgateError(
            f"sequence_length must be a positive integer dividing n_steps={n_steps}, got {sequence_length!r}"
        )
    if sequence_length < 1 or n_steps % sequence_length:
        raise UrgateError(
            f"sequence_length={sequence_length} must be a positive divisor of n_steps={n_steps} "
            f"(e.g. {fitting[-1]}, or null to choose)"
        )
    n_seq = n_envs * (n_steps // sequence_length)
    if n_seq < wanted:
        raise UrgateError(
            f"sequence_length={sequence_length} cuts the rollout ({n_envs} envs x n_steps={n_steps}) into {n_seq} "
            f"sequences, fewer than the {wanted} minibatches per epoch that batch_size={batch_size} asks for; use "
            f"sequence_length <= {fitting[-1]} (a divisor of n_steps), or batch_size >= "
            f"{-(-n_steps * n_envs // n_seq)}"
        )
    return int(sequence_length)


def _zeroed_like(kept: Any, fresh: Any) -> Any:
    """``kept`` zeroed in place when it is an array of ``fresh``'s shape and dtype, else ``fresh``."""
    if (
        isinstance(fresh, np.ndarray)
        and isinstance(kept, np.ndarray)
        and kept is not fresh
        and kept.shape == fresh.shape
        and kept.dtype == fresh.dtype
        and kept.flags.writeable
        and kept.flags.c_contiguous
    ):
        kept.fill(0)
        return kept
    return fresh


class _SequenceMixin:
    """``sequence_minibatches`` on top of a stock recurrent rollout buffer (arrays laid out (n_steps, n_envs))."""

    buffer_size: int
    n_envs: int
    device: th.device
    observations: Any
    generator_ready: bool

    def __init__(self, *args: Any, sequence_length: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Without a minibatch size to honour, one sequence per env rollout (what batch_size=None hands out).
        self.sequence_length = plan_sequences(
            self.buffer_size, self.n_envs, self.buffer_size * self.n_envs, sequence_length
        )

    def reset(self) -> None:
        """Stock's reset (every array zeroed), writing into the previous rollout's arrays where they fit.

        Stock allocates every array afresh, and the operating system then hands out and zeroes each page again on
        its first write during the next rollout (for a 64 x 1472 rollout of 128-unit states about 250 MB, a tenth of
        ``collect_rollouts``' time); zeroing the kept arrays in place gives the same contents without that.
        """
        previous = dict(vars(self))
        super().reset()
        for name, fresh in vars(self).items():
            kept = previous.get(name)
            if isinstance(fresh, dict) and isinstance(kept, dict):
                for key, array in fresh.items():
                    fresh[key] = _zeroed_like(kept.get(key), array)
            else:
                setattr(self, name, _zeroed_like(kept, fresh))
        self._sequences: dict[str, Any] | None = None

    def _to_sequences(self, arr: np.ndarray) -> th.Tensor:
        """(n_steps, n_envs, *shape) -> (n_envs * n_chunks, sequence_length, *shape); sequence id = env * n_chunks + chunk."""
        L, n_chunks = self.sequence_length, self.buffer_size // self.sequence_length
        shape = arr.shape[2:]
        arr = arr.reshape(n_chunks, L, self.n_envs, *shape).swapaxes(0, 2).swapaxes(1, 2)
        return th.as_tensor(np.ascontiguousarray(arr).reshape(self.n_envs * n_chunks, L, *shape), device=self.device)

    def _states_at_chunk_starts(self, states: np.ndarray) -> th.Tensor:
        """Stored (n_steps, layers, n_envs, H) states -> (layers, n_envs * n_chunks, H) at each chunk's first step."""
        s = states[:: self.sequence_length]  # (n_chunks, layers, n_envs, H)
        s = np.ascontiguousarray(s.transpose(1, 2, 0, 3)).reshape(s.shape[1], -1, s.shape[3])
        return th.as_tensor(s, device=self.device)

    def _build_sequences(self) -> dict[str, Any]:
        if self.generator_ready:
            raise RuntimeError("sequence_minibatches() needs the rollout layout; stock get() has already flattened it")
        obs = self.observations
        seqs: dict[str, Any] = {
            "observations": (
                {k: self._to_sequences(v) for k, v in obs.items()} if isinstance(obs, dict) else self._to_sequences(obs)
            ),
            "actions": self._to_sequences(self.actions),
            "old_values": self._to_sequences(self.values),
            "old_log_prob": self._to_sequences(self.log_probs),
            "advantages": self._to_sequences(self.advantages),
            "returns": self._to_sequences(self.returns),
            "episode_starts": self._to_sequences(self.episode_starts),
        }
        seqs["states"] = [
            self._states_at_chunk_starts(a)
            for a in (self.hidden_states_pi, self.cell_states_pi, self.hidden_states_vf, self.cell_states_vf)
        ]
        return seqs

    def sequence_minibatches(self, batch_size: int | None) -> Iterator[SequenceSamples]:
        """Yield the rollout once, as random minibatches of whole sequences.

        :param batch_size: transitions per minibatch, as stock's ``get``: the rollout is split into stock's
            ``ceil(n_steps * n_envs / batch_size)`` minibatches of whole sequences, as even as whole sequences
            allow (None: everything at once)
        :raises UrgateError: when there are fewer sequences than minibatches (``plan_sequences`` says what works)
        """
        if self._sequences is None:
            self._sequences = self._build_sequences()
        seqs = self._sequences
        n_seq = seqs["actions"].shape[0]
        count = 1
        if batch_size is not None:
            plan_sequences(self.buffer_size, self.n_envs, batch_size, self.sequence_length)
            count = n_minibatches(self.buffer_size, self.n_envs, batch_size)
        order = th.randperm(n_seq).to(self.device)
        for idx in th.tensor_split(order, count):
            yield self._take(seqs, idx)

    @staticmethod
    def _take(seqs: dict[str, Any], idx: th.Tensor) -> SequenceSamples:
        def flat(t: th.Tensor) -> th.Tensor:
            t = t[idx]
            return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])

        obs = seqs["observations"]
        h_pi, c_pi, h_vf, c_vf = (s[:, idx] for s in seqs["states"])
        return SequenceSamples(
            observations={k: flat(v) for k, v in obs.items()} if isinstance(obs, dict) else flat(obs),
            actions=flat(seqs["actions"]),
            old_values=flat(seqs["old_values"]).flatten(),
            old_log_prob=flat(seqs["old_log_prob"]).flatten(),
            advantages=flat(seqs["advantages"]).flatten(),
            returns=flat(seqs["returns"]).flatten(),
            lstm_states=RNNStates((h_pi, c_pi), (h_vf, c_vf)),
            episode_starts=flat(seqs["episode_starts"]).flatten(),
        )


class SequenceRolloutBuffer(_SequenceMixin, RecurrentRolloutBuffer):
    """``RecurrentRolloutBuffer`` plus ``sequence_minibatches`` (see the module docstring).

    Takes the stock buffer's arguments plus:

    :param sequence_length: steps per training sequence, a divisor of ``buffer_size`` (default: ``buffer_size``,
        one sequence per env)
    """


class SequenceDictRolloutBuffer(_SequenceMixin, RecurrentDictRolloutBuffer):
    """``RecurrentDictRolloutBuffer`` plus ``sequence_minibatches`` (see the module docstring).

    Takes the stock buffer's arguments plus:

    :param sequence_length: steps per training sequence, a divisor of ``buffer_size`` (default: ``buffer_size``,
        one sequence per env)
    """
