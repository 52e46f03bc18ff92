"""The vectorised Visual Match (``VisualMatchVecEnv``) against DummyVecEnv over ``VisualMatchEnv``s: same seeds and
actions -> the same episodes, step for step, with DummyVecEnv's auto-reset semantics."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

from envs import EnvConfigError, make_vec_env
from envs.cue import CUE_INFO
from envs.visual_match import ACTIVE_ID, BOX, CUE, LEFT, PASSIVE_ID, VisualMatchEnv
from envs.visual_match_vec import VisualMatchVecEnv

# Settings that reach every rule quickly: short phases, no delay, many colours, a room full of apples that come back
# after one step, a choice that times out often.
SETTINGS = {
    "short": {"cue_steps": 2, "distractor_steps": 8},
    "no-delay": {"cue_steps": 1, "distractor_steps": 0, "n_colours": 2},
    "six-colours-full-of-apples": {
        "cue_steps": 3,
        "distractor_steps": 25,
        "n_colours": 6,
        "n_apples": 44,
        "apple_respawn": 1,
    },
    "fast-respawn-short-choice": {
        "cue_steps": 4,
        "distractor_steps": 30,
        "n_apples": 20,
        "apple_respawn": 3,
        "choice_steps": 5,
        "apple_reward": 0.5,
        "final_reward": 3.0,
    },
}


def compare(env_id: str, kwargs: dict, n_envs: int, steps: int, seed: int) -> dict[str, int]:
    """Step ``make_vec_env``'s VecEnv and SB3's DummyVecEnv of Monitor-wrapped ``VisualMatchEnv``s with the same
    random actions through ``steps`` steps, a reseeding reset half-way; assert every output equal. Returns counts of
    what happened (for the caller to check that the rules were exercised)."""
    vec = make_vec_env(env_id, n_envs=n_envs, seed=seed, **kwargs)
    assert isinstance(vec.unwrapped, VisualMatchVecEnv)
    dummy = sb3_make_vec_env(lambda: VisualMatchEnv(active=env_id == ACTIVE_ID, **kwargs), n_envs=n_envs, seed=seed)
    rng = np.random.default_rng(seed)
    seen = {"success": 0, "wrong box": 0, "timeout": 0, "apples": 0, "cue shown": 0}
    for half in range(2):
        if half:
            vec.seed(seed + 100)
            dummy.seed(seed + 100)
        obs_v, obs_d = vec.reset(), dummy.reset()
        for key in ("image", "direction"):
            np.testing.assert_array_equal(obs_v[key], obs_d[key])
        assert vec.unwrapped.reset_infos == dummy.reset_infos
        for _ in range(steps // 2):
            actions = rng.choice(3, size=n_envs, p=[0.25, 0.25, 0.5])
            obs_v, rew_v, done_v, infos_v = vec.step(actions)
            obs_d, rew_d, done_d, infos_d = dummy.step(actions)
            for key in ("image", "direction"):
                assert obs_v[key].dtype == obs_d[key].dtype
                np.testing.assert_array_equal(obs_v[key], obs_d[key])
            assert rew_v.dtype == rew_d.dtype
            np.testing.assert_array_equal(rew_v, rew_d)
            np.testing.assert_array_equal(done_v, done_d)
            seen["apples"] += int(((rew_d > 0) & ~done_d).sum())
            assert vec.unwrapped.reset_infos == dummy.reset_infos  # the first step's cue of new episodes
            seen["cue shown"] += sum(CUE_INFO in i for i in infos_d)
            seen["cue shown"] += sum(CUE_INFO in dummy.reset_infos[i] for i in np.flatnonzero(done_d))
            for iv, id_ in zip(infos_v, infos_d, strict=True):
                assert iv.keys() == id_.keys()
                assert iv.get(CUE_INFO) == id_.get(CUE_INFO)
                assert iv["TimeLimit.truncated"] is id_["TimeLimit.truncated"] is False
                if "terminal_observation" in id_:
                    for key in ("image", "direction"):
                        np.testing.assert_array_equal(iv["terminal_observation"][key], id_["terminal_observation"][key])
                    assert iv["is_success"] == id_["is_success"] and iv["choice"] == id_["choice"]
                    assert iv["episode"]["r"] == pytest.approx(id_["episode"]["r"], abs=1e-5)
                    assert iv["episode"]["l"] == id_["episode"]["l"]
                    outcome = "timeout" if id_["choice"] is None else "success" if id_["is_success"] else "wrong box"
                    seen[outcome] += 1
    return seen


@pytest.mark.parametrize("env_id", [PASSIVE_ID, ACTIVE_ID])
@pytest.mark.parametrize("setting", list(SETTINGS))
def test_vec_env_plays_dummy_vec_envs_episodes(env_id, setting):
    seen = compare(env_id, SETTINGS[setting], n_envs=6, steps=800, seed=len(setting))
    if SETTINGS[setting]["distractor_steps"] == 0:
        assert seen.pop("apples") == 0
    assert min(seen.values()) >= 3, seen  # every way an episode ends, and apples, were compared


@pytest.mark.parametrize("env_id", [PASSIVE_ID, ACTIVE_ID])
def test_vec_env_plays_dummy_vec_envs_episodes_at_the_defaults(env_id):
    seen = compare(env_id, {}, n_envs=4, steps=600, seed=3)
    assert seen["apples"] > 0 and sum(seen.values()) - seen["apples"] >= 10, seen


@pytest.mark.slow
@pytest.mark.parametrize("env_id", [PASSIVE_ID, ACTIVE_ID])
@pytest.mark.parametrize("setting", ["defaults", "distractor-60", *SETTINGS])
def test_vec_env_soak(env_id, setting):
    """80,000 steps per side and setting (about 15 CPU seconds each, most of it in DummyVecEnv)."""
    setting = {"defaults": {}, "distractor-60": {"distractor_steps": 60}, **SETTINGS}[setting]
    seen = compare(env_id, setting, n_envs=8, steps=10_000, seed=11)
    if setting.get("distractor_steps") == 0:
        assert seen.pop("apples") == 0
    assert min(seen.values()) >= 10, seen


def test_vec_env_answers_sb3s_queries_and_declares_its_episode_limit():
    vec = make_vec_env(PASSIVE_ID, n_envs=3, seed=0, cue_steps=2, distractor_steps=7, choice_steps=5)
    vec.reset()
    assert vec.get_attr("max_steps") == [14] * 3 and vec.get_attr("n_colours", [1]) == [3]
    assert vec.get_attr("phase") == [0, 0, 0] and vec.get_attr("dir", [2]) == [3]
    assert vec.env_is_wrapped(object) == [False] * 3 and vec.get_images() == [None] * 3
    with pytest.raises(AttributeError):
        vec.get_attr("no_such_thing")
    with pytest.raises(EnvConfigError, match="distractor_step.*did you mean distractor_steps"):
        make_vec_env(PASSIVE_ID, n_envs=2, distractor_step=5)
    with pytest.raises(EnvConfigError, match="n_colours must be an integer 2..6"):
        make_vec_env(ACTIVE_ID, n_envs=2, n_colours=9)
    assert VisualMatchEnv().max_steps == 15 + 90 + 15
    procs = make_vec_env(ACTIVE_ID, n_envs=2, subprocess=True)
    try:
        assert not isinstance(procs.unwrapped, VisualMatchVecEnv)  # subprocess=True: one VisualMatchEnv per process
        assert procs.get_attr("max_steps") == [120, 120]
    finally:
        procs.close()


def test_every_episode_ends_within_max_steps():
    """``max_steps`` is the longest episode: a policy that never chooses is stopped exactly there."""
    for kwargs in ({}, {"distractor_steps": 0}, {"cue_steps": 3, "choice_steps": 2}):
        vec = make_vec_env(ACTIVE_ID, n_envs=2, seed=0, **kwargs)
        limit = vec.get_attr("max_steps")[0]
        vec.reset()
        for t in range(1, limit + 1):
            _, _, dones, infos = vec.step(np.zeros(2, dtype=np.int64))  # turning left forever
            assert dones.all() == (t == limit) and not dones.any() or t == limit
        assert [i["choice"] for i in infos] == [None, None] and [i["episode"]["l"] for i in infos] == [limit] * 2


@pytest.mark.parametrize("env_id", [PASSIVE_ID, ACTIVE_ID])
def test_a_restored_state_continues_as_the_original(env_id):
    """get_state/set_state (what a checkpoint stores): a VecEnv restored from a pickled snapshot, taken mid-episode
    with apples waiting to respawn, plays on exactly as the original, through auto-resets and a reseeding reset."""
    kwargs = {"cue_steps": 3, "distractor_steps": 20, "n_apples": 30, "apple_respawn": 4}
    original = VisualMatchVecEnv(4, active=env_id == ACTIVE_ID, **kwargs)
    original.seed(5)
    original.reset()
    rng = np.random.default_rng(0)
    for _ in range(37):
        original.step(rng.integers(3, size=4))
    assert (original.copies.due != np.iinfo(np.int64).max).any()  # respawns pending in the snapshot
    original.seed(9)  # seeds pending for the next reset are part of the state
    state = pickle.loads(pickle.dumps(original.get_state()))
    restored = VisualMatchVecEnv(4, active=env_id == ACTIVE_ID, **kwargs)
    restored.set_state(state)
    for t in range(300):
        if t == 150:
            np.testing.assert_array_equal(original.reset()["image"], restored.reset()["image"])
        actions = rng.integers(3, size=4)
        (obs_o, rew_o, done_o, _), (obs_r, rew_r, done_r, _) = original.step(actions), restored.step(actions)
        np.testing.assert_array_equal(obs_o["image"], obs_r["image"])
        np.testing.assert_array_equal(obs_o["direction"], obs_r["direction"])
        np.testing.assert_array_equal(rew_o, rew_r)
        np.testing.assert_array_equal(done_o, done_r)
    with pytest.raises(ValueError, match="shape"):
        VisualMatchVecEnv(3, **kwargs).set_state(state)


@pytest.mark.parametrize("active", [False, True])
def test_the_cue_is_said_on_exactly_the_steps_whose_view_shows_the_cue_box(active):
    env = VisualMatchEnv(active=active, cue_steps=6, distractor_steps=4)
    rng = np.random.default_rng(0)
    said = {"cue room, box in view": 0, "cue room, box out of view": 0}
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        terminated = False
        while not terminated:
            box = bool((obs["image"][:, :, 0] == BOX).any())
            if env.phase == CUE:
                assert info.get(CUE_INFO) == (env.cue_colour if box else None)
                said["cue room, box in view" if box else "cue room, box out of view"] += 1
            else:
                assert CUE_INFO not in info  # the choice room's boxes are not the cue
            obs, _, terminated, _, info = env.step(int(rng.integers(3)))
        if not active:
            obs, info = env.reset(seed=seed)
            assert info == {CUE_INFO: env.cue_colour}  # passive: the cue is in view at the first step
            assert CUE_INFO in env.step(LEFT)[4] and CUE_INFO not in env.step(LEFT)[4]  # facing down: out of view
    assert min(said.values()) > 10
