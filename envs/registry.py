"""Environment families: one ``EnvFamily`` entry per family says which ids it serves, how to build them, and which
policy, features extractor, config and memoryless ceiling suit them. ``make_env`` and ``make_vec_env`` are the only
entry points ``agents/`` needs; adding a family is one entry in ``FAMILIES`` plus its module and tests."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.util
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym

from . import memory_maze, minigrid, popgym, tmaze, visual_match
from .errors import EnvConfigError

if TYPE_CHECKING:  # SB3 is imported where it is used: env worker processes import this module, never SB3 or torch
    from stable_baselines3.common.vec_env import VecEnv


@dataclass(frozen=True)
class EnvFamily:
    """A family of environments and what suits them.

    :param name: family name ("minigrid", "visual_match", "tmaze", "memory_maze", "popgym")
    :param summary: one line for listings
    :param ids: the exact ids the family serves (``pattern`` may accept more)
    :param policy: NAME of the suggested policy class in ``policies`` (envs never imports policies)
    :param features_extractor: NAME of a class in ``policies.extractors.EXTRACTORS``, or None for SB3's default
    :param features_extractor_kwargs: keyword arguments for that extractor
    :param memoryless_ceiling: best success rate a policy without memory can reach (None if unknown or undefined)
    :param memory_kwarg: the env keyword that sets the memory length, for frontier plots (None if there is none)
    :param config: name of the YAML file in ``configs/`` that suits the family
    :param extra: the pip extra the family needs, or None for core dependencies
    :param builder: called as ``builder(env_id, render_mode=..., **kwargs)``; family modules import their optional
        package only inside it, so listing families costs nothing
    :param pattern: regular expression of further ids the family accepts (full match), or None
    :param requires: the import name of the optional package (checked before building), or None
    :param env_class: the env class whose constructor signature lists the accepted keywords and their defaults
        (the builder forwards ``**env_kwargs`` to it); None: the builder's own signature lists them
    :param set_by_id: keywords of ``env_class`` that the builder derives from the id (not accepted from users)
    :param records_video: whether its envs render ``rgb_array`` frames, so that ``eval --video`` can record them
    :param vec_builder: ``"module:function"`` in this package (``"tmaze_vec:make_tmaze_vec"``), the function called
        as ``function(env_id, n_envs, **kwargs)`` for a VecEnv that steps all copies at once with DummyVecEnv's
        semantics and episodes (``make_vec_env`` prefers it in-process); the function may return None for ids or
        keywords it does not vectorise (then DummyVecEnv); None: the family has none. A name, not the function: its
        module needs SB3, which env worker processes never import, so it is imported only when a VecEnv is built
    """

    name: str
    summary: str
    ids: tuple[str, ...]
    policy: str
    features_extractor: str | None
    features_extractor_kwargs: dict
    memoryless_ceiling: float | None
    memory_kwarg: str | None
    config: str
    extra: str | None
    builder: Callable[..., gym.Env] | None = field(default=None, repr=False)
    pattern: str | None = field(default=None, repr=False)
    requires: str | None = field(default=None, repr=False)
    env_class: type | None = field(default=None, repr=False)
    set_by_id: tuple[str, ...] = field(default=(), repr=False)
    records_video: bool = True
    vec_builder: str | None = field(default=None, repr=False)

    def accepts(self, env_id: str) -> bool:
        """Whether ``env_id`` belongs to this family."""
        return env_id in self.ids or (self.pattern is not None and re.fullmatch(self.pattern, env_id) is not None)

    def install_hint(self) -> str:
        """The exact command that installs this family's optional dependencies."""
        return f'pip install -e ".[{self.extra}]"' if self.extra else ""

    def build(self, env_id: str, render_mode: str | None = None, **env_kwargs) -> gym.Env:
        """Import the family's module (checking its optional package first) and build one env."""
        if self.requires is not None and importlib.util.find_spec(self.requires) is None:
            raise EnvConfigError(
                f"{env_id} needs the optional package '{self.requires}', which is not installed: run {self.install_hint()}"
            )
        self.check_kwargs(env_id, env_kwargs)
        return self.builder(env_id, render_mode=render_mode, **env_kwargs)

    def build_vec(self, env_id: str, n_envs: int, **env_kwargs) -> VecEnv | None:
        """Import the family's vectorised module (``vec_builder``) and build ``n_envs`` copies stepped at once (None
        where the builder does not vectorise these arguments)."""
        module, _, function = self.vec_builder.partition(":")
        return getattr(importlib.import_module(f".{module}", __package__), function)(env_id, n_envs, **env_kwargs)

    def accepted_kwargs(self) -> list[str] | None:
        """The env keywords this family accepts, from ``env_class``'s signature (else the builder's); None when
        that forwards ``**kwargs`` (the env then checks them)."""
        params = inspect.signature(self.env_class or self.builder).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return None
        skip = {"env_id", "render_mode", *self.set_by_id}
        return [n for n, p in params.items() if n not in skip and p.kind is not inspect.Parameter.VAR_POSITIONAL]

    def check_kwargs(self, env_id: str, env_kwargs: dict[str, Any]) -> None:
        """Reject unknown keywords with the list of accepted ones."""
        accepted = self.accepted_kwargs()
        if accepted is not None:
            _reject_unknown(env_id, env_kwargs, accepted)


