"""The learning check of benchmarks/learning.py as a slow test: every core learns CartPole without velocities."""

import pytest

from benchmarks.learning import THRESHOLD, train_and_evaluate
from policies import CORE_NAMES


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("core", CORE_NAMES)
def test_every_core_learns_cartpole_without_velocities(core):
    """sb3-contrib's own RecurrentPPO learning check (mean deterministic reward > 450 within 50k steps, seed 1)."""
    # Chrono's t_max is the longest dependency to expect: training here backpropagates through n_steps = 128
    # steps, so the package default (500) asks for timescales the task never shows (measured: 238.8 at seed 1).
    core_kwargs = {"t_max": 128} if core == "chrono" else None
    result = train_and_evaluate(core, algo="fast", seed=1, total_timesteps=50_000, core_kwargs=core_kwargs)
    assert result.mean_reward > THRESHOLD, result
