"""agents.ppo.horizon: rollout sizes from the env's episode length, and the warning for sequences shorter than episodes."""

from __future__ import annotations

import logging

import gymnasium as gym
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

import envs
from agents.errors import UrgateError
from agents.ppo import horizon
from agents.run import factory
from agents.run.config import load_config
from envs.subproc import LeanSubprocVecEnv

TMAZE = "urgate/TMaze-v0"


@pytest.mark.parametrize("length,n_steps", [(20, 64), (100, 256), (1000, 2048)])
def test_auto_rollouts_hold_a_whole_episode_of_the_limit_and_two_shortest(length, n_steps):
    venv = envs.make_vec_env(TMAZE, n_envs=2, length=length)
    limit = horizon.episode_limit(venv)
    assert limit == 2 * (length + 1)  # time_factor 2
    assert horizon.resolve("auto", "auto", 64, venv, TMAZE) == (n_steps, n_steps * 8)  # 8 minibatches of 8 rollouts
    assert n_steps >= limit and n_steps % 64 == 0 and n_steps - 64 < limit
    assert horizon.resolve(100, "auto", 8, venv, TMAZE) == (100, 100)  # numbers are kept; 8 envs: 8 minibatches
    assert horizon.resolve(100, "auto", 2, venv, TMAZE) == (100, 100)  # 2 envs: 2 minibatches of one rollout
    assert horizon.resolve(100, 7, 8, venv, TMAZE) == (100, 7)


def test_a_user_who_passes_a_length_gets_rollouts_for_it_and_the_minibatch_count_stock_would_make():
    cfg = load_config(None, TMAZE, ["env_kwargs.length=100", "ppo.n_steps=auto", "ppo.batch_size=auto", "n_envs=8"])
    env = factory.make_training_env(cfg)
    model = factory.build_model(cfg, env)
    assert (model.n_steps, model.batch_size) == (256, 256)
    assert model.rollout_buffer.sequence_length == 256  # whole rollouts: 8 sequences, one per minibatch
    with pytest.raises(UrgateError, match="ppo.n_steps: auto needs the episode limit of no-limit"):
        horizon.resolve("auto", 256, 8, DummyVecEnv([_NoLimit]), "no-limit")


class _NoLimit(gym.Env):
    """An env that declares no episode limit (no ``max_steps``, no spec)."""

    observation_space = gym.spaces.Discrete(2)
    action_space = gym.spaces.Discrete(2)


@pytest.mark.parametrize("env_id", ["urgate/PassiveVisualMatch-v0", "urgate/ActiveVisualMatch-v0"])
def test_visual_match_declares_its_episode_limit_in_process_and_in_subprocesses(env_id):
    for subprocess in (False, True):
        venv = envs.make_vec_env(env_id, n_envs=2, subprocess=subprocess, distractor_steps=60)
        try:
            assert horizon.episode_limit(venv) == 15 + 60 + 15
            assert horizon.resolve("auto", "auto", 64, venv, env_id) == (128, 128 * 8)
        finally:
            venv.close()
    sets = ["ppo.n_steps=auto", "ppo.batch_size=auto", "n_envs=4", "env_kwargs.cue_steps=15"]
    cfg = load_config(None, env_id, [*sets, "env_kwargs.distractor_steps=90"])
    model = factory.build_model(cfg, factory.make_training_env(cfg))
    assert (model.n_steps, model.batch_size) == (128, 128)  # episodes of at most 15 + 90 + 15 = 120 steps


def test_sequences_shorter_than_episodes_warn_once_saying_what_to_set(caplog):
    cfg = load_config(None, TMAZE, ["env_kwargs.length=100", "ppo.n_steps=128", "ppo.batch_size=256", "n_envs=2"])
    with caplog.at_level(logging.WARNING, logger="urgate"):
        factory.build_model(cfg, factory.make_training_env(cfg))
    [record] = [r for r in caplog.records if r.name == "urgate"]
    assert "sequences hold 128 steps but episodes of urgate/TMaze-v0 last up to 202" in record.message
    assert "ppo.n_steps: auto" in record.message
    caplog.clear()
    cfg = load_config(None, TMAZE, ["env_kwargs.length=100", "ppo.n_steps=auto", "ppo.batch_size=auto", "n_envs=2"])
    with caplog.at_level(logging.WARNING, logger="urgate"):
        factory.build_model(cfg, factory.make_training_env(cfg))
    assert not [r for r in caplog.records if r.name == "urgate"]


def test_a_bad_auto_value_names_what_was_typed():
    with pytest.raises(UrgateError, match=r"'ppo.n_steps' must be an integer >= 1 or auto, got 'autoo'"):
        load_config(None, TMAZE, ["ppo.n_steps=autoo"])


def _cartpole() -> gym.Env:
    return gym.make("CartPole-v1")


@pytest.mark.parametrize("env_id,limit", [("CartPole-v1", 500), ("urgate/PassiveVisualMatch-v0", 120)])
def test_subprocess_envs_without_max_steps_are_asked_not_killed(env_id, limit):
    """A subprocess worker dies on get_attr of a missing attribute (SB3's and ours): building a Memory Maze run
    with `vec_env: subproc` crashed in check_sequences until the limit was asked with has_attr first."""
    if env_id == "CartPole-v1":  # a gymnasium env with a spec limit and no max_steps
        venv = LeanSubprocVecEnv([_cartpole, _cartpole])
    else:
        venv = envs.make_vec_env(env_id, n_envs=2, subprocess=True)
    try:
        assert horizon.episode_limit(venv) == limit
        horizon.check_sequences(64, venv, env_id)  # the call that crashed
        assert venv.has_attr("spec")  # the workers are alive: a dead one raises EOFError here
    finally:
        venv.close()


@pytest.mark.parametrize("subprocess", [False, True])
def test_a_declared_memory_span_sizes_auto_rollouts_and_the_warning(subprocess, caplog):
    """MiniGrid's Memory tasks declare how long their cue must be carried (2 (width + 4) steps), far below their
    episode limit (5 size^2): auto rollouts come from the span, and only sequences shorter than it warn."""
    env_id = "MiniGrid-MemoryS17Random-v0"
    venv = envs.make_vec_env(env_id, n_envs=2, subprocess=subprocess, actions="move")
    try:
        assert horizon.episode_limit(venv) == 5 * 17**2
        assert horizon.memory_span(venv) == (42, True)
        assert horizon.resolve("auto", "auto", 64, venv, env_id) == (64, 64 * 8)
        with caplog.at_level(logging.WARNING, logger="urgate"):
            assert horizon.check_sequences(64, venv, env_id) is None
            message = horizon.check_sequences(32, venv, env_id)
        assert "sequences hold 32 steps but MiniGrid-MemoryS17Random-v0 asks an agent to carry its cue up to 42" in (
            message
        )
        assert [r.message for r in caplog.records if r.name == "urgate"] == [message]
    finally:
        venv.close()
    assert horizon.memory_span(envs.make_vec_env(TMAZE, n_envs=2, length=20)) == (42, False)  # the episode limit
