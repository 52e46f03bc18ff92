"""The optional families (POPGym, Memory Maze): API checks when installed, install hints when not.

Memory Maze builds cost seconds and ~1.4 GB each, so the default run builds one env (two seeded builds); the checks
of every id, a full episode and a short training run are marked slow.
"""

import importlib.util
import os
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from envs import FAMILIES, EnvConfigError, family_of, make_env, make_vec_env
from envs import registry as registry_module


@pytest.mark.parametrize(
    "family,env_id", [("memory_maze", "urgate/MemoryMaze-9x9-v0"), ("popgym", "popgym-RepeatFirstEasy-v0")]
)
def test_missing_optional_package_names_the_install_command(monkeypatch, family, env_id):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        registry_module.importlib.util,
        "find_spec",
        lambda name, *a: None if name == FAMILIES[family].requires else real_find_spec(name, *a),
    )
    extra = FAMILIES[family].extra
    for build in (lambda: make_env(env_id), lambda: make_vec_env(env_id, n_envs=2, subprocess=True)):
        with pytest.raises(EnvConfigError, match=rf'pip install -e "\.\[{extra}\]"'):
            build()


# -- POPGym ------------------------------------------------------------------------------------------------------


def test_popgym_ids_match_the_installed_registry():
    pytest.importorskip("popgym")
    registered = sorted(i for i in gym.registry if i.startswith("popgym-"))
    assert sorted(FAMILIES["popgym"].ids) == registered


@pytest.mark.parametrize("env_id", FAMILIES["popgym"].ids)
def test_popgym_ids_pass_gymnasium_and_sb3_checks(env_id):
    pytest.importorskip("popgym")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(make_env(env_id), skip_render_check=True)
        sb3_check_env(make_env(env_id))


def test_popgym_tuple_observation_becomes_multidiscrete_and_infos_are_fresh():
    pytest.importorskip("popgym")
    raw = gym.make("popgym-AutoencodeEasy-v0", disable_env_checker=True)
    env = make_env("popgym-AutoencodeEasy-v0", seed=0)
    assert isinstance(raw.observation_space, gym.spaces.Tuple)
    assert env.observation_space == gym.spaces.MultiDiscrete([p.n for p in raw.observation_space.spaces])
    raw_obs, _ = raw.reset(seed=0)
    obs, _ = env.reset()
    np.testing.assert_array_equal(obs, np.asarray(raw_obs))
    bandit = make_env("popgym-MultiarmedBanditEasy-v0", seed=0)
    _, info = bandit.reset()
    step_info = bandit.step(0)[-1]
    assert step_info["bandits"] is not info["bandits"]
    assert "is_success" not in step_info
    assert family_of("popgym-AutoencodeEasy-v0").memoryless_ceiling is None


def test_popgym_errors():
    pytest.importorskip("popgym")
    with pytest.raises(EnvConfigError, match="closest: popgym-RepeatFirstEasy-v0"):
        make_env("popgym-RepeatFirstEassy-v0")
    with pytest.raises(EnvConfigError, match="bad keyword"):
        make_env("popgym-RepeatFirstEasy-v0", nonsense=1)


# -- Memory Maze -----------------------------------------------------------------------------------------------------


def _needs_memory_maze():
    # Not pytest.importorskip: a plain `import memory_maze` fails without the old gym package, which we avoid needing.
    if importlib.util.find_spec("memory_maze") is None:
        pytest.skip('memory-maze is not installed (pip install -e ".[memory-maze]")')


def test_memory_maze_import_needs_no_gym_and_defaults_to_egl(monkeypatch):
    _needs_memory_maze()
    from envs.memory_maze import _import_tasks

    monkeypatch.delenv("MUJOCO_GL", raising=False)
    tasks = _import_tasks()
    assert os.environ["MUJOCO_GL"] == "egl"
    assert hasattr(tasks, "memory_maze_9x9")
    if importlib.util.find_spec("gym") is None:
        assert "gym" not in sys.modules  # the stand-in lived only for the import


class _FakeDmTask:
    """A dm_env task that ends after three steps, by truncation or termination."""

    def __init__(self, discount_at_end):
        self.discount_at_end, self.t = discount_at_end, 0

    def reset(self):
        import dm_env

        self.t = 0
        return dm_env.restart(np.zeros((64, 64, 3), np.uint8))

    def step(self, action):
        import dm_env

        self.t += 1
        obs = np.full((64, 64, 3), self.t, np.uint8)
        if self.t < 3:
            return dm_env.transition(1.0, obs)
        if self.discount_at_end:
            return dm_env.truncation(0.0, obs)
        return dm_env.termination(0.0, obs)

    def close(self):
        pass


@pytest.mark.parametrize("discount_at_end,expected", [(1.0, (False, True)), (0.0, (True, False))])
def test_memory_maze_episode_end_maps_to_truncation(monkeypatch, discount_at_end, expected):
    _needs_memory_maze()
    from envs.memory_maze import MemoryMazeEnv

    env = MemoryMazeEnv(size=9, render_mode="rgb_array")
    monkeypatch.setattr(env, "_task_fn", lambda seed, **kwargs: _FakeDmTask(discount_at_end))
    env.reset(seed=0)
    ends = [env.step(1)[2:4] for _ in range(3)]
    assert ends == [(False, False), (False, False), expected]
    assert env.render()[0, 0, 0] == 3


