"""Experiment grids: expansion, validation, restartability and the backends.

The unit tests run the grid in-process with a stand-in for ``agents.run.train`` that writes run directories in the
trainer's format, so they check the experiment logic alone; the end-to-end tests at the bottom train for real.
"""

import json
import re
import sys
from types import SimpleNamespace

import pytest
import yaml
from fake_runs import write_run

import agents.study.experiments.execute as execute_module
from agents.errors import UrgateError
from agents.run.rundir import run_state
from agents.study.experiments import EXPERIMENT_FILE, RUNS_DIR, Experiment, load_experiment, prepare, validate
from agents.study.experiments.backends import _pack, _ray_task, _unpack
from agents.study.experiments.execute import Job, Outcome
from agents.study.experiments.progress import ExperimentReport, Progress
from agents.study.experiments.run import run_experiment


class FakeTrainer:
    """Records calls; writes finished (or interrupted / failing) runs in the trainer's format."""

    def __init__(self, fail=(), interrupt=()):
        self.calls, self.fail, self.interrupt = [], set(fail), set(interrupt)

    def install(self, monkeypatch):
        """Stand in for ``agents.run.train``'s train and resume where runs are executed."""
        monkeypatch.setattr(execute_module, "train", self.train)
        monkeypatch.setattr(execute_module, "resume", self.resume)
        return self

    def _write(self, run_dir, cfg, status="finished"):
        return write_run(
            run_dir,
            env_id=cfg["env_id"],
            core=cfg["core"],
            seed=cfg["seed"],
            env_kwargs=cfg["env_kwargs"],
            timesteps=cfg["total_timesteps"],
            status=status,
        )

    def train(self, cfg, run_dir, *, overwrite=False, progress_bar=True):
        self.calls.append(("train", run_dir.name, overwrite))
        assert not progress_bar
        if run_dir.exists() and not overwrite:
            raise UrgateError(f"{run_dir} exists")
        if run_dir.name in self.fail:
            raise RuntimeError("boom")
        status = "interrupted" if run_dir.name in self.interrupt else "finished"
        return self._write(run_dir, cfg.to_dict(), status)

    def resume(self, run_dir, *, progress_bar=True):
        self.calls.append(("resume", run_dir.name))
        return self._write(run_dir, yaml.safe_load((run_dir / "config.yaml").read_text()))


@pytest.fixture
def fake_train(monkeypatch):
    return FakeTrainer().install(monkeypatch)


def tmaze(**kw):
    base = dict(env_ids=["urgate/TMaze-v0"], cores=["lstm", "ur"], seeds=[0, 1], grid={"length": [5, 20]})
    return Experiment(**{**base, **kw})


def test_grid_expands_every_combination_with_unique_names():
    exp = tmaze(grid={"length": [5, 20], "ppo.n_steps": [16, 32]})
    runs = exp.runs()
    assert len(runs) == 2 * 2 * 2 * 2
    assert len({r.name for r in runs}) == len(runs)
    assert runs[0].name == "urgate_TMaze-v0__length=5__ppo.n_steps=16__lstm__s0"
    assert {(r.core, r.seed) for r in runs} == {(c, s) for c in ("lstm", "ur") for s in (0, 1)}


def test_cell_config_puts_env_keywords_and_config_keys_in_place():
    exp = tmaze(grid={"length": [7], "ppo.n_steps": [16]}, timesteps=640, overrides=["n_envs=2"])
    cfg = exp.run_config(exp.runs()[-1])
    assert (cfg.core, cfg.seed, cfg.total_timesteps, cfg.n_envs) == ("ur", 1, 640, 2)
    assert cfg.env_kwargs["length"] == 7 and cfg.ppo.n_steps == 16


def test_bad_input_is_one_line_user_error():
    with pytest.raises(UrgateError, match="does not take keyword.*lenght.*accepted"):
        validate(tmaze(grid={"lenght": [10]}))
    with pytest.raises(UrgateError, match="unknown environment id"):
        validate(tmaze(env_ids=["urgate/TMaz-v0"]))
    with pytest.raises(UrgateError, match="unknown config key 'ppo.n_step'"):
        validate(tmaze(grid={"ppo.n_step": [16]}))
    with pytest.raises(UrgateError, match="length must be an integer >= 2"):
        validate(tmaze(grid={"length": [1]}))


