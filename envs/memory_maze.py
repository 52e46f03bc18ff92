"""Memory Maze (Pasukonis et al. 2022) as a gymnasium env, without the old ``gym`` package or shimmy.

Needs the optional extra: ``pip install -e ".[memory-maze]"`` (memory-maze, dm-control, and mujoco pinned to a
version that dm-control can drive: ``mujoco==3.17.0``; mujoco 4 breaks dm_control's first reset).

The agent (a rolling ball) sees a 64x64x3 egocentric image whose border shows the colour of the current target and
earns +1 each time it touches that target; then a new target is drawn. Remembering where the targets are is what
separates good agents from random walkers. Episodes always end by truncation (9x9: 1000 steps, 11x11: 2000,
13x13: 3000, 15x15: 4000 at the default 4 Hz control); success is not defined, so there is no ``is_success``.

Rendering is headless: ``MUJOCO_GL=egl`` (set here when unset) works on a CPU-only machine through Mesa's llvmpipe;
``MUJOCO_GL=osmesa`` also works once the Debian package ``libosmesa6`` is installed (about 10 % faster).
Costs on a 2-core machine: ~40 steps/s (9x9), ~1.4 GB of memory per env process, and seconds per maze build,
so use ``make_vec_env(..., subprocess=True)`` for several envs.
"""

from __future__ import annotations

import logging
import os
import sys
import types
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .errors import EnvConfigError

SIZES = (9, 11, 13, 15)
N_TARGETS = {9: 3, 11: 4, 13: 5, 15: 6}  # as memory_maze.tasks sets them
# id suffix -> task keywords; all variants keep 64x64 images so that NatureCNN fits.
VARIANTS = {
    "": {},
    "-Top": {"top_camera": True},
    "-ExtraObs": {"extra_obs": True},
}


def ids(variant: str) -> tuple[str, ...]:
    """The urgate ids of one variant (a key of ``VARIANTS``), for every maze size."""
    return tuple(f"urgate/MemoryMaze-{s}x{s}{variant}-v0" for s in SIZES)


def _import_tasks() -> types.ModuleType:
    """``memory_maze.tasks``, imported without the old ``gym`` package.

    ``import memory_maze`` imports ``gym`` unconditionally (for its own registrations) and re-raises if it is
    missing. When gym is absent a stand-in module is placed in ``sys.modules`` for the duration of the import only;
    nothing of it is used afterwards (we drive the dm_env tasks directly).
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    logging.getLogger("absl").addFilter(_drop_free_joint_warning)  # idempotent; also when memory_maze came first
    if "memory_maze.tasks" in sys.modules:
        return sys.modules["memory_maze.tasks"]
    import importlib.util

    stand_ins: dict[str, types.ModuleType] = {}
    if importlib.util.find_spec("gym") is None:
        gym_stub = types.ModuleType("gym")
        gym_stub.Env = gym_stub.Space = object  # base classes of memory_maze.gym_wrappers, never instantiated
        gym_stub.spaces = spaces
        registration = types.ModuleType("gym.envs.registration")
        registration.register = lambda *args, **kwargs: None
        gym_stub.envs = types.ModuleType("gym.envs")
        gym_stub.envs.registration = registration
        stand_ins = {
            "gym": gym_stub,
            "gym.envs": gym_stub.envs,
            "gym.envs.registration": registration,
            "gym.spaces": spaces,
        }
        sys.modules.update(stand_ins)
    try:
        from memory_maze import tasks
    finally:
        for name in stand_ins:
            sys.modules.pop(name, None)
    return tasks


def _drop_free_joint_warning(record: logging.LogRecord) -> bool:
    """dm_control warns "Cannot set velocity on Entity with no free joint." at every reset of a Memory Maze (its
    targets have no free joint; the velocity is meaningless for them): drop that one message, keep all others."""
    return record.getMessage() != "Cannot set velocity on Entity with no free joint."


def _space(spec) -> spaces.Space:
    """A gymnasium space for a dm_env spec (Array, BoundedArray, DiscreteArray, or a dict of them)."""
    from dm_env import specs

    if isinstance(spec, dict):
        return spaces.Dict({k: _space(v) for k, v in spec.items()})
    if isinstance(spec, specs.DiscreteArray):
        return spaces.Discrete(spec.num_values)
    if isinstance(spec, specs.BoundedArray):
        low = np.broadcast_to(spec.minimum, spec.shape).astype(spec.dtype)
        high = np.broadcast_to(spec.maximum, spec.shape).astype(spec.dtype)
        return spaces.Box(low, high, shape=spec.shape, dtype=spec.dtype)
    return spaces.Box(-np.inf, np.inf, shape=spec.shape, dtype=np.float32)  # unbounded float64 vectors


def observation_space(size: int, extra_obs: bool, camera_resolution: int) -> spaces.Space:
    """The observation space of a Memory Maze task, as ``_space`` gives it from the task's specs."""
    image = spaces.Box(0, 255, shape=(camera_resolution, camera_resolution, 3), dtype=np.uint8)
    if not extra_obs:
        return image

    def vector(*shape):
        return spaces.Box(-np.inf, np.inf, shape=shape, dtype=np.float32)

    n = N_TARGETS[size]
    return spaces.Dict(
        {
            "image": image,
            "target_color": vector(3),
            "agent_pos": vector(2),
            "agent_dir": vector(2),
            "targets_vec": vector(n, 2),
            "targets_pos": vector(n, 2),
            "target_vec": vector(2),
            "target_pos": vector(2),
            "maze_layout": spaces.Box(0, 1, shape=(size, size), dtype=np.uint8),
        }
    )


