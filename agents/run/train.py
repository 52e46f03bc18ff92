"""Train and resume runs: build from a config, learn with the callbacks, write the run directory
(``agents.run.rundir`` names its files).

Everything a user can get wrong (config, env id, core, policy keywords, run directory) is checked before the
first file is written.
"""

from __future__ import annotations

import csv
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.logger import KVWriter, Logger, TensorBoardOutputFormat, filter_excluded_keys
from torch.utils.tensorboard import SummaryWriter

import envs
from envs.curriculum import MemoryCurriculum, find_wrapper

from .. import paths
from ..errors import UrgateError
from . import factory, loading, rundir
from .callbacks import (
    CheckpointCallback,
    CurriculumLog,
    EvalCallback,
    GateDiagnostics,
    NonFiniteError,
    NonFiniteGuard,
    ProgressBar,
    StopOnRequest,
    StopRequest,
)
from .checkpoints import (
    read_training_state,
    restore_best_model,
    restore_training_state,
    save_model,
    write_checkpoint,
)
from .config import RunConfig

log = logging.getLogger("urgate")
EVAL_SEED_OFFSET = 10_000  # evaluation envs never replay the training envs' episodes


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Refuse an existing, non-empty run directory unless ``overwrite`` (and then only a run directory)."""
    run_dir = paths.check_dir(run_dir, "run directory")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not rundir.is_run_dir(run_dir):
            raise UrgateError(
                f"{str(run_dir)!r} exists and is not a run directory (no {rundir.CONFIG}), so it is never "
                "overwritten: choose another --run-dir"
            )
        if not overwrite:
            raise UrgateError(
                f"run directory {str(run_dir)!r} already exists: pass --overwrite to replace it; "
                f"{rundir.next_steps(run_dir)}"
            )


class _CSV(KVWriter):
    """``progress.csv`` in SB3's CSV layout (a column per key, one row per dump, a new key widens the file and
    leaves earlier rows blank there), continued on resume instead of truncated; through SB3's public ``KVWriter``
    interface, written with the csv module and flushed at every row, so a reader polling the file sees each update.

    :param filename: the CSV file; an existing one is continued under its own header
    """

    def __init__(self, filename: Path) -> None:
        self.path = Path(filename)
        try:
            with open(self.path, newline="") as fh:
                self.keys = next(csv.reader(fh), [])
        except OSError:
            self.keys = []

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        values = filter_excluded_keys(key_values, key_excluded, "csv")
        extra = [k for k in values if k not in self.keys]
        if extra or not self.path.is_file():
            self._widen(extra)
        with open(self.path, "a", newline="") as fh:
            csv.writer(fh).writerow(["" if values.get(k) is None else values[k] for k in self.keys])

    def _widen(self, extra: list[str]) -> None:
        """Rewrite the file with ``extra`` columns appended to its header (earlier rows blank there)."""
        try:
            with open(self.path, newline="") as fh:
                rows = list(csv.reader(fh))[1:]
        except OSError:
            rows = []
        self.keys = self.keys + extra
        with open(self.path, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(self.keys)
            w.writerows(row + [""] * (len(self.keys) - len(row)) for row in rows)

    def close(self) -> None:
        pass  # every write opens and closes the file


class _TensorBoard(TensorBoardOutputFormat):
    """SB3's TensorBoard writer; given ``purge_step`` (a resume), TensorBoard discards the events an earlier session
    wrote at that step or later (``SummaryWriter``'s purge_step: a crash after the checkpoint logged those steps)."""

    def __init__(self, folder: Path, purge_step: int | None = None) -> None:
        super().__init__(str(folder))
        if purge_step is not None:
            self.writer.close()
            self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge_step)


def make_logger(run_dir: Path, resume_at: int | None = None) -> Logger:
    """``progress.csv`` (appended on resume) and TensorBoard events under ``tb/``.

    :param resume_at: the step a resumed run continues from (its earlier steps' events are kept, later ones dropped)
    """
    return Logger(
        folder=str(run_dir),
        output_formats=[
            _CSV(run_dir / rundir.PROGRESS),
            _TensorBoard(run_dir / rundir.TENSORBOARD, purge_step=None if resume_at is None else resume_at + 1),
        ],
    )


