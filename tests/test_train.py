"""agents.run.train, agents.run.factory and agents.run.loading in-process: the run directory, gate diagnostics, resume, NaN
guard."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnvWrapper, VecNormalize
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import agents.run.evaluate
import policies
from agents.errors import UrgateError
from agents.run import factory, loading, rundir
from agents.run.config import RunConfig, load_config
from agents.run.gate_stats import replay_inputs, rollout_gates
from agents.run.train import resume, train

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
    "gate_diagnostics=1",
    "total_timesteps=256",
]


def tiny(*extra: str, env: str = "urgate/TMaze-v0") -> RunConfig:
    return load_config(None, env, [*TINY, *extra])


def rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = tiny("ppo.lr_schedule=linear", "ppo.learning_rate=1e-3")
    summary = train(cfg, run_dir, progress_bar=False)
    return cfg, run_dir, summary


def test_run_directory_layout(finished_run):
    cfg, run_dir, summary = finished_run
    assert summary["status"] == "finished" and summary["timesteps"] == 256
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert summary["memoryless_ceiling"] == 0.5 and summary["env_id"] == cfg.env_id and summary["core"] == "ur"
    final = summary["final_eval"]
    assert final["episodes"] == 2 and len(final["ci95"]) == 2
    assert final["success_rate"] in (0.0, 0.5, 1.0)  # a rate over exactly the 2 evaluation episodes
    assert summary["wall_time_s"] > 0 and summary["fps"] > 0
    assert RunConfig.from_yaml(run_dir / "config.yaml") == cfg
    for name in ("final_model.zip", "best_model.zip", "checkpoints/latest.zip", "progress.csv", "gates.npz"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "checkpoints/latest.json").read_text())["timesteps"] == 256
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert not list(run_dir.rglob("*.tmp*")), "temporary checkpoint files left behind"
    evals = rows(run_dir / "evaluations.csv")
    assert [int(r["timesteps"]) for r in evals] == [0, 64, 128, 192, 256]
    assert list(evals[0])[:5] == ["timesteps", "mean_return", "std_return", "success_rate", "episodes"]
    assert float(evals[-1]["mean_return"]) == pytest.approx(final["mean_return"])
    assert float(evals[-1]["success_rate"]) == final["success_rate"]  # the final evaluation is the last row
    progress = rows(run_dir / "progress.csv")
    assert len(progress) == 5  # one per update, and the last update's losses with the final evaluation
    assert [r["time/total_timesteps"] for r in progress[:4]] == ["64", "128", "192", "256"]
    assert float(progress[-1]["eval/mean_return"]) == pytest.approx(final["mean_return"])


def test_gates_npz_holds_first_and_last_samples(finished_run):
    _, run_dir, _ = finished_run
    with np.load(run_dir / "gates.npz") as z:
        assert int(z["initial_timesteps"]) == 64 and int(z["final_timesteps"]) == 256
        for key in ("initial_gates", "final_gates"):
            g = z[key]
            assert g.dtype == np.float32 and g.ndim == 1 and g.size > 100
            assert ((g >= 0) & (g <= 1)).all()
        assert not np.array_equal(z["initial_gates"], z["final_gates"])


def test_gate_histograms_in_tensorboard(finished_run):
    _, run_dir, _ = finished_run
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"histograms": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert {"gates/forget", "gates/timescale_log10"} <= set(tags["histograms"])
    forget = acc.Histograms("gates/forget")
    assert [e.step for e in forget] == [64, 128, 192, 256]  # every update (gate_diagnostics=1)
    assert all(0.0 <= e.histogram_value.min <= e.histogram_value.max <= 1.0 for e in forget)
    log_tau = acc.Histograms("gates/timescale_log10")
    assert all(e.histogram_value.min >= 0.0 for e in log_tau)  # timescales are >= 1 step
    q = [e.value for e in acc.Scalars("gates/forget_q50")]
    assert len(q) == 4 and all(0 < v < 1 for v in q)
    assert "eval/success_rate" in tags["scalars"]


def test_replayed_rollout_reproduces_the_states_the_policy_had():
    """The features, states and episode starts fed to ``gate_trace`` are the ones the actor core saw: replaying
    them through the core gives back the hidden state the rollout buffer recorded at every step."""
    cfg = tiny("n_envs=3", "env_kwargs.length=2")
    model = factory.build_model(cfg, factory.make_training_env(cfg))
    checked = []

    class Check(BaseCallback):
        def _on_step(self):
            return True

        def _on_rollout_end(self):
            features, state, starts = replay_inputs(self.model)
            out, _ = self.model.policy.lstm_actor(features, state, episode_starts=starts)
            recorded = th.as_tensor(self.model.rollout_buffer.hidden_states_pi[1:, -1])  # state before step t
            th.testing.assert_close(out[:-1], recorded, atol=1e-5, rtol=1e-5)
            gates = rollout_gates(self.model)
            assert gates.shape == (1, 32, 3, 8)
            checked.append(float(starts.sum()))

    model.learn(3 * 96, callback=Check())
    assert len(checked) == 3 and sum(checked) > 3  # episodes started inside rollouts, not only at step 0


def test_resume_continues_steps_schedule_logs(finished_run, tmp_path):
    cfg, original, _ = finished_run
    run_dir = tmp_path / "copy"
    shutil.copytree(original, run_dir)
    ckpt = loading.load_model(run_dir / "checkpoints/latest.zip")
    adam = ckpt.policy.optimizer.state_dict()["state"]
    assert adam and all(float(s["step"]) > 0 for s in adam.values())  # the optimizer state is in the checkpoint

    with pytest.raises(UrgateError, match="already has 256 of its 256 steps"):
        resume(run_dir, progress_bar=False)
    summary = resume(run_dir, progress_bar=False, total_timesteps=512)
    assert summary["status"] == "finished" and summary["timesteps"] == 512
    assert RunConfig.from_yaml(run_dir / "config.yaml").total_timesteps == 512
    progress = rows(run_dir / "progress.csv")
    steps = [int(r["time/total_timesteps"]) for r in progress if r["time/total_timesteps"]]
    assert steps == [64, 128, 192, 256, 320, 384, 448, 512]  # earlier rows kept, the count continues
    # The linear schedule continues where it was: the row logged at step t shows the rate of the update made at
    # t - 64, lr0 * (1 - (t - 64) / total), with total 256 before the resume and 512 after it (a restarted
    # schedule would start again near lr0).
    logged = {
        int(r["time/total_timesteps"]): float(r["train/learning_rate"])
        for r in progress
        if r["train/learning_rate"] and r["time/total_timesteps"]
    }
    assert set(logged) == {128, 192, 256, 384, 448, 512}
    for t, lr in logged.items():
        total = 256 if t <= 256 else 512
        assert lr == pytest.approx(1e-3 * (1 - (t - 64) / total)), t
    evals = [int(r["timesteps"]) for r in rows(run_dir / "evaluations.csv")]
    assert evals[:5] == [0, 64, 128, 192, 256] and evals[-1] == 512 and evals == sorted(evals)
    with np.load(run_dir / "gates.npz") as z:
        assert int(z["initial_timesteps"]) == 64 and int(z["final_timesteps"]) == 512


def test_resume_refuses_a_checkpoint_of_another_core(finished_run, tmp_path):
    _, original, _ = finished_run
    run_dir = tmp_path / "copy"
    shutil.copytree(original, run_dir)
    data = yaml.safe_load((run_dir / "config.yaml").read_text())
    data["core"] = "lstm"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(UrgateError, match="has core 'ur'.*says core 'lstm'"):
        resume(run_dir, progress_bar=False, total_timesteps=512)


def test_loading_into_an_env_with_another_observation_space_fails(finished_run):
    _, run_dir, _ = finished_run
    other = factory.make_vec_env("MiniGrid-MemoryS7-v0", {}, 1, 0)
    with pytest.raises(UrgateError, match="observation space"):
        loading.load_model(run_dir / "final_model.zip", env=other)


def test_existing_run_directory_is_never_overwritten_silently(finished_run, tmp_path):
    cfg, original, _ = finished_run
    with pytest.raises(UrgateError, match="already exists.*--overwrite.*resume"):
        train(cfg, original, progress_bar=False)
    assert json.loads((original / "summary.json").read_text())["timesteps"] == 256
    not_a_run = tmp_path / "mine"
    not_a_run.mkdir()
    (not_a_run / "notes.txt").write_text("keep me")
    with pytest.raises(UrgateError, match="not a run directory"):
        train(cfg, not_a_run, overwrite=True, progress_bar=False)
    assert (not_a_run / "notes.txt").read_text() == "keep me"


class NanRewardsAfter(VecEnvWrapper):
    """Rewards become NaN after ``start`` steps: the loss and then the parameters become non-finite."""

    def __init__(self, venv, start: int) -> None:
        super().__init__(venv)
        self.start, self.steps = start, 0

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.steps += self.num_envs
        if self.steps > self.start:
            rewards = rewards + np.nan
        return obs, rewards, dones, infos


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real = factory.make_training_env
    monkeypatch.setattr(factory, "make_training_env", lambda cfg, **kw: NanRewardsAfter(real(cfg, **kw), 128))
    run_dir = tmp_path / "nan"
    summary = train(tiny("total_timesteps=1024"), run_dir, progress_bar=False)
    assert summary["status"] == "diverged"
    assert "non-finite" in summary["message"]
    assert summary["timesteps"] < 1024
    assert not (run_dir / "final_model.zip").exists()
    saved = json.loads((run_dir / "checkpoints/latest.json").read_text())["timesteps"]
    assert saved == 128
    model = loading.load_model(run_dir / "checkpoints/latest.zip")
    assert model.num_timesteps == 128
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"


def test_stop_success_ends_the_run_at_the_evaluation_that_met_it(tmp_path, monkeypatch):
    """eval.stop_success: the run stops after stop_evals evaluations in a row at the success rate, counted across
    a resume, and records the evaluated step count; a failed evaluation restarts the count."""
    import agents.run.callbacks

    rates = iter([0.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0])  # evaluations at 0, 64, 128, ... steps

    def fake_episodes(model, venv, n_episodes, **kw):
        stats = agents.run.evaluate.EpisodeStats()
        rate = next(rates)
        stats.returns, stats.lengths, stats.successes = [rate] * 2, [4] * 2, [rate] * 2
        return stats

    monkeypatch.setattr(agents.run.callbacks, "run_episodes", fake_episodes)
    run_dir = tmp_path / "stop"
    extra = ("eval.stop_success=0.95", "eval.stop_evals=2", "total_timesteps=1024", "gate_diagnostics=0")
    summary = train(tiny(*extra), run_dir, progress_bar=False)
    assert summary["status"] == "finished"
    assert summary["timesteps"] == 256  # 1.0 at 64, 0.5 at 128, then 1.0 at 192 and 256
    assert "stopped at 256 steps" in summary["message"]
    assert summary["final_eval"]["success_rate"] == 1.0
    assert [r["timesteps"] for r in rows(run_dir / "evaluations.csv")] == ["0", "64", "128", "192", "256"]
    assert loading.load_model(run_dir / "final_model.zip").num_timesteps == 256
    # A run interrupted after one solved evaluation needs one more after resuming.
    rates = iter([0.0, 1.0, 1.0, 1.0])
    cfg = tiny(*extra[:2], "total_timesteps=64", "gate_diagnostics=0")
    train(cfg, tmp_path / "resumed", progress_bar=False)  # evaluations at 0 and 64 (the final one)
    summary = resume(tmp_path / "resumed", total_timesteps=1024, progress_bar=False)
    assert summary["timesteps"] == 128 and summary["status"] == "finished"


def test_policy_resolution_follows_the_env_family():
    cfg = tiny(env="MiniGrid-MemoryS7-v0")
    cls, kwargs = factory.resolve_policy(cfg)
    assert cls is policies.MultiInputGatedPolicy
    from policies.extractors import SymbolicGridBagExtractor, SymbolicGridExtractor

    assert kwargs["features_extractor_class"] is SymbolicGridBagExtractor  # configs/minigrid.yaml names it
    assert kwargs["normalize_images"] is False and kwargs["core"] == "ur"
    del cfg.policy_kwargs["features_extractor_class"]  # a config that names none gets the family's extractor
    assert factory.resolve_policy(cfg)[1]["features_extractor_class"] is SymbolicGridExtractor
    cls, kwargs = factory.resolve_policy(tiny("policy_kwargs.activation_fn=relu", "core=chrono"))
    assert cls is policies.MlpGatedPolicy and kwargs["activation_fn"] is th.nn.ReLU and kwargs["core"] == "chrono"
    assert "features_extractor_class" not in kwargs


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("policy_kwargs.lstm_size=8", "unknown config key 'policy_kwargs.lstm_size'.*lstm_hidden_size"),
        ("policy_kwargs.activation_fn=swish", "activation_fn.*relu"),
        ("policy_kwargs.features_extractor_class=Nope", "features_extractor_class.*SymbolicGridExtractor"),
        ("policy_kwargs.shared_lstm=true", "cannot build"),  # stock asserts: shared_lstm with the critic LSTM
    ],
)
def test_bad_policy_kwargs_are_user_errors(override, fragment):
    cfg = tiny(override)
    with pytest.raises(UrgateError, match=fragment):
        factory.build_model(cfg, factory.make_training_env(cfg))


def test_core_kwargs_reach_the_core():
    cfg = tiny("core=chrono", "policy_kwargs.core_kwargs.t_max=77")
    model = factory.build_model(cfg, factory.make_training_env(cfg))
    assert model.policy.lstm_actor.t_max == 77
    with pytest.raises(policies.PolicyConfigError, match="t_max"):
        cfg = tiny("core=chrono", "policy_kwargs.core_kwargs.t_max=1")
        factory.build_model(cfg, factory.make_training_env(cfg))
    cfg = tiny("core=ur", "policy_kwargs.core_kwargs.refine_bias=zero", "policy_kwargs.core_kwargs.freeze_ugi=true")
    core = factory.build_model(cfg, factory.make_training_env(cfg)).policy.lstm_actor
    assert (core.refine_bias, core.freeze_ugi) == ("zero", True)
    with pytest.raises(policies.PolicyConfigError, match="unknown refine_bias 'f'; valid: neg_forget, zero"):
        cfg = tiny("core=ur", "policy_kwargs.core_kwargs.refine_bias=f")
        factory.build_model(cfg, factory.make_training_env(cfg))


def test_normalisation_statistics_are_saved_resumed_and_used_for_evaluation(tmp_path, monkeypatch):
    run_dir = tmp_path / "norm"
    summary = train(tiny("ppo.normalize=true", "total_timesteps=128"), run_dir, progress_bar=False)
    assert summary["status"] == "finished"
    for name in ("checkpoints/latest.vecnormalize.pkl", "final_model.vecnormalize.pkl", "best_model.vecnormalize.pkl"):
        assert (run_dir / name).is_file(), name
    saved = VecNormalize.load(
        str(run_dir / "checkpoints/latest.vecnormalize.pkl"),
        factory.make_vec_env("urgate/TMaze-v0", {"length": 3}, 1, 0),
    )
    assert saved.obs_rms.count > 128  # every training observation was counted
    resume(run_dir, progress_bar=False, total_timesteps=256)
    again = VecNormalize.load(
        str(run_dir / "checkpoints/latest.vecnormalize.pkl"),
        factory.make_vec_env("urgate/TMaze-v0", {"length": 3}, 1, 0),
    )
    assert again.obs_rms.count > saved.obs_rms.count + 127  # continued, not restarted

    # Evaluating the run plays in envs that normalise observations with the final model's saved statistics,
    # frozen, with raw rewards: the policy sees what it was trained on, and the returns are the task's.
    final = VecNormalize.load(
        str(run_dir / "final_model.vecnormalize.pkl"), factory.make_vec_env("urgate/TMaze-v0", {"length": 3}, 1, 0)
    )
    assert not np.allclose(final.obs_rms.mean, 0.0) and not np.allclose(final.obs_rms.var, 1.0)
    venvs, seen = [], []  # the evaluation envs; (observation the policy got, the env's raw observation) per step
    real_run_episodes = agents.run.evaluate.run_episodes

    def spy(model, venv, n_episodes, **kwargs):
        real_predict = model.predict

        def predict(obs, **kw):
            seen.append((obs.copy(), venv.get_original_obs().copy()))
            return real_predict(obs, **kw)

        monkeypatch.setattr(model, "predict", predict)
        venvs.append(venv)
        return real_run_episodes(model, venv, n_episodes, **kwargs)

    monkeypatch.setattr(agents.run.evaluate, "run_episodes", spy)
    result = agents.run.evaluate.evaluate(run_dir, n_episodes=2)
    assert result["episodes"] == 2 and len(venvs) == 1 and seen
    venv = venvs[0]
    assert isinstance(venv, VecNormalize) and not venv.training and not venv.norm_reward
    np.testing.assert_array_equal(venv.obs_rms.mean, final.obs_rms.mean)
    np.testing.assert_array_equal(venv.obs_rms.var, final.obs_rms.var)
    for obs, raw in seen:
        np.testing.assert_allclose(obs, final.normalize_obs(raw), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np.stack([o for o, _ in seen]), np.stack([r for _, r in seen]))


def test_summary_is_never_left_half_written(tmp_path, monkeypatch):
    """A process killed while writing summary.json (simulated: the write stops half-way) leaves no truncated file,
    which would make the run look resumable although it finished."""
    real_write_text = type(tmp_path).write_text

    def dies_half_way(self, data, *args, **kwargs):
        if '"status"' in data:  # the summary's content, whatever file it is written to first
            real_write_text(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError("killed")
        return real_write_text(self, data, *args, **kwargs)

    run_dir = tmp_path / "run"
    monkeypatch.setattr(type(tmp_path), "write_text", dies_half_way)
    with pytest.raises(OSError, match="killed"):
        train(tiny("total_timesteps=64", "eval.freq=0", "gate_diagnostics=0"), run_dir, progress_bar=False)
    monkeypatch.undo()
    assert not (run_dir / "summary.json").exists()
    assert not list(run_dir.glob(".*tmp*")), "temporary file left behind"
    assert rundir.read_summary(run_dir) is None and rundir.run_state(run_dir) == "resumable"


def test_cli_reports_divergence_with_the_kept_checkpoint(tmp_path, monkeypatch, capsys):
    import run_rl

    real = factory.make_training_env
    monkeypatch.setattr(factory, "make_training_env", lambda cfg, **kw: NanRewardsAfter(real(cfg, **kw), 128))
    run_dir = tmp_path / "nan"
    argv = ["--env", "urgate/TMaze-v0", "--timesteps", "1024", "--run-dir", str(run_dir), "--no-progress"]
    argv += [x for item in TINY if not item.startswith("total_timesteps") for x in ("--set", item)]
    assert run_rl.main(argv) == 1
    err = capsys.readouterr().err
    assert "training diverged:" in err and "non-finite" in err
    assert f"the last good checkpoint (step 128) is kept in {run_dir / 'checkpoints' / 'latest.zip'}" in err
    assert "Traceback" not in err


def test_keep_checkpoints_keeps_the_last_n_step_numbered_ones(tmp_path):
    train(tiny("keep_checkpoints=2", "eval.freq=0", "gate_diagnostics=0", "total_timesteps=320"), tmp_path / "run")
    kept = [p.name for p in rundir.step_checkpoints(tmp_path / "run")]
    assert kept == ["step_000000000192.zip", "step_000000000256.zip"]  # periodic ones at 64, 128, 192, 256
    assert rundir.checkpoint_timesteps(tmp_path / "run") == 320  # latest.zip: the end of the run
    assert loading.load_model(rundir.checkpoint_dir(tmp_path / "run") / kept[-1]).num_timesteps == 256


def _crash_at(monkeypatch, step: int) -> None:
    """Kill the next run (an exception out of ``learn``, nothing saved) at the rollout start of ``step``, after that
    step's evaluation and checkpoint: what SIGKILL or an out-of-memory leaves behind."""
    from agents.run.callbacks import GateDiagnostics

    class Killed(Exception):
        pass

    def crash(self):
        if self.model.num_timesteps >= step:
            raise Killed

    monkeypatch.setattr(GateDiagnostics, "_on_rollout_start", crash, raising=False)
    return Killed