@pytest.fixture(scope="module")
def memory_maze_env():
    _needs_memory_maze()
    env = make_env("urgate/MemoryMaze-9x9-v0", seed=3, render_mode="rgb_array")
    yield env
    env.close()


def test_memory_maze_spaces_steps_render_and_seeding(memory_maze_env):
    from envs.memory_maze import _space

    env = memory_maze_env
    actions = [1, 1, 4, 5, 2, 1]

    def trajectory(**reset_kwargs):
        obs, info = env.reset(**reset_kwargs)
        out = [obs]
        for a in actions:
            obs, reward, terminated, truncated, info = env.step(a)
            assert isinstance(reward, float) and not terminated and not truncated and "is_success" not in info
            out.append(obs)
        return np.stack(out)

    first = trajectory()  # make_env's seed=3 applies to this first reset
    assert env.observation_space == gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert env.observation_space == _space(env.unwrapped._dm.observation_spec())
    assert env.action_space == _space(env.unwrapped._dm.action_spec())
    assert all(env.observation_space.contains(o) for o in first)
    assert first.std() > 0 and not np.array_equal(first[0], first[-1])  # it renders and it moves
    np.testing.assert_array_equal(env.render(), first[-1])
    np.testing.assert_array_equal(trajectory(seed=3), first)


def test_memory_maze_resets_do_not_spam_the_free_joint_warning(memory_maze_env, caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        memory_maze_env.reset()
        logging.getLogger("absl").warning("another dm_control warning")
    messages = [r.getMessage() for r in caplog.records]
    assert "another dm_control warning" in messages  # only the one message is dropped
    assert not any("free joint" in m for m in messages)


def test_memory_maze_family_points_at_cnn_policy():
    for env_id in FAMILIES["memory_maze"].ids:
        assert family_of(env_id).policy == "CnnGatedPolicy"
    assert family_of("urgate/MemoryMaze-15x15-ExtraObs-v0").policy == "MultiInputGatedPolicy"
    with pytest.raises(EnvConfigError, match="closest: urgate/MemoryMaze-9x9-v0"):
        family_of("urgate/MemoryMaze-8x8-v0")


@pytest.mark.slow
@pytest.mark.parametrize("env_id", FAMILIES["memory_maze"].ids + FAMILIES["memory_maze_extra"].ids)
def test_memory_maze_ids_pass_gymnasium_and_sb3_checks(env_id):
    _needs_memory_maze()
    from envs.memory_maze import _space

    env = make_env(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gym_check_env(env, skip_render_check=True)  # includes reset(seed=123) determinism
        sb3_check_env(env)
    assert env.observation_space == _space(env.unwrapped._dm.observation_spec())
    env.close()


@pytest.mark.slow
def test_memory_maze_9x9_episode_is_1000_steps_and_ends_by_truncation():
    _needs_memory_maze()
    env = make_env("urgate/MemoryMaze-9x9-v0", seed=0)
    env.reset()
    rng = np.random.default_rng(0)
    rewards = []
    for t in range(1, 1001):
        _, reward, terminated, truncated, _ = env.step(int(rng.integers(6)))
        rewards.append(reward)
        assert not terminated and truncated == (t == 1000)
    assert set(rewards) <= {0.0, 1.0}
    env.close()


@pytest.mark.slow
def test_memory_maze_cnn_policy_trains_and_frames_make_a_video(tmp_path):
    _needs_memory_maze()
    import imageio.v2 as imageio
    import torch
    from sb3_contrib import RecurrentPPO

    from policies import CnnGatedPolicy

    venv = make_vec_env("urgate/MemoryMaze-9x9-v0", n_envs=1, seed=0)
    policy_kwargs = {"core": "ur", "lstm_hidden_size": 64}
    model = RecurrentPPO(
        CnnGatedPolicy, venv, n_steps=256, batch_size=128, n_epochs=2, policy_kwargs=policy_kwargs, seed=0
    )
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=2048)
    assert model.num_timesteps >= 2048
    changed = [not torch.equal(b, p) for b, p in zip(before, model.policy.parameters(), strict=True)]
    assert all(changed)
    venv.close()

    env = make_env("urgate/MemoryMaze-9x9-v0", seed=1, render_mode="rgb_array")
    env.reset()
    frames = [env.render()]
    for _ in range(20):
        env.step(1)
        frames.append(env.render())
    path = tmp_path / "maze.gif"
    imageio.mimsave(path, frames)
    assert np.asarray(imageio.mimread(path)).shape[1:3] == (64, 64)
    env.close()


_MESA_THEN_TORCH = """
import sys
import envs
env = envs.make_env("urgate/MemoryMaze-9x9-v0")  # in this process: Mesa's GL (and its LLVM) is loaded here
env.reset(seed=0)
env.step(env.action_space.sample())
import torch
torch.optim.Adam([torch.nn.Parameter(torch.zeros(3))])  # torch._dynamo imports triton here, when installed
print("alive", "triton" in sys.modules)
"""


def test_a_memory_maze_env_built_before_torch_optimizers_does_not_crash_the_process():
    """Mesa's llvmpipe and triton both carry an LLVM; loading triton after Mesa segfaulted (`compare --workers 1`
    on Memory Maze died building Adam). A fresh interpreter: this pytest process may have loaded triton already."""
    _needs_memory_maze()
    import subprocess

    proc = subprocess.run(
        [sys.executable, "-c", _MESA_THEN_TORCH], capture_output=True, text=True, timeout=300, cwd=os.getcwd()
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["alive", str(importlib.util.find_spec("triton") is not None)]