class MemoryMazeEnv(gym.Env):
    """One Memory Maze task behind the gymnasium API.

    ``reset(seed=s)`` rebuilds the task with seed ``s`` (the task's seed fixes the whole sequence of mazes, and
    the maze generator cannot be reseeded in place), so it costs a maze build; ``reset()`` without a seed draws the
    next maze of the current sequence. The first reset without any seed builds from a seed drawn by gymnasium.

    :param size: maze size without the outer walls: 9, 11, 13 or 15
    :param top_camera: observe the maze from above instead of the agent's eyes
    :param extra_obs: Dict observations with the agent's and targets' positions and the maze layout besides the
        image (for probing or auxiliary losses; the standard benchmark uses the image only)
    :param camera_resolution: image side in pixels (64 in the benchmark)
    :param good_visibility: the easier "Vis" variant (targets raised, lower walls)
    :param control_freq: control steps per simulated second (4 in the benchmark); the episode lasts a fixed
        simulated time, so lower values give shorter episodes (used by the fast tests)
    :param render_mode: ``None`` or ``"rgb_array"`` (returns the current image observation, for videos)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        size: int = 9,
        top_camera: bool = False,
        extra_obs: bool = False,
        camera_resolution: int = 64,
        good_visibility: bool = False,
        control_freq: float = 4.0,
        render_mode: str | None = None,
    ) -> None:
        if size not in SIZES:
            raise EnvConfigError(f"Memory Maze size must be one of {SIZES}, got {size!r}")
        if render_mode not in (None, "rgb_array"):
            raise EnvConfigError(f"Memory Maze render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not (isinstance(camera_resolution, int) and camera_resolution >= 16):
            raise EnvConfigError(f"Memory Maze camera_resolution must be an integer >= 16, got {camera_resolution!r}")
        if not control_freq > 0:
            raise EnvConfigError(f"Memory Maze control_freq must be > 0, got {control_freq!r}")
        self.size, self.extra_obs, self.render_mode = size, extra_obs, render_mode
        self._task_fn = getattr(_import_tasks(), f"memory_maze_{size}x{size}")
        self._task_kwargs = {
            "image_only_obs": not extra_obs,
            "global_observables": extra_obs,
            "top_camera": top_camera,
            "camera_resolution": camera_resolution,
            "good_visibility": good_visibility,
            "control_freq": control_freq,
        }
        self._dm = None
        self._last_image: np.ndarray | None = None
        # Known without building a task (seconds); tests compare them with the built task's specs.
        self.observation_space = observation_space(size, extra_obs, camera_resolution)
        self.action_space = spaces.Discrete(6)  # noop, forward, left, right, forward + left, forward + right

    def _build(self, seed: int) -> None:
        if self._dm is not None:
            self._dm.close()
        self._dm = self._task_fn(seed=seed, **self._task_kwargs)

    def _obs(self, observation):
        if not self.extra_obs:
            self._last_image = observation
            return observation
        self._last_image = observation["image"]
        return {
            k: np.asarray(v, dtype=self.observation_space[k].dtype).reshape(self.observation_space[k].shape)
            for k, v in observation.items()
        }

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None or self._dm is None:
            # The task's own RandomState takes the seed; drawn from np_random so that gymnasium's seed decides it.
            self._build(seed=int(self.np_random.integers(1, 2**31 - 1)))
        return self._obs(self._dm.reset().observation), {}

    def step(self, action):
        timestep = self._dm.step(int(action))
        terminated = timestep.last() and timestep.discount == 0.0
        truncated = timestep.last() and not terminated
        return self._obs(timestep.observation), float(timestep.reward), terminated, truncated, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._last_image is None:
            return None
        return self._last_image.copy()

    def close(self) -> None:
        if self._dm is not None:
            self._dm.close()
            self._dm = None
        super().close()


def make_memory_maze(env_id: str, render_mode: str | None = None, **env_kwargs) -> MemoryMazeEnv:
    """Family builder for ``urgate/MemoryMaze-{9x9,11x11,13x13,15x15}[-Top|-ExtraObs]-v0``.

    :param env_kwargs: ``MemoryMazeEnv``'s keywords but those the id sets (size and variant); its signature is
        the one list of them and of their defaults, and the registry checks them against it
    """
    name = env_id.removeprefix("urgate/MemoryMaze-").removesuffix("-v0")
    size_text, _, variant = name.partition("-")
    size = int(size_text.split("x")[0])
    options = VARIANTS["-" + variant if variant else ""]
    return MemoryMazeEnv(size=size, render_mode=render_mode, **options, **env_kwargs)
