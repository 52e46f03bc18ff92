"""Scripted policies for tests and baselines: oracles that peek at the true state (and must always succeed), and
memoryless policies that decide from the current observation only (and cannot beat the memoryless ceiling).

Each policy is called as ``policy(env, obs) -> action`` on an env from ``make_env`` (wrappers are looked through).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import gymnasium as gym
import numpy as np
from minigrid.core.constants import OBJECT_TO_IDX

from .gridview import DIR_TO_VEC
from .tmaze import DOWN, FORWARD, UP
from .visual_match import BALL, CHOICE, VisualMatchEnv

LEFT, RIGHT, GRID_FORWARD = 0, 1, 2  # MiniGrid's and Visual Match's actions
_WALKABLE = (OBJECT_TO_IDX["empty"], OBJECT_TO_IDX["floor"], OBJECT_TO_IDX["goal"], BALL)

Pose = tuple[int, int, int]


def plan(room: np.ndarray, pos: tuple[int, int], direction: int, done: Callable[[Pose], bool]) -> list[int]:
    """Shortest sequence of left/right/forward actions from a pose to one where ``done(x, y, dir)`` holds.

    :param room: (W, H, 3) cell encodings; cells whose object is empty, floor, goal or ball can be entered
    :param pos: start cell
    :param direction: start direction (0 right, 1 down, 2 left, 3 up)
    :param done: goal test on poses
    """
    start = (int(pos[0]), int(pos[1]), int(direction))
    parents: dict[Pose, tuple[Pose, int] | None] = {start: None}
    queue = deque([start])
    while queue:
        pose = queue.popleft()
        if done(pose):
            actions = []
            while parents[pose] is not None:
                pose, action = parents[pose]  # type: ignore[misc]
                actions.append(action)
            return actions[::-1]
        x, y, d = pose
        dx, dy = DIR_TO_VEC[d]
        moves = [((x, y, (d - 1) % 4), LEFT), ((x, y, (d + 1) % 4), RIGHT)]
        if room[x + dx, y + dy, 0] in _WALKABLE:
            moves.append(((x + dx, y + dy, d), GRID_FORWARD))
        for nxt, action in moves:
            if nxt not in parents:
                parents[nxt] = (pose, action)
                queue.append(nxt)
    raise RuntimeError(f"no path from {start}")  # a bug in a layout, not a user error


def facing(target: tuple[int, int]) -> Callable[[Pose], bool]:
    """Goal test for ``plan``: the pose faces ``target`` (the next forward step walks into it)."""
    return lambda p: (p[0] + DIR_TO_VEC[p[2]][0], p[1] + DIR_TO_VEC[p[2]][1]) == tuple(target)


# -- T-maze ------------------------------------------------------------------------------------------------------


def tmaze_oracle(env: gym.Env, obs) -> int:
    """Walk to the junction and turn to the goal (read from the env, not remembered)."""
    maze = env.unwrapped
    if maze.position < maze.length:
        return FORWARD
    return UP if maze.goal_up else DOWN


def tmaze_memoryless(env: gym.Env, obs) -> int:
    """Walk forward until the observation says junction, then always turn up: right half of the time."""
    return UP if obs[1] > 0.5 else FORWARD


# -- Visual Match --------------------------------------------------------------------------------------------------


def _choose(env: VisualMatchEnv, colour: int) -> int:
    box = (1 + 2 * env.choice_order.index(colour), 1)
    actions = plan(env.room, env.pos, env.dir, facing(box))
    return actions[0] if actions else GRID_FORWARD


def visual_match_oracle(env: gym.Env, obs) -> int:
    """Turn in place until the choice, then walk into the box of the cue's colour (read from the env)."""
    task: VisualMatchEnv = env.unwrapped
    return _choose(task, task.cue_colour) if task.phase == CHOICE else LEFT


def visual_match_memoryless(env: gym.Env, obs) -> int:
    """At the choice, walk into the box of one fixed colour (what the current view shows suffices to find it); the
    cue is never used, so it succeeds with probability ``1 / n_colours``."""
    task: VisualMatchEnv = env.unwrapped
    return _choose(task, 0) if task.phase == CHOICE else LEFT


# -- MiniGrid Memory ---------------------------------------------------------------------------------------------


def minigrid_memory_oracle(env: gym.Env, obs) -> int:
    """Walk to the end of the hallway next to the matching object (``success_pos``, read from the env)."""
    task = env.unwrapped
    goal = tuple(task.success_pos)
    actions = plan(task.grid.encode(), task.agent_pos, task.agent_dir, lambda p: (p[0], p[1]) == goal)
    return actions[0]


ORACLES: dict[str, Callable] = {
    "urgate/TMaze-v0": tmaze_oracle,
    "urgate/PassiveVisualMatch-v0": visual_match_oracle,
    "urgate/ActiveVisualMatch-v0": visual_match_oracle,
}
MEMORYLESS: dict[str, Callable] = {
    "urgate/TMaze-v0": tmaze_memoryless,
    "urgate/PassiveVisualMatch-v0": visual_match_memoryless,
    "urgate/ActiveVisualMatch-v0": visual_match_memoryless,
}


def run_episodes(env: gym.Env, policy: Callable, n_episodes: int) -> list[dict]:
    """Play ``n_episodes`` with a scripted policy; return each episode's final info plus ``"return"`` and
    ``"length"``."""
    results = []
    for _ in range(n_episodes):
        obs, _ = env.reset()
        total, steps, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(env, obs))
            total, steps, done = total + reward, steps + 1, terminated or truncated
        results.append({**info, "return": total, "length": steps})
    return results
