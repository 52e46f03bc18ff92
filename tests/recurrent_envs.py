"""Tiny gymnasium envs for the recurrent policy and FastRecurrentPPO tests: any observation / action space,
episodes that terminate at random steps and are truncated at a time limit (the timeout bootstrap path)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env


class ToyEnv(gym.Env):
    """Random observations from ``observation_space``; reward ``0.1 * sum(action)`` plus 1 when the first
    observation entry was positive two steps ago (a little memory); terminates with ``terminate_prob`` per step
    and truncates after ``max_steps``.
    """

    def __init__(
        self,
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
        max_steps: int = 7,
        terminate_prob: float = 0.1,
    ) -> None:
        self.observation_space = observation_space or spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = action_space or spaces.Discrete(2)
        self.max_steps, self.terminate_prob = max_steps, terminate_prob
        self._t = 0
        self._cues: list[float] = []

    def _obs(self):
        obs = self.observation_space.sample()
        first = obs["vec"] if isinstance(obs, dict) else obs
        self._cues.append(float(np.asarray(first, dtype=np.float64).ravel()[0]))
        return obs

    def reset(self, *, seed: int | None = None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.observation_space.seed(seed)
        self._t, self._cues = 0, []
        return self._obs(), {}

    def step(self, action):
        self._t += 1
        remembered = len(self._cues) >= 2 and self._cues[-2] > 0
        reward = 0.1 * float(np.sum(action)) + float(remembered)
        terminated = bool(self.np_random.random() < self.terminate_prob)
        truncated = self._t >= self.max_steps and not terminated
        return self._obs(), reward, terminated, truncated, {}


def toy_vec_env(n_envs: int = 2, seed: int = 0, **kwargs):
    """``n_envs`` ToyEnvs (``kwargs`` as ToyEnv) in a DummyVecEnv with Monitors."""
    return make_vec_env(lambda: ToyEnv(**kwargs), n_envs=n_envs, seed=seed)


DICT_SPACE = spaces.Dict(
    {
        "vec": spaces.Box(-1.0, 1.0, (3,), np.float32),
        "flag": spaces.Discrete(3),
        "img": spaces.Box(0, 1, (2, 2), np.float32),
    }
)
IMAGE_SPACE = spaces.Box(0, 255, (40, 40, 3), np.uint8)


def play(model, env, n_steps: int, deterministic: bool = True):
    """Step ``env`` with ``model.predict``, carrying the recurrent state and the episode starts as a user would.

    :return: ``(actions, rewards, final_state)``, actions and rewards stacked over steps
    """
    obs, state, start = env.reset(), None, np.ones(env.num_envs, dtype=bool)
    actions, rewards = [], []
    for _ in range(n_steps):
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=deterministic)
        obs, reward, start, _ = env.step(action)
        actions.append(action)
        rewards.append(reward)
    return np.stack(actions), np.stack(rewards), state
