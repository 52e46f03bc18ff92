"""Environment steps per second, one representative id per family, random actions.

    PYTHONPATH=. python benchmarks/envs.py                 # every family that is installed
    PYTHONPATH=. python benchmarks/envs.py --families tmaze visual_match --seconds 3
    PYTHONPATH=. python benchmarks/envs.py --families --memory-maze --worker-rss --train-steps 4096
    PYTHONPATH=. python benchmarks/envs.py --families --vectorised --n-envs 64

Two columns: one env from ``envs.make_env`` (the family's wrappers included, stepped in a plain loop with resets),
and ``envs.make_vec_env`` with ``--n-envs`` in-process copies (the family's vectorised VecEnv inside VecMonitor
where it has one, else SB3's DummyVecEnv + Monitor: what a rollout pays per env step). Memory Maze is measured as
one env only here, after its maze is built.

``--vectorised``: for each id with a vectorised VecEnv, ``--n-envs`` copies stepped with random actions (auto-resets
included) as SB3's DummyVecEnv over single envs (the path without it) against the vectorised VecEnv, both inside
their episode statistics (Monitor / VecMonitor) as ``envs.make_vec_env`` builds them, side by side: steps per
second of CPU time of this process (robust on a shared machine) and per wall second.
Targets: MiniGrid-MemoryS17Random >= 200,000 steps per CPU second at 64 copies; T-maze >= 50,000 steps/s and
Visual Match >= 5,000 steps/s for one env.

``--memory-maze``: upstream's raw dm_env task (``memory_maze.tasks``, unpatched) against ours (``envs.make_env``,
with ``envs.memory_maze``'s fixes), each cell in a fresh process that imports neither torch nor SB3 (as an env
worker), the two sides alternating: steps per wall second and per CPU second of the process, render threads
included (random actions; resets, every 1000-4000 steps, off the clock; the CPU rate is what an idle core would
give, robust on a shared machine), the peak RSS of
the process (``ru_maxrss``, after three maze builds: old and new models coexist during a rebuild) and the time of a
reset (a new maze). Targets: ours >= 5x upstream's steps/s, <= 0.8 GB per env process.
``--worker-rss``: the RSS of each child of SB3's ``SubprocVecEnv`` against ``envs.subproc.LeanSubprocVecEnv``, per
family, after a reset and 50 steps. ``--train-steps N``: ``run_rl.py train`` on Memory Maze 9x9 with
``configs/memory_maze.yaml`` and 8 subprocess envs for N steps: steps/s (summary.json's fps) and the peak RSS of
each env process and of the learner.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
# This file is named envs.py too: put the repository root first so that `import envs` finds the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import envs  # noqa: E402

CASES = {  # family -> (id, kwargs)
    "tmaze": ("urgate/TMaze-v0", {"length": 100}),
    "minigrid": ("MiniGrid-MemoryS7-v0", {}),
    "visual_match": ("urgate/PassiveVisualMatch-v0", {}),
    "visual_match (active)": ("urgate/ActiveVisualMatch-v0", {}),
    "popgym": ("popgym-RepeatPreviousEasy-v0", {}),
    "memory_maze": ("urgate/MemoryMaze-9x9-v0", {}),
}


def _actions(space, n: int, seed: int) -> list:
    space.seed(seed)
    return [space.sample() for _ in range(n)]


def single_env_rate(env_id: str, kwargs: dict, seconds: float, chunk: int = 256) -> float:
    env = envs.make_env(env_id, seed=0, **kwargs)
    env.reset()
    actions = _actions(env.action_space, 4096, 0)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for action in actions[:chunk]:  # the clock is read once per chunk
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        steps += chunk
        actions = actions[chunk:] + actions[:chunk]
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate


def vec_env_rate(env_id: str, kwargs: dict, n_envs: int, seconds: float) -> float:
    venv = envs.make_vec_env(env_id, n_envs=n_envs, seed=0, **kwargs)
    venv.reset()
    actions = [np.array(_actions(venv.action_space, n_envs, i)) for i in range(64)]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for action in actions:
            venv.step(action)
        steps += len(actions) * n_envs
    rate = steps / (time.perf_counter() - start)
    venv.close()
    return rate


VECTORISED_CASES = {  # label -> (id, kwargs): the ids whose family has a vectorised VecEnv
    "tmaze": ("urgate/TMaze-v0", {"length": 100}),
    "minigrid S7": ("MiniGrid-MemoryS7-v0", {}),
    "minigrid S17Random": ("MiniGrid-MemoryS17Random-v0", {}),
    "passive visual match, cue 15, distractor 60": ("urgate/PassiveVisualMatch-v0", {"distractor_steps": 60}),
    "active visual match, cue 15, distractor 60": ("urgate/ActiveVisualMatch-v0", {"distractor_steps": 60}),
}


def random_action_rate(venv, seconds: float, seed: int = 0) -> tuple[float, float]:
    """Steps of all copies per CPU second of this process and per wall second: ``venv`` stepped with random actions
    (64 batches drawn up front, cycled) for at least ``seconds`` of CPU time after a reset."""
    venv.reset()
    rng = np.random.default_rng(seed)
    actions = [rng.integers(venv.action_space.n, size=venv.num_envs) for _ in range(64)]
    venv.step(actions[0])  # warm-up
    steps, cpu, wall = 0, time.process_time(), time.perf_counter()
    while time.process_time() - cpu < seconds:
        for action in actions:
            venv.step(action)
        steps += len(actions) * venv.num_envs
    return steps / (time.process_time() - cpu), steps / (time.perf_counter() - wall)


def vectorised_table(n_envs: int, seconds: float) -> None:
    """DummyVecEnv over single envs against the vectorised VecEnv, random actions (``random_action_rate``)."""
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    from envs.registry import _Builder

    print()
    print(f"| {n_envs} copies, random actions | steps per CPU s, DummyVecEnv | vectorised | ratio | "
          "steps per wall s, DummyVecEnv | vectorised |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for label, (env_id, kwargs) in VECTORISED_CASES.items():
        dummy = sb3_make_vec_env(_Builder(env_id, kwargs), n_envs=n_envs, seed=0, vec_env_cls=DummyVecEnv)
        vec = envs.make_vec_env(env_id, n_envs=n_envs, seed=0, **kwargs)
        assert not isinstance(vec.unwrapped, DummyVecEnv), f"{env_id} has no vectorised VecEnv here"
        slow_cpu, slow_wall = random_action_rate(dummy, seconds)
        fast_cpu, fast_wall = random_action_rate(vec, seconds)
        print(
            f"| {label} (`{env_id}`) | {slow_cpu:,.0f} | {fast_cpu:,.0f} | {fast_cpu / slow_cpu:.0f}x | "
            f"{slow_wall:,.0f} | {fast_wall:,.0f} |",
            flush=True,
        )
    print(f"\nload average (1 min) after the table: {os.getloadavg()[0]:.1f}")


MAZE_CASES = {  # label -> (size, id suffix)
    "9x9": (9, ""),
    "15x15": (15, ""),
    "9x9-Top": (9, "-Top"),
}
ROOT = Path(__file__).resolve().parents[1]


def maze_cell(side: str, size: int, variant: str, seconds: float) -> dict:
    """One Memory Maze measurement in this process (called in a fresh one by ``memory_maze_table``)."""
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    if side == "upstream":
        from envs.memory_maze import build_task  # imports memory_maze.tasks only; fixed=False is upstream's own task

        env = build_task(size, seed=1, fixed=False, image_only_obs=True, top_camera=variant == "-Top")
        env.reset()

        def step(action):
            return env.step(action).last()

        reset = env.reset
    else:
        env = envs.make_env(f"urgate/MemoryMaze-{size}x{size}{variant}-v0", seed=1)
        env.reset()

        def step(action):
            return any(env.step(action)[2:4])

        reset = env.reset
    build_s = time.perf_counter() - start
    steps, stepping, cpu = 0, 0.0, 0.0
    while stepping < seconds:
        start, cpu_start = time.perf_counter(), time.process_time()
        for action in rng.integers(6, size=16):
            if step(int(action)):
                stepping += time.perf_counter() - start
                cpu += time.process_time() - cpu_start
                reset()  # off the clock: resets are measured below
                start, cpu_start = time.perf_counter(), time.process_time()
        stepping += time.perf_counter() - start
        cpu += time.process_time() - cpu_start
        steps += 16
    start = time.perf_counter()
    for _ in range(2):
        reset()
        step(1)
    reset_s = (time.perf_counter() - start) / 2
    heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "stable_baselines3"})
    return {
        "steps_per_s": steps / stepping,
        "steps_per_cpu_s": steps / cpu,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "build_s": build_s,
        "reset_s": reset_s,
        "heavy": heavy,
    }


def _in_fresh_process(*args: str) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory_maze_table(seconds: float) -> None:
    print()
    print("| Memory Maze | steps/s upstream | steps/s ours | ratio | steps per CPU s upstream | ours | ratio | "
          "peak RSS upstream | peak RSS ours | reset upstream | reset ours |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, (size, variant) in MAZE_CASES.items():
        cells = {}
        for side in ("upstream", "ours") if size == 9 else ("ours", "upstream"):
            args = ("--maze-cell", side, str(size), variant.lstrip("-") or "plain", str(seconds))
            cells[side] = _in_fresh_process(*args)
            assert not cells[side]["heavy"], f"the measuring process imported {cells[side]['heavy']}"
        up, ours = cells["upstream"], cells["ours"]
        print(
            f"| {label} | {up['steps_per_s']:.1f} | {ours['steps_per_s']:.1f} | "
            f"{ours['steps_per_s'] / up['steps_per_s']:.1f}x | {up['steps_per_cpu_s']:.1f} | "
            f"{ours['steps_per_cpu_s']:.1f} | {ours['steps_per_cpu_s'] / up['steps_per_cpu_s']:.1f}x | "
            f"{up['peak_rss_gb']:.2f} GB | {ours['peak_rss_gb']:.2f} GB | {up['reset_s']:.2f} s | {ours['reset_s']:.2f} s |",
            flush=True,
        )
    print(f"\nload average (1 min) after the table: {os.getloadavg()[0]:.1f}")


def _rss_gb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def worker_rss_table() -> None:
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
    from stable_baselines3.common.vec_env import SubprocVecEnv

    from envs.registry import _Builder

    print()
    print("| family | id | RSS per child, SB3 SubprocVecEnv | RSS per child, LeanSubprocVecEnv | saved |")
    print("|---|---|---:|---:|---:|")
    for name, (env_id, kwargs) in CASES.items():
        family = envs.family_of(env_id)
        if name.endswith("(active)") or (
            family.requires is not None and importlib.util.find_spec(family.requires) is None
        ):
            continue
        rss = {}
        for side in ("sb3", "lean"):
            if side == "sb3":
                venv = sb3_make_vec_env(_Builder(env_id, kwargs), n_envs=2, seed=0, vec_env_cls=SubprocVecEnv)
            else:
                venv = envs.make_vec_env(env_id, n_envs=2, seed=0, subprocess=True, **kwargs)
            venv.reset()
            for _ in range(50):
                venv.step(np.array([venv.action_space.sample() for _ in range(2)]))
            rss[side] = np.mean([_rss_gb(p.pid) for p in venv.unwrapped.processes]) * 1024
            venv.close()
        print(
            f"| {name} | `{env_id}` | {rss['sb3']:.0f} MB | {rss['lean']:.0f} MB | {rss['sb3'] - rss['lean']:.0f} MB |",
            flush=True,
        )


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def training_throughput(steps: int, n_envs: int = 8) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable, str(ROOT / "run_rl.py"), "train", "--config", "memory_maze", "--n-envs", str(n_envs),
            "--timesteps", str(steps), "--run-dir", f"{tmp}/run", "--no-progress",
            # no periodic evaluation (it would count in fps), a final one of one episode, no periodic checkpoint
            "--set", "eval.freq=0", "--set", "eval.n_episodes=1", "--set", "eval.n_envs=1",
            "--set", f"checkpoint_freq={10**9}",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        peaks: dict[int, float] = {}
        cpu: dict[int, float] = {}
        loads = []
        while process.poll() is None:
            for pid in [process.pid, *_children(process.pid)]:
                with contextlib.suppress(OSError):  # a process that has just exited
                    peak, cpu_s = _rss_gb(pid, "VmHWM"), _cpu_s(pid)
                    if peak == peak:  # a zombie's status has no memory lines (nan)
                        peaks[pid], cpu[pid] = peak, cpu_s
            loads.append(os.getloadavg()[0])
            time.sleep(1.0)
        if process.returncode != 0:
            raise SystemExit(f"run_rl.py train failed with exit code {process.returncode}")
        summary = json.loads(Path(f"{tmp}/run/summary.json").read_text())
    learner, learner_cpu = peaks.pop(process.pid), cpu.pop(process.pid)
    workers = list(peaks.values())
    print()
    print(f"| training (FastRecurrentPPO, ur, configs/memory_maze.yaml), {n_envs} subprocess envs | |")
    print("|---|---:|")
    print(f"| steps | {summary['timesteps']} |")
    print(f"| steps/s (summary.json fps: learn() only) | {summary['fps']} |")
    print(f"| CPU s per 1,000 steps, learner (whole process: imports, model, final evaluation) | "
          f"{1000 * learner_cpu / summary['timesteps']:.1f} |")  # fmt: skip
    print(f"| CPU s per 1,000 steps, all env processes (builds included) | "
          f"{1000 * sum(cpu.values()) / summary['timesteps']:.1f} |")  # fmt: skip
    print(f"| peak RSS per env process | {min(workers):.2f}-{max(workers):.2f} GB ({len(workers)} processes) |")
    print(f"| peak RSS of the learner | {learner:.2f} GB |")
    print(f"| load average during the run | {min(loads):.1f}-{max(loads):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", default=list(CASES), help=f"subset of {list(CASES)}")
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per cell")
    parser.add_argument("--n-envs", type=int, default=8, help="copies in the vectorised column")
    parser.add_argument("--memory-maze", action="store_true", help="the Memory Maze table: upstream against ours")
    parser.add_argument("--maze-seconds", type=float, default=20.0, help="stepping time per Memory Maze cell")
    parser.add_argument("--worker-rss", action="store_true", help="RSS per subprocess child, SB3's against ours")
    parser.add_argument("--train-steps", type=int, default=0, help="Memory Maze training steps (0: not measured)")
    parser.add_argument("--vectorised", action="store_true", help="DummyVecEnv against the vectorised VecEnvs")
    parser.add_argument("--maze-cell", nargs=4, help=argparse.SUPPRESS)  # side size variant seconds
    args = parser.parse_args()
    if args.maze_cell:
        side, size, variant, seconds = args.maze_cell
        print(json.dumps(maze_cell(side, int(size), "" if variant == "plain" else "-" + variant, float(seconds))))
        return
    unknown = set(args.families) - set(CASES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {list(CASES)}")

    print(
        f"# `{' '.join(['python', *sys.argv])}`  ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    )
    print()
    print(f"| family | id | steps/s, one env | steps/s, {args.n_envs} envs (envs.make_vec_env) |")
    print("|---|---|---:|---:|")
    for name in args.families:
        env_id, kwargs = CASES[name]
        family = envs.family_of(env_id)
        if family.requires is not None and importlib.util.find_spec(family.requires) is None:
            print(f"| {name} | `{env_id}` | not installed ({family.install_hint()}) | |")
            continue
        shown = env_id + "".join(f", {k}={v}" for k, v in kwargs.items())
        slow = family.name == "memory_maze"
        single = single_env_rate(env_id, kwargs, args.seconds * (5 if slow else 1), chunk=4 if slow else 256)
        vec = (
            "n/a (see --memory-maze)"
            if family.name == "memory_maze"
            else f"{vec_env_rate(env_id, kwargs, args.n_envs, args.seconds):,.0f}"
        )
        print(f"| {name} | `{shown}` | {single:,.0f} | {vec} |", flush=True)
    if args.vectorised:
        vectorised_table(args.n_envs, args.seconds)
    if args.memory_maze:
        memory_maze_table(args.maze_seconds)
    if args.worker_rss:
        worker_rss_table()
    if args.train_steps:
        training_throughput(args.train_steps)


if __name__ == "__main__":
    main()
