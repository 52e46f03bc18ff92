"""The vectorised MiniGrid Memory tasks (``envs.minigrid_vec.MemoryVecEnv``) against DummyVecEnv over minigrid's own
envs with our wrappers: same seeds, same actions -> the same observations, rewards, dones and infos, step for step,
for every Memory id and both action sets; the fallback to minigrid's envs; SB3's queries."""

import warnings

import numpy as np
import pytest
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

import envs.minigrid as mg
from envs import EnvConfigError, make_vec_env
from envs.cue import CUE_INFO
from envs.minigrid import MEMORY_IDS, make_minigrid
from envs.minigrid_vec import MemoryVecEnv

PICKUP, DROP, TOGGLE, DONE = 3, 4, 5, 6


def _guided_actions(dummy: DummyVecEnv, targets: np.ndarray, rng: np.random.Generator, n_actions: int, explore):
    """Per copy: a random action with probability ``explore[i]``, else a step towards the copy's target, read from
    the reference env's state: 0/1 the cell next to the upper/lower object at the end of the hallway, 2 the start
    room's object, where it tries the actions that do nothing (pickup, drop, toggle, done; turns with the ``move``
    set) until it picks target 0 or 1. Only the reference decides, so both VecEnvs get the same actions; guided
    copies finish many episodes, both ways."""
    actions = rng.integers(n_actions, size=dummy.num_envs)
    for i, env in enumerate(dummy.envs):
        if rng.random() < explore[i]:
            continue
        task = env.unwrapped
        (x, y), d, mid = task.agent_pos, task.agent_dir, task.height // 2
        front = task.grid.get(*task.front_pos)
        if targets[i] == 2 and front is not None and front.type in ("key", "ball"):
            actions[i] = rng.integers(PICKUP, DONE + 1) if n_actions > PICKUP else rng.integers(2)
            targets[i] = rng.integers(3) if rng.random() < 0.2 else 2
            continue
        end_x = 1 if targets[i] == 2 else task.success_pos[0]
        goal_y = mid - 1 if targets[i] else mid + 1
        if y != mid and x != end_x:
            want = 1 if y < mid else 3  # back to the hallway's row
        elif x != end_x:
            want = 0 if x < end_x else 2
        else:
            want = 3 if goal_y < y else 1
        actions[i] = 2 if d == want else (0 if (d - want) % 4 == 1 else 1)
    return actions


