"""The previous action as an input: ``PreviousActionVecEnv`` appends the one-hot of each env's last action to its
observation, as memory-RL agents are commonly fed (the policy then sees what it did, not only what it saw).

The appended part is zeros at the first step of every episode: after ``reset`` and after SB3's auto-reset of an env
whose episode ended (its ``terminal_observation`` carries the action that ended the episode, as the last step
of that episode saw it). The wrapper keeps no state across steps (the appended part follows from the actions just
taken), so a resumed run's envs need nothing beyond their own snapshot. Flat ``Box`` observations and ``Discrete``
actions only.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from .errors import EnvConfigError


class PreviousActionVecEnv(VecEnvWrapper):
    """Observation ``[obs, one_hot(previous action)]`` for every env of ``venv``; zeros where no action was taken yet
    in the episode.

    :param venv: a VecEnv with a 1-D ``Box`` observation space and a ``Discrete`` action space
    """

    def __init__(self, venv: VecEnv):
        act, obs = venv.action_space, venv.observation_space
        if not isinstance(act, spaces.Discrete):
            raise EnvConfigError(f"previous_action needs a Discrete action space, this env has {_brief(act)}")
        if not isinstance(obs, spaces.Box) or len(obs.shape) != 1:
            raise EnvConfigError(
                f"previous_action needs a flat Box observation space (a vector), this env has {_brief(obs)}; image and Dict "
                "observations are not supported (the symbolic grid extractors would ignore an extra key)"
            )
        self.n_actions = int(act.n)
        self.start = int(act.start)
        dtype = np.result_type(obs.dtype, np.float32)
        low = np.concatenate([obs.low.astype(dtype), np.zeros(self.n_actions, dtype)])
        high = np.concatenate([obs.high.astype(dtype), np.ones(self.n_actions, dtype)])
        super().__init__(venv, observation_space=spaces.Box(low, high, dtype=dtype))
        self.dtype = dtype
        self._actions: np.ndarray | None = None  # the only state: the actions between step_async and step_wait

    def _with(self, obs: np.ndarray, previous: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(obs, dtype=self.dtype), previous], axis=-1)

    def reset(self) -> np.ndarray:
        return self._with(self.venv.reset(), np.zeros((self.num_envs, self.n_actions), self.dtype))

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions).reshape(self.num_envs).astype(np.int64) - self.start
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        assert self._actions is not None, "step_wait without step_async"
        previous = np.zeros((self.num_envs, self.n_actions), self.dtype)
        previous[np.arange(self.num_envs), self._actions] = 1
        for i in np.flatnonzero(dones):
            if "terminal_observation" in infos[i]:
                infos[i]["terminal_observation"] = self._with(infos[i]["terminal_observation"], previous[i])
        previous[dones] = 0  # the obs of a done env is the first of its next episode
        return self._with(obs, previous), rewards, dones, infos


def _brief(space: spaces.Space) -> str:
    """A space in one line: ``Dict('image', 'direction')``, ``Box(shape (7, 7, 3))``."""
    if isinstance(space, spaces.Dict):
        return f"Dict({', '.join(repr(k) for k in space.spaces)})"
    if isinstance(space, spaces.Box):
        return f"Box(shape {space.shape})"
    return " ".join(str(space).split())
