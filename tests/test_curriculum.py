"""envs.curriculum and the run config's ``curriculum``: Visual Match's memory length changed between episodes, the
promotion rule against its definition (scripted outcomes), the snapshot a resumed run continues from, the run
that trains on the curriculum and evaluates the task, and the inputs it refuses."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from stable_baselines3.common.vec_env import VecEnv

from agents.errors import UrgateError
from agents.run.config import load_config
from agents.run.train import train
from envs import EnvConfigError, make_vec_env
from envs.curriculum import MemoryCurriculum
from envs.vec_state import get_vec_state, set_vec_state

PVM = "urgate/PassiveVisualMatch-v0"


class ScriptedEnv(VecEnv):
    """A VecEnv with a settable memory length whose episodes end on the steps and with the outcomes of a script:
    ``script[t]`` lists (env, success) pairs that finish at step t; it records the lengths set."""

    def __init__(self, n_envs: int, script: dict[int, list[tuple[int, bool]]], limit: int = 50) -> None:
        from gymnasium import spaces

        self.render_mode = None
        super().__init__(n_envs, spaces.Box(0, 1, (1,)), spaces.Discrete(2))
        self.script, self.t, self.memory_limit, self.lengths = script, 0, limit, []

    def set_memory_length(self, steps: int) -> None:
        self.lengths.append(steps)

    def reset(self):
        return np.zeros((self.num_envs, 1), np.float32)

    def step_async(self, actions) -> None:
        pass

    def step_wait(self):
        dones = np.zeros(self.num_envs, dtype=bool)
        infos = [{} for _ in range(self.num_envs)]
        for i, ok in self.script.get(self.t, []):
            dones[i], infos[i]["is_success"] = True, ok
        self.t += 1
        return self.reset(), np.zeros(self.num_envs, np.float32), dones, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name)]

    def set_attr(self, attr_name, value, indices=None) -> None:
        pass

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return []

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * self.num_envs


def test_promotes_after_a_full_window_of_successes_and_counts_only_episodes_begun_at_the_length():
    # 2 envs, window 3, success 2/3. Steps 0-2: env 0 succeeds, fails, succeeds (window full at 2/3: promote at
    # step 2). Env 1's episode began before the promotion: its end at step 3 is not counted, nor is env 0's at step
    # 4, begun before it too; then three successes of episodes begun at 10 promote to 20 at step 7.
    script = {
        0: [(0, True)],
        1: [(0, False)],
        2: [(0, True)],
        3: [(1, True)],
        4: [(0, False)],
        5: [(0, True)],
        6: [(1, True)],
        7: [(0, True)],
    }
    base = ScriptedEnv(2, script)
    cur = MemoryCurriculum(base, start=0, step=10, success=2 / 3, window=3)
    cur.reset()
    seen = []
    for _ in range(8):
        cur.step(np.zeros(2, dtype=np.int64))
        seen.append(cur.length)
    assert seen == [0, 0, 10, 10, 10, 10, 10, 20]
    assert base.lengths == [0, 10, 20]


def test_never_promotes_below_the_success_rate_and_stops_at_the_envs_limit():
    fails = {t: [(0, t % 3 == 0)] for t in range(60)}  # a third succeed
    cur = MemoryCurriculum(ScriptedEnv(1, fails), start=5, step=10, success=0.5, window=6)
    cur.reset()
    for _ in range(60):
        cur.step(np.zeros(1, dtype=np.int64))
    assert cur.length == 5
    wins = {t: [(0, True)] for t in range(60)}
    base = ScriptedEnv(1, wins, limit=25)
    cur = MemoryCurriculum(base, start=5, step=10, success=0.5, window=2)
    cur.reset()
    for _ in range(60):
        cur.step(np.zeros(1, dtype=np.int64))
    assert cur.length == 25 and base.lengths == [5, 15, 25]


def _phase_spans(venv, n_envs, steps, seed=0):
    """(cue steps, distractor steps) of every episode that ends within ``steps`` random-action steps."""
    rng = np.random.default_rng(seed)
    spans, counts = [], np.zeros((n_envs, 2), dtype=int)
    for _ in range(steps):
        phase = np.array(venv.get_attr("phase"))
        for k in (0, 1):
            counts[:, k] += phase == k
        _, _, dones, _ = venv.step(rng.integers(3, size=n_envs))
        for i in np.flatnonzero(dones):
            spans.append(tuple(counts[i]))
            counts[i] = 0
    return spans


@pytest.mark.parametrize("env_id", [PVM, "urgate/ActiveVisualMatch-v0"])
def test_visual_match_memory_length_is_the_cue_phase_then_the_distractor_phase(env_id):
    """The memory length is the steps before the choice room: up to cue_steps it shortens the cue phase (no
    distractor), beyond it the distractor phase takes the rest; the declared episode limit stays the task's."""
    venv = make_vec_env(env_id, n_envs=4, seed=1, cue_steps=5, distractor_steps=30)
    assert venv.get_attr("max_steps")[0] == 5 + 30 + 15
    base = venv.venv  # VisualMatchVecEnv, inside SB3's VecMonitor
    assert base.memory_length == base.memory_limit == 35
    base.set_memory_length(12)
    venv.reset()
    spans = _phase_spans(venv, 4, 400)
    assert len(spans) > 10 and set(spans) == {(5, 7)}
    base.set_memory_length(3)
    venv.reset()
    spans = _phase_spans(venv, 4, 300, seed=1)
    assert len(spans) > 10 and set(spans) == {(3, 0)}
    assert base.memory_length == 3 and base.memory_limit == 35
    for bad in (36, 0, -1, 2.5, True):
        with pytest.raises(EnvConfigError, match=r"1..35 \(cue_steps \+ distractor_steps"):
            base.set_memory_length(bad)


