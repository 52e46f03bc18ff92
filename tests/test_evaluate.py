"""agents.run.evaluate: rollouts that carry the recurrent state, per-episode statistics, bad model files."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from agents.errors import UrgateError
from agents.run import factory
from agents.run.evaluate import EpisodeStats, Resolved, evaluate, run_episodes

TMAZE = "urgate/TMaze-v0"


class CueMemoryAgent:
    """A scripted T-maze agent that keeps the cue in its recurrent state, with RecurrentPPO's ``predict`` contract.

    It succeeds every time only if the evaluation loop hands back the state it returned and marks episode starts:
    without the state it cannot know the cue at the junction, and without ``episode_start`` it would keep the
    previous episode's cue.
    """

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        self.calls += 1
        starts = np.asarray(episode_start, dtype=bool)
        if state is None:
            assert starts.all(), "state dropped in the middle of episodes"
            state = (np.zeros(len(obs)),)
        cue = np.where(starts, obs[:, 0], state[0])
        at_junction = obs[:, 1] == 1.0
        actions = np.where(at_junction, np.where(cue > 0, 1, 2), 0)
        return actions, (cue,)


@pytest.mark.parametrize(("n_envs", "n_episodes"), [(1, 5), (3, 7), (4, 4)])
def test_state_is_carried_and_reset_at_episode_starts(n_envs, n_episodes):
    venv = factory.make_vec_env(TMAZE, {"length": 6}, n_envs, seed=3)
    agent = CueMemoryAgent()
    stats = run_episodes(agent, venv, n_episodes)
    assert len(stats.returns) == n_episodes
    assert stats.successes == [1.0] * n_episodes
    assert stats.returns == [1.0] * n_episodes  # no idle penalty on the shortest path
    assert set(stats.lengths) == {7}


@pytest.mark.parametrize("video_episodes", [1, 2, 5])
def test_a_video_records_the_first_episodes_only(video_episodes):
    """Every episode of this agent lasts 7 steps: a filmed episode is its first view and the views after its first 6
    steps (the view after the 7th is the next episode's start, after the auto-reset)."""
    frames: list[np.ndarray] = []
    venv = factory.make_render_env(TMAZE, {"length": 6}, seed=0)
    stats = run_episodes(CueMemoryAgent(), venv, 4, frames=frames, video_episodes=video_episodes)
    assert set(stats.lengths) == {7} and len(stats.returns) == 4
    assert len(frames) == 7 * min(video_episodes, 4)


def test_evaluate_says_what_the_video_shows(tmp_path, monkeypatch):
    monkeypatch.setattr("agents.run.loading.load_model", lambda *a, **k: CueMemoryAgent())
    zip_path = tmp_path / "m.zip"
    monkeypatch.setattr("agents.run.evaluate.resolve", lambda p: Resolved(zip_path, {"env_id": TMAZE}, None))
    result = evaluate(zip_path, n_episodes=6, video_path=tmp_path / "v.gif", video_episodes=2, env_kwargs={"length": 6})
    assert result["episodes"] == 6 and result["video_episodes"] == 2 and result["video_frames"] == 14
    with pytest.raises(UrgateError, match="'video_episodes' must be an integer >= 1"):
        evaluate(zip_path, video_path=tmp_path / "w.gif", video_episodes=0)


def test_a_memoryless_agent_sits_at_the_ceiling():
    """Always turning up succeeds exactly in the episodes whose cue said up, so its success rate is the share of
    such episodes: the memoryless ceiling of 0.5, up to the cues' sampling."""
    cues: list[float] = []

    class AlwaysUp(CueMemoryAgent):
        def predict(self, obs, state=None, episode_start=None, deterministic=False):
            if episode_start[0]:
                cues.append(float(obs[0, 0]))  # the cue is seen at an episode's first step only
            return np.where(obs[:, 1] == 1.0, 1, 0), None

    stats = run_episodes(AlwaysUp(), factory.make_vec_env(TMAZE, {"length": 4}, 1, seed=0), 200)
    assert stats.successes == [1.0 if cue > 0 else 0.0 for cue in cues[:200]]
    assert 0.4 < np.mean(stats.successes) < 0.6  # 200 fair cues: within 2.8 standard deviations of 0.5


def test_summary_statistics():
    stats = EpisodeStats(returns=[0.0, 1.0, 1.0, 1.0], lengths=[3, 4, 5, 6], successes=[0.0, 1.0, 1.0, 1.0])
    s = stats.summary()
    assert s["mean_return"] == pytest.approx(0.75)
    assert s["std_return"] == pytest.approx(np.std([0, 1, 1, 1]))
    assert s["success_rate"] == pytest.approx(0.75)
    assert s["episodes"] == 4 and s["mean_length"] == pytest.approx(4.5)
    lo, hi = s["ci95"]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0
    assert EpisodeStats(returns=[1.0], lengths=[1]).summary()["success_rate"] is None


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "does not exist"),
        (b"hello, not a zip", "not a model zip"),
        ("truncated", "not a model zip"),
        ("other_zip", "not a saved model"),
    ],
)
def test_bad_model_files(tmp_path, content, fragment):
    path = tmp_path / "model.zip"
    if content == "truncated":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("data", "{}" * 1000)
            zf.writestr("policy.pth", b"x" * 1000)
        path.write_bytes(path.read_bytes()[:-200])
    elif content == "other_zip":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("readme.txt", "hello")
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UrgateError, match=fragment):
        evaluate(path, n_episodes=1)


