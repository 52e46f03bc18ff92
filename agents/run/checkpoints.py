"""Saving models and checkpoints: a model zip with its VecNormalize statistics, each file replaced atomically."""

from __future__ import annotations

import shutil
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
