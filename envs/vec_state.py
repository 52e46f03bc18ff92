"""What a training VecEnv must remember so that an interrupted run continues one timeline: ``get_vec_state`` and
``set_vec_state`` snapshot and restore a VecEnv built by ``envs.make_vec_env``, through SB3's wrappers.

The protocol: a vectorised family's VecEnv (``EnvFamily.vec_builder``, e.g. ``TMazeVecEnv``) implements

    get_state() -> dict      a picklable snapshot of everything that decides what the copies do next: each copy's
                             random generator, the seeds pending for the next reset, and the episodes in progress
    set_state(state) -> None restore a snapshot into a VecEnv built with the same id, keywords and n_envs; the
                             next step continues exactly as the original would have

and such an env is restored exactly (``exact`` is True). Any other VecEnv (SB3's ``DummyVecEnv`` over gymnasium
envs) is restored in its random streams only: each env's generator (``env.unwrapped.np_random``) and pending
seeds; its episodes in progress cannot be copied in general, so the caller resets it and the next episodes
continue the streams (``exact`` is False). Subprocess envs keep nothing (their streams restart from the seed).
SB3's ``VecMonitor`` (episode returns and lengths so far) and ``VecNormalize`` (the discounted return that
scales rewards; its running statistics are saved with the model) are part of the snapshot, and so is any wrapper
whose class defines ``get_state``/``set_state`` itself (``envs.curriculum.MemoryCurriculum``).
"""

from __future__ import annotations

import copy
from typing import Any


def _chain(venv) -> list:
    """``venv`` and every VecEnv it wraps, outermost first."""
    chain = [venv]
    while hasattr(chain[-1], "venv"):
        chain.append(chain[-1].venv)
    return chain


def _own_state(wrapper) -> bool:
    """Whether a VecEnv wrapper keeps state of its own (``get_state``/``set_state`` defined by its class, not
    forwarded to the env it wraps, as SB3's wrappers forward unknown attributes), e.g. ``envs.curriculum``'s."""
    return callable(getattr(type(wrapper), "get_state", None))


def _seed_first(env):
    """The wrapper that holds ``envs.make_env``'s seed for the first reset, if ``env`` has one."""
    while env is not None and not hasattr(env, "_pending_seed"):
        env = getattr(env, "env", None)
    return env


def get_vec_state(venv) -> dict[str, Any]:
    """A picklable snapshot of a training VecEnv (see the module docstring); ``state["exact"]`` says whether restoring
    it continues the episodes in progress (else the caller must reset the env after ``set_vec_state``)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

    wrappers = []
    *outer, base = _chain(venv)
    for v in outer:
        if isinstance(v, VecMonitor):
            wrappers.append({"returns": v.episode_returns.copy(), "lengths": v.episode_lengths.copy()})
        elif isinstance(v, VecNormalize):
            wrappers.append({"returns": copy.deepcopy(getattr(v, "returns", None))})
        elif _own_state(v):
            wrappers.append({"own": v.get_state()})
        else:
            wrappers.append(None)
    if hasattr(base, "get_state"):
        inner, exact = {"vec": base.get_state()}, True
    elif isinstance(base, DummyVecEnv):
        generators = [copy.deepcopy(env.unwrapped.np_random) for env in base.envs]
        pending = [getattr(_seed_first(env), "_pending_seed", None) for env in base.envs]
        inner, exact = {"generators": generators, "seeds": list(base._seeds), "pending": pending}, False
    else:
        inner, exact = {}, False
    return {"exact": exact, "wrappers": wrappers, "inner": inner}


def set_vec_state(venv, state: dict[str, Any]) -> None:
    """Restore a ``get_vec_state`` snapshot into a VecEnv built the same way (same id, keywords, n_envs, wrappers)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecNormalize

    *outer, base = _chain(venv)
    for v, saved in zip(outer, state["wrappers"], strict=False):
        if isinstance(v, VecMonitor) and saved is not None:
            v.episode_returns, v.episode_lengths = saved["returns"].copy(), saved["lengths"].copy()
        elif isinstance(v, VecNormalize) and saved is not None and saved["returns"] is not None:
            v.returns = copy.deepcopy(saved["returns"])
        elif _own_state(v) and saved is not None and "own" in saved:
            v.set_state(saved["own"])
    inner = state["inner"]
    if "vec" in inner and hasattr(base, "set_state"):
        base.set_state(inner["vec"])
    elif "generators" in inner and isinstance(base, DummyVecEnv):
        for env, generator, pending in zip(base.envs, inner["generators"], inner["pending"], strict=True):
            env.unwrapped.np_random = copy.deepcopy(generator)
            if _seed_first(env) is not None:
                _seed_first(env)._pending_seed = pending
        base._seeds = list(inner["seeds"])