def _without_time(rows_: list[dict[str, str]]) -> list[dict[str, str]]:
    # time/* holds wall times and the iteration count of the session; everything else is the run's
    return [{k: v for k, v in r.items() if not k.startswith("time/") or k == "time/total_timesteps"} for r in rows_]


@pytest.mark.parametrize("previous_action", [False, True])
def test_a_run_killed_after_a_checkpoint_resumes_as_if_never_interrupted(tmp_path, monkeypatch, previous_action):
    """Killed between checkpoints and resumed, a run equals the uninterrupted run of the same seed, exactly: the
    parameters, every evaluation, every progress.csv row (wall times aside), the gate samples and the best model.
    The records of the discarded steps (evaluations, progress rows, a later best model) are cut on resume, also
    with ``previous_action`` (the observations the episodes in progress hold carry the actions behind them)."""
    cfg = tiny("checkpoint_freq=128", "total_timesteps=384", "ppo.n_epochs=2", f"previous_action={previous_action}")
    whole = train(cfg, tmp_path / "whole", progress_bar=False)
    killed = tmp_path / "killed"
    Killed = _crash_at(monkeypatch, 256 + 64)
    with pytest.raises(Killed):
        train(cfg, killed, progress_bar=False)
    monkeypatch.undo()
    assert rundir.checkpoint_timesteps(killed) == 256
    assert [int(r["timesteps"]) for r in rows(killed / "evaluations.csv")][-1] == 320  # logged after the checkpoint
    resumed = resume(killed, progress_bar=False)

    assert resumed["final_eval"] == whole["final_eval"] and resumed["timesteps"] == whole["timesteps"] == 384
    a = loading.load_model(tmp_path / "whole" / "final_model.zip").policy.state_dict()
    b = loading.load_model(killed / "final_model.zip").policy.state_dict()
    assert a.keys() == b.keys() and all(th.equal(a[k], b[k]) for k in a)
    assert rows(killed / "evaluations.csv") == rows(tmp_path / "whole" / "evaluations.csv")
    assert _without_time(rows(killed / "progress.csv")) == _without_time(rows(tmp_path / "whole" / "progress.csv"))
    with np.load(tmp_path / "whole" / "gates.npz") as x, np.load(killed / "gates.npz") as y:
        assert x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)
    scalars = []
    for run in (tmp_path / "whole", killed):  # TensorBoard: the discarded steps' events are purged
        acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
        acc.Reload()
        scalars.append(
            {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in ("eval/mean_return", "train/loss")}
        )
    assert scalars[0] == scalars[1]
    best_a = loading.load_model(tmp_path / "whole" / "best_model.zip")
    best_b = loading.load_model(killed / "best_model.zip")
    assert best_a.num_timesteps == best_b.num_timesteps


