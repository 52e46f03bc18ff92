"""envs.subproc.LeanSubprocVecEnv: the same trajectories as SB3's DummyVecEnv, SB3's VecEnv API, and children that
import neither torch nor stable-baselines3."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.monitor import Monitor

import envs
from envs.subproc import LeanSubprocVecEnv

CHEAP = [  # one id per family that builds in milliseconds
    ("urgate/TMaze-v0", {"length": 3}),
    ("urgate/PassiveVisualMatch-v0", {"distractor_steps": 5, "cue_steps": 2, "choice_steps": 10}),
    ("MiniGrid-MemoryS7-v0", {}),
    pytest.param(
        "popgym-RepeatPreviousEasy-v0",
        {},
        marks=pytest.mark.skipif(importlib.util.find_spec("popgym") is None, reason="popgym is not installed"),
    ),
]


def _rollout(venv, n_steps: int) -> list:
    """Observations, rewards, dones and the infos SB3 reads, under actions drawn from a fixed stream."""
    rng = np.random.default_rng(0)
    record = [venv.reset()]
    for _ in range(n_steps):
        actions = np.array([rng.integers(venv.action_space.n) for _ in range(venv.num_envs)])
        obs, rewards, dones, infos = venv.step(actions)
        kept = [
            {
                key: value
                for key, value in info.items()
                if key in ("terminal_observation", "TimeLimit.truncated", "is_success")
            }
            | ({"episode": (float(info["episode"]["r"]), int(info["episode"]["l"]))} if "episode" in info else {})
            for info in infos
        ]
        # DummyVecEnv keeps rewards in float32, SubprocVecEnv (SB3's and ours) in float64; the rollout buffer, float32.
        record.append((obs, rewards.astype(np.float32), dones, kept))
    return record


def _assert_equal(a, b, where="") -> None:
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for key in a:
            _assert_equal(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_equal(x, y, f"{where}[{i}]")
    elif where.endswith("/episode[0]"):  # the return: SB3's Monitor sums Python floats, its VecMonitor float32s
        np.testing.assert_allclose(float(a), float(b), rtol=0, atol=1e-5, err_msg=where)
    else:
        np.testing.assert_array_equal(a, b, err_msg=where, strict=True)


@pytest.mark.parametrize("env_id,kwargs", CHEAP)
def test_trajectories_equal_dummy_vec_env(env_id, kwargs):
    n_steps = 300
    dummy = envs.make_vec_env(env_id, n_envs=3, seed=5, **kwargs)
    lean = envs.make_vec_env(env_id, n_envs=3, seed=5, subprocess=True, **kwargs)
    try:
        expected, got = _rollout(dummy, n_steps), _rollout(lean, n_steps)
        assert any(d.any() for _, _, d, _ in expected[1:]), "no episode ended: auto-reset was not exercised"
        _assert_equal(expected, got)
        # Seeds and options are used once, at the next reset, as in SB3.
        dummy.seed(11)
        lean.seed(11)
        _assert_equal(dummy.reset(), lean.reset())
    finally:
        dummy.close()
        lean.close()


def test_vec_env_api_matches_sb3():
    # SB3's own DummyVecEnv of Monitors (envs.make_vec_env gives the T-maze as the vectorised TMazeVecEnv).
    dummy = make_vec_env(lambda: envs.make_env("urgate/TMaze-v0", length=4), n_envs=2, seed=0)
    lean = envs.make_vec_env("urgate/TMaze-v0", n_envs=2, seed=0, subprocess=True, length=4)
    try:
        for venv in (dummy, lean):
            venv.reset()
        assert lean.get_attr("length") == dummy.get_attr("length") == [4, 4]
        lean.set_attr("length", 5, indices=[1])
        assert lean.get_attr("length") == [4, 5]
        assert lean.has_attr("length") and not lean.has_attr("no_such_attribute")
        _assert_equal(lean.env_method("reset", seed=3, indices=[0]), dummy.env_method("reset", seed=3, indices=[0]))
        assert lean.env_is_wrapped(Monitor) == [False, False]  # episode statistics come from the VecMonitor
        assert dummy.env_is_wrapped(Monitor) == [True, True]
        assert lean.unwrapped.env_is_wrapped(envs.registry._SeedFirstReset) == [False, False]
        assert lean.render_mode == dummy.render_mode
    finally:
        dummy.close()
        lean.close()
    lean.close()  # closing twice is harmless


def test_children_import_neither_torch_nor_sb3():
    def make():
        import sys

        env = envs.make_env("urgate/TMaze-v0", length=3)
        env.heavy_modules = lambda: sorted(
            name
            for name in sys.modules
            if name.split(".")[0] in ("torch", "stable_baselines3", "sb3_contrib", "triton")
        )
        return env

    venv = LeanSubprocVecEnv([make])
    try:
        venv.reset()
        assert venv.env_method("heavy_modules") == [[]]
    finally:
        venv.close()


def test_children_import_the_parents_envs_package(monkeypatch, tmp_path):
    # pytest puts the repository root on sys.path at run time (pythonpath = ["."]); without PYTHONPATH and away from
    # the root, a child that did not get the parent's path would import whatever `envs` is installed (an editable
    # install of another checkout, a wheel), not this one.
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.chdir(tmp_path)

    def make():
        import envs as child_envs

        env = child_envs.make_env("urgate/TMaze-v0", length=3)
        env.envs_file = lambda: child_envs.__file__
        return env

    venv = LeanSubprocVecEnv([make])
    try:
        assert venv.env_method("envs_file") == [envs.__file__]
    finally:
        venv.close()
