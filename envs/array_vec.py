"""``ArrayVecEnv``: what every VecEnv that steps its copies as arrays (and so has no per-copy env objects) shares.

Kept apart from the task modules because it needs SB3 (and so torch), which env worker processes never import.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from .errors import EnvConfigError


class ArrayVecEnv(VecEnv):
    """An SB3 VecEnv whose copies live in arrays: no per-copy env objects to set attributes on, call methods of,
    wrap or render (rendering goes through the single env, named by ``single_env`` in the error texts).
    """

    single_env = "envs.make_env"  # what to use for single episodes, as the error texts say

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise EnvConfigError(
            f"{type(self).__name__} cannot set {attr_name!r}: build a new one with the keywords you want"
        )

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        raise EnvConfigError(
            f"{type(self).__name__} has no per-copy env objects to call {method_name!r} on; "
            f"use {self.single_env} for single episodes"
        )

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def get_images(self) -> list[np.ndarray | None]:
        return [None] * self.num_envs