def test_experiment_yaml_round_trips_and_guards_a_different_grid(tmp_path):
    exp = tmaze(timesteps=100)
    prepare(exp, tmp_path)
    data = yaml.safe_load((tmp_path / EXPERIMENT_FILE).read_text())
    assert len(data["runs"]) == 8 and data["grid"] == {"length": [5, 20]}
    assert load_experiment(tmp_path) == exp
    prepare(exp, tmp_path)  # the same experiment: fine
    for other, differs in (
        (tmaze(timesteps=200), "(--timesteps 100 there, 200 now)"),
        (tmaze(timesteps=100, seeds=[0]), "(--seeds 0,1 there, 0 now)"),
        (tmaze(timesteps=100, grid={"x": [1]}), "(--grid length=5,20 there, x=1 now)"),
        (tmaze(timesteps=None, overrides=["ppo.n_steps=8"]), "--timesteps 100 there, (the config's) now; --set"),
    ):
        with pytest.raises(UrgateError, match="holds a different experiment") as info:
            prepare(other, tmp_path)
        assert differs in str(info.value)
    bigger = tmaze(timesteps=100, seeds=[0, 1, 2], cores=["lstm", "ur", "chrono"], grid={"length": [5, 20, 40]})
    prepare(bigger, tmp_path)  # more seeds, cores and values, the rest unchanged: extends the experiment
    assert load_experiment(tmp_path) == bigger
    assert {r.name for r in exp.runs()} < {r.name for r in bigger.runs()}


def test_run_grid_then_rerun_skips_finished(tmp_path, fake_train):
    exp = tmaze(timesteps=200)
    report = run_experiment(exp, tmp_path, workers=1, progress=False)
    assert (report.total, report.skipped, len(report.finished), report.failed) == (8, 0, 8, {})
    assert sorted(c[1] for c in fake_train.calls) == sorted(s.name for s in exp.runs())
    assert all(run_state(tmp_path / RUNS_DIR / s.name) == "finished" for s in exp.runs())
    assert all((tmp_path / "logs" / f"{s.name}.log").exists() for s in exp.runs())
    fake_train.calls.clear()
    again = run_experiment(exp, tmp_path, workers=1, progress=False)
    assert (again.skipped, again.finished, fake_train.calls) == (8, [], [])


def test_unfinished_runs_resume_and_dead_ones_restart(tmp_path, fake_train):
    exp = tmaze(cores=["ur"], seeds=[0], timesteps=200)
    a, b = (s.name for s in exp.runs())
    prepare(exp, tmp_path)
    cfg = {"env_id": "urgate/TMaze-v0", "core": "ur", "seed": 0, "total_timesteps": 200, "env_kwargs": {"length": 5}}
    write_run(tmp_path / RUNS_DIR / a, status="interrupted", env_kwargs=cfg["env_kwargs"])  # has a checkpoint
    (tmp_path / RUNS_DIR / b).mkdir(parents=True)  # died before its first checkpoint
    assert run_state(tmp_path / RUNS_DIR / a) == "resumable" and run_state(tmp_path / RUNS_DIR / b) == "partial"
    report = run_experiment(exp, tmp_path, workers=1, progress=False)
    assert sorted(fake_train.calls) == [("resume", a), ("train", b, True)]
    assert len(report.finished) == 2


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, monkeypatch):
    exp = tmaze(cores=["ur"], timesteps=200)
    bad = exp.runs()[1].name
    FakeTrainer(fail={bad}).install(monkeypatch)
    report = run_experiment(exp, tmp_path, workers=1, progress=False)
    assert report.failed == {bad: "RuntimeError: boom"}
    assert len(report.finished) == 3
    assert "RuntimeError: boom" in (tmp_path / "logs" / f"{bad}.log").read_text()  # traceback in the run's log