def train(cfg: RunConfig, run_dir: Path, *, overwrite: bool = False, progress_bar: bool = True) -> dict[str, Any]:
    """Train a fresh run into ``run_dir``.

    :param cfg: the resolved configuration (``agents.run.config.load_config``)
    :param run_dir: directory to create; an existing non-empty one needs ``overwrite``
    :param overwrite: replace an existing run directory
    :param progress_bar: show a live bar on stderr
    :return: the summary (also written to ``summary.json``); ``status`` is ``finished``, ``interrupted``
        (Ctrl-C: a checkpoint was written, ``resume`` continues) or ``diverged`` (NaN/inf: the last good
        checkpoint is kept)
    """
    run_dir = Path(run_dir)
    with rundir.directory_lock(run_dir):
        return _train(cfg, run_dir, overwrite=overwrite, progress_bar=progress_bar)


def _train(cfg: RunConfig, run_dir: Path, *, overwrite: bool, progress_bar: bool) -> dict[str, Any]:
    check_run_dir(run_dir, overwrite)
    factory.check_device(cfg.device)
    factory.set_threads(cfg.threads)
    env = factory.make_training_env(cfg)
    try:
        model = factory.build_model(cfg, env)
    except BaseException:
        env.close()
        raise
    if run_dir.exists():
        shutil.rmtree(run_dir)  # check_run_dir allowed it: an empty directory or a run directory with --overwrite
    paths.make_dir(run_dir, "run directory")
    rundir.write_config(run_dir, cfg.to_yaml())
    log.info("training %s on %s for %d steps -> %s", cfg.core, cfg.env_id, cfg.total_timesteps, run_dir)
    return _learn(model, cfg, run_dir, fresh=True, progress_bar=progress_bar)


def resume(run_dir: Path, *, progress_bar: bool = True, total_timesteps: int | None = None) -> dict[str, Any]:
    """Continue a run from ``checkpoints/latest.zip``: the same step count, optimizer state, VecNormalize
    statistics and learning-rate schedule, writing into the same directory.

    :param run_dir: an existing run directory
    :param progress_bar: show a live bar on stderr
    :param total_timesteps: a new, larger budget (default: the config's)
    :return: the summary, as ``train``
    """
    run_dir = Path(run_dir)
    if not rundir.is_run_dir(run_dir):
        raise UrgateError(f"{str(run_dir)!r} is not a run directory (no {rundir.CONFIG})")
    with rundir.directory_lock(run_dir):
        return _resume(run_dir, progress_bar=progress_bar, total_timesteps=total_timesteps)


def _resume(run_dir: Path, *, progress_bar: bool, total_timesteps: int | None) -> dict[str, Any]:
    cfg = RunConfig.from_yaml(rundir.config_path(run_dir))
    ckpt = rundir.checkpoint_path(run_dir)
    if not ckpt.exists():
        raise UrgateError(f"run {str(run_dir)!r} has no checkpoint to resume from: {rundir.next_steps(run_dir)}")
    if total_timesteps is not None:
        if total_timesteps < 1:
            raise UrgateError(f"--timesteps {total_timesteps}: must be an integer >= 1 (the run's new total budget)")
        cfg.total_timesteps = total_timesteps
    factory.check_device(cfg.device)
    factory.set_threads(cfg.threads)
    stats = rundir.normalize_stats_path(ckpt)
    if cfg.ppo.normalize and not stats.is_file():
        raise UrgateError(f"run {str(run_dir)!r} normalises observations but {stats} is missing")
    env = factory.make_training_env(cfg, normalize_stats=stats if cfg.ppo.normalize else None)
    try:
        model = loading.load_model(ckpt, device=cfg.device, env=env, expect_core=cfg.core)
        model.set_env(env, force_reset=False)  # the training state decides (restore_training_state)
    except BaseException:
        env.close()
        raise
    if model.num_timesteps >= cfg.total_timesteps:
        env.close()
        done = model.num_timesteps
        if total_timesteps is not None:
            raise UrgateError(
                f"--timesteps {total_timesteps}: the run {str(run_dir)!r} already has {done} steps, and --timesteps "
                f"is the new total budget: pass more than {done} (e.g. --timesteps {2 * done})"
            )
        raise UrgateError(
            f"run {str(run_dir)!r} already has {done} of its {cfg.total_timesteps} steps; "
            f"pass a larger total budget to continue it (e.g. --timesteps {2 * done})"
        )
    state = read_training_state(ckpt, model.num_timesteps)
    rundir.cut_history(run_dir, model.num_timesteps)  # a crash after the checkpoint logged steps trained again now
    if state is not None:  # (a checkpoint of an older version took no copy of the best model)
        restore_best_model(run_dir)
    rundir.write_config(run_dir, cfg.to_yaml())
    log.info("resuming %s at step %d of %d", run_dir, model.num_timesteps, cfg.total_timesteps)
    return _learn(model, cfg, run_dir, fresh=False, progress_bar=progress_bar, state=state)


