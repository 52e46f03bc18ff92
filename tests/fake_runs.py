"""Run directories in the format ``agents.train`` writes, made up for testing experiments and plots without training.

Format (the contract of agents.train): ``config.yaml``, ``summary.json``, ``evaluations.csv``
(timesteps,mean_return,std_return,success_rate,episodes), ``gates.npz`` (initial_gates, final_gates,
initial_timesteps, final_timesteps), ``checkpoints/latest.zip``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml


def success_curve(core: str, length: int, steps: np.ndarray, seed: int) -> np.ndarray:
    """A made-up learning curve: every core learns short delays, only refine/chrono cores long ones."""
    reach = {"lstm": 40, "chrono": 400, "u": 100, "r": 80, "ur": 1000}.get(core, 50)
    final = 1.0 if length <= reach else 0.5 + 0.5 * reach / length
    rng = np.random.default_rng(seed * 1000 + length)
    rise = 1.0 / (1.0 + np.exp(-(steps / steps[-1] - 0.4) * 10))
    return np.clip(0.5 + (final - 0.5) * rise + rng.normal(0, 0.03, steps.size), 0, 1)


def write_run(
    run_dir: Path,
    *,
    env_id: str = "urgate/TMaze-v0",
    core: str = "ur",
    seed: int = 0,
    env_kwargs: dict | None = None,
    timesteps: int = 10_000,
    status: str = "finished",
    n_evals: int = 10,
    ceiling: float | None = 0.5,
    with_success: bool = True,
    checkpoint: bool = True,
) -> dict:
    """Write one run directory; returns its summary."""
    env_kwargs = env_kwargs or {}
    length = int(env_kwargs.get("length", env_kwargs.get("distractor_steps", 10)))
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = {"env_id": env_id, "core": core, "seed": seed, "total_timesteps": timesteps, "env_kwargs": env_kwargs}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    done_steps = timesteps if status == "finished" else timesteps // 2
    steps = np.linspace(done_steps / n_evals, done_steps, n_evals).round()
    sr = success_curve(core, length, np.linspace(timesteps / n_evals, timesteps, n_evals), seed)[: steps.size]
    with open(run_dir / "evaluations.csv", "w") as fh:
        fh.write("timesteps,mean_return,std_return,success_rate,episodes\n")
        for t, s in zip(steps, sr, strict=True):
            fh.write(f"{int(t)},{2 * s - 1:.4f},0.1,{f'{s:.4f}' if with_success else ''},20\n")
    rng = np.random.default_rng(seed)
    init = rng.uniform(0.02, 0.98, 2000)
    final = np.concatenate([rng.beta(0.3, 3, 1000), 1 - rng.beta(0.3, 30, 1000)]) if core == "ur" else init * 0.9
    np.savez(
        run_dir / "gates.npz", initial_gates=init, final_gates=final, initial_timesteps=0, final_timesteps=done_steps
    )
    if checkpoint:
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        (run_dir / "checkpoints" / "latest.zip").write_bytes(b"PK fake")
    summary = {
        "env_id": env_id,
        "core": core,
        "seed": seed,
        "timesteps": done_steps,
        "wall_time_s": 12.5,
        "fps": 800.0,
        "final_eval": {
            "mean_return": float(2 * sr[-1] - 1),
            "ci95": [float(2 * sr[-1] - 1.1), float(2 * sr[-1] - 0.9)],
            "success_rate": float(sr[-1]) if with_success else None,
            "episodes": 20,
        },
        "memoryless_ceiling": ceiling,
        "status": status,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return summary