def test_zip_with_garbage_inside_is_a_user_error(tmp_path):
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data", "{not json")
        zf.writestr("policy.pth", b"not torch")
    with pytest.raises(UrgateError, match="cannot load model"):
        evaluate(path, n_episodes=1)


def test_bad_arguments(tmp_path):
    with pytest.raises(UrgateError, match="integer >= 1"):
        evaluate(tmp_path / "x.zip", n_episodes=0)
    with pytest.raises(UrgateError, match=r"\.gif or \.mp4"):
        evaluate(tmp_path / "x.zip", video_path=tmp_path / "v.avi")
    with pytest.raises(UrgateError, match="not a run directory"):
        evaluate(tmp_path)


def test_frames_of_different_sizes_share_one_canvas(tmp_path):
    from agents.run.evaluate import pad_frames, write_video

    small = np.full((4, 6, 3), 200, dtype=np.uint8)
    big = np.full((8, 10, 3), 100, dtype=np.uint8)
    video = pad_frames([small, big])
    assert video.shape == (2, 8, 10, 3)
    assert (video[0, 2:6, 2:8] == 200).all() and video[0].sum() == small.sum()  # centred, nothing lost
    assert (video[1] == big).all()
    assert pad_frames([small], multiple=16).shape == (1, 16, 16, 3)
    write_video([small, big, small], tmp_path / "v.gif")
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "v.gif", index=None).shape[1:] == (8, 10, 3)


def test_eval_video_records_the_default_jobs_tmaze_run(tmp_path):
    """The README's ``eval RUN --video episode.gif`` on a run of the default job (a T-maze): frames of the T."""
    import imageio.v3 as iio

    from agents.run.config import load_config
    from agents.run.train import train

    overrides = ["n_envs=2", "ppo.n_steps=32", "ppo.batch_size=64", "ppo.n_epochs=1", "total_timesteps=64"]
    overrides += ["policy_kwargs.lstm_hidden_size=8", "eval.freq=0", "eval.n_episodes=1", "eval.n_envs=1"]
    cfg = load_config(None, None, overrides)
    assert cfg.env_id == TMAZE
    train(cfg, tmp_path / "run", progress_bar=False)
    gif = tmp_path / "episode.gif"
    result = evaluate(tmp_path / "run", n_episodes=2, video_path=gif)
    assert result["video"] == str(gif) and result["episodes"] == 2
    frames = iio.imread(gif, index=None)
    length = cfg.env_kwargs["length"]
    assert frames.shape[1:] == (48, (length + 1) * 16, 3) and len(frames) >= 2  # (GIF merges repeated frames)
    green = (frames[..., 1] > 150) & (frames[..., 0] < 100)
    assert green[0].any()  # the cue at the first step


def _first_goals(monkeypatch, model_path, seed, n_envs=16):
    """The cue of every env's first episode in ``evaluate(model_path, seed=seed)``."""
    from stable_baselines3.common.vec_env import VecEnvWrapper

    import agents.run.evaluate

    seen = []
    play = agents.run.evaluate.run_episodes

    class Recorder(VecEnvWrapper):
        def reset(self):
            obs = self.venv.reset()
            seen.append(obs[:, 0].copy())
            return obs

        def step_wait(self):
            return self.venv.step_wait()

    monkeypatch.setattr(
        agents.run.evaluate, "run_episodes", lambda model, venv, *a, **k: play(model, Recorder(venv), *a, **k)
    )
    evaluate(model_path, seed=seed, n_envs=n_envs, n_episodes=n_envs)
    return seen[0]


def test_eval_seed_picks_the_episodes(tmp_path, monkeypatch):
    """``evaluate(path, seed=s)`` plays the episodes of envs seeded s + i, whatever seed the model was trained with
    (loading a model must not reseed the evaluation envs with the training seed)."""
    from agents.run.checkpoints import save_model
    from agents.run.config import load_config

    cfg = load_config(None, TMAZE, ["n_envs=2", "policy_kwargs.lstm_hidden_size=8", "env_kwargs.length=3", "seed=0"])
    model = factory.build_model(cfg, factory.make_training_env(cfg))
    save_model(model, tmp_path / "model.zip")
    goals = {}
    for seed in (1, 999, 123456):
        goals[seed] = _first_goals(monkeypatch, tmp_path / "model.zip", seed)
        expected = factory.make_vec_env(TMAZE, {"length": 3}, 16, seed).reset()[:, 0]
        np.testing.assert_array_equal(goals[seed], expected)
    assert not np.array_equal(goals[1], goals[999]) and not np.array_equal(goals[999], goals[123456])
