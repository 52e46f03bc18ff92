"""The envs registry: ids, errors, seeding, vectorisation, and the API checks of gymnasium and SB3 for every core id."""

import importlib
import inspect
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import SubprocVecEnv

import envs
from envs import FAMILIES, EnvConfigError, EnvFamily, family_of, list_env_ids, make_env, make_vec_env
from envs.tmaze_vec import TMazeVecEnv

CORE_IDS = [i for f in FAMILIES.values() if f.extra is None for i in f.ids]


def test_registry_fields_are_consistent():
    for name, family in FAMILIES.items():
        assert isinstance(family, EnvFamily) and family.name == name
        assert family.policy in ("MlpGatedPolicy", "CnnGatedPolicy", "MultiInputGatedPolicy")
        assert family.memoryless_ceiling is None or 0 < family.memoryless_ceiling < 1
        for env_id in family.ids:
            assert family_of(env_id) is family
    assert len(set(list_env_ids())) == len(list_env_ids())


@pytest.mark.parametrize("family", [f for f in FAMILIES.values() if f.extra is None], ids=lambda f: f.name)
def test_records_video_says_whether_the_family_renders_frames(family):
    """``run_rl.py list`` tells users which families ``eval --video`` can record: it must be true."""
    try:
        env = make_env(family.ids[0], seed=0, render_mode="rgb_array")
        env.reset(seed=0)
        frame = env.render()
    except EnvConfigError:
        frame = None
    renders = isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[-1] == 3
    assert renders == family.records_video


