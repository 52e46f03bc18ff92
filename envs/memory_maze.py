"""Memory Maze (Pasukonis et al. 2022) as a gymnasium env, without the old ``gym`` package or shimmy.

Needs the optional extra: ``pip install -e ".[memory-maze]"`` (memory-maze, dm-control, and mujoco pinned to a
version that dm-control can drive: ``mujoco==3.17.0``; mujoco 4 breaks dm_control's first reset).

The agent (a rolling ball) sees a 64x64x3 egocentric image whose border shows the colour of the current target and
earns +1 each time it touches that target; then a new target is drawn. Remembering where the targets are is what
separates good agents from random walkers. Episodes always end by truncation (9x9: 1000 steps, 11x11: 2000,
13x13: 3000, 15x15: 4000 at the default 4 Hz control); success is not defined, so there is no ``is_success``.

Rendering is headless: ``MUJOCO_GL=egl`` (set here when unset) works on a CPU-only machine through Mesa's llvmpipe;
``MUJOCO_GL=osmesa`` also works once the Debian package ``libosmesa6`` is installed.

Speed and memory fixes (``FIXED_UPSTREAM``; measured on memory-maze 1.0.3, dm-control 1.0.50, mujoco 3.17.0). The task
is upstream's own, built by upstream's own code; four things are changed on the instance we build, none of them
touching a class or module that a user's own ``memory_maze.tasks.memory_maze_9x9()`` would see:

- Target contact checks. dm_control's ``TargetSphere.after_substep`` loops in Python over ``physics.data.contact``;
  mujoco 3's contact list has no ``__iter__``, so every loop ends in an IndexError raised and caught inside the C++
  binding, whose cost grows with the number of loaded shared libraries (65 us bare, 124 us with torch loaded), and it
  runs for 3-6 targets at each of the 50 physics substeps of an env step: 19 of 27 ms per step. Every dm_control task
  with such contact hooks pays it on mujoco 3. Our targets make the same test with numpy over the contact arrays.
- Cameras. dm_control builds a new ``Camera`` (and its scene) for every image; ours builds one per episode and reuses
  it. The -Top variant no longer renders the egocentric camera whose image it throws away.
- Textures. ``memory_maze.tasks`` makes a separate ``WallTextures('style_01')`` for each of its 10 wall characters,
  so the model holds 88 textures (279 MB; llvmpipe keeps a ~590 MB copy, and old and new models briefly coexist at
  each reset). Ours shares one entity between the characters: 16 textures, the same random draws, the same images.
- Buffers. No light casts shadows (the maze is lit by the headlight only), so a 1-pixel shadow map; the offscreen
  framebuffer is the camera's size instead of 640x480.

The images, positions and rewards are bit-identical to the unpatched task (``tests/test_memory_maze_identity.py``
compares them, the upstream task running in a separate process). With other upstream versions the fixes are not
applied (a warning says so) and the task runs as upstream ships it: the internals they rely on may have changed.
Costs with the fixes, per env process (``benchmarks/envs.py --memory-maze``): 9x9 ~240 steps per CPU second
(upstream 38), 15x15 ~180 (upstream 20), peak RSS 0.57 GB (upstream 1.65 GB), about half upstream's time per maze
build; use ``make_vec_env(..., subprocess=True)`` for several envs.
"""

from __future__ import annotations

import functools
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


def _load_triton_before_mesa() -> None:
    """Import triton, when installed, before dm_control loads Mesa's GL (EGL or OSMesa, both llvmpipe).

    Both link their own LLVM. Once Mesa's is in the process, loading triton's ``libtriton`` crashes the interpreter
    with a segmentation fault (triton 3.9, Mesa with libLLVM-15, measured; the other order works), and torch imports
    triton lazily: the first ``torch.optim.Adam`` (``torch._dynamo`` asks ``has_triton_package``) after a Memory Maze
    env was built in-process killed the run (``compare --workers 1``, an evaluation env, a user's script). Env worker
    processes never import torch, so they skip the ~80 MB this costs.
    """
    import importlib.util

    if "triton" in sys.modules or "envs.env_worker" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001  (a broken triton install must not stop a CPU env)
        logging.getLogger(__name__).debug("triton could not be preloaded before Mesa: %s", exc)


