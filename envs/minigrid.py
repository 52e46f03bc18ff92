"""The MiniGrid family: the Memory tasks and other partially observable MiniGrid tasks by their own ids.

Observations become ``Dict(image: 7x7x3 symbolic indices, direction: Discrete(4))`` (the mission string is dropped)
for ``policies.extractors.SymbolicGridExtractor``; ``view="rgb"`` gives the 56x56x3 RGB view instead (then use
SB3's default ``CombinedExtractor``: ``features_extractor=None``).

``envs.make_vec_env`` steps the Memory tasks (``MEMORY_IDS``, symbolic view, both action sets) as one vectorised
VecEnv, ``envs.minigrid_vec.MemoryVecEnv``: each episode comes from minigrid's own generator with the copy's seed,
and the step and the view are numpy code over all copies, checked step for step against minigrid's own env (the
versions in ``VEC_CHECKED_VERSIONS``; any other minigrid gets its own envs, with one warning). A copy of MiniGrid in
JAX (NAVIX, XLand-MiniGrid) would draw other episodes for the same seed and bring JAX into a torch package, so the
Memory tasks are reproduced in numpy instead. Everything else (the RGB view, other tasks, rendering, videos) runs
minigrid's own env.

Memory cue (``envs.cue``): ``info["memory_cue"]`` = 0 (a key) or 1 (a ball), the start room's object, on every
step whose view shows it (single env: ``MemoryCue``; vectorised: the same steps, tested).
"""

from __future__ import annotations

import difflib
import re
import warnings

import gymnasium as gym

from .cue import CUE_INFO
from .errors import EnvConfigError
from .gridview import VIEW
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
# The minigrid releases whose Memory tasks ``envs.minigrid_vec.MemoryVecEnv`` was checked against, step for step
# (tests/test_envs_minigrid_vec.py); with another version make_vec_env steps minigrid's own envs instead.
VEC_CHECKED_VERSIONS = ((3, 0, 0), (3, 2, 0))  # first and last, inclusive
# The keywords the vectorised Memory tasks take (others, e.g. agent_view_size, get minigrid's own envs).
_VEC_KWARGS = frozenset({"actions", "view", "tile_size", "max_steps", "size", "random_length"})
_warned_version: list[str] = []
# The Memory tasks' cue (``envs.cue``): the start room's object, 0 a key, 1 a ball.
CUE_CLASSES = {"key": 0, "ball": 1}


def start_object_cell(height: int) -> tuple[int, int]:
    """Where a Memory task puts the start room's object (``MemoryEnv._gen_grid``)."""
    return 1, height // 2 - 1


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
    from minigrid.envs import MemoryEnv

    if isinstance(env.unwrapped, MemoryEnv) and env.unwrapped.agent_view_size == VIEW:
        env = MemoryCue(env)
    if view == "rgb":
        from minigrid.wrappers import RGBImgPartialObsWrapper

        env = RGBImgPartialObsWrapper(env, tile_size=tile_size)
    if ACTION_SETS[actions] is not None:
        env = FirstActions(env, ACTION_SETS[actions])
    return SuccessFromReward(GridDictObs(env, symbolic=view == "symbolic"))


class MemoryCue(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """``info[envs.cue.CUE_INFO]`` = 0 (key) or 1 (ball), the start room's object, on every step (reset included)
    whose view shows it (inside the view and not hidden by walls): what a Memory task asks the agent to remember.

    :param env: a MiniGrid ``MemoryEnv`` with the 7x7 view, before any wrapper that changes the observation
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)

    @property
    def memory_span(self) -> int:
        """Steps the cue must be carried, twice what an agent needs that walks straight from where it first sees
        the cue to its choice (turn round, walk back along the hallway, turn to the matching object: at most the
        grid's width + 4 steps). Far below the episode limit (5 size^2), so training sequences sized by it
        (``ppo.n_steps: auto``) are short and PPO updates often."""
        return 2 * (self.env.unwrapped.width + 4)

    def _cue(self, obs, info):
        task = self.env.unwrapped
        start = start_object_cell(task.height)
        where = task.relative_coords(*start)  # in the view, and not hidden (hidden cells are encoded 0)
        if where is not None and obs["image"][where][0] != 0:
            info = dict(info)
            info[CUE_INFO] = CUE_CLASSES[task.grid.get(*start).type]
        return info

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs, self._cue(obs, info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._cue(obs, info)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def vec_supported(env_id: str, view: str = "symbolic", **env_kwargs) -> bool:
    """Whether ``make_minigrid_vec`` steps these arguments as arrays: a Memory id, the symbolic view, keywords the
    vectorised version models, and a minigrid release it was checked against (else one warning per process)."""
    if env_id not in MEMORY_IDS or view != "symbolic" or not set(env_kwargs) <= _VEC_KWARGS:
        return False
    import minigrid

    low, high = VEC_CHECKED_VERSIONS
    if low <= _version(minigrid.__version__) <= high:
        return True
    if not _warned_version:
        _warned_version.append(minigrid.__version__)
        checked = "..".join(".".join(map(str, v)) for v in VEC_CHECKED_VERSIONS)
        warnings.warn(
            f"minigrid {minigrid.__version__} is not a version the vectorised Memory tasks were checked against "
            f"({checked}): stepping minigrid's own envs instead (correct, about 20x slower)",
            stacklevel=3,
        )
    return False
