"""The MiniGrid family: the Memory tasks and other partially observable MiniGrid tasks by their own ids.

Observations become ``Dict(image: 7x7x3 symbolic indices, direction: Discrete(4))`` (the mission string is dropped)
for ``policies.extractors.SymbolicGridExtractor``; ``view="rgb"`` gives the 56x56x3 RGB view instead (then use
SB3's default ``CombinedExtractor``: ``features_extractor=None``).
"""

from __future__ import annotations

import difflib

import gymnasium as gym

from .errors import EnvConfigError
from .wrappers import FirstActions, GridDictObs, SuccessFromReward

# The memoryless ceiling of 0.5 is that of the Memory tasks.
MEMORY_IDS = (
    "MiniGrid-MemoryS7-v0",
    "MiniGrid-MemoryS9-v0",
    "MiniGrid-MemoryS11-v0",
    "MiniGrid-MemoryS13-v0",
    "MiniGrid-MemoryS13Random-v0",
    "MiniGrid-MemoryS17Random-v0",
)
# Other partially observable tasks whose (constant or redundant) mission string can be dropped.
OTHER_IDS = (
    "MiniGrid-RedBlueDoors-6x6-v0",
    "MiniGrid-RedBlueDoors-8x8-v0",
    "MiniGrid-KeyCorridorS3R3-v0",
    "MiniGrid-ObstructedMaze-1Q-v1",
)
IDS = MEMORY_IDS + OTHER_IDS
PATTERN = r"MiniGrid-.+-v\d+"
# Tasks whose mission names the target: without the mission string they are ambiguous, so we refuse them.
_MISSION_DEPENDENT = ("MiniGrid-Fetch-", "MiniGrid-GoToDoor-", "MiniGrid-GoToObject-", "MiniGrid-PutNear-")
VIEWS = ("symbolic", "rgb")
# Action sets, as the number of MiniGrid's actions kept: all of them, or the first three (0 left, 1 right, 2 forward),
# all that navigation tasks such as the Memory tasks need. Fewer actions make exploration much cheaper (measured in
# configs/minigrid.yaml).
ACTION_SETS: dict[str, int | None] = {"all": None, "move": 3}


def make_minigrid(
    env_id: str,
    render_mode: str | None = None,
    view: str = "symbolic",
    tile_size: int = 8,
    actions: str = "all",
    **env_kwargs,
) -> gym.Env:
    """Build a MiniGrid task with the mission dropped and ``info["is_success"]`` at episode end.

    :param env_id: a registered ``MiniGrid-*`` id
    :param render_mode: ``None``, ``"rgb_array"`` or ``"human"``
    :param view: ``"symbolic"`` (7x7x3 indices, the default) or ``"rgb"`` (the egocentric view in pixels)
    :param tile_size: pixels per cell of the RGB view
    :param actions: ``"all"`` (MiniGrid's 7 actions, the default) or ``"move"`` (left, right, forward: enough for the
        Memory tasks, and the same action set as our Visual Match and T-maze tasks)
    :param env_kwargs: passed to the MiniGrid env (e.g. ``max_steps``)
    """
    import minigrid  # noqa: F401  (registers the MiniGrid ids)

    if env_id.startswith(_MISSION_DEPENDENT):
        raise EnvConfigError(
            f"{env_id}: its mission string names the target and our wrappers drop it; use a task whose mission is "
            f"constant, e.g. {', '.join(IDS)}"
        )
    if env_id not in gym.registry:
        registered = [i for i in gym.registry if i.startswith("MiniGrid-")]
        close = difflib.get_close_matches(env_id, registered, n=3, cutoff=0.5)
        raise EnvConfigError(
            f"{env_id} is not a MiniGrid id registered by the installed minigrid; closest: {', '.join(close) or 'none'}"
        )
    if view not in VIEWS:
        raise EnvConfigError(f"MiniGrid view must be one of {VIEWS}, got {view!r}")
    if actions not in ACTION_SETS:
        raise EnvConfigError(f"MiniGrid actions must be one of {tuple(ACTION_SETS)}, got {actions!r}")
    try:
        env = gym.make(env_id, render_mode=render_mode, disable_env_checker=True, **env_kwargs)
    except TypeError as e:
        raise EnvConfigError(f"{env_id}: bad keyword argument ({e})") from None
    if view == "rgb":
        from minigrid.wrappers import RGBImgPartialObsWrapper

        env = RGBImgPartialObsWrapper(env, tile_size=tile_size)
    if ACTION_SETS[actions] is not None:
        env = FirstActions(env, ACTION_SETS[actions])
    return SuccessFromReward(GridDictObs(env, symbolic=view == "symbolic"))
