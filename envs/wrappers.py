"""Wrappers shared by the families: observation spaces SB3 can take, and ``info["is_success"]`` at episode end."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# The symbolic grid encoding of MiniGrid (and of our Visual Match tasks): per cell (object, colour, state) indices.
# Upper bounds: 11 object types (0..10), 6 colours (0..5), state 0..3 (door states 0..2; the agent's direction 0..3
# in fully observed grids).
GRID_INDEX_HIGH = np.array([10, 5, 3], dtype=np.uint8)


def symbolic_image_space(height: int = 7, width: int = 7) -> spaces.Box:
    """The (H, W, 3) uint8 space of symbolic grid views, with its true bounds rather than [0, 255].

    With bounds other than [0, 255] SB3 does not treat the view as an image: it neither divides it by 255 nor
    transposes it, so the features extractor receives the raw indices whatever ``normalize_images`` says.
    """
    high = np.broadcast_to(GRID_INDEX_HIGH, (height, width, 3)).copy()
    return spaces.Box(low=np.zeros_like(high), high=high, dtype=np.uint8)


class GridDictObs(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Keep MiniGrid's ``image`` and ``direction``, drop the ``mission`` string (SB3 cannot take Text spaces).

    The symbolic view gets its true index bounds (``symbolic_image_space``); an RGB view (from
    ``minigrid.wrappers.RGBImgPartialObsWrapper``) keeps [0, 255] so that SB3's image pipeline applies.

    :param env: a MiniGrid env (possibly RGB-wrapped)
    :param symbolic: whether ``image`` holds symbolic indices (True) or RGB pixels (False)
    """

    def __init__(self, env: gym.Env, symbolic: bool = True) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, symbolic=symbolic)
        gym.ObservationWrapper.__init__(self, env)
        image = env.observation_space["image"]
        image_space = symbolic_image_space(*image.shape[:2]) if symbolic else image
        self.observation_space = spaces.Dict({"image": image_space, "direction": env.observation_space["direction"]})

    def observation(self, observation):
        return {"image": observation["image"], "direction": observation["direction"]}


class FirstActions(gym.ActionWrapper, gym.utils.RecordConstructorArgs):
    """Restrict a ``Discrete(n)`` action space to its first ``k`` actions (their indices are unchanged).

    :param env: env with a ``Discrete`` action space starting at 0
    :param k: number of actions kept, ``1 <= k <= n``
    """

    def __init__(self, env: gym.Env, k: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, k=k)
        gym.ActionWrapper.__init__(self, env)
        space = env.action_space
        if not isinstance(space, spaces.Discrete) or space.start != 0 or not 1 <= k <= space.n:
            raise ValueError(
                f"FirstActions needs a Discrete(n) action space starting at 0 with 1 <= k <= n, got {space}, k={k}"
            )
        self.action_space = spaces.Discrete(k)

    def action(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is outside {self.action_space}")
        return action


class SuccessFromReward(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Set ``info["is_success"]`` on the last step of each episode: success means a positive final reward.

    MiniGrid rewards only reaching the goal (``1 - 0.9 t / T``), so this is exact there.

    :param env: env whose only positive reward is the success reward on the terminal step
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            info = dict(info)
            info["is_success"] = bool(terminated and reward > 0)
        return obs, reward, terminated, truncated, info