def test_resume_cuts_the_records_of_discarded_steps_and_the_best_model_saved_after_the_checkpoint(
    tmp_path, monkeypatch
):
    """The discarded steps' evaluations, progress rows and best model are gone before the resumed run goes on:
    results.py and the plots never see two rows at one step."""
    from agents.run.checkpoints import restore_best_model

    cfg = tiny("checkpoint_freq=128", "total_timesteps=384")
    killed = tmp_path / "killed"
    Killed = _crash_at(monkeypatch, 320)
    with pytest.raises(Killed):
        train(cfg, killed, progress_bar=False)
    monkeypatch.undo()
    best = rundir.best_model_path(killed)
    best.write_bytes(b"a best model saved after the checkpoint")  # (whatever the evaluations said)
    rundir.cut_history(killed, 256)
    restore_best_model(killed)
    assert [int(r["timesteps"]) for r in rows(killed / "evaluations.csv")] == [0, 64, 128, 192, 256]
    assert [r["time/total_timesteps"] for r in rows(killed / "progress.csv")] == ["64", "128", "192", "256"]
    assert loading.load_model(best).num_timesteps <= 256
    # an evaluations.csv of an older version that kept both timelines: one row per step, the later one
    path = rundir.evaluations_path(killed)
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[-2].replace(lines[-2].split(",")[1], "0.123", 1), *lines[-1:]]) + "\n")
    evals = rundir.read_evaluations(killed)
    assert list(evals["timesteps"]) == [0, 64, 128, 192, 256]
    assert evals["mean_return"][3] == 0.123