def _reject_unknown(env_id: str, env_kwargs: dict[str, Any], accepted: list[str]) -> None:
    unknown = sorted(set(env_kwargs) - set(accepted))
    if unknown:
        close = [m for u in unknown for m in difflib.get_close_matches(u, accepted, n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise EnvConfigError(f"{env_id} does not take keyword(s) {unknown}{hint}; accepted: {accepted}")


_MEMORY_MAZE = EnvFamily(
    name="memory_maze",
    summary="Memory Maze (Pasukonis et al. 2022): 3D maze, touch the targets in the order shown, 64x64 RGB; "
    "-Top is the top-down view",
    ids=memory_maze.ids("") + memory_maze.ids("-Top"),
    policy="CnnGatedPolicy",
    features_extractor=None,  # SB3's NatureCNN
    features_extractor_kwargs={},
    memoryless_ceiling=None,  # a score, not a success rate
    memory_kwarg=None,
    config="memory_maze",
    extra="memory-maze",
    builder=memory_maze.make_memory_maze,
    requires="memory_maze",
    env_class=memory_maze.MemoryMazeEnv,
    set_by_id=("size", *sorted({k for options in memory_maze.VARIANTS.values() for k in options})),
)

FAMILIES: dict[str, EnvFamily] = {
    f.name: f
    for f in (
        EnvFamily(
            name="minigrid",
            summary="MiniGrid Memory tasks (cue object at the start, choose the match at the end) and other partially "
            "observable MiniGrid tasks; symbolic 7x7x3 view + direction",
            ids=minigrid.IDS,
            policy="MultiInputGatedPolicy",
            features_extractor="SymbolicGridExtractor",
            features_extractor_kwargs={"features_dim": 128},
            memoryless_ceiling=0.5,  # the Memory tasks; the other MiniGrid tasks need little memory
            memory_kwarg=None,
            config="minigrid",
            extra=None,
            builder=minigrid.make_minigrid,
            pattern=minigrid.PATTERN,
            vec_builder="minigrid_vec:make_minigrid_vec",
        ),
        EnvFamily(
            name="visual_match",
            summary="Passive/Active Visual Match (Hung et al. 2018) on a symbolic grid: cue colour, apple distractor "
            "phase of `distractor_steps`, choose the matching box",
            ids=visual_match.IDS,
            policy="MultiInputGatedPolicy",
            features_extractor="SymbolicGridExtractor",
            features_extractor_kwargs={"features_dim": 128},
            memoryless_ceiling=1 / 3,  # n_colours=3
            memory_kwarg="distractor_steps",
            config="visual_match",
            extra=None,
            builder=visual_match.make_visual_match,
            env_class=visual_match.VisualMatchEnv,
            set_by_id=("active",),
            vec_builder="visual_match_vec:make_visual_match_vec",
        ),
        EnvFamily(
            name="tmaze",
            summary="passive T-maze: goal side shown at the first step only, walk `length` cells, turn; 2-d vector obs",
            ids=(tmaze.ENV_ID,),
            policy="MlpGatedPolicy",
            features_extractor=None,
            features_extractor_kwargs={},
            memoryless_ceiling=0.5,
            memory_kwarg="length",
            config="tmaze",
            extra=None,
            builder=tmaze.make_tmaze,
            env_class=tmaze.TMazeEnv,
            vec_builder="tmaze_vec:make_tmaze_vec",
        ),
        _MEMORY_MAZE,
        dataclasses.replace(
            _MEMORY_MAZE,
            name="memory_maze_extra",
            summary="Memory Maze with extra observations (agent and target positions, maze layout) beside the image",
            ids=memory_maze.ids("-ExtraObs"),
            policy="MultiInputGatedPolicy",  # SB3's CombinedExtractor: NatureCNN on the image, the vectors flattened
        ),
        EnvFamily(
            name="popgym",
            summary="POPGym (Morad et al. 2023): 14 memory games x Easy/Medium/Hard, small vector or discrete "
            "observations (Tuple observations converted for SB3)",
            ids=popgym.IDS,
            policy="MlpGatedPolicy",
            features_extractor=None,
            features_extractor_kwargs={},
            memoryless_ceiling=None,  # scores, not success rates
            memory_kwarg=None,
            config="popgym",
            extra="popgym",
            builder=popgym.make_popgym,
            pattern=popgym.PATTERN,
            requires="popgym",
            records_video=False,  # POPGym games render text, if at all
        ),
    )
}


def list_env_ids() -> list[str]:
    """All exact ids of all families (the MiniGrid family accepts further ``MiniGrid-*`` ids by pattern)."""
    return [env_id for family in FAMILIES.values() for env_id in family.ids]


def family_of(env_id: str) -> EnvFamily:
    """The family that serves ``env_id``.

    :param env_id: an environment id, e.g. ``"urgate/TMaze-v0"`` or ``"MiniGrid-MemoryS7-v0"``
    :raises EnvConfigError: for an unknown id, listing the families and the closest known ids
    """
    if not isinstance(env_id, str):
        raise EnvConfigError(f"environment id must be a string, got {env_id!r}")
    for family in FAMILIES.values():
        if env_id in family.ids:
            return family
    for family in FAMILIES.values():
        if family.accepts(env_id):
            return family
    close = difflib.get_close_matches(env_id, list_env_ids(), n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else ""
    raise EnvConfigError(
        f"unknown environment id {env_id!r}{hint}. Families: {', '.join(FAMILIES)} "
        "(`python run_rl.py list` or envs.list_env_ids() shows every id)"
    )


class _SeedFirstReset(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Use ``seed`` for the first ``reset()`` that is not given one, so ``make_env(id, seed=s)`` reproduces episodes
    without resetting (possibly expensively) at construction."""

    def __init__(self, env: gym.Env, seed: int) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, seed=seed)
        gym.Wrapper.__init__(self, env)
        self._pending_seed: int | None = seed
        env.action_space.seed(seed)
        env.observation_space.seed(seed)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            seed = self._pending_seed
        self._pending_seed = None
        return self.env.reset(seed=seed, options=options)


def make_env(env_id: str, seed: int | None = None, render_mode: str | None = None, **env_kwargs) -> gym.Env:
    """Build one environment of any family, with the wrappers its suggested policy needs.

    Every episode ends with ``info["is_success"]`` where the family defines success.

    :param env_id: environment id (``list_env_ids()``; MiniGrid also accepts other ``MiniGrid-*`` ids)
    :param seed: seed of the first ``reset()`` (and of the action and observation spaces); later resets continue
        that random stream, so the whole sequence of episodes is reproducible
    :param render_mode: gymnasium render mode (``"rgb_array"`` for videos where the family supports it)
    :param env_kwargs: family-specific keywords, e.g. ``length`` for the T-maze
    :raises EnvConfigError: for an unknown id or keyword, a bad value, or a missing optional package
    """
    env = family_of(env_id).build(env_id, render_mode=render_mode, **env_kwargs)
    return env if seed is None else _SeedFirstReset(env, seed)


def make_vec_env(
    env_id: str, n_envs: int = 1, seed: int | None = None, subprocess: bool = False, **env_kwargs
) -> VecEnv:
    """Build ``n_envs`` copies as an SB3 VecEnv with SB3's episode statistics (``Monitor`` per env, ``VecMonitor``
    around a vectorised family).

    :param env_id: environment id, as for ``make_env``
    :param n_envs: number of copies
    :param seed: env ``i`` is seeded with ``seed + i`` on its first reset
    :param subprocess: one process per env (``envs.subproc.LeanSubprocVecEnv``: SB3's ``SubprocVecEnv`` with
        children that import neither torch nor SB3, inside SB3's ``VecMonitor`` for the episode statistics); worth it
        only for expensive envs such as Memory Maze: on few cores in-process stepping (the default: the family's
        vectorised VecEnv where it has one, as the T-maze does, else ``DummyVecEnv``) is faster for cheap envs
    :param env_kwargs: family-specific keywords, as for ``make_env``
    :raises EnvConfigError: as ``make_env``, raised here in the calling process
    """
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise EnvConfigError(f"n_envs must be a positive integer, got {n_envs!r}")
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    from .subproc import LeanSubprocVecEnv

    family = family_of(env_id)
    if not subprocess and family.vec_builder is not None:
        family.check_kwargs(env_id, env_kwargs)
        vectorised = family.build_vec(env_id, n_envs, **env_kwargs)
        if vectorised is not None:
            venv = VecMonitor(vectorised)  # Monitor's episode statistics
            venv.seed(seed)
            return venv
    if not subprocess:
        # The first env is built here, so that a bad keyword raises EnvConfigError in the caller's frame.
        builder = _Builder(env_id, env_kwargs, first=family.build(env_id, **env_kwargs))
        return sb3_make_vec_env(builder, n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv)
    # Check the id, the optional package and the keywords here, where errors are readable, without building an env.
    if family.requires is not None and importlib.util.find_spec(family.requires) is None:
        family.build(env_id, **env_kwargs)  # raises the install hint
    family.check_kwargs(env_id, env_kwargs)
    # As SB3's make_vec_env: env i's action space is seeded with seed + i, its first reset with seed + i.
    venv = LeanSubprocVecEnv(
        [_Builder(env_id, env_kwargs, action_seed=None if seed is None else seed + i) for i in range(n_envs)]
    )
    venv.seed(seed)
    return VecMonitor(venv)


@dataclass
class _Builder:
    """An env factory for SB3's ``make_vec_env``: hands out ``first`` once, then builds (seeding the action space with
    ``action_seed`` if given); picklable for subprocesses."""

    env_id: str
    env_kwargs: dict
    first: gym.Env | None = None
    action_seed: int | None = None

    def __call__(self) -> gym.Env:
        if self.first is not None:
            env, self.first = self.first, None
            return env
        env = family_of(self.env_id).build(self.env_id, **self.env_kwargs)
        if self.action_seed is not None:
            env.action_space.seed(self.action_seed)
        return env
