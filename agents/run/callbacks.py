"""Training callbacks, one job each: stop on request, guard against NaN, checkpoint, evaluate, log the curriculum,
gate diagnostics, progress bar.

Everything that looks at the policy's parameters runs at ``on_rollout_start``: at that moment every collected step
has been trained on, so ``num_timesteps`` states exactly what the parameters have seen (a checkpoint written then
resumes without losing or repeating data).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from tqdm import tqdm

from envs.curriculum import find_wrapper

from . import rundir
from .checkpoints import keep_step_checkpoint, save_model, write_checkpoint
from .evaluate import run_episodes
from .gate_stats import gate_summary, rollout_gates, timescales

log = logging.getLogger("urgate")
# Signals that stop a run with a checkpoint (SIGHUP does not exist on Windows).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
GATE_SAMPLES = 20_000  # gate values kept per diagnostics (of num_layers * n_steps * n_envs * hidden)


class NonFiniteError(RuntimeError):
    """The loss or a parameter became NaN or infinite: training cannot continue from here."""


# -- stopping --------------------------------------------------------------------------------------------------


class StopRequest:
    """Turns the first Ctrl-C (SIGINT), SIGTERM (a scheduler's stop) or SIGHUP (the terminal was closed) into a
    request to stop at the next step and save a checkpoint; the second one aborts (the trainer still saves what was
    trained on).

    Used as a context manager around ``model.learn``. Signal handlers can only be installed from the main thread;
    elsewhere (e.g. a worker thread) Ctrl-C arrives as ``KeyboardInterrupt`` as usual. The notice is best effort:
    under ``| tee log`` Ctrl-C also kills the reader of the pipe, and a failed write must not cost the checkpoint.
    """

    SIGNALS = STOP_SIGNALS

    def __init__(self) -> None:
        self.requested = False
        self._previous: list[tuple[int, Any]] = []

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = [(sig, signal.signal(sig, self._handle)) for sig in self.SIGNALS]
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous:
            signal.signal(sig, previous)
        self._previous = []

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        name = signal.Signals(signum).name
        notice = f"\n{name}: stopping and saving a checkpoint ({name} again to abort without waiting for the update)"
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (EPIPE) or a closed file
            print(notice, file=sys.stderr, flush=True)


class StopOnRequest(BaseCallback):
    """Ends ``learn`` at the next environment step once a stop was requested; remembers where the rollout began.

    :param stop: the request flag
    """

    def __init__(self, stop: StopRequest) -> None:
        super().__init__()
        self.stop = stop
        self.trained_timesteps = 0  # steps the parameters have been trained on (the last rollout start)

    def _on_training_start(self) -> None:
        self.trained_timesteps = self.model.num_timesteps

    def _on_rollout_start(self) -> None:
        self.trained_timesteps = self.model.num_timesteps

    def _on_step(self) -> bool:
        return not self.stop.requested


# -- divergence ------------------------------------------------------------------------------------------------


class NonFiniteGuard(BaseCallback):
    """Raises ``NonFiniteError`` as soon as an update leaves a NaN or inf in the loss or the parameters.

    Checked after every update (at the next rollout start, before checkpoints and evaluations see the
    parameters), and once more by the trainer after the last update.
    """

    def _on_rollout_start(self) -> None:
        self.check()

    def _on_step(self) -> bool:
        return True

    def check(self) -> None:
        loss = self.model.logger.name_to_value.get("train/loss")
        if loss is not None and not math.isfinite(loss):
            raise NonFiniteError(f"the loss became non-finite ({loss}) at step {self.model.num_timesteps}")
        for name, p in self.model.policy.named_parameters():
            if not th.isfinite(p).all():
                raise NonFiniteError(f"parameter {name} became non-finite at step {self.model.num_timesteps}")


# -- checkpoints -----------------------------------------------------------------------------------------------


class CheckpointCallback(BaseCallback):
    """Writes ``checkpoints/latest.zip`` every ``freq`` environment steps, at update boundaries, and keeps the last
    ``keep`` of them as step-numbered checkpoints (``checkpoints.keep_step_checkpoint``).

    :param run_dir: the run directory
    :param freq: steps between checkpoints (0: never; the trainer still writes one at the end)
    :param keep: step-numbered checkpoints to keep besides ``latest.zip`` (0: none)
    :param also: called before each checkpoint, to save what else a resumed run reads (the gate samples)
    """

    def __init__(self, run_dir: Path, freq: int, keep: int = 0, also: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.run_dir, self.freq, self.keep, self.also = run_dir, freq, keep, also
        self.last = 0

    def _on_training_start(self) -> None:
        self.last = self.model.num_timesteps

    def _on_rollout_start(self) -> None:
        if self.freq and self.model.num_timesteps - self.last >= self.freq:
            if self.also is not None:
                self.also()
            write_checkpoint(self.model, self.run_dir)
            keep_step_checkpoint(self.run_dir, self.keep)
            self.last = self.model.num_timesteps

    def _on_step(self) -> bool:
        return True


# -- evaluation ------------------------------------------------------------------------------------------------


class EvalCallback(BaseCallback):
    """Evaluates every ``freq`` steps (and at step 0), appends a row to ``evaluations.csv``, keeps the best model.

    The evaluation envs are reseeded before every evaluation, so all evaluations play the same episodes.

    :param eval_env: evaluation VecEnv (wrapped in VecNormalize here when the training env is)
    :param run_dir: the run directory (``evaluations.csv``, ``best_model.zip``)
    :param freq: steps between evaluations (0: only when ``evaluate_now`` is called)
    :param n_episodes: episodes per evaluation
    :param deterministic: greedy actions
    :param seed: seed of the evaluation envs
    :param stop_success: end ``learn`` once ``stop_evals`` evaluations in a row reach this success rate (None: never)
    :param stop_evals: how many in a row
    """

    def __init__(
        self,
        eval_env: VecEnv,
        run_dir: Path,
        freq: int,
        n_episodes: int,
        deterministic: bool,
        seed: int,
        stop_success: float | None = None,
        stop_evals: int = 2,
    ) -> None:
        super().__init__()
        self.eval_env, self.run_dir, self.freq = eval_env, run_dir, freq
        self.n_episodes, self.deterministic, self.seed = n_episodes, deterministic, seed
        self.stop_success, self.stop_evals = stop_success, stop_evals
        self.in_a_row = 0  # consecutive evaluations at stop_success
        self.solved_at: int | None = None  # the step count at which stop_success was met stop_evals times in a row
        self.best = -math.inf
        self.train_norm: VecNormalize | None = None  # set when the callback is initialised
        self.next_at = 0
        self.last_result: dict[str, Any] | None = None
        self.last_timesteps: int | None = None
        earlier = rundir.read_evaluations(run_dir)
        if earlier is not None:  # resuming: continue the table, the best score and the count of solved evaluations
            self.best = float(np.max(earlier["mean_return"]))
            self.last_timesteps = int(earlier["timesteps"][-1])
            for rate in earlier["success_rate"]:
                self._count(None if np.isnan(rate) else float(rate))

    def _init_callback(self) -> None:
        # the training env's VecNormalize, wherever it lies (SB3 may put a VecTransposeImage over it, a curriculum
        # under it): its statistics are copied into the evaluation env's at every evaluation
        self.train_norm = train = find_wrapper(self.training_env, VecNormalize)
        if train is not None and not isinstance(self.eval_env, VecNormalize):
            # the training env's observation settings (e.g. norm_obs: false for a Dict of indices), frozen statistics
            self.eval_env = VecNormalize(
                self.eval_env,
                training=False,
                norm_obs=train.norm_obs,
                norm_reward=False,
                norm_obs_keys=train.norm_obs_keys if train.norm_obs else None,
                clip_obs=train.clip_obs,
                epsilon=train.epsilon,
            )

    def _on_training_start(self) -> None:
        t = self.model.num_timesteps
        if not self.freq:
            self.next_at = math.inf
        elif self.last_timesteps is not None:  # resumed: the schedule continues from the last evaluation kept
            self.next_at = (self.last_timesteps // self.freq + 1) * self.freq
        else:  # a fresh run is evaluated at step 0 too: the start of every learning curve
            self.next_at = 0 if t == 0 else (t // self.freq + 1) * self.freq

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps >= self.next_at:
            log.info(describe_evaluation(self.model.num_timesteps, self.evaluate_now()))
            self.next_at = (self.model.num_timesteps // self.freq + 1) * self.freq

    def _on_step(self) -> bool:
        return self.solved_at is None

    def _count(self, success_rate: float | None) -> None:
        if self.stop_success is None:
            return
        solved = success_rate is not None and success_rate >= self.stop_success
        self.in_a_row = self.in_a_row + 1 if solved else 0

    def evaluate_now(self) -> dict[str, Any]:
        """Evaluate the current parameters, log and record them; returns the statistics."""
        t = self.model.num_timesteps
        if self.last_result is not None and self.last_timesteps == t:
            return self.last_result
        if isinstance(self.eval_env, VecNormalize):
            # (SB3's sync_envs_normalization would want both chains of wrappers alike)
            train = self.train_norm
            if train is None:
                raise RuntimeError("the evaluation env normalises observations but the training env does not")
            if train.norm_obs:
                self.eval_env.obs_rms = copy.deepcopy(train.obs_rms)
            self.eval_env.ret_rms = copy.deepcopy(train.ret_rms)
        self.eval_env.seed(self.seed)
        result = run_episodes(self.model, self.eval_env, self.n_episodes, deterministic=self.deterministic).summary()
        self.logger.record("eval/mean_return", result["mean_return"])
        if result["success_rate"] is not None:
            self.logger.record("eval/success_rate", result["success_rate"])
        rundir.append_evaluation(self.run_dir, t, result)
        if result["mean_return"] > self.best:
            self.best = result["mean_return"]
            save_model(self.model, rundir.best_model_path(self.run_dir))
        self.last_result, self.last_timesteps = result, t
        self._count(result["success_rate"])
        if self.stop_success is not None and self.in_a_row >= self.stop_evals:
            self.solved_at = t
        return result


# -- gate diagnostics ------------------------------------------------------------------------------------------


def describe_evaluation(timesteps: int, result: dict[str, Any]) -> str:
    """One line per periodic evaluation, printed above the progress bar: ``eval at 70,000 steps: success 0.96,
    return 0.870 (50 episodes)``."""
    sr = result.get("success_rate")
    success = "" if sr is None else f"success {sr:.2f}, "
    return f"eval at {timesteps:,} steps: {success}return {result['mean_return']:.3f} ({result['episodes']} episodes)"


class CurriculumLog(BaseCallback):
    """Logs the memory length that a training curriculum (``envs.curriculum.MemoryCurriculum``) has reached,
    ``rollout/memory_length``, after every rollout."""

    def __init__(self, curriculum) -> None:
        super().__init__()
        self.curriculum = curriculum

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self.logger.record("rollout/memory_length", self.curriculum.length)


class GateDiagnostics(BaseCallback):
    """Every ``every`` updates, logs histograms of the actor core's effective forget gates and of log10 of their
    timescales 1/(1-g) (capped at 1e6 steps) on the rollout just collected, plus quantiles as scalars; keeps
    the first and the last samples for ``gates.npz``.

    Which rollouts are measured and which gate values are sampled depend on the run's step count only, so a resumed
    run measures what an uninterrupted one would have.

    :param every: updates between diagnostics (the first rollout and the last one are always measured)
    :param seed: seed of the subsampling
    """

    def __init__(self, every: int, seed: int = 0) -> None:
        super().__init__()
        self.every, self.seed = every, seed
        self.initial: tuple[int, np.ndarray] | None = None
        self.final: tuple[int, np.ndarray] | None = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        last = self.model.num_timesteps >= self.model._total_timesteps
        k = self.model.num_timesteps // (self.model.n_steps * self.model.n_envs) - 1  # the run's rollout index
        if self.every and (k % self.every == 0 or last):
            self.measure()

    def measure(self) -> np.ndarray:
        gates = rollout_gates(self.model).ravel()
        t = self.model.num_timesteps
        if gates.size > GATE_SAMPLES:
            gates = np.random.default_rng([self.seed, t]).choice(gates, GATE_SAMPLES, replace=False)
        gates = gates.astype(np.float32)
        if self.initial is None:
            self.initial = (t, gates)
        self.final = (t, gates)
        tau = timescales(gates)
        hist = ("stdout", "log", "json", "csv")
        self.logger.record("gates/forget", th.as_tensor(gates), exclude=hist)
        self.logger.record("gates/timescale_log10", th.as_tensor(np.log10(tau)), exclude=hist)
        for key, value in gate_summary(gates).items():
            self.logger.record(key, value)
        return gates

    def load(self, run_dir: Path, until: int) -> None:
        """Keep the initial sample of an earlier session of the run (resume from step ``until``; a sample taken
        after it belongs to the discarded steps)."""
        earlier = rundir.read_gates(run_dir)
        if earlier is not None and int(earlier["initial_timesteps"]) <= until:
            self.initial = (int(earlier["initial_timesteps"]), earlier["initial_gates"])

    def save(self, run_dir: Path) -> None:
        """The first and the last samples to the run's ``gates.npz``."""
        if self.initial is not None and self.final is not None:
            rundir.write_gates(run_dir, self.initial, self.final)


# -- progress --------------------------------------------------------------------------------------------------


class ProgressBar(BaseCallback):
    """A tqdm bar on stderr: steps, time left, fps (last few seconds), mean return and success rate of recent
    episodes.

    The bar's total is the step count the run will really end at (SB3 collects whole rollouts, so it can pass
    ``total_timesteps``). The time left is measured over whole rollout + update cycles from the end of the first
    update on: that first update can hold one-off costs (the kernel build), which tqdm's own estimate would turn
    into an absurd time left. A stream that fails (a closed pipe) ends the bar, never the run.

    :param total: the run's ``total_timesteps`` (the bar rounds it up to whole rollouts)
    :param desc: the bar's label
    """

    BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, total: int, desc: str = "") -> None:
        super().__init__()
        self.total, self.desc = total, desc
        self.bar = None
        self._shown = 0
        self._window: list[tuple[float, int]] = []
        self._rollouts = 0
        self._clock: tuple[float, int] | None = None  # (time, steps) at the end of the first update
        self._rate: float | None = None  # steps/s over whole cycles since then

    def _on_training_start(self) -> None:
        start = self.model.num_timesteps
        self.total = end_of_run(self.model, start)
        tty = sys.stderr.isatty()
        try:
            self.bar = tqdm(
                total=self.total,
                initial=start,
                desc=self.desc,
                unit="step",
                unit_scale=True,
                dynamic_ncols=True,
                mininterval=0.5 if tty else 15.0,
                file=sys.stderr,
                bar_format=self.BAR_FORMAT,
            )
        except (OSError, ValueError):  # stderr is already gone: train without a bar
            self.bar = None
        self._shown = start
        self._window = [(time.perf_counter(), start)]
        self._last_postfix = 0.0
        self._rollouts, self._clock, self._rate = 0, None, None

    def _on_rollout_start(self) -> None:
        self._rollouts += 1
        now, t = time.perf_counter(), self.model.num_timesteps
        if self._rollouts == 2:  # the first update is over
            self._clock = (now, t)
        elif self._clock is not None and now > self._clock[0]:
            self._rate = (t - self._clock[1]) / (now - self._clock[0])

    def _on_step(self) -> bool:
        now = time.perf_counter()
        if self.bar is not None and now - self._last_postfix >= 0.5:
            self._guarded(self._refresh, now)
        return True

    def _refresh(self, now: float) -> None:
        t = self.model.num_timesteps
        self._window.append((now, t))
        while len(self._window) > 2 and now - self._window[0][0] > 10.0:
            self._window.pop(0)
        (t0, s0) = self._window[0]
        post = {}
        if self._rate:
            post["left"] = format_duration(max(self.total - t, 0) / self._rate)
        post["fps"] = f"{(t - s0) / max(now - t0, 1e-9):.0f}"
        if self.model.ep_info_buffer:
            post["return"] = f"{np.mean([e['r'] for e in self.model.ep_info_buffer]):.2f}"
        if self.model.ep_success_buffer:
            post["success"] = f"{np.mean(self.model.ep_success_buffer):.2f}"
        if t > self.bar.total:  # never shown past 100 % (a budget changed under the bar)
            self.bar.total = t
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(t - self._shown)
        self._shown = t
        self._last_postfix = now

    def _guarded(self, fn, *args) -> None:
        try:
            fn(*args)
        except (OSError, ValueError):  # stderr went away (EPIPE, closed file): stop drawing, keep training
            self.bar = None

    def close(self) -> None:
        if self.bar is not None:
            bar = self.bar
            self._guarded(lambda: (bar.update(max(self.model.num_timesteps - self._shown, 0)), bar.close()))
            self.bar = None


def end_of_run(model, start: int) -> int:
    """The step count ``learn`` stops at: SB3 collects whole rollouts of ``n_steps * n_envs`` steps until
    ``num_timesteps`` reaches the budget, so it ends at the first rollout boundary at or past it."""
    rollout = getattr(model, "n_steps", 1) * model.n_envs
    budget = model._total_timesteps
    return start + max(-(-(budget - start) // rollout), 0) * rollout


def format_duration(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
