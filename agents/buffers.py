"""Rollout buffers that hand out whole, unpadded sequences, built once per rollout.

sb3-contrib's recurrent buffers cut every minibatch into sequences at episode starts and pad them to the longest
one, in Python, once per minibatch and epoch (about 2x more samples computed than used). These buffers store the
same data (they subclass the stock buffers, so stock ``get`` still works) and add ``sequence_minibatches``:

- each env's ``n_steps`` rollout is cut into chunks of ``sequence_length`` consecutive steps (default: the whole
  rollout, one sequence per env);
- a chunk starts from the recurrent state stored at its first step during the rollout (as stock starts its
  sequences), and episode starts inside a chunk are passed on as ``episode_starts`` so the core resets there;
- minibatches are random sets of ``round(batch_size / sequence_length)`` whole chunks (at least one), so nothing is
  padded and every minibatch holds about ``batch_size`` transitions.

The tensors are laid out once per rollout, sequence-major, on the buffer's device; a minibatch is one index per
tensor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch as th
from sb3_contrib.common.recurrent.buffers import RecurrentDictRolloutBuffer, RecurrentRolloutBuffer
from sb3_contrib.common.recurrent.type_aliases import RNNStates

from .errors import UrgateError


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


def check_sequence_length(sequence_length: int, n_steps: int) -> int:
    """Validate ``sequence_length`` against the rollout length and return it.

    :param sequence_length: steps per training sequence
    :param n_steps: steps per env per rollout
    """
    if isinstance(sequence_length, bool) or not isinstance(sequence_length, int | np.integer):
        raise UrgateError(
            f"sequence_length must be a positive integer dividing n_steps={n_steps}, got {sequence_length!r}"
        )
    if sequence_length < 1 or n_steps % sequence_length:
        raise UrgateError(
            f"sequence_length={sequence_length} must be a positive divisor of n_steps={n_steps} "
            f"(e.g. {n_steps} for whole rollouts)"
        )
    return int(sequence_length)


class _SequenceMixin:
    """``sequence_minibatches`` on top of a stock recurrent rollout buffer (arrays laid out (n_steps, n_envs))."""

    buffer_size: int
    n_envs: int
    device: th.device
    observations: Any
    generator_ready: bool

    def __init__(self, *args: Any, sequence_length: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequence_length = check_sequence_length(sequence_length or self.buffer_size, self.buffer_size)

    def reset(self) -> None:
        super().reset()
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

        :param batch_size: transitions per minibatch (rounded to whole sequences; None: everything at once)
        """
        if self._sequences is None:
            self._sequences = self._build_sequences()
        seqs = self._sequences
        n_seq = seqs["actions"].shape[0]
        per_batch = n_seq if batch_size is None else max(1, round(batch_size / self.sequence_length))
        order = th.randperm(n_seq).to(self.device)
        for i in range(0, n_seq, per_batch):
            yield self._take(seqs, order[i : i + per_batch])

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

    :param sequence_length: steps per training sequence, a divisor of ``buffer_size`` (default: ``buffer_size``)
    """


class SequenceDictRolloutBuffer(_SequenceMixin, RecurrentDictRolloutBuffer):
    """``RecurrentDictRolloutBuffer`` plus ``sequence_minibatches`` (see the module docstring).

    Takes the stock buffer's arguments plus:

    :param sequence_length: steps per training sequence, a divisor of ``buffer_size`` (default: ``buffer_size``)
    """