@pytest.mark.parametrize("env_id", CORE_IDS)
def test_core_ids_pass_gymnasium_and_sb3_checks(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 warns that a 7x7 "image" is smaller than NatureCNN's minimum
        gym_check_env(make_env(env_id), skip_render_check=True)
        sb3_check_env(make_env(env_id))


def test_unknown_id_lists_families_and_closest_matches():
    with pytest.raises(EnvConfigError, match=r"closest: urgate/TMaze-v0.*Families: minigrid"):
        family_of("urgate/TMaze-v1")
    with pytest.raises(EnvConfigError, match="MiniGrid-MemoryS7-v0"):
        make_env("MiniGrid-MemoryS8-v0")  # pattern-accepted but not registered
    with pytest.raises(EnvConfigError, match="unknown environment id"):
        make_vec_env("CartPole-v1")


def test_bad_keywords_and_values_are_config_errors():
    with pytest.raises(EnvConfigError, match=r"\['lenght'\] \(did you mean length\?\); accepted: \['length'"):
        make_env("urgate/TMaze-v0", lenght=3)
    with pytest.raises(EnvConfigError, match="length must be an integer >= 2"):
        make_env("urgate/TMaze-v0", length=1)
    with pytest.raises(EnvConfigError, match="bad keyword"):
        make_env("MiniGrid-MemoryS7-v0", colour="red")
    with pytest.raises(EnvConfigError, match="mission"):
        make_env("MiniGrid-Fetch-5x5-N2-v0")
    with pytest.raises(EnvConfigError, match="n_envs"):
        make_vec_env("urgate/TMaze-v0", n_envs=0)
    assert issubclass(EnvConfigError, ValueError)


def _rollout(env, n_steps, action_seed=0):
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset()
    trace = [np.concatenate([np.ravel(v) for v in (obs.values() if isinstance(obs, dict) else [obs])])]
    for _ in range(n_steps):
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
        trace.append(np.concatenate([np.ravel(v) for v in (obs.values() if isinstance(obs, dict) else [obs])]))
        trace.append(np.array([reward, terminated, truncated], dtype=np.float64))
        if terminated or truncated:
            obs, _ = env.reset()
    return np.concatenate([t.astype(np.float64) for t in trace])


@pytest.mark.parametrize("env_id,kwargs", [("urgate/TMaze-v0", {"length": 3}), ("MiniGrid-MemoryS7-v0", {})])
def test_seed_reproduces_episodes(env_id, kwargs):
    a = _rollout(make_env(env_id, seed=3, **kwargs), 300)
    b = _rollout(make_env(env_id, seed=3, **kwargs), 300)
    c = _rollout(make_env(env_id, seed=4, **kwargs), 300)
    np.testing.assert_array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_make_vec_env_seeds_each_copy_and_matches_make_env():
    vec = make_vec_env("urgate/TMaze-v0", n_envs=3, seed=10, length=4)
    assert isinstance(vec.unwrapped, TMazeVecEnv) and vec.num_envs == 3  # the family's vectorised VecEnv
    obs = vec.reset()
    for i in range(3):
        single, _ = make_env("urgate/TMaze-v0", seed=10 + i, length=4).reset()
        np.testing.assert_array_equal(obs[i], single)


def test_make_vec_env_subprocess():
    vec = make_vec_env("urgate/TMaze-v0", n_envs=2, seed=0, subprocess=True, length=3)
    try:
        assert isinstance(vec.unwrapped, SubprocVecEnv)  # envs.subproc.LeanSubprocVecEnv, in a VecMonitor
        obs = vec.reset()
        assert obs.shape == (2, 2)
        vec.step(np.zeros(2, dtype=np.int64))
    finally:
        vec.close()
    with pytest.raises(EnvConfigError, match="lenght"):
        make_vec_env("urgate/TMaze-v0", n_envs=2, subprocess=True, lenght=3)


def test_gymnasium_make_reaches_our_tasks():
    env = gym.make("urgate/TMaze-v0", length=5)
    assert env.unwrapped.length == 5
    assert "urgate/TMaze-v0" in envs.list_env_ids()


def test_minigrid_rgb_view_is_a_real_image():
    env = make_env("MiniGrid-MemoryS7-v0", seed=0, view="rgb")
    obs, _ = env.reset()
    assert env.observation_space["image"] == gym.spaces.Box(0, 255, (56, 56, 3), np.uint8)
    assert obs["image"].shape == (56, 56, 3) and obs["image"].max() > 10
    assert set(obs) == {"image", "direction"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(make_env("MiniGrid-MemoryS7-v0", view="rgb"))
    with pytest.raises(EnvConfigError, match="view must be one of"):
        make_env("MiniGrid-MemoryS7-v0", view="pixels")


def test_minigrid_move_actions_are_minigrids_first_three():
    from envs.oracles import minigrid_memory_oracle, run_episodes

    full, move = make_env("MiniGrid-MemoryS7-v0", seed=5), make_env("MiniGrid-MemoryS7-v0", seed=5, actions="move")
    assert full.action_space == gym.spaces.Discrete(7) and move.action_space == gym.spaces.Discrete(3)
    full.reset(seed=5), move.reset(seed=5)
    for action in (0, 1, 2, 2, 1, 2):  # left, right, forward mean the same in both
        a, b = full.step(action), move.step(action)
        assert np.array_equal(a[0]["image"], b[0]["image"]) and a[1:4] == b[1:4]
    with pytest.raises(ValueError, match="outside Discrete"):
        move.step(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sb3_check_env(make_env("MiniGrid-MemoryS7-v0", actions="move"))
    assert all(
        r["is_success"]
        for r in run_episodes(make_env("MiniGrid-MemoryS7-v0", seed=1, actions="move"), minigrid_memory_oracle, 5)
    )
    with pytest.raises(EnvConfigError, match=r"actions must be one of \('all', 'move'\), got 'nav'"):
        make_env("MiniGrid-MemoryS7-v0", actions="nav")


def test_minigrid_symbolic_view_has_true_bounds_so_sb3_leaves_it_alone():
    from stable_baselines3.common.preprocessing import is_image_space

    for env_id in ("MiniGrid-MemoryS7-v0", "urgate/PassiveVisualMatch-v0"):
        image = make_env(env_id).observation_space["image"]
        assert not is_image_space(image)  # no division by 255, no transpose, whatever normalize_images says
        obs, _ = make_env(env_id, seed=0).reset()
        assert image.contains(obs["image"])


def test_every_vec_builder_names_a_function_with_the_builder_signature():
    # vec_builder is a "module:function" name (imported only when a VecEnv is built): a typo would show only when
    # that family is trained.
    named = {f.name: f.vec_builder for f in FAMILIES.values() if f.vec_builder is not None}
    assert "tmaze" in named
    for name, spec in named.items():
        module, sep, function = spec.partition(":")
        assert sep and module and function, (name, spec)
        builder = getattr(importlib.import_module(f"envs.{module}"), function)
        assert list(inspect.signature(builder).parameters)[:2] == ["env_id", "n_envs"], (name, spec)


def _play(venv, actions):
    """Step ``venv`` through ``actions``: observations, rewards, dones and successes, for comparisons."""
    out = []
    for a in actions:
        obs, rewards, dones, infos = venv.step(a)
        obs = obs if isinstance(obs, dict) else {"obs": obs}
        success = [i.get("is_success") for i in infos]
        out.append(({k: v.copy() for k, v in obs.items()}, rewards.copy(), dones.copy(), success))
    return out


def _assert_same(a, b):
    assert len(a) == len(b)
    for (oa, ra, da, sa), (ob, rb, db, sb) in zip(a, b, strict=True):
        assert oa.keys() == ob.keys() and all(np.array_equal(oa[k], ob[k]) for k in oa)
        assert np.array_equal(ra, rb) and np.array_equal(da, db) and sa == sb


@pytest.mark.parametrize("family", [f for f in FAMILIES.values() if f.vec_builder is not None], ids=lambda f: f.name)
def test_vectorised_envs_restore_their_state_exactly(family):
    """The resumable-VecEnv protocol (``envs.vec_state``): a snapshot taken mid-episode, pickled and restored into
    another VecEnv of the same id, continues exactly as the original does (episodes in progress, generators and
    VecMonitor's counters included)."""
    import pickle

    from envs.vec_state import get_vec_state, set_vec_state

    env_id = family.ids[0]
    original = make_vec_env(env_id, n_envs=5, seed=3)
    original.reset()
    rng = np.random.default_rng(0)
    actions = [rng.integers(original.action_space.n, size=5) for _ in range(600)]
    _play(original, actions[:37])
    state = pickle.loads(pickle.dumps(get_vec_state(original)))
    assert state["exact"]
    copy = make_vec_env(env_id, n_envs=5, seed=99)
    copy.reset()
    _play(copy, actions[:11])
    set_vec_state(copy, state)
    ahead, again = _play(original, actions[37:]), _play(copy, actions[37:])
    _assert_same(ahead, again)
    assert sum(d.sum() for _, _, d, _ in ahead) >= 1  # episodes ended and new ones began after the snapshot
    returns = [i["episode"]["r"] for i in original.step(actions[0])[3] if "episode" in i]
    assert returns == [i["episode"]["r"] for i in copy.step(actions[0])[3] if "episode" in i]


def test_other_vec_envs_continue_their_random_streams():
    """A DummyVecEnv over gymnasium envs is restored in its generators only: after a reset its episodes are the
    ones the original would have played next, not a replay of the seed's first ones."""
    from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

    from envs.vec_state import get_vec_state, set_vec_state

    def build():
        return VecMonitor(
            DummyVecEnv([lambda i=i: make_env("urgate/TMaze-v0", seed=7 + i, length=2) for i in range(6)])
        )

    original = build()
    first = original.reset()[:, 0]
    _play(original, [np.zeros(6, dtype=int)] * 2)  # mid-episode
    state = get_vec_state(original)
    assert not state["exact"]
    copy = build()
    set_vec_state(copy, state)
    resumed = copy.reset()[:, 0]
    # the original's next episodes: step to the end of the current ones (all copies act alike, so they end together)
    nxt = None
    for _ in range(20):
        obs, _, dones, _ = original.step(np.zeros(6, dtype=int))
        if dones.all():
            nxt = obs[:, 0]
            break
    assert nxt is not None
    np.testing.assert_array_equal(resumed, nxt)
    assert not np.array_equal(resumed, first)