def _compare(env_id: str, actions: str, n_envs: int, steps: int, seed: int, **kwargs) -> dict[str, int]:
    """Step both VecEnvs ``steps`` times with the same actions (a reseeding reset half way) and assert they agree;
    return how many episodes ended each way, how often a no-op action faced an object and how many steps' infos
    said the cue (``envs.cue``)."""
    vec = make_vec_env(env_id, n_envs=n_envs, seed=seed, actions=actions, **kwargs)
    assert isinstance(vec.unwrapped, MemoryVecEnv)
    dummy = sb3_make_vec_env(
        lambda: make_minigrid(env_id, actions=actions, **kwargs), n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv
    )
    n_actions = vec.action_space.n
    rng = np.random.default_rng(seed)
    explore = np.linspace(0.05, 1.0, n_envs)  # the last copy acts at random
    targets = rng.integers(3, size=n_envs)
    seen = {"success": 0, "failure": 0, "truncated": 0, "both": 0, "noop_at_object": 0, "cue": 0}
    for phase in range(2):
        if phase:
            vec.seed(seed + 1000)
            dummy.seed(seed + 1000)
        obs_v, obs_d = vec.reset(), dummy.reset()
        assert vec.unwrapped.reset_infos == dummy.reset_infos
        for t in range(steps // 2 + 1):
            for key in ("image", "direction"):
                np.testing.assert_array_equal(obs_v[key], obs_d[key], err_msg=f"{key} at step {t}")
            if t == steps // 2:
                break
            act = _guided_actions(dummy, targets, rng, n_actions, explore)
            for i, env in enumerate(dummy.envs):
                front = env.unwrapped.grid.get(*env.unwrapped.front_pos)
                seen["noop_at_object"] += act[i] >= PICKUP and front is not None and front.type in ("key", "ball")
            obs_v, rew_v, done_v, infos_v = vec.step(act)
            obs_d, rew_d, done_d, infos_d = dummy.step(act)
            np.testing.assert_array_equal(rew_v, rew_d)
            np.testing.assert_array_equal(done_v, done_d)
            assert vec.unwrapped.reset_infos == dummy.reset_infos, t  # the cue of new episodes' first views
            for i, (iv, id_) in enumerate(zip(infos_v, infos_d, strict=True)):
                assert iv.keys() == id_.keys(), (t, i)
                assert iv["TimeLimit.truncated"] == id_["TimeLimit.truncated"]
                assert iv.get(CUE_INFO) == id_.get(CUE_INFO), (t, i)
                seen["cue"] += CUE_INFO in id_
                if "terminal_observation" not in id_:
                    continue
                for key in ("image", "direction"):
                    np.testing.assert_array_equal(iv["terminal_observation"][key], id_["terminal_observation"][key])
                assert iv["is_success"] == id_["is_success"]
                assert iv["episode"]["r"] == pytest.approx(id_["episode"]["r"], abs=1e-6)
                assert iv["episode"]["l"] == id_["episode"]["l"]
                truncated = dummy.envs[i].unwrapped.max_steps == id_["episode"]["l"]
                terminated = not id_["TimeLimit.truncated"]
                seen["both"] += terminated and truncated
                seen["truncated"] += not terminated
                seen["success" if id_["is_success"] else "failure"] += terminated
                targets[i] = rng.integers(3)
    vec.close()
    return seen


@pytest.mark.parametrize("actions", ["all", "move"])
@pytest.mark.parametrize("env_id", MEMORY_IDS)
def test_memory_vec_env_plays_minigrids_episodes(env_id, actions):
    """Thousands of steps per id and action set: guided and random copies, episodes ending in success, failure and
    (the random copy, on the small rooms) at the time limit, and a reseeding reset."""
    seen = _compare(env_id, actions, n_envs=8, steps=300, seed=sum(map(ord, env_id + actions)))
    assert seen["success"] >= 5 and seen["failure"] >= 5 and seen["cue"] >= 20, seen
    if actions == "all":
        assert seen["noop_at_object"] > 0, seen


@pytest.mark.parametrize("env_id", ["MiniGrid-MemoryS7-v0", "MiniGrid-MemoryS13Random-v0"])
def test_memory_vec_env_time_limit(env_id):
    """A short ``max_steps``: truncations, success rewards near the limit, and episodes whose last step both reaches
    an object and the limit (terminated, not ``TimeLimit.truncated``)."""
    seen = _compare(env_id, "all", n_envs=8, steps=600, seed=3, max_steps=12 if "S7" in env_id else 30)
    assert seen["truncated"] >= 10 and seen["success"] >= 5 and seen["both"] >= 1, seen


@pytest.mark.slow
@pytest.mark.parametrize("env_id", MEMORY_IDS)
def test_memory_vec_env_soak(env_id):
    """Longer: 16 copies, 2000 steps per action set (64,000 steps per id)."""
    for actions in ("all", "move"):
        seen = _compare(env_id, actions, n_envs=16, steps=2000, seed=11)
        assert seen["success"] >= 50 and seen["failure"] >= 50, seen


def test_memory_vec_env_is_what_make_vec_env_builds_and_answers_sb3s_queries():
    vec = make_vec_env("MiniGrid-MemoryS9-v0", n_envs=3, seed=0, actions="move")
    vec.reset()
    task = vec.unwrapped
    assert isinstance(task, MemoryVecEnv) and vec.action_space.n == 3
    assert vec.get_attr("max_steps") == [5 * 9**2] * 3
    assert vec.get_attr("spec")[0].id == "MiniGrid-MemoryS9-v0"
    assert vec.get_attr("direction", [1]) == [0]  # every episode starts facing right
    assert vec.env_is_wrapped(object) == [False] * 3
    with pytest.raises(ValueError, match="0..2"):
        vec.step(np.array([0, 3, 1]))
    with pytest.raises(EnvConfigError, match="actions must be one of"):
        make_vec_env("MiniGrid-MemoryS9-v0", n_envs=2, actions="some")
    # Not vectorised: the RGB view, other MiniGrid tasks, keywords it does not model, subprocesses.
    for env_id, kwargs in [
        ("MiniGrid-MemoryS7-v0", {"view": "rgb"}),
        ("MiniGrid-MemoryS7-v0", {"agent_view_size": 5}),
        ("MiniGrid-RedBlueDoors-6x6-v0", {}),
        ("MiniGrid-MemoryS7-v0", {"subprocess": True}),
    ]:
        other = make_vec_env(env_id, n_envs=2, **kwargs)
        assert not isinstance(other.unwrapped, MemoryVecEnv), (env_id, kwargs)
        other.close()


def test_unchecked_minigrid_version_falls_back_with_one_warning(monkeypatch):
    import minigrid

    monkeypatch.setattr(minigrid, "__version__", "99.0.0")
    monkeypatch.setattr(mg, "_warned_version", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = make_vec_env("MiniGrid-MemoryS7-v0", n_envs=2, seed=0)
        second = make_vec_env("MiniGrid-MemoryS11-v0", n_envs=2, seed=0)
    assert not isinstance(first.unwrapped, MemoryVecEnv) and not isinstance(second.unwrapped, MemoryVecEnv)
    messages = [str(w.message) for w in caught if "minigrid 99.0.0" in str(w.message)]
    assert len(messages) == 1 and "3.0.0..3.2.0" in messages[0], [str(w.message) for w in caught]
    assert first.reset()["image"].shape == (2, 7, 7, 3)  # minigrid's own envs, which still work


def test_memory_vec_env_state_round_trip():
    """get_state/set_state: a restored copy continues exactly as the original."""
    vec = make_vec_env("MiniGrid-MemoryS13Random-v0", n_envs=4, seed=5)
    vec.reset()
    rng = np.random.default_rng(0)
    for _ in range(50):
        vec.step(rng.integers(7, size=4))
    state = vec.unwrapped.get_state()
    other = make_vec_env("MiniGrid-MemoryS13Random-v0", n_envs=4, seed=99)
    other.reset()
    other.unwrapped.set_state(state)
    for _ in range(400):
        act = rng.integers(7, size=4)
        a, b = vec.step(act), other.step(act)
        for key in ("image", "direction"):
            np.testing.assert_array_equal(a[0][key], b[0][key])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[2], b[2])


def test_memory_vec_env_without_the_layout_cache(monkeypatch):
    """With the cache of layouts full from the start, every episode is generated by minigrid into the copy's own
    two layouts (alternating, so a finished episode's last view still sees its grid): the same episodes."""
    import envs.minigrid_vec as minigrid_vec

    monkeypatch.setattr(minigrid_vec, "_CACHE_BYTES", 0)
    seen = _compare("MiniGrid-MemoryS13Random-v0", "all", n_envs=8, steps=300, seed=4)
    assert seen["success"] >= 5 and seen["failure"] >= 5, seen


def test_memory_cue_is_said_when_minigrids_view_shows_the_start_object():
    """The single env's cue against minigrid's own view: said exactly on the steps where the start room's object
    is inside the view and visible (MiniGridEnv.relative_coords and gen_obs_grid's mask), with its type."""
    env = make_minigrid("MiniGrid-MemoryS7-v0")
    rng = np.random.default_rng(0)
    said = 0
    _, info = env.reset(seed=0)
    for _ in range(3000):
        task = env.unwrapped
        start = (1, task.height // 2 - 1)
        where = task.relative_coords(*start)
        shown = where is not None and task.gen_obs_grid()[1][where]
        assert info.get(CUE_INFO) == ({"key": 0, "ball": 1}[task.grid.get(*start).type] if shown else None)
        said += shown
        _, _, terminated, truncated, info = env.step(int(rng.choice(3, p=[0.3, 0.3, 0.4])))
        if terminated or truncated:
            _, info = env.reset()
    assert said > 100


def _walk_from_cue_to_choice(env, seed: int) -> int:
    """Steps from the first view of the cue to the end of the episode for a scripted agent that turns west, walks
    until it sees the start object, turns back and walks straight to the matching object (actions: left, right,
    forward); asserts it succeeds."""
    left, right, forward = 0, 1, 2
    _, info = env.reset(seed=seed)
    task = env.unwrapped
    seen_at, steps = (0 if CUE_INFO in info else None), 0

    def act(action):
        nonlocal seen_at, steps
        _, reward, terminated, truncated, info = env.step(action)
        steps += 1
        if seen_at is None and CUE_INFO in info:
            seen_at = steps
        return reward, terminated or truncated

    if seen_at is None:
        act(left), act(left)  # face west
        while seen_at is None:
            act(forward)
        act(left), act(left)  # face east again
    hallway_end = task.success_pos[0] - 1
    while task.agent_pos[0] < hallway_end + 1:
        act(forward)
    act(left if task.success_pos[1] < task.agent_pos[1] else right)
    reward, done = act(forward)
    assert done and reward > 0
    return steps - seen_at


@pytest.mark.parametrize("env_id", MEMORY_IDS)
def test_memory_span_covers_the_walk_from_cue_to_choice(env_id):
    """The declared memory_span (what ppo.n_steps: auto sizes the rollouts from) is at least twice the steps an
    agent that walks straight from its first view of the cue to the matching object carries the cue."""
    env = make_minigrid(env_id, actions="move")
    span = env.get_wrapper_attr("memory_span")
    walks = [_walk_from_cue_to_choice(env, seed) for seed in range(60)]
    assert 2 * max(walks) <= span
    assert max(walks) > span / 4  # the span is not padded far beyond what the walks need
    assert make_vec_env(env_id, n_envs=2, actions="move").get_attr("memory_span") == [span, span]