def _import_tasks() -> types.ModuleType:
    """``memory_maze.tasks``, imported without the old ``gym`` package.

    ``import memory_maze`` imports ``gym`` unconditionally (for its own registrations) and re-raises if it is
    missing. When gym is absent a stand-in module is placed in ``sys.modules`` for the duration of the import only;
    nothing of it is used afterwards (we drive the dm_env tasks directly).
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    _load_triton_before_mesa()
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


# The upstream versions the fixes below were written against and proven bit-identical on; a test fails when the
# installed ones differ, and the fixes are then left out (see ``fixes_apply``).
FIXED_UPSTREAM = {"memory-maze": "1.0.3", "dm-control": "1.0.50", "mujoco": "3.17.0"}


def installed_upstream() -> dict[str, str | None]:
    """The installed versions of the packages in ``FIXED_UPSTREAM`` (None for a missing one)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in FIXED_UPSTREAM:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def fixes_apply() -> bool:
    """Whether the installed upstream versions are those the speed and memory fixes were proven on; warns once when
    they are not (the task then runs unpatched, as upstream ships it)."""
    installed = installed_upstream()
    if installed == FIXED_UPSTREAM:
        return True
    import warnings

    warnings.warn(
        f"Memory Maze runs unpatched (about 5x slower, 3x the memory): its fixes were proven on {FIXED_UPSTREAM}, "
        f"installed are {installed}",
        RuntimeWarning,
    )
    return False


def build_task(size: int, seed: int, fixed: bool = True, **task_kwargs):
    """One Memory Maze dm_env task, as ``memory_maze.tasks.memory_maze_{size}x{size}(seed=seed, **task_kwargs)``
    builds it, with the speed and memory fixes of this module's docstring when ``fixed``.

    :param size: maze size, one of ``SIZES``
    :param seed: the task's seed (it fixes the whole sequence of mazes)
    :param fixed: apply the fixes (they assume the versions in ``FIXED_UPSTREAM``); False builds upstream's task as is
    :param task_kwargs: keywords of upstream's task builders (``image_only_obs``, ``top_camera``, ...)
    """
    tasks = _import_tasks()
    name = f"memory_maze_{size}x{size}"
    if not fixed:
        return getattr(tasks, name)(seed=seed, **task_kwargs)
    env = _with_shared_wall_textures(tasks, name)(seed=seed, **task_kwargs)
    _fix_built_task(env, top_camera=task_kwargs.get("top_camera", False))
    return env


def _with_shared_wall_textures(tasks: types.ModuleType, name: str):
    """Upstream's task builder ``tasks.<name>``, run from its own code objects but with a module namespace of its own
    in which ``labmaze_textures.WallTextures(style)`` returns one entity per style and build instead of a new one per
    wall character. No module is modified, so nothing leaks into other users of memory_maze."""
    from dm_control.locomotion.arenas import labmaze_textures

    shared: dict[str, Any] = {}

    def wall_textures(style: str):
        if style not in shared:
            shared[style] = labmaze_textures.WallTextures(style)
        return shared[style]

    namespace = dict(vars(tasks), labmaze_textures=types.SimpleNamespace(WallTextures=wall_textures))

    def rebound(function: types.FunctionType) -> types.FunctionType:
        copy = types.FunctionType(function.__code__, namespace, function.__name__, function.__defaults__)
        copy.__kwdefaults__ = function.__kwdefaults__
        return copy

    namespace["_memory_maze"] = rebound(tasks._memory_maze)
    return rebound(getattr(tasks, name))


