"""Memory environments for the gated recurrent policies. Knows gymnasium and SB3's VecEnv utilities, never a policy.

``make_env`` / ``make_vec_env`` build any id of any family with the wrappers its suggested policy needs;
``family_of(env_id)`` says which policy, features extractor, config and memoryless ceiling suit it.
"""

import gymnasium as _gym

from .errors import EnvConfigError
from .registry import FAMILIES, EnvFamily, family_of, list_env_ids, make_env, make_vec_env

# Our own tasks are also reachable through gymnasium.make (raw env, without the family's extras).
_GYM_ENTRY_POINTS = {
    "urgate/TMaze-v0": "envs.tmaze:TMazeEnv",
    "urgate/PassiveVisualMatch-v0": "envs.visual_match:VisualMatchEnv",
}
for _env_id, _entry_point in _GYM_ENTRY_POINTS.items():
    if _env_id not in _gym.registry:
        _gym.register(id=_env_id, entry_point=_entry_point)
if "urgate/ActiveVisualMatch-v0" not in _gym.registry:
    _gym.register(
        id="urgate/ActiveVisualMatch-v0", entry_point="envs.visual_match:VisualMatchEnv", kwargs={"active": True}
    )

__all__ = ["FAMILIES", "EnvConfigError", "EnvFamily", "family_of", "list_env_ids", "make_env", "make_vec_env"]
