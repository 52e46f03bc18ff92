"""Saving models and checkpoints: a model zip with its VecNormalize statistics, each file replaced atomically."""

from __future__ import annotations

import time
from pathlib import Path

from . import rundir


def save_model(model, path: Path) -> None:
    """Save ``model`` to ``path`` atomically, with its VecNormalize statistics (if any) next to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    norm = model.get_vec_normalize_env()
    if norm is not None:
        rundir.atomic_write(rundir.normalize_stats_path(path), lambda p: norm.save(str(p)))
    rundir.atomic_write(path, lambda p: model.save(str(p)))


def write_checkpoint(model, run_dir: Path, timesteps: int | None = None) -> Path:
    """``checkpoints/latest.zip`` (+ ``latest.vecnormalize.pkl``, ``latest.json``) of a run, each replaced atomically.

    :param model: the model to save
    :param run_dir: the run directory
    :param timesteps: the step count to record (default: the model's); the model's counter is set to it, so a
        checkpoint taken mid-rollout resumes from the last update rather than counting untrained steps
    :return: the checkpoint's path
    """
    if timesteps is not None:
        model.num_timesteps = int(timesteps)
    path = rundir.checkpoint_path(run_dir)
    save_model(model, path)
    rundir.write_checkpoint_meta(path.parent, model.num_timesteps, time.strftime("%Y-%m-%dT%H:%M:%S"))
    return path
