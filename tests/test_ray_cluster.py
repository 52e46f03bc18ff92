"""``compare --backend ray --address``: a tiny grid against a real head node started the standard way.

``ray start --head`` turns Ray's token authentication on when a token exists (``$HOME/.ray/auth_token``, which a
local ``ray.init`` or ``ray get-auth-token --generate`` creates); a client that connects to an explicit address with
authentication off is refused. The head runs on the loopback address
in a session of its own, with its own HOME and temp directory, and its process group is always killed at the end
(``ray stop`` would stop every Ray cluster on the machine).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent
RAY_ENV_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
GRID = [
    *("--cores", "lstm,ur", "--seeds", "1", "--env", "urgate/TMaze-v0", "--grid", "length=3", "--timesteps", "64"),
    *("--set", "n_envs=2", "--set", "ppo.n_steps=16", "--set", "ppo.batch_size=32", "--set", "eval.freq=0"),
    *("--set", "eval.n_episodes=2", "--set", "eval.n_envs=2", "--set", "policy_kwargs.lstm_hidden_size=8"),
    *("--set", "gate_diagnostics=0", "--no-progress"),
]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV_VARS}
    return {**env, "HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """(address, HOME holding the cluster's token); the head's whole process group is killed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="urgate-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    home = base / "home"
    home.mkdir()
    port = _free_port()
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
    cmd = [ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2"]
    cmd += ["--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", str(base / "t")]
    # A machine that has used Ray has a token (a local ray.init makes one; so does this command), and then
    # `ray start --head` turns authentication on.
    token = subprocess.run([ray, "get-auth-token", "--generate"], env=_env(home), capture_output=True, timeout=120)
    assert token.returncode == 0, token.stderr
    head = subprocess.Popen(
        cmd, env=_env(home), start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        out, _ = head.communicate(timeout=120)
        assert head.returncode == 0, out
        assert "Token authentication is enabled" in out, out
        yield f"127.0.0.1:{port}", home
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # the daemons stay in the group ray start led
            try:
                os.killpg(head.pid, sig)
                deadline = time.time() + 5
                while time.time() < deadline:
                    os.killpg(head.pid, 0)  # raises once the group is gone
                    time.sleep(0.2)
            except ProcessLookupError:
                break
        shutil.rmtree(base, ignore_errors=True)


def test_compare_runs_a_grid_on_a_cluster_started_with_ray_start(ray_head, tmp_path):
    address, home = ray_head
    exp_dir = tmp_path / "exp"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_rl.py"), "compare", *GRID, "--backend", "ray", "--address", address]
        + ["--exp-dir", str(exp_dir)],
        env=_env(home),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 runs: 2 finished now" in proc.stdout
    runs = sorted((exp_dir / "runs").iterdir())
    assert len(runs) == 2
    for run_dir in runs:  # shipped back from the cluster's workers into the experiment directory
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["run_dir"] == str(run_dir)
        assert (run_dir / "checkpoints" / "latest.zip").is_file()


def test_a_cluster_that_refuses_the_token_is_one_line(ray_head, tmp_path):
    address, _ = ray_head
    elsewhere = tmp_path / "home"  # a machine without the cluster's token
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run_rl.py"), "compare", *GRID, "--backend", "ray", "--address", address]
        + ["--exp-dir", str(tmp_path / "exp")],
        # Ray retries a refused connection once a second for 20 s; 3 attempts show the same refusal sooner.
        env={**_env(elsewhere), "RAY_gcs_server_port_wait_time_s": "3"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot reach Ray at {address}: the cluster refused")
    assert "RAY_AUTH_TOKEN" in lines[0] and "ray get-auth-token" in lines[0]
