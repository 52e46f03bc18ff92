"""Passive T-maze with a tunable memory length (Bakker 2001; the "passive T-maze" of Ni et al. 2023).

The agent starts at the foot of a corridor of ``length`` cells. Only the first observation shows which arm of the T
holds the goal (+1 up, -1 down). The agent walks forward to the junction and turns; the turn ends the episode with
reward 1 if it picks the cued arm and 0 otherwise. Between the first step and the junction every observation is the
same, so the cue must be carried for ``length`` steps: this is the yardstick for how long a memory core remembers.

Reward design (the choice, and why). The success reward is the only positive reward. By default each step that
does not advance (a turn inside the corridor, forward at the junction) costs ``idle_penalty = 1 / max_steps``, as in
Ni et al.'s passive T-maze: walking forward is then learned from dense feedback within a few thousand steps, so
that the junction is reached early in training and the only thing left to learn is the memory. The penalties of an
episode sum to at most 1, so returns lie in [-1, 1]; an agent that walks straight and guesses earns 0.5 on average,
a perfect one 1. ``idle_penalty=0`` gives the pure "reward only for the correct turn" variant (harder to explore at
large lengths). The episode is truncated after ``max_steps = ceil(time_factor * (length + 1))`` steps
(the shortest solution takes ``length + 1``).

Two implementations of the same dynamics (``_advance``, written once over arrays): ``TMazeEnv``, a gymnasium env,
and ``envs.tmaze_vec.TMazeVecEnv``, an SB3 VecEnv that steps all copies as numpy arrays with DummyVecEnv's auto-reset semantics and,
for the same seeds, the same episodes as DummyVecEnv over ``TMazeEnv``s (``envs.make_vec_env`` returns it).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .cue import CUE_INFO
from .errors import EnvConfigError

ENV_ID = "urgate/TMaze-v0"
FORWARD, UP, DOWN = 0, 1, 2
ACTION_NAMES = ("forward", "up", "down")
CELL, MAX_WIDTH = 16, 640  # rgb_array: pixels per cell, widest picture
GREY, GREEN, BLUE = (110, 110, 110), (40, 200, 60), (50, 110, 255)


def _advance(
    length: int, max_steps: int, idle_penalty: float, position: np.ndarray, steps: np.ndarray, goal_up, action
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One step of every copy: the T-maze's dynamics, written once (arrays of shape (n,)).

    :return: ``(position, steps, reward, terminated, truncated, success)`` after the step
    """
    steps = steps + 1
    at_junction = position == length
    turned = at_junction & (action != FORWARD)  # a turn at the junction ends the episode
    success = turned & ((action == UP) == goal_up)
    advanced = (action == FORWARD) & ~at_junction
    reward = np.where(turned, success, np.where(advanced, 0.0, -idle_penalty)).astype(np.float32)
    truncated = ~turned & (steps >= max_steps)
    return position + advanced, steps, reward, turned, truncated, success


def episode_limit(length: int, time_factor: float) -> int:
    """The step at which an episode of corridor ``length`` is truncated."""
    return math.ceil(time_factor * (length + 1))


def cue_info(goal_up: bool) -> dict[str, int]:
    """The info of an episode's first step: its cue class (``envs.cue``), 0 for the goal up, 1 for down."""
    return {CUE_INFO: 0 if goal_up else 1}


def _observations(cue: np.ndarray, position: np.ndarray, length: int) -> np.ndarray:
    """``[cue, at_junction]`` per copy (float32, shape (n, 2)); pass ``cue`` 0 after the first step."""
    return np.stack([cue, position == length], axis=1).astype(np.float32)


