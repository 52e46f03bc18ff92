"""Run directories written with the trainer's own writers (``agents.run.rundir``, ``EpisodeStats``), from made-up
learning curves, for testing experiments and plots without training.

A run can be in every state the trainer leaves it in: ``finished`` (final evaluation, final checkpoint),
``interrupted`` and ``diverged`` (``"final_eval": null``, a checkpoint from earlier), or still running (``None``:
no summary yet); ``n_evals=0`` is a run stopped before its first evaluation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agents.run import rundir
from agents.run.config import RunConfig
from agents.run.evaluate import EpisodeStats

EPISODES = 20


def success_curve(core: str, length: int, steps: np.ndarray, seed: int) -> np.ndarray:
    """A made-up learning curve: every core learns short delays, only refine/chrono cores long ones."""
    reach = {"lstm": 40, "chrono": 400, "u": 100, "r": 80, "ur": 1000}.get(core, 50)
    final = 1.0 if length <= reach else 0.5 + 0.5 * reach / length
    rng = np.random.default_rng(seed * 1000 + length)
    rise = 1.0 / (1.0 + np.exp(-(steps / steps[-1] - 0.4) * 10))
    return np.clip(0.5 + (final - 0.5) * rise + rng.normal(0, 0.03, steps.size), 0, 1)


def evaluation(success: float, with_success: bool) -> dict:
    """``EpisodeStats.summary()`` of ``EPISODES`` episodes with this success rate (return +1 / -1 per episode)."""
    wins = np.arange(EPISODES) < round(success * EPISODES)
    stats = EpisodeStats(
        returns=[1.0 if w else -1.0 for w in wins],
        lengths=[10] * EPISODES,
        successes=[float(w) for w in wins] if with_success else [],
    )
    return stats.summary()


def write_run(
    run_dir: Path,
    *,
    env_id: str = "urgate/TMaze-v0",
    core: str = "ur",
    seed: int = 0,
    env_kwargs: dict | None = None,
    timesteps: int = 10_000,
    status: str | None = "finished",
    n_evals: int = 10,
    ceiling: float | None = 0.5,
    with_success: bool = True,
    checkpoint: bool = True,
) -> dict | None:
    """Write one run directory as the trainer would leave it; returns its summary (None while running).

    :param status: ``finished``, ``interrupted``, ``diverged``, or None for a run still in progress
    :param n_evals: periodic evaluations written (0: none yet)
    :param with_success: whether the task defines success (else ``success_rate`` is blank / None)
    :param checkpoint: write ``checkpoints/latest.zip`` (a stand-in file) and its ``latest.json``
    """
    if status == "finished" and not n_evals:
        raise ValueError("a finished run has evaluations (the trainer evaluates at the end)")
    env_kwargs = env_kwargs or {}
    length = int(env_kwargs.get("length", env_kwargs.get("distractor_steps", 10)))
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(env_id=env_id, core=core, seed=seed, total_timesteps=timesteps, env_kwargs=env_kwargs)
    rundir.write_config(run_dir, cfg.to_yaml())
    done_steps = timesteps if status == "finished" else timesteps // 2
    steps = np.linspace(done_steps / max(n_evals, 1), done_steps, n_evals).round()
    sr = success_curve(core, length, np.linspace(timesteps / 10, timesteps, 10), seed)[: steps.size]
    for t, s in zip(steps, sr, strict=True):
        rundir.append_evaluation(run_dir, int(t), evaluation(float(s), with_success))
    if n_evals:
        rng = np.random.default_rng(seed)
        init = rng.uniform(0.02, 0.98, 2000).astype(np.float32)
        final = np.concatenate([rng.beta(0.3, 3, 1000), 1 - rng.beta(0.3, 30, 1000)]) if core == "ur" else init * 0.9
        rundir.write_gates(run_dir, (0, init), (done_steps, final.astype(np.float32)))
    if checkpoint:
        rundir.checkpoint_dir(run_dir).mkdir(exist_ok=True)
        rundir.checkpoint_path(run_dir).write_bytes(b"PK fake")
        rundir.write_checkpoint_meta(rundir.checkpoint_dir(run_dir), done_steps, "2026-01-01T00:00:00")
    if status is None:
        return None
    summary = rundir.summary(
        env_id=env_id,
        core=core,
        seed=seed,
        timesteps=done_steps,
        total_timesteps=timesteps,
        wall_time_s=12.5,
        fps=800.0,
        final_eval=evaluation(float(sr[-1]), with_success) if status == "finished" else None,
        memoryless_ceiling=ceiling,
        status=status,
        message="the loss became non-finite (nan) at step 64" if status == "diverged" else "",
        run_dir=run_dir,
    )
    rundir.write_summary(run_dir, summary)
    return summary
