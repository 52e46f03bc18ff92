"""Scripted Memory Maze runs, recorded step by step, for the identity tests of ``envs.memory_maze``'s fixes.

A run builds one dm_env task with ``envs.memory_maze.build_task`` (upstream's task as it ships, or ours with the
fixes), resets it, and steps it through ``n_steps`` actions, resetting it again (a new maze: an episode boundary)
after each step listed in ``resets`` and whenever an episode ends by itself. It records, at every step, the
observation (the image and, for -ExtraObs, the positions), the physics state ``qpos`` and ``qvel``, and the reward.

The actions are either given, or chosen by a scripted driver that reads the task's own positions and maze layout (so
it needs ``extra_obs``): it follows the shortest path in the grid to the current target and so touches targets. The
reference run drives; the run under test replays the reference's actions, so both see the same action sequence.

Run as a module, it is the separate process of the reference (nothing of the fixes can leak into it):
``python -m tests.memory_maze_runs SPECS.json OUT.npz`` (a JSON list of ``run``'s keywords).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

FORWARD, LEFT, RIGHT, FORWARD_LEFT, FORWARD_RIGHT = 1, 2, 3, 4, 5


def drive(observation: dict) -> int:
    """Steer along the grid's shortest path towards the current target (reads ``agent_pos``, ``agent_dir``,
    ``target_pos`` and ``maze_layout`` of an -ExtraObs observation)."""
    from memory_maze.oracle import breadth_first_search

    position, heading = observation["agent_pos"], observation["agent_dir"]
    start = tuple(int(v) for v in position)
    goal = tuple(int(v) for v in observation["target_pos"])
    path = breadth_first_search(observation["maze_layout"], start, goal) or [start, goal]
    waypoint = np.asarray(path[1] if len(path) > 1 else goal, dtype=float) + 0.5
    wanted = waypoint - position
    angle = np.arctan2(heading[0] * wanted[1] - heading[1] * wanted[0], heading @ wanted)
    if abs(angle) < 0.25:
        return FORWARD
    if abs(angle) < 0.8:
        return FORWARD_LEFT if angle > 0 else FORWARD_RIGHT
    return LEFT if angle > 0 else RIGHT


def run(
    size: int,
    seed: int,
    n_steps: int,
    fixed: bool,
    resets: tuple[int, ...] = (),
    actions: list[int] | None = None,
    top_camera: bool = False,
    extra_obs: bool = False,
) -> dict[str, np.ndarray]:
    """One recorded run (see the module docstring); returns arrays with one row per step.

    :param size: maze size
    :param seed: the task's seed
    :param n_steps: number of steps
    :param fixed: build with ``envs.memory_maze``'s fixes (True) or upstream's task as is (False)
    :param resets: steps after which the task is reset (a new maze)
    :param actions: the actions to take; None drives (needs ``extra_obs``)
    :param top_camera: the -Top variant
    :param extra_obs: the -ExtraObs variant (positions and layout beside the image)
    """
    from envs.memory_maze import build_task

    if actions is None and not extra_obs:
        raise ValueError("the driver reads positions: actions=None needs extra_obs=True")
    env = build_task(
        size, seed, fixed=fixed, image_only_obs=not extra_obs, global_observables=extra_obs, top_camera=top_camera
    )
    observation = env.reset().observation
    record: dict[str, list] = {"action": [], "reward": [], "qpos": [], "qvel": [], "last": []}
    for t in range(n_steps):
        action = drive(observation) if actions is None else int(actions[t])
        timestep = env.step(action)
        observation = timestep.observation
        fields = observation if extra_obs else {"image": observation}
        for key, value in fields.items():
            record.setdefault(f"obs/{key}", []).append(np.array(value))
        physics = env.physics
        record["action"].append(action)
        record["reward"].append(timestep.reward)
        record["qpos"].append(physics.data.qpos.copy())
        record["qvel"].append(physics.data.qvel.copy())
        record["last"].append(timestep.last())
        if timestep.last() or t in resets:
            observation = env.reset().observation
    env.close()
    return {key: np.stack(values) for key, values in record.items()}


def run_in_subprocess(tmp_dir: Path, specs: list[dict]) -> list[dict[str, np.ndarray]]:
    """``[run(**spec) for spec in specs]`` in one fresh Python process; their arrays."""
    spec_file, out_file = tmp_dir / "specs.json", tmp_dir / "runs.npz"
    spec_file.write_text(json.dumps(specs))
    subprocess.run([sys.executable, "-m", "tests.memory_maze_runs", str(spec_file), str(out_file)], check=True)
    with np.load(out_file) as arrays:
        runs: list[dict[str, np.ndarray]] = [{} for _ in specs]
        for name, value in arrays.items():
            index, key = name.split(":", 1)
            runs[int(index)][key] = value
    return runs


if __name__ == "__main__":
    spec_path, out_path = sys.argv[1:]
    results = [run(**spec) for spec in json.loads(Path(spec_path).read_text())]
    np.savez(out_path, **{f"{i}:{key}": value for i, result in enumerate(results) for key, value in result.items()})