def test_ctrl_c_in_a_run_stops_the_grid(tmp_path, monkeypatch):
    exp = tmaze(cores=["ur"], timesteps=200)
    first = exp.runs()[0].name
    fake = FakeTrainer(interrupt={first}).install(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(exp, tmp_path, workers=1, progress=False)
    assert [c[1] for c in fake.calls] == [first]  # no further run was started
    assert json.loads((tmp_path / RUNS_DIR / first / "summary.json").read_text())["status"] == "interrupted"


def _job(tmp_path, name: str, total: int) -> Job:
    spec, cfg = SimpleNamespace(name=name), SimpleNamespace(total_timesteps=total)
    return Job(spec, cfg, tmp_path / RUNS_DIR / name, tmp_path / "logs" / f"{name}.log")


def _trained(job: Job, steps: int) -> None:
    """What SB3 writes after an update: a progress.csv row with the step count."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    with open(job.run_dir / "progress.csv", "a") as fh:
        if fh.tell() == 0:
            fh.write("time/fps,time/total_timesteps,train/loss\n")
        fh.write(f"100,{steps},0.5\n")


def test_progress_shows_steps_as_runs_train_and_never_100_percent_after_ctrl_c(tmp_path, capsys):
    a, b = _job(tmp_path, "a", 1000), _job(tmp_path, "b", 1000)
    report = ExperimentReport(tmp_path, total=2, skipped=0)
    with Progress([a, b], report, enabled=True) as bar:
        task = bar.progress.tasks[0]
        _trained(a, 64)
        _trained(a, 128)
        _trained(b, 300)
        bar.poll()
        assert task.completed == 428  # the runs' steps so far, before either finished
        _trained(a, 500)
        bar.done(a, Outcome("a", error="interrupted"))
        bar.done(b, Outcome("b", error="interrupted"))
        assert task.completed == 800 and task.percentage < 100 and task.description == "runs 0/2, 2 interrupted"
    assert capsys.readouterr().out.count("interrupted a (checkpoint kept") == 1


def test_without_the_bar_each_finished_run_still_prints_a_line(tmp_path, capsys):
    a = _job(tmp_path, "a", 1000)
    report = ExperimentReport(tmp_path, total=1, skipped=0)
    summary = {"status": "finished", "final_eval": {"success_rate": 0.75, "mean_return": 0.5}}
    with Progress([a], report, enabled=False) as bar:
        bar.done(a, Outcome("a", summary=summary, seconds=12.0))
    assert capsys.readouterr().out.splitlines()[-1] == "done a: success 0.75 (12 s)"


def test_ray_backend_without_ray_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(
        UrgateError, match=r'needs Ray, which is not installed: pip install -e "\.\[ray\]" in a checkout'
    ):
        run_experiment(tmaze(), tmp_path / "exp", backend="ray")
    assert not (tmp_path / "exp").exists()


def test_unknown_backend_and_bad_workers(tmp_path):
    with pytest.raises(UrgateError, match="unknown backend 'slurm'; valid: local, ray"):
        run_experiment(tmaze(), tmp_path, backend="slurm")
    with pytest.raises(UrgateError, match="--workers must be >= 1"):
        run_experiment(tmaze(), tmp_path, workers=0)


def test_ray_task_ships_a_run_out_and_back(tmp_path, fake_train):
    # The Ray task's own logic, without Ray: unpack the shipped run, resume it, pack the result.
    exp = tmaze(cores=["ur"], seeds=[0], grid={"length": [5]}, timesteps=200)
    spec = exp.runs()[0]
    src = tmp_path / "driver" / spec.name
    write_run(src, env_kwargs={"length": 5}, status="interrupted", timesteps=200)
    job = Job(spec, exp.run_config(spec), src, tmp_path / "driver.log")
    outcome, blob, log = _ray_task(job, _pack(src))
    assert fake_train.calls == [("resume", "run")] and outcome.summary["status"] == "finished"
    back = tmp_path / "back"
    _unpack(blob, back)
    assert run_state(back) == "finished" and "resumable" in log


# -- end to end: real training on tiny budgets ---------------------------------------------------------------------

TINY = [
    "--set=n_envs=2",
    "--set=ppo.n_steps=16",
    "--set=ppo.batch_size=32",
    "--set=eval.freq=128",
    "--set=eval.n_episodes=2",
    "--set=eval.n_envs=2",
    "--set=policy_kwargs.lstm_hidden_size=8",
]


def test_compare_cli_local_pool_then_plot_and_rerun(tmp_path, capsys):
    import run_rl

    exp_dir = tmp_path / "exp"
    args = ["compare", "--cores", "lstm,ur", "--seeds", "1", "--env", "urgate/TMaze-v0", "--grid", "length=3"]
    args += ["--timesteps", "256", "--workers", "2", "--exp-dir", str(exp_dir), "--no-progress", *TINY]
    assert run_rl.main(args) == 0
    out = capsys.readouterr().out
    assert "2 runs: 2 finished now, 0 kept, 0 interrupted, 0 failed" in out
    for spec in load_experiment(exp_dir).runs():
        summary = json.loads((exp_dir / RUNS_DIR / spec.name / "summary.json").read_text())
        assert (summary["status"], summary["core"], summary["timesteps"]) == ("finished", spec.core, 256)
        assert re.search(rf"^done {spec.name}: success \d\.\d\d \(\d+ s\)$", out, re.M)  # also with --no-progress
        # the run's own output, written by a spawned worker: the trainer's log lines, evaluations included
        log = (exp_dir / "logs" / f"{spec.name}.log").read_text()
        assert f"training {spec.core} on urgate/TMaze-v0 for 256 steps" in log and "eval at 0 steps:" in log
    assert run_rl.main(["compare", "--exp-dir", str(exp_dir), "--no-progress"]) == 0  # continue: nothing to do
    assert "0 finished now, 2 kept" in capsys.readouterr().out
    assert run_rl.main(["plot", str(exp_dir)]) == 0
    assert (exp_dir / "plots" / "learning_curves_TMaze-v0.png").exists() and (exp_dir / "plots" / "results.md").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--cores", "lstm,foo"], "unknown core 'foo'"),
        (["--cores", "ur", "--grid", "length"], "--grid must look like key=v1,v2"),
        (["--cores", "ur", "--grid", "colour=1,2"], "does not take keyword(s) ['colour']"),
        (["--cores", "ur", "--backend", "slurm"], "unknown backend 'slurm'"),
        (["--seeds", "2"], "compare needs --cores"),
    ],
)
def test_compare_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    import run_rl

    code = run_rl.main(["compare", "--env", "urgate/TMaze-v0", "--exp-dir", str(tmp_path / "e"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0] and err[0].startswith("error: ")
    assert not (tmp_path / "e" / RUNS_DIR).exists()  # nothing was run


def test_ray_backend_runs_a_tiny_grid_on_a_local_runtime(tmp_path):
    ray = pytest.importorskip("ray")
    overrides = [t.removeprefix("--set=") for t in TINY]
    exp = tmaze(cores=["lstm", "ur"], seeds=[0], grid={"length": [3]}, timesteps=128, overrides=overrides)
    try:
        report = run_experiment(exp, tmp_path, backend="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    assert report.failed == {} and sorted(report.finished) == sorted(s.name for s in exp.runs())
    for spec in exp.runs():
        run_dir = tmp_path / RUNS_DIR / spec.name
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["run_dir"] == str(run_dir)
        assert (run_dir / "checkpoints" / "latest.zip").exists() and (run_dir / "gates.npz").exists()
        assert "new" in (tmp_path / "logs" / f"{spec.name}.log").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("signame, background", [("SIGINT", False), ("SIGTERM", False), ("SIGINT", True)])
def test_ctrl_c_on_the_parent_checkpoints_every_running_run(tmp_path, signame, background):
    # background: started as `cmd &` from a non-interactive shell, which leaves SIGINT ignored in the child.
    import signal
    import subprocess
    import time

    exp_dir = tmp_path / "exp"
    cmd = [sys.executable, "run_rl.py", "compare", "--cores", "lstm,ur", "--seeds", "1", "--env", "urgate/TMaze-v0"]
    cmd += ["--grid", "length=3", "--timesteps", "200000", "--workers", "2", "--exp-dir", str(exp_dir)]
    cmd += ["--no-progress", *TINY, "--set=checkpoint_freq=0"]
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore)
    deadline = time.time() + 60
    runs = exp_dir / RUNS_DIR

    def run_dirs():  # (a running run's lock file, .<name>.lock, sits beside its directory)
        return [d for d in runs.iterdir() if d.is_dir()] if runs.exists() else []

    while time.time() < deadline and not (
        all((d / "progress.csv").exists() for d in run_dirs()) and len(run_dirs()) == 2
    ):
        time.sleep(0.5)
    proc.send_signal(getattr(signal, signame))  # the parent only: it forwards one SIGINT to each worker
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "continue with: python run_rl.py compare --exp-dir" in err
    for d in run_dirs():
        assert run_state(d) == "resumable"
        assert json.loads((d / "summary.json").read_text())["status"] == "interrupted"


def test_an_experiment_directory_in_use_stops_a_second_compare(tmp_path, capsys):
    """A second ``compare`` on an experiment directory that another process runs: one line naming it, exit 2,
    nothing written; the lock dies with its holder."""
    import subprocess
    from pathlib import Path

    import run_rl

    exp_dir = tmp_path / "exp"
    root = Path(__file__).resolve().parent.parent
    hold = (
        "import sys, time; from pathlib import Path; from agents.run.rundir import directory_lock\n"
        "with directory_lock(Path(sys.argv[1]), 'experiment directory'):\n    print('locked', flush=True); time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", hold, str(exp_dir)], cwd=root, stdout=subprocess.PIPE, text=True)
    args = ["compare", "--cores", "lstm", "--seeds", "1", "--env", "urgate/TMaze-v0", "--exp-dir", str(exp_dir)]
    args += ["--timesteps", "64", "--no-progress", *TINY]
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert run_rl.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is in use by another process, pid {holder.pid}" in err[0], err
        assert not exp_dir.exists()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert run_rl.main(args) == 0
    assert run_state(exp_dir / RUNS_DIR / load_experiment(exp_dir).runs()[0].name) == "finished"


def test_a_pools_workers_report_their_pids_for_ctrl_c(tmp_path):
    """The parent signals the workers it learnt from the workers themselves, not from the pool's internals."""
    import os
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from agents.study.experiments.backends import _WorkerPids
    from agents.study.experiments.execute import init_worker

    ctx = get_context("spawn")
    pids = _WorkerPids(ctx)
    with ProcessPoolExecutor(2, mp_context=ctx, initializer=init_worker, initargs=(pids.queue,)) as pool:
        ran_in = set(pool.map(os.getpid, [], chunksize=1)) | {pool.submit(os.getpid).result() for _ in range(4)}
        pids.signal(0)  # signal 0: only checks that each process exists
        assert ran_in <= pids.pids and len(pids.pids) <= 2 and os.getpid() not in pids.pids
