"""The POPGym family (Morad et al. 2023): the ``popgym-*`` ids registered by the ``popgym`` package.

Needs the optional extra: ``pip install -e ".[popgym]"``. Observations that SB3 cannot take are converted: a Tuple
of Discrete spaces (Autoencode) becomes a MultiDiscrete (SB3 one-hot encodes each part, as it would the parts);
any other Tuple or Dict is flattened to a Box. Infos are copied on every call (``FreshInfo``). POPGym defines no success, so episodes carry no ``is_success``.
"""

from __future__ import annotations

import copy
import difflib

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .errors import EnvConfigError

GAMES = (  # popgym 1.0.7's registered games; a test checks them against popgym's registry
    "Autoencode",
    "RepeatPrevious",
    "RepeatFirst",
    "CountRecall",
    "PositionOnlyCartPole",
    "PositionOnlyPendulum",
    "VelocityOnlyCartpole",
    "NoisyPositionOnlyCartPole",
    "NoisyPositionOnlyPendulum",
    "MultiarmedBandit",
    "HigherLower",
    "Battleship",
    "Concentration",
    "MineSweeper",
)
IDS = tuple(f"popgym-{game}{level}-v0" for level in ("Easy", "Medium", "Hard") for game in GAMES)
PATTERN = r"popgym-.+-v\d+"


class TupleToMultiDiscrete(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """A Tuple of Discrete spaces as one MultiDiscrete (each part shifted to start at 0).

    :param env: env with a Tuple-of-Discrete observation space
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.ObservationWrapper.__init__(self, env)
        parts = env.observation_space.spaces
        self._start = np.array([p.start for p in parts], dtype=np.int64)
        self.observation_space = spaces.MultiDiscrete([p.n for p in parts])

    def observation(self, observation):
        return np.asarray(observation, dtype=np.int64) - self._start


class FreshInfo(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Copy ``info`` on every call: some POPGym games (CountRecall, MultiarmedBandit) return the same arrays from
    ``reset`` and every ``step``, so a stored info would change under its owner (gymnasium's check_env flags it).

    :param env: env whose infos may share objects between calls
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, copy.deepcopy(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, copy.deepcopy(info)


def sb3_observations(env: gym.Env) -> gym.Env:
    """Wrap ``env`` so that its observation space is one SB3 accepts (unchanged if it already is)."""
    space = env.observation_space
    if isinstance(space, spaces.Tuple) and all(isinstance(p, spaces.Discrete) for p in space.spaces):
        return TupleToMultiDiscrete(env)
    if isinstance(space, (spaces.Tuple, spaces.Dict)):
        return gym.wrappers.FlattenObservation(env)
    return env


def make_popgym(env_id: str, render_mode: str | None = None, **env_kwargs) -> gym.Env:
    """Build a POPGym task with SB3-compatible observations.

    :param env_id: a ``popgym-*`` id (``popgym`` registers 42)
    :param render_mode: passed to the env (POPGym envs render ``"ansi"`` or ``"human"`` text, if at all)
    :param env_kwargs: passed to the POPGym env
    """
    import popgym  # noqa: F401  (registers the popgym ids)

    if env_id not in gym.registry:
        registered = [i for i in gym.registry if i.startswith("popgym-")]
        close = difflib.get_close_matches(env_id, registered, n=3, cutoff=0.5)
        raise EnvConfigError(f"{env_id} is not a registered POPGym id; closest: {', '.join(close) or 'none'}")
    kwargs = {} if render_mode is None else {"render_mode": render_mode}
    try:
        env = gym.make(env_id, disable_env_checker=True, **kwargs, **env_kwargs)
    except TypeError as e:
        raise EnvConfigError(f"{env_id}: bad keyword argument ({e})") from None
    return FreshInfo(sb3_observations(env))
