"""run_rl.py end to end: train, eval (with a GIF), resume, list, help, Ctrl-C, and every user error -> exit 2.

Subprocesses where the process boundary matters (a real training run, SIGINT, a clean stderr without traceback);
in-process ``main(argv)`` elsewhere, because each Python start costs seconds here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch
import yaml
from fake_runs import write_run
from stable_baselines3.common.save_util import load_from_zip_file

import envs
import policies
import run_rl
from agents.errors import UrgateError
from agents.run.config import available_configs
from agents.run.logs import log_to_stderr
from agents.study.experiments import RUNS_DIR, Experiment, prepare

ROOT = Path(__file__).resolve().parent.parent
TINY_MINIGRID = [
    "--env",
    "MiniGrid-MemoryS7-v0",
    "--timesteps",
    "64",
    "--n-envs",
    "2",
    "--set",
    "ppo.n_steps=16",
    "--set",
    "ppo.batch_size=32",
    "--set",
    "ppo.n_epochs=1",
    "--set",
    "policy_kwargs.lstm_hidden_size=8",
    "--set",
    "policy_kwargs.features_extractor_kwargs.features_dim=16",
    "--set",
    "env_kwargs.max_steps=20",
    "--set",
    "eval.freq=32",
    "--set",
    "eval.n_episodes=2",
    "--set",
    "eval.n_envs=2",
]
TINY_TMAZE = [
    "--env",
    "urgate/TMaze-v0",
    "--n-envs",
    "2",
    "--set",
    "ppo.n_steps=32",
    "--set",
    "ppo.batch_size=64",
    "--set",
    "ppo.n_epochs=1",
    "--set",
    "policy_kwargs.lstm_hidden_size=8",
    "--set",
    "env_kwargs.length=3",
    "--set",
    "eval.freq=0",
    "--set",
    "eval.n_episodes=2",
    "--set",
    "eval.n_envs=2",
]


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_rl.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=cli_env(),
    )


@pytest.fixture(scope="module")
def minigrid_run(tmp_path_factory) -> Path:
    """A tiny MiniGrid run trained through the real command line (a subprocess)."""
    base = tmp_path_factory.mktemp("cli")
    run_dir = base / "run"
    proc = run_cli(*TINY_MINIGRID, "--run-dir", str(run_dir), "--core", "ur", cwd=base)
    assert proc.returncode == 0, proc.stderr
    assert "final evaluation: success" in proc.stdout and str(run_dir) in proc.stdout
    assert "Traceback" not in proc.stderr
    for steps in (0, 32):  # eval.freq=32 of 64 steps: one line per periodic evaluation
        assert f"eval at {steps} steps: success " in proc.stderr
    return run_dir


def test_train_writes_a_complete_run(minigrid_run):
    summary = json.loads((minigrid_run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["timesteps"] == 64
    assert summary["env_id"] == "MiniGrid-MemoryS7-v0" and summary["core"] == "ur"
    assert summary["memoryless_ceiling"] == 0.5 and summary["final_eval"]["episodes"] == 2
    for name in ("config.yaml", "evaluations.csv", "gates.npz", "progress.csv", "final_model.zip", "best_model.zip"):
        assert (minigrid_run / name).is_file(), name
    assert (minigrid_run / "checkpoints" / "latest.zip").is_file()
    cfg = yaml.safe_load((minigrid_run / "config.yaml").read_text())
    assert cfg["env_kwargs"] == {"actions": "move", "max_steps": 20}  # the family config's, merged with --set
    assert cfg["policy_kwargs"]["lstm_hidden_size"] == 8


def test_eval_run_directory_with_gif(minigrid_run, tmp_path, capsys):
    gif = tmp_path / "episodes.gif"
    argv = ["eval", str(minigrid_run), "--episodes", "2", "--video", str(gif), "--video-episodes", "2"]
    assert run_rl.main(argv) == 0
    out = capsys.readouterr().out
    assert "MiniGrid-MemoryS7-v0 (greedy): success" in out and "over 2 episodes" in out
    assert re.search(rf"video of the first 2 of 2 episodes \(\d+ frames\) written to {re.escape(str(gif))}", out)
    frames = iio.imread(gif, index=None)
    assert frames.ndim == 4 and frames.shape[0] >= 3 and frames.shape[-1] == 3  # 2 episodes of <= 20 steps
    result = json.loads((minigrid_run / "eval.json").read_text())
    assert result["episodes"] == 2 and result["deterministic"] is True and result["video"] == str(gif)


def test_eval_a_bare_model_zip_knows_its_env(minigrid_run, tmp_path, capsys):
    alone = tmp_path / "agent.zip"
    shutil.copy(minigrid_run / "final_model.zip", alone)
    assert run_rl.main(["eval", str(alone), "--episodes", "3", "--stochastic"]) == 0
    out = capsys.readouterr().out
    assert "MiniGrid-MemoryS7-v0 (sampled)" in out and "over 3 episodes" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.zip"]  # statistics go to stdout only


def test_resume_continues_the_step_count(minigrid_run, tmp_path, capsys):
    run_dir = tmp_path / "copy"
    shutil.copytree(minigrid_run, run_dir)
    assert run_rl.main(["resume", str(run_dir), "--timesteps", "128", "--no-progress"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["timesteps"] == 128 and summary["status"] == "finished"
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["timesteps"] == 128
    assert summary["session_timesteps"] == 64 and summary["fps"] > 0
    head = capsys.readouterr().out.splitlines()[0]
    assert "128 steps" in head and "in all; this session 64 steps, " in head  # fps is the session's


def _truncated(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _not_a_model(dst: Path) -> Path:
    with zipfile.ZipFile(dst, "w") as zf:
        zf.writestr("notes.txt", "hello")
    return dst


def _other_core(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst)
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    cfg["core"] = "lstm"
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
    return dst


# A CUDA device this machine lacks: "cuda:0" without CUDA, one past the last GPU with it.
def _a_file(t: Path) -> Path:
    """A file where a command line names a directory (``README.md`` in a checkout)."""
    (t / "README.md").write_text("# not a directory\n")
    return t / "README.md"


def _an_experiment(t: Path) -> Path:
    """An experiment directory with two finished fake runs, ready to plot."""
    exp = Experiment(env_ids=["urgate/TMaze-v0"], cores=["lstm"], seeds=[0, 1], grid={})
    prepare(exp, t / "exp")
    for spec in exp.runs():
        write_run(t / "exp" / RUNS_DIR / spec.name, core=spec.core, seed=spec.seed)
    return t / "exp"


TINY_COMPARE = ["compare", "--cores", "lstm", "--env", "urgate/TMaze-v0", "--timesteps", "2048"]

MISSING_CUDA = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"


def _new_run(*argv: str):
    """The argv builder of a train case: ``argv`` plus a fresh ``--run-dir``."""
    return lambda r, t: [*argv, "--run-dir", str(t / "new")]


# (argv builder taking (run_dir, tmp_path), fragment of the one-line message)
USER_ERRORS = {
    "unknown core": (_new_run("--core", "grux"), "--core grux: must be one of lstm"),
    "core in capitals": (_new_run("--core", "UR"), "--core UR: must be one of lstm, chrono, u, r, ur"),
    "core case hint": (_new_run("--core", "UR"), "lower case: did you mean 'ur'?"),
    "negative timesteps": (_new_run("--timesteps", "-5"), "--timesteps -5: must be an integer >= 1"),
    "timesteps not whole": (_new_run("--timesteps", "1.5"), "argument --timesteps: '1.5' is not a whole number"),
    "unknown option": (_new_run("--cores", "ur"), "unrecognized arguments: --cores ur (options: python run_rl.py"),
    "empty core": (_new_run("--core", ""), "--core '': must be one of lstm, chrono"),
    "negative seed": (_new_run("--seed", "-1"), "--seed -1: must be an integer >= 0"),
    "negative keep": (_new_run("--keep-checkpoints", "-1"), "--keep-checkpoints -1: must be an integer >= 0"),
    "missing cuda device": (_new_run("--device", MISSING_CUDA), f"--device {MISSING_CUDA}: must be "),
    "negative policy size": (
        _new_run("--set", "policy_kwargs.lstm_hidden_size=-1"),
        "config key 'policy_kwargs.lstm_hidden_size' must be an integer >= 1, got -1",
    ),
    "policy size a word": (
        _new_run("--set", "policy_kwargs.lstm_hidden_size=big"),
        "config key 'policy_kwargs.lstm_hidden_size' must be an integer >= 1, got 'big'",
    ),
    "policy flag a word": (
        _new_run("--set", "policy_kwargs.shared_lstm=maybe"),
        "'policy_kwargs.shared_lstm' must be a boolean (true/false), got 'maybe'",
    ),
    "policy layer size": (
        _new_run("--set", "policy_kwargs.net_arch=[64, 0]"),
        "'policy_kwargs.net_arch' must be a list of layer sizes >= 1",
    ),
    "misspelt policy kwarg": (
        _new_run("--set", "policy_kwargs.lstm_hiden_size=8"),
        "'policy_kwargs.lstm_hiden_size' for MlpGatedPolicy (did you mean 'lstm_hidden_size'?)",
    ),
    "unknown env": (_new_run("--env", "MiniGrid-MemoryS8-v0"), "MiniGrid-MemoryS8"),
    "env of another library": (
        _new_run("--env", "CartPole-v1"),
        "--env CartPole-v1: unknown environment id 'CartPole-v1'",
    ),
    "env list pointer": (_new_run("--env", "CartPole-v1"), "python run_rl.py list"),
    "unknown config key": (_new_run("--set", "ppo.n_step=8"), "'ppo.n_step'"),
    "wrong type": (_new_run("--set", "ppo.n_steps=many"), "must be an integer"),
    "unknown config": (_new_run("--config", "tmazes"), "unknown config 'tmazes'"),
    "bad env kwarg": (
        _new_run("--env", "urgate/TMaze-v0", "--set", "env_kwargs.length=1"),
        "length must be an integer >= 2",
    ),
    "unknown env kwarg": (_new_run("--env", "urgate/TMaze-v0", "--set", "env_kwargs.size=3"), "does not take keyword"),
    "unknown policy kwarg": (_new_run("--set", "policy_kwargs.hidden=3"), "'policy_kwargs.hidden'"),
    "bad core kwarg": (_new_run("--core", "chrono", "--set", "policy_kwargs.core_kwargs.t_max=1"), "t_max"),
    "bad refine_bias": (
        _new_run("--set", "policy_kwargs.core_kwargs.refine_bias=nope"),
        "unknown refine_bias 'nope'; valid: neg_forget, zero",
    ),
    "existing run dir": (lambda r, t: [*TINY_MINIGRID, "--run-dir", str(r)], "already exists: pass --overwrite"),
    "eval missing": (lambda r, t: ["eval", str(t / "nothing.zip")], "does not exist"),
    "eval missing run dir": (
        lambda r, t: ["eval", str(t / "runs" / "does-not-exist")],
        "does-not-exist' does not exist: give a run directory or a model .zip",
    ),
    "eval negative seed": (lambda r, t: ["eval", str(r), "--seed", "-1"], "--seed -1: must be an integer >= 0"),
    "eval no episodes": (lambda r, t: ["eval", str(r), "--episodes", "0"], "--episodes 0: must be an integer >= 1"),
    "eval missing cuda device": (lambda r, t: ["eval", str(r), "--device", MISSING_CUDA], f"--device {MISSING_CUDA}: "),
    "eval text file": (
        lambda r, t: ["eval", str((t / "m.zip").write_text("no") and t / "m.zip")],
        "not a model zip",
    ),
    "eval truncated": (
        lambda r, t: ["eval", str(_truncated(r / "final_model.zip", t / "cut.zip"))],
        "not a model zip (not a zip archive, or truncated)",
    ),
    "eval not a model": (lambda r, t: ["eval", str(_not_a_model(t / "x.zip"))], "not a saved model"),
    "eval wrong env": (
        lambda r, t: ["eval", str(r), "--env", "urgate/TMaze-v0", "--episodes", "1"],
        "was trained with observation space",
    ),
    "eval not a run dir": (lambda r, t: ["eval", str(t)], "not a run directory"),
    "eval bad video": (lambda r, t: ["eval", str(r), "--video", str(t / "v.avi")], ".gif or .mp4"),
    "eval no frames": (lambda r, t: ["eval", str(r), "--video", str(t / "v.gif"), "--env", "urgate/TMaze-v0"], ""),
    # a path argument that cannot be written: one line naming it, before any work
    "plot dpi 0": (lambda r, t: ["plot", str(_an_experiment(t)), "--dpi", "0"], "--dpi 0: must be an integer >= 1"),
    "plot out is a file": (
        lambda r, t: ["plot", str(_an_experiment(t)), "--out", str(_a_file(t))],
        "README.md': it is a file, not a directory",
    ),
    "compare exp dir is a file": (
        lambda r, t: [*TINY_COMPARE, "--exp-dir", str(_a_file(t))],
        "experiment directory '" + "{t}/README.md': it is a file, not a directory",
    ),
    "compare exp dir under a file": (
        lambda r, t: [*TINY_COMPARE, "--exp-dir", str(_a_file(t) / "x")],
        "experiment directory '{t}/README.md/x': '{t}/README.md' is a file, not a directory",
    ),
    "train run dir under a file": (
        lambda r, t: [*TINY_MINIGRID, "--run-dir", str(_a_file(t) / "x")],
        "run directory '{t}/README.md/x': ",  # (the directory lock's or the path check's reason)
    ),
    "train run dir nowhere": (
        lambda r, t: [*TINY_MINIGRID, "--run-dir", "/proc/nope"],
        "run directory '/proc/nope': cannot ",  # (create it, or write in /proc: No such file or directory)
    ),
    "eval out under a file": (
        lambda r, t: ["eval", str(r), "--episodes", "1", "--out", str(_a_file(t) / "x.json")],
        "--out '{t}/README.md/x.json': '{t}/README.md' is a file, not a directory",
    ),
    "eval out is a directory": (
        lambda r, t: ["eval", str(r), "--episodes", "1", "--out", str(t)],
        "--out '{t}': it is a directory; give a file name",
    ),
    "eval video under a file": (
        lambda r, t: ["eval", str(r), "--episodes", "1", "--video", str(_a_file(t) / "x.gif")],
        "video file '{t}/README.md/x.gif': '{t}/README.md' is a file, not a directory",
    ),
    "rollout larger than memory": (
        _new_run("--config", "tmaze_long", "--set", "env_kwargs.length=100000000", "--timesteps", "2048"),
        "envs needs about",  # (... GiB of memory, but ... GiB is available)
    ),
    "resume not a run": (lambda r, t: ["resume", str(t)], "not a run directory"),
    "resume finished": (lambda r, t: ["resume", str(r)], "already has 64 of its 64 steps; pass a larger total budget"),
    "resume smaller budget": (
        lambda r, t: ["resume", str(r), "--timesteps", "10"],
        "already has 64 steps, and --timesteps is the new total budget: pass more than 64",
    ),
    "resume other core": (
        lambda r, t: ["resume", str(_other_core(r, t / "oc")), "--timesteps", "999"],
        "has core 'ur', but the run's config says core 'lstm'",
    ),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_errors_exit_2_with_one_line_and_write_nothing(case, minigrid_run, tmp_path, capsys):
    build, fragment = USER_ERRORS[case]
    argv = build(minigrid_run, tmp_path)
    before_tmp = sorted(p.name for p in tmp_path.iterdir())
    before_run = {p: p.stat().st_mtime_ns for p in minigrid_run.rglob("*")}
    code = run_rl.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("training ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment.format(t=tmp_path) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before_tmp  # nothing new next to the inputs
    assert {p: p.stat().st_mtime_ns for p in minigrid_run.rglob("*")} == before_run  # the run is untouched


@pytest.mark.parametrize(
    "argv",
    [["--seed", "-1"], ["--set", "policy_kwargs.lstm_hidden_size=big"]],  # gymnasium's and torch's tracebacks before
    ids=["seed", "policy-kwarg"],
)
def test_user_error_in_a_real_process_has_no_traceback(argv, tmp_path):
    proc = run_cli(*argv, "--run-dir", str(tmp_path / "new"), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and argv[-1].split("=")[-1] in lines[0], proc.stderr
    assert not (tmp_path / "new").exists()


def test_eval_bad_seed_in_a_real_process_has_no_traceback(minigrid_run, tmp_path):
    proc = run_cli("eval", str(minigrid_run), "--seed", "-1", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --seed -1: must be an integer >= 0 (the seed of the evaluation envs)"
    ]


def _train_until_trained(run_dir: Path, proc: subprocess.Popen, ready) -> None:
    """Wait (at most 90 s) until ``ready()`` says training is under way; the process must not end before."""
    deadline = time.time() + 90
    while time.time() < deadline and not ready():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    assert ready(), "training did not get under way within 90 s"


def _progress_rows(run_dir: Path) -> int:
    progress = run_dir / "progress.csv"
    return len(progress.read_text().splitlines()) if progress.is_file() else 0


def _assert_resumable_after_stop(run_dir: Path) -> None:
    saved = json.loads((run_dir / "checkpoints" / "latest.json").read_text())["timesteps"]
    assert saved >= 64 and saved % 64 == 0  # an update boundary: no collected-but-untrained steps are counted
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["timesteps"] == saved
    assert not (run_dir / "final_model.zip").exists()
    assert run_rl.main(["resume", str(run_dir), "--timesteps", str(saved + 64), "--no-progress"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["timesteps"] == saved + 64


TRAIN_FOREVER = [sys.executable, str(ROOT / "run_rl.py"), *TINY_TMAZE, "--timesteps", "10000000"]


def _train_forever(run_dir: Path, cwd: Path) -> subprocess.Popen:
    """A silent training process into ``run_dir`` that checkpoints every 64 steps and runs until stopped."""
    return subprocess.Popen(
        [*TRAIN_FOREVER, "--set", "checkpoint_freq=64", "--run-dir", str(run_dir), "--no-progress"],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"])
def test_ctrl_c_and_sigterm_save_a_resumable_checkpoint(sig, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [*TRAIN_FOREVER, "--run-dir", str(run_dir)],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _train_until_trained(run_dir, proc, lambda: _progress_rows(run_dir) >= 2)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert f"continue with: python run_rl.py resume {run_dir}" in err
    assert "Traceback" not in err
    _assert_resumable_after_stop(run_dir)


def test_ctrl_c_under_tee_saves_a_checkpoint(tmp_path):
    """``python run_rl.py ... 2>&1 | tee log`` and Ctrl-C in the terminal: the whole process group gets SIGINT, so
    tee dies with it and every later write to the pipe fails; the checkpoint must not depend on those writes."""
    run_dir = tmp_path / "run"
    train = " ".join(shlex.quote(a) for a in [*TRAIN_FOREVER, "--run-dir", str(run_dir)])
    pipeline = f"{{ {train} 2>&1; echo $? > {tmp_path / 'rc'}; }} | tee {tmp_path / 'log'} > /dev/null"
    shell = subprocess.Popen(["bash", "-c", pipeline], cwd=tmp_path, env=cli_env(), start_new_session=True)
    try:
        _train_until_trained(run_dir, shell, lambda: _progress_rows(run_dir) >= 2)
        os.killpg(shell.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        shell.wait(timeout=60)  # bash waits for the pipeline, whose first half writes python's exit code
    finally:
        if shell.poll() is None:
            os.killpg(shell.pid, signal.SIGKILL)
    assert (tmp_path / "rc").read_text().strip() == "130", (tmp_path / "log").read_text()
    _assert_resumable_after_stop(run_dir)


def test_after_sigkill_resume_continues_from_the_last_periodic_checkpoint(tmp_path, capsys):
    run_dir = tmp_path / "run"
    latest = run_dir / "checkpoints" / "latest.json"
    proc = _train_forever(run_dir, tmp_path)
    try:
        _train_until_trained(
            run_dir, proc, lambda: latest.is_file() and json.loads(latest.read_text())["timesteps"] >= 128
        )
    finally:
        proc.kill()  # SIGKILL: nothing runs after it, so only the periodic checkpoint is there
        proc.wait(timeout=30)
    assert not (run_dir / "summary.json").exists()
    # The step count the checkpoint holds: the zip's own (a kill between the zip and latest.json leaves the json
    # one checkpoint behind; resume reads the zip).
    saved = load_from_zip_file(str(run_dir / "checkpoints" / "latest.zip"))[0]["num_timesteps"]
    assert saved >= 128
    capsys.readouterr()
    assert run_rl.main(["resume", str(run_dir), "--timesteps", str(saved + 64), "--no-progress"]) == 0
    assert f"resuming {run_dir} at step {saved} of {saved + 64}" in capsys.readouterr().err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["timesteps"] == saved + 64
    assert summary["session_timesteps"] == 64


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        run_rl.main(["--help"])
    assert info.value.code == 0
    top = capsys.readouterr().out
    for command in ("train", "eval", "list", "resume"):
        assert command in top
    for option in ("--core", "--timesteps", "--run-dir", "--set"):  # train, the default command, needs no name
        assert option in top
    assert "python run_rl.py COMMAND --help" in top
    with pytest.raises(SystemExit):
        run_rl.main(["train", "--help"])
    train_help = capsys.readouterr().out
    for option in ("--core", "--env", "--config", "--timesteps", "--seed", "--n-envs", "--device", "--threads"):
        assert option in train_help
    for option in ("--run-dir", "--set", "--overwrite", "ppo.n_steps=64", "policy_kwargs.lstm_hidden_size"):
        assert option in train_help
    with pytest.raises(SystemExit):
        run_rl.main(["eval", "--help"])
    eval_help = capsys.readouterr().out
    for option in ("--episodes", "--stochastic", "--video", ".gif or .mp4"):
        assert option in eval_help


def test_list_shows_cores_families_and_configs(capsys):
    assert run_rl.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in policies.CORE_NAMES:
        assert f"  {name} " in out and policies.CORES[name].summary in out
    for env_id in envs.list_env_ids():
        assert env_id in out
    for family in envs.FAMILIES.values():
        assert f"  {family.name}: " in out
        video = "records video (eval --video)" if family.records_video else "no video (renders no frames)"
        assert f"config '{family.config}', {video}" in out
    configs = out.split("\nconfigs (--config")[1]
    for name in available_configs():
        assert f"  {name} " in out
        # the whole first sentence, not the first line of a sentence that goes on
        entry = re.split(r"\n  (?=\S)", configs.split(f"  {name} ", 1)[1])[0]
        assert " ".join(entry.split()).endswith("."), entry


def test_config_summary_is_the_first_sentence_across_lines():
    text = "# MiniGrid tasks: symbolic view through the\n# extractor, ceiling 0.5. Measured: more.\nenv_id: x\n"
    assert run_rl.config_summary(text) == "MiniGrid tasks: symbolic view through the extractor, ceiling 0.5."
    assert run_rl.config_summary("env_id: x\n") == ""


def test_output_to_a_closed_pipe_is_no_traceback(tmp_path):
    """``run_rl.py list | head -3``: the reader goes away before the output is written."""
    read, write = os.pipe()
    os.close(read)  # every write now fails with EPIPE, as after head has its three lines
    try:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "run_rl.py"), "list"],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=cli_env(),
        )
    finally:
        os.close(write)
    assert proc.returncode == 0 and proc.stderr == ""


def test_log_lines_are_printed_above_the_progress_bar(capsys):
    """The kernel build notice (another library's logger) and the evaluation lines start their own line: tqdm
    clears the bar, prints the line, redraws the bar."""
    from tqdm import tqdm

    log_to_stderr()
    bar = tqdm(total=10, file=sys.stderr, mininterval=0)
    bar.update(3)
    logging.getLogger("policies.extensions").warning("urgate: building the refine-gate CPU kernel")
    logging.getLogger("urgate").info("eval at 3 steps: success 1.00, return 0.500 (2 episodes)")
    bar.close()
    segments = re.split(r"[\r\n]", capsys.readouterr().err)
    assert "urgate: building the refine-gate CPU kernel" in segments
    assert "eval at 3 steps: success 1.00, return 0.500 (2 episodes)" in segments


def test_default_run_dir_names_env_core_seed():
    d = run_rl.default_run_dir("urgate/TMaze-v0", "ur", 3)
    assert d.parent == Path("runs") and d.name.startswith("urgate-TMaze-v0-ur-s3-")


def test_train_is_the_default_command():
    assert run_rl.build_parser().parse_args(["train", "--core", "lstm"]).run is run_rl.cmd_train
    assert run_rl.COMMANDS["train"].run is run_rl.cmd_train


# -- compare's strings -------------------------------------------------------------------------------------------


def test_compare_parses_grid_and_seeds():
    assert run_rl.parse_grid(["length=10,30, 100", "ppo.learning_rate=1e-3,3e-4"]) == {
        "length": [10, 30, 100],
        "ppo.learning_rate": ["1e-3", "3e-4"],  # YAML 1.1 keeps these as strings; the config coerces them
    }
    assert run_rl.parse_seeds("3") == [0, 1, 2] and run_rl.parse_seeds("4,9") == [4, 9]
    assert run_rl.parse_seeds("5,") == [5] and run_rl.parse_seeds("10-12") == [10, 11, 12]
    assert run_rl.parse_seeds("0-2, 7") == [0, 1, 2, 7] and run_rl.parse_seeds("7-7") == [7]
    for bad in ("length", "length=", "=1,2", "length=1,,2", "len gth=1", "length=1,1"):
        with pytest.raises(UrgateError, match="--grid"):
            run_rl.parse_grid([bad])
    with pytest.raises(UrgateError, match="given twice"):
        run_rl.parse_grid(["length=1", "length=2"])
    for bad in ("0", "-1", "x", "1,1", "1,-2", "3-1", "0-2,2", ",5", "5,,", "1-2-3"):
        with pytest.raises(UrgateError, match="--seeds"):
            run_rl.parse_seeds(bad)


def test_compare_rejects_an_unknown_core_in_its_list():
    with pytest.raises(UrgateError, match=r"unknown core 'lstn' in --cores \(did you mean 'lstm'\?\); valid: lstm"):
        run_rl.experiment_from_args(cores="lstn,ur", seeds="2", env="urgate/TMaze-v0")
    with pytest.raises(UrgateError, match=r"unknown core 'UR' in --cores \(names are lower case: did you mean 'ur'"):
        run_rl.experiment_from_args(cores="lstm,UR", seeds="2", env="urgate/TMaze-v0")


def test_compare_accepts_every_registered_core():
    exp = run_rl.experiment_from_args(cores="gru,ugru,urgru,ur", seeds="1", env="urgate/TMaze-v0")
    assert exp.cores == ["gru", "ugru", "urgru", "ur"]


def test_a_run_directory_in_use_stops_a_second_process_naming_the_first(tmp_path):
    """``resume R`` or ``train --run-dir R --overwrite`` while another process trains into R: one line naming that
    process, exit 2, the first run undisturbed; the lock dies with its holder (SIGKILL), so R resumes afterwards."""
    run_dir = tmp_path / "run"
    latest = run_dir / "checkpoints" / "latest.json"
    first = _train_forever(run_dir, tmp_path)
    try:
        _train_until_trained(run_dir, first, latest.is_file)
        for argv in (["resume", str(run_dir)], [*TINY_TMAZE, "--run-dir", str(run_dir), "--overwrite"]):
            second = run_cli(*argv, cwd=tmp_path)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 2 and len(lines) == 1, second.stderr
            assert f"run directory {str(run_dir)!r} is in use by another process, pid {first.pid} (" in lines[0]
            assert f"pid {first.pid} (run_rl.py --env urgate/TMaze-v0" in lines[0]  # and its command line
        assert first.poll() is None and latest.is_file()
    finally:
        first.kill()
        first.wait(timeout=30)
    saved = json.loads(latest.read_text())["timesteps"]
    assert run_rl.main(["resume", str(run_dir), "--timesteps", str(saved + 64), "--no-progress"]) == 0


def test_a_run_stopped_before_its_first_checkpoint_gets_one_advice_everywhere(tmp_path, capsys):
    """A run killed before its first checkpoint (config.yaml, evaluations and best_model.zip, no checkpoint): eval
    evaluates its best model, resume and train give the same advice, and the advised command works."""
    import shutil

    run_dir = tmp_path / "run"
    tiny = [*TINY_TMAZE, "--set", "eval.freq=64", "--timesteps", "128", "--no-progress"]
    assert run_rl.main([*tiny, "--run-dir", str(run_dir)]) == 0
    shutil.rmtree(run_dir / "checkpoints")
    for name in ("final_model.zip", "summary.json"):
        (run_dir / name).unlink()
    capsys.readouterr()
    assert run_rl.main(["eval", str(run_dir), "--episodes", "2"]) == 0
    assert f"evaluated {run_dir / 'best_model.zip'} (the run has no final_model.zip yet)" in capsys.readouterr().out
    advice = "it stopped before its first checkpoint, so it cannot be resumed; evaluate its best model so far with"
    again = f"python run_rl.py train --config {run_dir / 'config.yaml'} --run-dir {run_dir} --overwrite"
    for argv in (["resume", str(run_dir)], [*tiny, "--run-dir", str(run_dir)]):
        assert run_rl.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and advice in err[0] and err[0].endswith(again), err
    assert run_rl.main([*again.split()[2:], "--no-progress"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"


def test_step_counts_are_whole_numbers_however_written():
    assert run_rl.steps("1e6") == run_rl.steps("1_000_000") == run_rl.steps("1000000") == 1_000_000
    assert run_rl.build_parser().parse_args(["train", "--timesteps", "3e5"]).timesteps == 300_000
    assert run_rl.build_parser().parse_args(["compare", "--timesteps", "2.5e3"]).timesteps == 2_500
    for bad in ("1.5", "1e-3", "many", "inf", "nan"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a whole number"):
            run_rl.steps(bad)


def test_importing_the_cli_sets_no_environment_variables():
    """``OMP_NUM_THREADS`` is the command's setting, made in ``main()``, not a side effect of importing run_rl."""
    env = {k: v for k, v in cli_env().items() if k != "OMP_NUM_THREADS"}
    code = "import os, run_rl; print(os.environ.get('OMP_NUM_THREADS'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "None", proc.stderr
