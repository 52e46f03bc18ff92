"""Saving models and checkpoints: a model zip with its VecNormalize statistics, each file replaced atomically; a
checkpoint also holds the training state that the zip lacks, so that a resumed run continues one timeline.

The training state (``checkpoints/latest.state.pkl``) holds what decides the run's future besides the parameters,
the optimizer and the step count (which the zip holds): the random generators of python, numpy and torch, the
training envs' state (``envs.vec_state``: their generators, and the episodes in progress where the env can copy
them), the recurrent states the next rollout starts from, and the log values recorded since the last row of
``progress.csv``. A checkpoint taken at an update boundary (every periodic one) of a run whose envs can be copied
(the T-maze) resumes exactly: the resumed run equals one that was never interrupted. Elsewhere (a Ctrl-C
checkpoint mid-rollout, envs that are restored in their random streams only) the resumed run starts new episodes
that continue the random streams, never replaying the run's first episodes.
"""

from __future__ import annotations

import pickle
import random
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from envs.vec_state import get_vec_state, set_vec_state

from . import rundir

STATE_FORMAT = 1


def save_model(model, path: Path) -> None:
    """Save ``model`` to ``path`` atomically, with its VecNormalize statistics (if any) next to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    norm = model.get_vec_normalize_env()
    if norm is not None:
        rundir.atomic_write(rundir.normalize_stats_path(path), lambda p: norm.save(str(p)))
    rundir.atomic_write(path, lambda p: model.save(str(p)))


def write_checkpoint(model, run_dir: Path, timesteps: int | None = None) -> Path:
    """``checkpoints/latest.zip`` (+ ``latest.vecnormalize.pkl``, ``latest.state.pkl``, ``latest.json``) of a run,
    each replaced atomically, and a copy of the run's best model as of this step (``checkpoints/best_model.zip``).

    :param model: the model to save
    :param run_dir: the run directory
    :param timesteps: the step count to record (default: the model's, at an update boundary); the model's counter
        is set to it, so a checkpoint taken mid-rollout resumes from the last update rather than counting untrained
        steps (its envs then start new episodes on resume)
    :return: the checkpoint's path
    """
    at_boundary = timesteps is None or int(timesteps) == model.num_timesteps
    if timesteps is not None:
        model.num_timesteps = int(timesteps)
    path = rundir.checkpoint_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = training_state(model, at_boundary)
    rundir.atomic_write(rundir.training_state_path(path), lambda p: p.write_bytes(pickle.dumps(state)))
    _copy_model(rundir.best_model_path(run_dir), rundir.best_snapshot_path(run_dir))
    save_model(model, path)
    rundir.write_checkpoint_meta(path.parent, model.num_timesteps, time.strftime("%Y-%m-%dT%H:%M:%S"))
    return path


def keep_step_checkpoint(run_dir: Path, keep: int) -> None:
    """Copy ``checkpoints/latest.zip`` (+ its VecNormalize statistics) to a step-numbered checkpoint and delete all
    but the last ``keep`` of those, as SB3's CheckpointCallback users expect.

    :param run_dir: the run directory, whose ``latest.zip`` was just written
    :param keep: how many step-numbered checkpoints to keep (0: none, nothing is copied)
    """
    if keep <= 0:
        return
    latest = rundir.checkpoint_path(run_dir)
    target = rundir.step_checkpoint_path(run_dir, rundir.checkpoint_timesteps(run_dir))
    for src, dst in ((rundir.normalize_stats_path(latest), rundir.normalize_stats_path(target)), (latest, target)):
        if src.is_file():
            rundir.atomic_write(dst, lambda p, src=src: shutil.copyfile(src, p))
    for old in rundir.step_checkpoints(run_dir)[:-keep]:
        rundir.normalize_stats_path(old).unlink(missing_ok=True)
        old.unlink(missing_ok=True)


def _copy_model(src: Path, dst: Path) -> None:
    """Copy a model zip and its VecNormalize statistics (each atomically); a missing ``src`` deletes ``dst``."""
    for a, b in ((rundir.normalize_stats_path(src), rundir.normalize_stats_path(dst)), (src, dst)):
        if a.is_file():
            rundir.atomic_write(b, lambda p, a=a: shutil.copyfile(a, p))
        else:
            b.unlink(missing_ok=True)


def restore_best_model(run_dir: Path) -> None:
    """Make ``best_model.zip`` the best model as of the run's checkpoint (the copy it took), deleting a best model
    saved after it: after a crash, a resumed run keeps no model of the discarded steps."""
    _copy_model(rundir.best_snapshot_path(run_dir), rundir.best_model_path(run_dir))


def _map_states(states, fn):
    """``RNNStates(pi=(h, c), vf=(h, c))`` with ``fn`` applied to every tensor."""
    return type(states)(*(tuple(fn(x) for x in pair) for pair in states))


def rng_states() -> dict[str, Any]:
    """The global random generators' states: python's, numpy's, torch's (and CUDA's once initialised)."""
    cuda = th.cuda.get_rng_state_all() if th.cuda.is_available() and th.cuda.is_initialized() else None
    numpy = np.random.get_state()  # noqa: NPY002 - the legacy global generator is the one SB3 seeds and draws from
    return {"python": random.getstate(), "numpy": numpy, "torch": th.get_rng_state(), "cuda": cuda}


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore ``rng_states()``."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])  # noqa: NPY002 - see rng_states
    th.set_rng_state(states["torch"])
    if states["cuda"] is not None and th.cuda.is_available():
        th.cuda.set_rng_state_all(states["cuda"])


def training_state(model, at_boundary: bool) -> dict[str, Any]:
    """What a checkpoint holds beside the model zip (see the module docstring).

    :param model: the model being trained
    :param at_boundary: whether the model's parameters have seen every step the envs took (a periodic checkpoint)
    """
    lstm = model._last_lstm_states
    logger = model.logger
    return {
        "format": STATE_FORMAT,
        "timesteps": int(model.num_timesteps),
        "at_boundary": at_boundary,
        "rng": rng_states(),
        "env": get_vec_state(model.env) if model.env is not None else None,
        "lstm_states": None if lstm is None else _map_states(lstm, lambda x: x.detach().cpu().clone()),
        "logs": {
            "values": dict(logger.name_to_value),
            "counts": dict(logger.name_to_count),
            "excluded": dict(logger.name_to_excluded),
        },
    }


def read_training_state(checkpoint: Path, timesteps: int) -> dict[str, Any] | None:
    """The training state saved with a checkpoint, or None when there is none (a checkpoint of an older version)
    or it belongs to another step than the zip (a write interrupted between the two files)."""
    try:
        state = pickle.loads(rundir.training_state_path(checkpoint).read_bytes())
    except (OSError, pickle.UnpicklingError, EOFError):
        return None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT or state.get("timesteps") != timesteps:
        return None
    return state


def restore_training_state(model, state: dict[str, Any] | None) -> dict[str, Any]:
    """Put a loaded checkpoint's model (attached to a freshly built training env) back where the run was.

    :param model: the model loaded from the checkpoint, its training env attached
    :param state: ``read_training_state``'s result; None restores nothing (the envs start new episodes)
    :return: the log values recorded since the last ``progress.csv`` row, to record into the run's logger
    """
    if state is None:
        model._last_obs = None  # the envs are reset when learning starts
        return {"values": {}, "counts": {}, "excluded": {}}
    set_rng_states(state["rng"])
    env = state["env"]
    if env is not None and model.env is not None:
        set_vec_state(model.env, env)
    if state["at_boundary"] and env is not None and env["exact"] and state["lstm_states"] is not None:
        model._last_lstm_states = _map_states(state["lstm_states"], lambda x: x.to(model.device))
    else:
        model._last_obs = None  # new episodes, drawn from the restored generators
    return state["logs"]
