"""Training callbacks, one job each: stop on request, guard against NaN, checkpoint, evaluate, gate diagnostics,
progress bar.

Everything that looks at the policy's parameters runs at ``on_rollout_start``: at that moment every collected step
has been trained on, so ``num_timesteps`` states exactly what the parameters have seen (a checkpoint written then
resumes without losing or repeating data).
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, sync_envs_normalization

from policies.gates import timescale

from .evaluate import normalize_stats_path, run_episodes

EVAL_COLUMNS = ("timesteps", "mean_return", "std_return", "success_rate", "episodes", "ci95_lo", "ci95_hi")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
GATE_SAMPLES = 20_000  # gate values kept per diagnostics (of num_layers * n_steps * n_envs * hidden)
TIMESCALE_CAP = 1e6  # 1 / (1 - g) is infinite at g = 1 in float32; histograms need finite values


class NonFiniteError(RuntimeError):
    """The loss or a parameter became NaN or infinite: training cannot continue from here."""


# -- stopping --------------------------------------------------------------------------------------------------


class StopRequest:
    """Turns the first Ctrl-C (SIGINT) into a request to stop after the current update; the second one aborts.

    Used as a context manager around ``model.learn``. Signal handlers can only be installed from the main thread;
    elsewhere (e.g. a worker thread) Ctrl-C arrives as ``KeyboardInterrupt`` as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\ninterrupt: stopping after the current update and saving a checkpoint (Ctrl-C again to abort "
            "without saving)",
            file=sys.stderr,
            flush=True,
        )


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


def _atomic(path: Path, write) -> None:
    """Write through a temporary file in the same directory, then rename: ``path`` is never half-written."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_model(model, path: Path) -> None:
    """Save ``model`` to ``path`` atomically, with its VecNormalize statistics (if any) next to it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    norm = model.get_vec_normalize_env()
    if norm is not None:
        _atomic(normalize_stats_path(path), lambda p: norm.save(str(p)))
    _atomic(path, lambda p: model.save(str(p)))