def test_progress_csv_matches_sb3s_csv_writer_and_continues_on_resume(tmp_path):
    """The progress.csv writer (SB3's public KVWriter interface) writes what SB3's own CSVOutputFormat writes,
    widening the header for a new key, and a second writer on the same file (a resumed run) appends."""
    from stable_baselines3.common.logger import CSVOutputFormat

    from agents.run.train import _CSV

    dumps = [
        {"time/total_timesteps": 64, "rollout/ep_rew_mean": 0.5, "skip": 1},
        {"time/total_timesteps": 128, "rollout/ep_rew_mean": 0.25, "train/loss": -0.125, "skip": 2},
        {"time/total_timesteps": 192, "train/loss": 0.5, "note": 'a "quoted", text'},
    ]
    excluded = {"skip": ("csv",)}
    ours, stock = _CSV(tmp_path / "ours.csv"), CSVOutputFormat(str(tmp_path / "stock.csv"))
    for kv in dumps:
        ours.write(kv, {k: excluded.get(k, ()) for k in kv})
        stock.write(kv, {k: excluded.get(k, ()) for k in kv})
    stock.close()
    assert rows(tmp_path / "ours.csv") == rows(tmp_path / "stock.csv")
    assert list(rows(tmp_path / "ours.csv")[0]) == ["time/total_timesteps", "rollout/ep_rew_mean", "train/loss", "note"]
    resumed = _CSV(tmp_path / "ours.csv")
    resumed.write({"time/total_timesteps": 256, "train/loss": 1.0}, {})
    assert [r["time/total_timesteps"] for r in rows(tmp_path / "ours.csv")] == ["64", "128", "192", "256"]
    assert rows(tmp_path / "ours.csv")[-1]["rollout/ep_rew_mean"] == ""


def test_reward_normalisation_on_dict_observations_of_indices_trains_and_evaluates(tmp_path):
    """`ppo.normalize` with `norm_obs: false` (Visual Match's symbolic view and direction are indices, not to be
    scaled): the evaluation envs take the training envs' observation settings instead of failing on the Dict."""
    cfg = tiny(
        "ppo.normalize=true",
        "ppo.normalize_kwargs={norm_obs: false}",
        "total_timesteps=128",
        "env_kwargs={cue_steps: 1, distractor_steps: 2}",
        env="urgate/PassiveVisualMatch-v0",
    )
    summary = train(cfg, tmp_path / "vm", progress_bar=False)
    assert summary["status"] == "finished"
    saved = VecNormalize.load(
        str(tmp_path / "vm/final_model.vecnormalize.pkl"),
        factory.make_vec_env("urgate/PassiveVisualMatch-v0", {"cue_steps": 1, "distractor_steps": 2}, 1, 0),
    )
    assert not saved.norm_obs and saved.norm_reward and saved.ret_rms.count > 0