def _fix_built_task(env, top_camera: bool) -> None:
    """Swap the built task's targets and cameras for the faster subclasses below and shrink its render buffers; done
    on this one instance before its first reset (when its model is compiled again and its hooks and observation
    callables are collected again)."""
    from dm_control import composer
    from dm_control.composer.observation.observable import MJCFCamera
    from dm_control.locomotion.props.target_sphere import TargetSphere

    numpy_contact_target, reused_camera = _fixed_classes()
    inner = env
    while not isinstance(inner, composer.Environment):
        inner = inner.env  # memory_maze's wrappers
    task = inner.task
    for target in task._targets:
        if type(target) is not TargetSphere:
            raise RuntimeError(f"Memory Maze fix: expected upstream's TargetSphere, found {type(target)}")
        target.__class__ = numpy_contact_target
    cameras = (task._walker.observables.egocentric_camera, task._maze_arena.observables.top_camera)
    for camera in cameras:
        if type(camera) is not MJCFCamera:
            raise RuntimeError(f"Memory Maze fix: expected dm_control's MJCFCamera, found {type(camera)}")
        camera.__class__ = reused_camera
    if top_camera:
        cameras[0].enabled = False  # its image is not part of the observation
    model = task.root_entity.mjcf_model
    visual = model.visual
    if not model.find_all("light"):  # lit by the headlight only, which casts no shadows: the shadow map is unused
        visual.quality.shadowsize = 1
    framebuffer = getattr(visual, "global")
    framebuffer.offwidth = max(camera.width for camera in cameras)
    framebuffer.offheight = max(camera.height for camera in cameras)


@functools.cache
def _fixed_classes() -> tuple[type, type]:
    """The subclasses that ``_fix_built_task`` gives to upstream's targets and cameras (defined on first use:
    dm_control is an optional dependency, and importing it costs time)."""
    from dm_control.composer.observation.observable import MJCFCamera
    from dm_control.locomotion.props.target_sphere import TargetSphere
    from dm_control.mujoco.engine import Camera

    class NumpyContactTarget(TargetSphere):
        """``TargetSphere`` whose touch test reads the contact arrays with numpy instead of looping over contacts."""

        def _update_activation(self, physics):
            if self._activated:
                return
            contact = physics.data.contact
            geom1, geom2 = contact.geom1, contact.geom2
            touches = (geom1 == self._geom_id) | (geom2 == self._geom_id)
            if self._specific_collision_geom_ids:
                specific = list(self._specific_collision_geom_ids)
                touches &= np.isin(geom1, specific) | np.isin(geom2, specific)
            if touches.any():
                self._activated = True
                physics.bind(self._material).rgba[-1] = 0

    class ReusedCamera(MJCFCamera):
        """``MJCFCamera`` that renders with one ``Camera`` per observation callable (one per episode) instead of
        building a new one, with its scene, for every image."""

        def _callable(self, physics):
            camera = None

            def get_observation():
                nonlocal camera
                if camera is None:
                    camera = Camera(
                        physics, height=self._height, width=self._width, camera_id=self._mjcf_element.full_identifier
                    )
                pixels = camera.render(
                    depth=self._depth,
                    segmentation=self._segmentation,
                    scene_option=self._scene_option,
                    render_flag_overrides=self._render_flag_overrides,
                )
                return np.atleast_3d(pixels).copy()  # the camera's buffer is overwritten by the next render

            return get_observation

    return NumpyContactTarget, ReusedCamera


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
    :param fixes: build the task with this module's speed and memory fixes (bit-identical observations; left out,
        with a warning, when the installed upstream versions differ from ``FIXED_UPSTREAM``); False runs upstream's
        task exactly as it ships
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
        fixes: bool = True,
    ) -> None:
        if size not in SIZES:
            raise EnvConfigError(f"Memory Maze size must be one of {SIZES}, got {size!r}")
        if render_mode not in (None, "rgb_array"):
            raise EnvConfigError(f"Memory Maze render_mode must be None or 'rgb_array', got {render_mode!r}")
        if not (isinstance(camera_resolution, int) and camera_resolution >= 16):
            raise EnvConfigError(f"Memory Maze camera_resolution must be an integer >= 16, got {camera_resolution!r}")
        if not control_freq > 0:
            raise EnvConfigError(f"Memory Maze control_freq must be > 0, got {control_freq!r}")
        if not isinstance(fixes, bool):
            raise EnvConfigError(f"Memory Maze fixes must be True or False, got {fixes!r}")
        self.size, self.extra_obs, self.render_mode = size, extra_obs, render_mode
        _import_tasks()  # fails here, in the constructor, when memory_maze cannot be imported
        self._task_fn = functools.partial(build_task, size, fixed=fixes and fixes_apply())
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