def test_visual_match_restores_a_snapshot_of_the_distractor_only_memory_length():
    """A snapshot written when the memory length was the distractor phase alone ("memory_length") restores the
    same phases."""
    venv = make_vec_env(PVM, n_envs=2, seed=1, cue_steps=4, distractor_steps=30)
    base = venv.venv
    base.set_memory_length(4 + 9)
    state = base.get_state()
    old = {k: v for k, v in state.items() if k != "steps_before_choice"} | {"memory_length": 9}
    base.set_memory_length(34)
    base.set_state(old)
    assert base.task.phase_steps[:2] == (4, 9) and base.memory_length == 13


def test_tmaze_plays_the_set_corridor_with_its_time_limit_in_episodes_begun_after_it():
    venv = make_vec_env("urgate/TMaze-v0", n_envs=3, seed=4, length=40)
    base = venv.venv
    assert venv.get_attr("max_steps")[0] == 82  # rollouts are sized for the maze itself
    venv.reset()
    base.set_memory_length(6)
    forward = np.zeros(3, dtype=np.int64)
    obs, *_ = venv.step(forward)  # episodes in progress keep their corridor of 40
    assert not obs[:, 1].any()
    for _ in range(39):
        obs, *_ = venv.step(forward)
    assert obs[:, 1].all()  # at the junction after 40 steps
    _, _, dones, infos = venv.step(np.ones(3, dtype=np.int64))
    assert dones.all()
    steps = 0
    while True:  # the next episodes: junction after 6 steps
        obs, _, dones, _ = venv.step(forward)
        steps += 1
        if obs[:, 1].all():
            break
    assert steps == 6
    waited = 0
    while not dones.any():  # waiting at the junction: truncated at 2 * (6 + 1) steps
        _, _, dones, infos = venv.step(forward)
        waited += 1
    assert steps + waited == 14 and infos[0]["TimeLimit.truncated"]
    with pytest.raises(EnvConfigError, match="2..40"):
        base.set_memory_length(1)


def test_a_restored_snapshot_continues_the_curriculum_and_the_episodes():
    def build():
        venv = make_vec_env(PVM, n_envs=3, seed=2, cue_steps=1, distractor_steps=40)
        return MemoryCurriculum(venv, start=1, step=4, success=0.4, window=6)

    rng = np.random.default_rng(5)
    actions = rng.integers(3, size=(1500, 3))
    a = build()
    a.reset()
    for t in range(300):
        a.step(actions[t])
    assert 1 < a.length < 41
    snapshot = get_vec_state(a)
    b = build()
    b.reset()
    set_vec_state(b, snapshot)
    lengths = set()
    for t in range(300, 1500):
        oa, ra, da, _ = a.step(actions[t])
        ob, rb, db, _ = b.step(actions[t])
        np.testing.assert_array_equal(oa["image"], ob["image"])
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(da, db)
        assert a.length == b.length
        lengths.add(a.length)
    assert len(lengths) > 1, lengths  # the curriculum moved after the snapshot


def test_refuses_an_env_that_cannot_change_its_memory_and_bad_settings():
    with pytest.raises(EnvConfigError, match="the T-maze, Passive or Active Visual Match"):
        MemoryCurriculum(make_vec_env("MiniGrid-MemoryS7-v0", n_envs=2), 0, 1, 0.5, 4)
    venv = make_vec_env(PVM, n_envs=2, distractor_steps=20)
    assert MemoryCurriculum(venv, 36, 1, 0.5, 4).length == 35  # beyond the task: the task itself
    with pytest.raises(EnvConfigError, match=r"curriculum.start must be a non-negative integer, got -1"):
        MemoryCurriculum(venv, -1, 1, 0.5, 4)
    with pytest.raises(
        EnvConfigError, match=r"curriculum.start=0: Visual Match memory length must be an integer 1..35"
    ):
        MemoryCurriculum(venv, 0, 1, 0.5, 4)
    with pytest.raises(EnvConfigError, match=r"curriculum.start=1: T-maze memory length must be an integer 2..3"):
        MemoryCurriculum(make_vec_env("urgate/TMaze-v0", n_envs=2, length=3), 1, 1, 0.5, 4)
    with pytest.raises(EnvConfigError, match="curriculum.success"):
        MemoryCurriculum(venv, 1, 1, 1.5, 4)
    with pytest.raises(UrgateError, match="curriculum.window"):
        load_config(None, PVM, ["curriculum.start=1", "curriculum.window=0"])


def test_a_run_trains_on_the_curriculum_logs_its_length_and_evaluates_the_task(tmp_path):
    overrides = [
        "n_envs=4",
        "ppo.n_steps=auto",
        "ppo.batch_size=auto",
        "ppo.n_epochs=1",
        "policy_kwargs.lstm_hidden_size=8",
        "env_kwargs.cue_steps=1",
        "env_kwargs.distractor_steps=30",
        "curriculum.start=1",
        "curriculum.step=10",
        "curriculum.success=0.01",  # any success promotes: the length moves within the tiny budget
        "curriculum.window=2",
        "eval.freq=0",
        "eval.n_episodes=4",
        "eval.n_envs=4",
        "eval.deterministic=false",
        "gate_diagnostics=0",
        "total_timesteps=1024",
    ]
    cfg = load_config(None, PVM, overrides)
    summary = train(cfg, tmp_path / "run", progress_bar=False)
    with open(tmp_path / "run" / "progress.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    lengths = [int(r["rollout/memory_length"]) for r in rows if r.get("rollout/memory_length")]
    assert lengths[0] in (1, 11) and lengths[-1] > lengths[0]
    # the evaluation plays the task itself: every episode sits through the 30 distractor steps
    assert summary["final_eval"]["mean_length"] > 30
