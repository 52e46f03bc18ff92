"""``MemoryCurriculum``: train on short memory first, then lengthen it as the agent succeeds.

A VecEnv wrapper for training envs whose vectorised env can change its memory length between episodes
(``set_memory_length``, ``memory_length`` and ``memory_limit``: ``TMazeVecEnv``'s corridor, ``VisualMatchVecEnv``'s
steps before the choice room, its cue phase then its distractor phase). Episodes start at length ``start`` (at the
env's own length if that is shorter); once ``window`` episodes begun at the current length have
finished and their success rate (``info["is_success"]``) reaches ``success``, the length grows by ``step``, up to
the length the env was built with (the task that evaluations measure, which the wrapper never changes). Episodes that began before a promotion
are not counted at the new length (they finish at their old one, but for a Visual Match distractor phase that begins
after the promotion: a phase's length is read when it begins).

The wrapper's state (length, the episodes counted, which copies' episodes began at the current length) is part of
the training env's snapshot (``envs.vec_state``), so a resumed run promotes where the uninterrupted run would.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from .errors import EnvConfigError
from .vec_state import _chain


def memory_env(venv: VecEnv):
    """The VecEnv inside ``venv``'s wrappers that can change its memory length, or None."""
    base = _chain(venv)[-1]
    return base if hasattr(base, "set_memory_length") else None


def find_wrapper(venv: VecEnv, cls: type):
    """The first VecEnv of class ``cls`` in ``venv``'s chain of wrappers (outermost first), or None."""
    return next((v for v in _chain(venv) if isinstance(v, cls)), None)


class MemoryCurriculum(VecEnvWrapper):
    """Lengthen the memory of the wrapped training env as its episodes succeed (see the module docstring).

    :param venv: a VecEnv whose innermost env has ``set_memory_length`` (``TMazeVecEnv``, ``VisualMatchVecEnv``)
    :param start: the first memory length; a start beyond the env's ``memory_limit`` starts at the limit (the task
        itself: a config's start then suits shorter tasks too); the env says which lengths it accepts
    :param step: length added at each promotion (>= 1)
    :param success: success rate over ``window`` episodes that promotes (in (0, 1])
    :param window: finished episodes begun at the current length that decide a promotion (>= 1)
    """

    def __init__(self, venv: VecEnv, start: int, step: int, success: float, window: int) -> None:
        base = memory_env(venv)
        if base is None:
            raise EnvConfigError(
                f"a memory curriculum needs an env that can change its memory length between episodes "
                f"(the T-maze, Passive or Active Visual Match); {type(_chain(venv)[-1]).__name__} cannot"
            )
        limit = base.memory_limit
        checks = (
            (start, "start", "a non-negative integer", _int(start) >= 0),
            (step, "step", "an integer >= 1", _int(step) >= 1),
            (window, "window", "an integer >= 1", _int(window) >= 1),
            (success, "success", "a success rate in (0, 1]", _num(success) and 0 < success <= 1),
        )
        for value, name, want, ok in checks:
            if not ok:
                raise EnvConfigError(f"curriculum.{name} must be {want}, got {value!r}")
        super().__init__(venv)
        self._base, self.limit = base, limit
        self.step_size, self.success, self.window = int(step), float(success), int(window)
        self.length = min(int(start), limit)
        try:
            self._base.set_memory_length(self.length)
        except EnvConfigError as exc:
            raise EnvConfigError(f"curriculum.start={start!r}: {exc}") from None
        self._results: list[bool] = []  # outcomes of episodes begun at the current length, oldest first
        self._current = np.zeros(self.num_envs, dtype=bool)  # whose episode in progress began at the current length

    def reset(self):
        obs = self.venv.reset()
        self._current[:] = True
        return obs

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        for i in np.flatnonzero(dones).tolist():
            if self._current[i] and "is_success" in infos[i]:
                self._results.append(bool(infos[i]["is_success"]))
            self._current[i] = True  # its next episode begins now
        self._results = self._results[-self.window :]
        if self.length < self.limit and len(self._results) == self.window and np.mean(self._results) >= self.success:
            self.length = min(self.length + self.step_size, self.limit)
            self._base.set_memory_length(self.length)
            self._results = []
            self._current[:] = False
        return obs, rewards, dones, infos

    def get_state(self) -> dict[str, Any]:
        """The curriculum's progress, for ``envs.vec_state``."""
        return {"length": self.length, "results": list(self._results), "current": self._current.copy()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.length = int(state["length"])
        self._base.set_memory_length(self.length)
        self._results = list(state["results"])
        self._current = state["current"].copy()


def _int(value) -> int:
    """``value`` if it is an integer (not a bool), else -1 (which every check above refuses)."""
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else -1


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