def write_checkpoint(model, ckpt_dir: Path, timesteps: int | None = None) -> Path:
    """``ckpt_dir/latest.zip`` (+ ``latest.vecnormalize.pkl``, ``latest.json``), each replaced atomically.

    :param timesteps: the step count to record (default: the model's); the model's counter is set to it, so a
        checkpoint taken mid-rollout resumes from the last update rather than counting untrained steps
    """
    if timesteps is not None:
        model.num_timesteps = int(timesteps)
    path = ckpt_dir / "latest.zip"
    save_model(model, path)
    meta = {"timesteps": int(model.num_timesteps), "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    _atomic(ckpt_dir / "latest.json", lambda p: p.write_text(json.dumps(meta) + "\n"))
    return path


class CheckpointCallback(BaseCallback):
    """Writes ``checkpoints/latest.zip`` every ``freq`` environment steps, at update boundaries.

    :param ckpt_dir: the run's ``checkpoints`` directory
    :param freq: steps between checkpoints (0: never; the trainer still writes one at the end)
    """

    def __init__(self, ckpt_dir: Path, freq: int) -> None:
        super().__init__()
        self.ckpt_dir, self.freq = ckpt_dir, freq
        self.last = 0

    def _on_training_start(self) -> None:
        self.last = self.model.num_timesteps

    def _on_rollout_start(self) -> None:
        if self.freq and self.model.num_timesteps - self.last >= self.freq:
            write_checkpoint(self.model, self.ckpt_dir)
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
    """

    def __init__(
        self, eval_env: VecEnv, run_dir: Path, freq: int, n_episodes: int, deterministic: bool, seed: int
    ) -> None:
        super().__init__()
        self.eval_env, self.run_dir, self.freq = eval_env, run_dir, freq
        self.n_episodes, self.deterministic, self.seed = n_episodes, deterministic, seed
        self.csv_path = run_dir / "evaluations.csv"
        self.best = -math.inf
        self.next_at = 0
        self.last_result: dict[str, Any] | None = None
        self.last_timesteps: int | None = None
        if self.csv_path.is_file():  # resuming: continue the table and the best score
            with open(self.csv_path, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows:
                self.best = max(float(r["mean_return"]) for r in rows)
                self.last_timesteps = int(rows[-1]["timesteps"])

    def _init_callback(self) -> None:
        if isinstance(self.training_env, VecNormalize) and not isinstance(self.eval_env, VecNormalize):
            self.eval_env = VecNormalize(self.eval_env, training=False, norm_reward=False)

    def _on_training_start(self) -> None:
        t = self.model.num_timesteps
        if not self.freq:
            self.next_at = math.inf
        else:  # a fresh run is evaluated at step 0 too: the start of every learning curve
            self.next_at = 0 if t == 0 else (t // self.freq + 1) * self.freq

    def _on_rollout_start(self) -> None:
        if self.model.num_timesteps >= self.next_at:
            self.evaluate_now()
            self.next_at = (self.model.num_timesteps // self.freq + 1) * self.freq

    def _on_step(self) -> bool:
        return True

    def evaluate_now(self) -> dict[str, Any]:
        """Evaluate the current parameters, log and record them; returns the statistics."""
        t = self.model.num_timesteps
        if self.last_result is not None and self.last_timesteps == t:
            return self.last_result
        if isinstance(self.eval_env, VecNormalize):
            sync_envs_normalization(self.training_env, self.eval_env)
        self.eval_env.seed(self.seed)
        result = run_episodes(self.model, self.eval_env, self.n_episodes, deterministic=self.deterministic).summary()
        self.logger.record("eval/mean_return", result["mean_return"])
        if result["success_rate"] is not None:
            self.logger.record("eval/success_rate", result["success_rate"])
        new_file = not self.csv_path.is_file()
        with open(self.csv_path, "a", newline="") as f:
            w = csv.writer(f)
            if new_file:
                w.writerow(EVAL_COLUMNS)
            sr = result["success_rate"]
            w.writerow(
                [
                    t,
                    result["mean_return"],
                    result["std_return"],
                    "" if sr is None else sr,
                    result["episodes"],
                    *result["ci95"],
                ]
            )
        if result["mean_return"] > self.best:
            self.best = result["mean_return"]
            save_model(self.model, self.run_dir / "best_model.zip")
        self.last_result, self.last_timesteps = result, t
        return result


# -- gate diagnostics ------------------------------------------------------------------------------------------


def replay_inputs(model) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor], th.Tensor]:
    """What the actor core saw during the rollout just collected: ``(features (T, B, F), (h0, c0), starts (T, B))``.

    The rollout buffer's observations go through the actor's features extractor; ``(h0, c0)`` is the core state
    before the rollout's first step, and ``starts`` marks the steps where an episode began (the state is zeroed).
    """
    policy, buf = model.policy, model.rollout_buffer
    T, B = buf.episode_starts.shape
    # Reshape to the env's own observation shapes (the buffer stores a Discrete entry as (1,)), as at rollout time.
    space = policy.observation_space
    if isinstance(buf.observations, dict):
        flat = {k: v.reshape(T * B, *space[k].shape) for k, v in buf.observations.items()}
    else:
        flat = buf.observations.reshape(T * B, *space.shape)
    with th.no_grad():
        obs = obs_as_tensor(flat, policy.device)
        features = BaseModel.extract_features(policy, obs, policy.pi_features_extractor).reshape(T, B, -1)
    h0 = th.as_tensor(buf.hidden_states_pi[0], device=policy.device)
    c0 = th.as_tensor(buf.cell_states_pi[0], device=policy.device)
    starts = th.as_tensor(buf.episode_starts, dtype=th.float32, device=policy.device)
    return features, (h0, c0), starts


def rollout_gates(model) -> np.ndarray:
    """Effective forget gates of the actor core on the rollout just collected, shape (num_layers, T, B, H)."""
    features, state, starts = replay_inputs(model)
    return model.policy.lstm_actor.gate_trace(features, state, episode_starts=starts).float().cpu().numpy()


def timescales(gates: np.ndarray) -> np.ndarray:
    """Timescales 1/(1-g) in steps (``policies.gates.timescale``), capped at ``TIMESCALE_CAP``."""
    with np.errstate(divide="ignore"):
        return np.minimum(timescale(np.asarray(gates, dtype=np.float64)), TIMESCALE_CAP)


def gate_summary(gates: np.ndarray) -> dict[str, float]:
    """Quantiles of the gates and of their timescales 1/(1-g), as scalars for TensorBoard."""
    g = gates.astype(np.float64).ravel()
    tau = timescales(g)
    out = {}
    for q in QUANTILES:
        out[f"gates/forget_q{int(q * 100):02d}"] = float(np.quantile(g, q))
        out[f"gates/timescale_q{int(q * 100):02d}"] = float(np.quantile(tau, q))
    out["gates/forget_mean"] = float(g.mean())
    out["gates/near_binary"] = float(np.mean((g < 0.05) | (g > 0.95)))  # the paper's "gates become binary"
    return out


class GateDiagnostics(BaseCallback):
    """Every ``every`` updates, logs histograms of the actor core's effective forget gates and of log10 of their
    timescales 1/(1-g) (capped at 1e6 steps) on the rollout just collected, plus quantiles as scalars; keeps
    the first and the last samples for ``gates.npz``.

    :param every: updates between diagnostics (the first rollout and the last one are always measured)
    :param seed: seed of the subsampling
    """

    def __init__(self, every: int, seed: int = 0) -> None:
        super().__init__()
        self.every = every
        self.rng = np.random.default_rng(seed)
        self.rollouts = 0
        self.initial: tuple[int, np.ndarray] | None = None
        self.final: tuple[int, np.ndarray] | None = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        last = self.model.num_timesteps >= self.model._total_timesteps
        k, self.rollouts = self.rollouts, self.rollouts + 1
        if self.every and (k % self.every == 0 or last):
            self.measure()

    def measure(self) -> np.ndarray:
        gates = rollout_gates(self.model).ravel()
        if gates.size > GATE_SAMPLES:
            gates = self.rng.choice(gates, GATE_SAMPLES, replace=False)
        gates = gates.astype(np.float32)
        t = self.model.num_timesteps
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

    def load(self, path: Path) -> None:
        """Keep the initial sample of an earlier session (resume)."""
        if path.is_file():
            with np.load(path) as z:
                self.initial = (int(z["initial_timesteps"]), z["initial_gates"])

    def save(self, path: Path) -> None:
        """``gates.npz``: ``initial_gates``, ``final_gates`` (1-D float32), ``initial_timesteps``, ``final_timesteps``."""
        if self.initial is None or self.final is None:
            return
        _atomic(
            path,
            lambda p: np.savez(
                p,
                initial_gates=self.initial[1],
                final_gates=self.final[1],
                initial_timesteps=np.int64(self.initial[0]),
                final_timesteps=np.int64(self.final[0]),
            ),
        )


# -- progress --------------------------------------------------------------------------------------------------


class ProgressBar(BaseCallback):
    """A tqdm bar on stderr: steps, fps (last few seconds), mean return and success rate of recent episodes."""

    def __init__(self, total: int, desc: str = "") -> None:
        super().__init__()
        self.total, self.desc = total, desc
        self.bar = None
        self._shown = 0
        self._window: list[tuple[float, int]] = []

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=self.total,
            initial=self.model.num_timesteps,
            desc=self.desc,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            mininterval=0.5 if tty else 15.0,
            file=sys.stderr,
        )
        self._shown = self.model.num_timesteps
        self._window = [(time.perf_counter(), self._shown)]
        self._last_postfix = 0.0

    def _on_step(self) -> bool:
        now = time.perf_counter()
        if now - self._last_postfix >= 0.5:
            t = self.model.num_timesteps
            self._window.append((now, t))
            while len(self._window) > 2 and now - self._window[0][0] > 10.0:
                self._window.pop(0)
            (t0, s0) = self._window[0]
            post = {"fps": f"{(t - s0) / max(now - t0, 1e-9):.0f}"}
            if self.model.ep_info_buffer:
                post["return"] = f"{np.mean([e['r'] for e in self.model.ep_info_buffer]):.2f}"
            if self.model.ep_success_buffer:
                post["success"] = f"{np.mean(self.model.ep_success_buffer):.2f}"
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(t - self._shown)
            self._shown = t
            self._last_postfix = now
        return True

    def close(self) -> None:
        if self.bar is not None:
            self.bar.update(max(self.model.num_timesteps - self._shown, 0))
            self.bar.close()
            self.bar = None