class TMazeEnv(gym.Env):
    """Passive T-maze. Observation ``[cue, at_junction]`` (float32): ``cue`` is +1 (goal up) or -1 (goal down) at the
    first step of an episode and 0 afterwards; ``at_junction`` is 1 at the junction. Actions: 0 forward, 1 up,
    2 down (up/down end the episode at the junction and waste a step in the corridor).

    ``info["is_success"]`` is set on the last step of every episode. A policy without memory succeeds at most half
    of the time. The cue (``envs.cue``): reset's info holds ``info["memory_cue"]`` = 0 (goal up) or 1 (down).

    :param length: corridor length, the number of steps between seeing the cue and reaching the junction (>= 2)
    :param time_factor: episode limit as a multiple of the shortest solution ``length + 1`` (>= 1)
    :param idle_penalty: cost of a step that does not advance; ``None`` means ``1 / max_steps``, 0 disables it
    :param render_mode: ``None``, ``"ansi"`` (a one-line text picture) or ``"rgb_array"`` (a picture of the T: the
        corridor, the agent in blue, the arms at the right end; at an episode's first step the goal arm is green,
        as the cue shows it, and both arms grey afterwards)
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 10}

    def __init__(
        self,
        length: int = 10,
        time_factor: float = 2.0,
        idle_penalty: float | None = None,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2:
            raise EnvConfigError(f"TMaze length must be an integer >= 2, got {length!r}")
        if not time_factor >= 1.0:
            raise EnvConfigError(
                f"TMaze time_factor must be >= 1 (the shortest solution takes length + 1 steps), got {time_factor!r}"
            )
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise EnvConfigError(f"TMaze render_mode must be None, 'ansi' or 'rgb_array', got {render_mode!r}")
        self.length, self.time_factor = int(length), float(time_factor)
        self.max_steps = episode_limit(self.length, self.time_factor)
        self.idle_penalty = 1.0 / self.max_steps if idle_penalty is None else float(idle_penalty)
        if self.idle_penalty < 0:
            raise EnvConfigError(f"TMaze idle_penalty must be >= 0 (it is subtracted), got {idle_penalty!r}")
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Discrete(3)
        self.goal_up = True
        self.position = 0
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.goal_up = bool(self.np_random.integers(2))
        self.position = 0
        self.steps = 0
        obs = _observations(np.array([1.0 if self.goal_up else -1.0]), np.zeros(1), self.length)[0]
        return obs, cue_info(self.goal_up)

    def step(self, action):
        position, steps, reward, terminated, truncated, success = _advance(
            self.length,
            self.max_steps,
            self.idle_penalty,
            np.array([self.position]),
            np.array([self.steps]),
            self.goal_up,
            np.array([int(action)]),
        )
        self.position, self.steps = int(position[0]), int(steps[0])
        obs = _observations(np.zeros(1), position, self.length)[0]
        info = {"is_success": bool(success[0])} if terminated[0] or truncated[0] else {}
        return obs, float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def render(self) -> str | np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self._picture()
        if self.render_mode != "ansi":
            return None
        corridor = ["."] * (self.length + 1)
        corridor[self.position] = "A"
        goal = "up" if self.goal_up else "down"
        return f"{''.join(corridor)}|  goal {goal}, step {self.steps}/{self.max_steps}"

    def _picture(self) -> np.ndarray:
        """(3 * CELL, width, 3) uint8: row 1 is the corridor, rows 0 and 2 the arms above and below its last cell.

        Cells are ``CELL`` pixels wide up to ``MAX_WIDTH``; a longer corridor is squeezed (each pixel column shows
        the cell under it) but keeps the agent and the arms visible.
        """
        cells = self.length + 1
        width = min(cells * CELL, MAX_WIDTH)
        row = np.zeros((3, width, 3), dtype=np.uint8)
        row[1] = GREY
        row[[0, 2], -max(1, width // cells) :] = GREY
        if self.steps == 0:  # the cue: the goal arm, shown at the first step only
            row[0 if self.goal_up else 2, -max(1, width // cells) :] = GREEN
        first, last = self.position * width // cells, (self.position + 1) * width // cells
        row[1, first : max(last, first + 1)] = BLUE
        picture = np.repeat(row, CELL, axis=0)
        if width == cells * CELL:
            picture[:, ::CELL] //= 2  # cell borders, where cells are wide enough to show them
        return picture


def make_tmaze(env_id: str, render_mode: str | None = None, **env_kwargs) -> TMazeEnv:
    """Family builder for ``urgate/TMaze-v0``.

    :param env_kwargs: ``TMazeEnv``'s keywords (its signature is the one list of them and of their defaults; the
        registry checks them against it)
    """
    return TMazeEnv(render_mode=render_mode, **env_kwargs)