def _learn(
    model, cfg: RunConfig, run_dir: Path, *, fresh: bool, progress_bar: bool, state: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Learn to the end of the budget (or a stop), with the callbacks, and write the summary.

    :param fresh: a new run (else a resumed one, whose training state ``state`` is restored just before learning)
    :param state: the checkpoint's training state (``checkpoints.read_training_state``), None if it has none
    """
    start_steps = model.num_timesteps
    previous = rundir.read_summary(run_dir) or {}
    model.set_logger(make_logger(run_dir, resume_at=None if fresh else start_steps))
    eval_env = factory.make_vec_env(
        cfg.env_id, cfg.env_kwargs, cfg.eval.n_envs, cfg.seed + EVAL_SEED_OFFSET, previous_action=cfg.previous_action
    )
    stop = StopRequest()
    stopper = StopOnRequest(stop)
    guard = NonFiniteGuard()
    evaluator = EvalCallback(
        eval_env,
        run_dir,
        cfg.eval.freq,
        cfg.eval.n_episodes,
        cfg.eval.deterministic,
        cfg.seed + EVAL_SEED_OFFSET,
        stop_success=cfg.eval.stop_success,
        stop_evals=cfg.eval.stop_evals,
    )
    gates = GateDiagnostics(cfg.gate_diagnostics, seed=cfg.seed)
    gates.load(run_dir, until=start_steps)
    callbacks = [
        stopper,
        guard,
        evaluator,  # before the checkpoint, which then holds the evaluation's best model and random state
        CheckpointCallback(run_dir, cfg.checkpoint_freq, cfg.keep_checkpoints, also=lambda: gates.save(run_dir)),
        gates,
    ]
    curriculum = find_wrapper(model.env, MemoryCurriculum)
    if curriculum is not None:
        callbacks.append(CurriculumLog(curriculum))
    bar = ProgressBar(cfg.total_timesteps, desc=f"{cfg.core} {cfg.env_id}") if progress_bar else None
    if bar is not None:
        callbacks.append(bar)

    if not fresh:  # last, so that nothing built above draws from the restored generators
        logs = restore_training_state(model, state)
        model.logger.name_to_value.update(logs["values"])
        model.logger.name_to_count.update(logs["counts"])
        model.logger.name_to_excluded.update(logs["excluded"])

    status, message = "finished", ""
    t0 = time.perf_counter()
    try:
        with stop:
            model.learn(
                cfg.total_timesteps - start_steps,
                callback=CallbackList(callbacks),
                reset_num_timesteps=fresh,
                log_interval=1,
            )
            guard.check()  # the last update is not followed by a rollout start
        if evaluator.solved_at is not None:  # eval.stop_success met: the run ends with the evaluated parameters
            model.num_timesteps = evaluator.solved_at
            message = (
                f"stopped at {evaluator.solved_at} steps: success >= {cfg.eval.stop_success} in "
                f"{cfg.eval.stop_evals} evaluations in a row"
            )
        elif stop.requested:
            status = "interrupted"
    except NonFiniteError as exc:
        status, message = "diverged", str(exc)
    except KeyboardInterrupt:
        status = "interrupted"  # second Ctrl-C: stop now, still save what was trained on
    finally:
        if bar is not None:
            bar.close()
    learn_time = time.perf_counter() - t0

    if status == "interrupted":
        write_checkpoint(model, run_dir, timesteps=stopper.trained_timesteps)
    final_eval = None
    if status == "finished":
        final_eval = evaluator.evaluate_now()
        model.logger.dump(model.num_timesteps)
        write_checkpoint(model, run_dir)  # after the last row: a longer budget's resume logs nothing twice
        save_model(model, rundir.final_model_path(run_dir))
    gates.save(run_dir)
    model.logger.close()
    eval_env.close()
    model.env.close()

    steps = model.num_timesteps - start_steps
    summary = rundir.summary(
        env_id=cfg.env_id,
        core=cfg.core,
        seed=cfg.seed,
        timesteps=model.num_timesteps,
        total_timesteps=cfg.total_timesteps,
        wall_time_s=float(previous.get("wall_time_s", 0.0)) + time.perf_counter() - t0,
        fps=round(steps / learn_time, 1) if learn_time > 0 else None,  # this session's, never the run's totals
        session_timesteps=steps,
        final_eval=final_eval,
        memoryless_ceiling=envs.family_of(cfg.env_id).memoryless_ceiling,
        status=status,
        message=message,
        run_dir=run_dir,
    )
    rundir.write_summary(run_dir, summary)
    return summary
