"""envs.previous_action and the run config's ``previous_action`` switch: the wrapper step for step against its
definition, the switch through train, evaluation, resume, ``eval`` and ``probe``, and the inputs it refuses."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import run_rl
from agents.run import factory, loading
from agents.run.config import load_config
from agents.run.probe import probe_memory
from agents.run.train import resume, train
from envs import EnvConfigError, make_vec_env
from envs.previous_action import PreviousActionVecEnv

TINY = [
    "n_envs=2",
    "ppo.n_steps=32",
    "ppo.batch_size=64",
    "ppo.n_epochs=1",
    "policy_kwargs.lstm_hidden_size=8",
    "env_kwargs.length=3",
    "eval.freq=64",
    "eval.n_episodes=2",
    "eval.n_envs=2",
    "checkpoint_freq=64",
    "gate_diagnostics=0",
    "total_timesteps=128",
    "previous_action=true",
]


def test_appended_part_is_the_one_hot_of_the_previous_action_and_zeros_after_every_reset():
    n_envs, n_steps = 4, 80
    plain = make_vec_env("urgate/TMaze-v0", n_envs=n_envs, seed=3, length=3)
    wrapped = PreviousActionVecEnv(make_vec_env("urgate/TMaze-v0", n_envs=n_envs, seed=3, length=3))
    n_actions = plain.action_space.n
    obs_dim = plain.observation_space.shape[0]
    assert wrapped.observation_space.shape == (obs_dim + n_actions,)
    rng = np.random.default_rng(0)
    expected_prev = np.zeros((n_envs, n_actions), np.float32)  # the definition: nothing done yet in the episode
    obs, obs_w = plain.reset(), wrapped.reset()
    episodes_ended = 0
    for _ in range(n_steps):
        np.testing.assert_array_equal(obs_w, np.concatenate([obs, expected_prev], axis=1))
        assert all(wrapped.observation_space.contains(o) for o in obs_w)
        actions = rng.integers(n_actions, size=n_envs)
        obs, _, dones, infos = plain.step(actions)
        obs_w, _, dones_w, infos_w = wrapped.step(actions)
        np.testing.assert_array_equal(dones, dones_w)
        one_hot = np.eye(n_actions, dtype=np.float32)[actions]
        for i in np.flatnonzero(dones):  # the episode's last observation saw the action that ended it
            np.testing.assert_array_equal(
                infos_w[i]["terminal_observation"], np.concatenate([infos[i]["terminal_observation"], one_hot[i]])
            )
        expected_prev = np.where(dones[:, None], 0.0, one_hot).astype(np.float32)  # auto-reset: a new episode
        episodes_ended += int(dones.sum())
    assert episodes_ended >= 3 * n_envs  # several episodes per env, so auto-resets were crossed
    np.testing.assert_array_equal(wrapped.reset()[:, obs_dim:], 0)  # an explicit reset clears it too
    wrapped.close()
    plain.close()


def test_non_discrete_actions_and_non_vector_observations_are_refused_in_one_line():
    pendulum = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    with pytest.raises(EnvConfigError, match=r"Discrete action space, this env has Box\(") as exc:
        PreviousActionVecEnv(pendulum)
    assert "\n" not in str(exc.value)
    grid = make_vec_env("MiniGrid-MemoryS7-v0", n_envs=1, seed=0)  # a Dict observation
    with pytest.raises(EnvConfigError, match="flat Box observation space.*Dict") as exc:
        PreviousActionVecEnv(grid)
    assert "\n" not in str(exc.value)


def test_the_cli_refuses_a_dict_env_with_one_line_and_writes_nothing(tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "--env", "MiniGrid-MemoryS7-v0", "--run-dir", str(run_dir), "--no-progress"]
    assert run_rl.main([*argv, "--set", "previous_action=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert "previous_action needs a flat Box observation space" in err and len(err.splitlines()) == 1
    assert not run_dir.exists()


def test_normalisation_wraps_the_extended_observation(tmp_path):
    cfg = load_config(None, "urgate/TMaze-v0", [*TINY, "ppo.normalize=true"])
    env = factory.make_training_env(cfg)
    assert isinstance(env, VecNormalize) and isinstance(env.venv, PreviousActionVecEnv)
    assert env.obs_rms.mean.shape == (5,)  # T-maze's 2 numbers and 3 actions, saved and restored as one
    env.close()


def test_a_run_with_previous_action_trains_evaluates_resumes_and_is_evaluated_and_probed(tmp_path, capsys):
    run_dir = tmp_path / "run"
    summary = train(load_config(None, "urgate/TMaze-v0", TINY), run_dir, progress_bar=False)
    assert summary["status"] == "finished" and summary["timesteps"] == 128
    model = loading.load_model(run_dir / "checkpoints/latest.zip")
    assert model.observation_space.shape == (5,)
    assert loading.read_run_info(run_dir / "checkpoints/latest.zip")["previous_action"] is True
    assert (run_dir / "evaluations.csv").read_text().count("\n") >= 3  # steps 0, 64, 128
    assert resume(run_dir, progress_bar=False, total_timesteps=192)["timesteps"] == 192
    assert run_rl.main(["eval", str(run_dir), "--episodes", "2"]) == 0
    assert "over 2 episodes" in capsys.readouterr().out
    result = probe_memory(run_dir, 20, max_steps=3, points=3, n_envs=4)  # the probe's envs get the same wrapping
    assert result.steps[-1] == 3
