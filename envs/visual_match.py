"""Passive and Active Visual Match (Hung et al. 2018, the RL tasks of Gu et al. 2020) as fast symbolic grid worlds.

An episode has three phases, each in its own room (the agent is moved between rooms when a phase ends):

1. Cue (``cue_steps``, default 15). *Passive*: a small room; the agent starts facing a box whose colour is the cue,
   so the cue is in view at the first step whatever the agent does. *Active*: a room of two 3x3 parts joined by a
   doorway; the cue box sits at a random cell and walls hide it, so the agent must go and look.
2. Distractor (``distractor_steps``, default 90): a 9x5 room with apples (green balls, ``apple_reward`` = 1 each,
   eaten by walking onto them) that reappear ``apple_respawn`` = 20 steps after being eaten.
3. Choice (at most ``choice_steps``, default 15): ``n_colours`` = 3 boxes in a row, one of each colour in random
   order. Walking into a box ends the episode: ``final_reward`` = 10 if its colour matches the cue, else 0. No choice
   in time also ends it (a failure). ``info["is_success"]`` is set on the last step.

These defaults are those of the published grid-world versions. Observations are MiniGrid's:
``Dict(image: 7x7x3 symbolic egocentric view, direction: Discrete(4))`` (``envs.gridview``); actions 0 left, 1 right,
2 forward. Without memory of the cue the choice is a guess: success rate at most ``1 / n_colours``.

What an LSTM is expected to struggle with: the only information that matters (one colour, seen in the first few
steps) must survive 90+ steps of observations that vary a lot and carry rewards of their own. The apple rewards
make the returns of the first two phases noisy, so the value of remembering (10 points, 100+ steps after the cue,
discounted by gamma**105 ~ 0.35 at gamma = 0.99) is a small signal to assign back through the whole distractor
phase. An LSTM's forget gates start with timescales of a few steps, so its gradient to the cue vanishes unless
some units keep forget gates near 1 for ~100 steps; that is where chrono, UGI and the refine gate should help. The
active task adds exploration: finding the cue pays off only at the end, so a weak memory gives no reason to look.
Shorten ``distractor_steps`` (``memory_kwarg``) to make the tasks easier.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

from .errors import EnvConfigError
from .gridview import DIR_TO_VEC, EMPTY, PAD, WALL, egocentric_view, pad_room
from .wrappers import symbolic_image_space

PASSIVE_ID, ACTIVE_ID = "urgate/PassiveVisualMatch-v0", "urgate/ActiveVisualMatch-v0"
IDS = (PASSIVE_ID, ACTIVE_ID)
LEFT, RIGHT, FORWARD = 0, 1, 2
CUE, DISTRACTOR, CHOICE = 0, 1, 2
PALETTE = ("red", "blue", "purple", "yellow", "grey", "green")  # cue colours, in order of use
BOX, BALL = OBJECT_TO_IDX["box"], OBJECT_TO_IDX["ball"]
APPLE = np.array([BALL, COLOR_TO_IDX["green"], 0], dtype=np.uint8)
DISTRACTOR_SIZE = (9, 5)  # interior width x height


def _room(width: int, height: int) -> np.ndarray:
    """An empty room of the given interior size inside a one-cell wall, as an (W + 2, H + 2, 3) encoding."""
    room = np.empty((width + 2, height + 2, 3), dtype=np.uint8)
    room[:] = WALL
    room[1:-1, 1:-1] = EMPTY
    return room


def _box(colour: str) -> np.ndarray:
    return np.array([BOX, COLOR_TO_IDX[colour], 0], dtype=np.uint8)


class VisualMatchEnv(gym.Env):
    """Passive or Active Visual Match on a symbolic grid (see the module docstring for the task).

    :param active: the cue is hidden in a two-part room (Active Visual Match) instead of shown (Passive)
    :param distractor_steps: length of the distractor phase, the memory delay (>= 0)
    :param cue_steps: length of the cue phase (>= 1)
    :param choice_steps: time allowed for the choice (>= 1; the farthest box takes ``n_colours + 3`` steps)
    :param n_colours: number of colours to choose from (2 to 6)
    :param n_apples: apples in the distractor room (0 to 44)
    :param apple_reward: reward per apple
    :param apple_respawn: steps before an eaten apple reappears
    :param final_reward: reward for the matching colour
    :param render_mode: ``None`` or ``"rgb_array"`` (the current room drawn by MiniGrid's renderer)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        active: bool = False,
        distractor_steps: int = 90,
        cue_steps: int = 15,
        choice_steps: int = 15,
        n_colours: int = 3,
        n_apples: int = 10,
        apple_reward: float = 1.0,
        apple_respawn: int = 20,
        final_reward: float = 10.0,
        render_mode: str | None = None,
    ) -> None:
        checks = {
            "distractor_steps": (distractor_steps, 0, None),
            "cue_steps": (cue_steps, 1, None),
            "choice_steps": (choice_steps, 1, None),
            "n_colours": (n_colours, 2, len(PALETTE)),
            "n_apples": (n_apples, 0, DISTRACTOR_SIZE[0] * DISTRACTOR_SIZE[1] - 1),
            "apple_respawn": (apple_respawn, 1, None),
        }
        for name, (value, low, high) in checks.items():
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or value < low
                or (high is not None and value > high)
            ):
                bounds = f"{low}..{high}" if high is not None else f">= {low}"
                raise EnvConfigError(f"VisualMatch {name} must be an integer {bounds}, got {value!r}")
        if render_mode not in (None, "rgb_array"):
            raise EnvConfigError(f"VisualMatch render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.active = bool(active)
        self.phase_steps = (int(cue_steps), int(distractor_steps), int(choice_steps))
        self.n_colours, self.n_apples = int(n_colours), int(n_apples)
        self.apple_reward, self.apple_respawn, self.final_reward = (
            float(apple_reward),
            int(apple_respawn),
            float(final_reward),
        )
        self.render_mode = render_mode
        self.colours = PALETTE[: self.n_colours]
        self.observation_space = spaces.Dict({"image": symbolic_image_space(), "direction": spaces.Discrete(4)})
        self.action_space = spaces.Discrete(3)
        # State, set by reset(); public so that oracles and tests can read the truth.
        self.phase = CUE
        self.phase_t = 0  # steps taken in the current phase
        self.cue_colour = 0  # index into self.colours
        self.cue_pos = (0, 0)
        self.choice_order: list[int] = []  # colour index of each box, left to right
        self.pos = (1, 1)
        self.dir = 3
        self.room = _room(1, 1)
        self._padded = pad_room(self.room)
        self._respawns: list[tuple[int, int, int]] = []  # (due step, x, y)

    # -- rooms ---------------------------------------------------------------------------------------------------

    def _enter(self, phase: int) -> None:
        self.phase, self.phase_t = phase, 0
        rng = self.np_random
        if phase == CUE and not self.active:
            self.room = _room(3, 3)
            self.cue_pos, self.pos, self.dir = (2, 1), (2, 3), 3
            self.room[self.cue_pos] = _box(self.colours[self.cue_colour])
        elif phase == CUE:
            # Two 3x3 parts, x 1..3 and 5..7, joined by a doorway at (4, 2).
            self.room = _room(7, 3)
            self.room[4, 1] = self.room[4, 3] = WALL
            cells = [(x, y) for x in (1, 2, 3, 5, 6, 7) for y in (1, 2, 3)]
            start, cue = rng.choice(len(cells) // 2), rng.choice(len(cells) - 1)
            self.pos = cells[start]
            self.cue_pos = [c for i, c in enumerate(cells) if i != start][cue]
            self.dir = int(rng.integers(4))
            self.room[self.cue_pos] = _box(self.colours[self.cue_colour])
        elif phase == DISTRACTOR:
            width, height = DISTRACTOR_SIZE
            self.room = _room(width, height)
            cells = rng.permutation(width * height)[: self.n_apples + 1]
            self.pos = (int(cells[0] % width) + 1, int(cells[0] // width) + 1)
            for c in cells[1:]:
                self.room[int(c % width) + 1, int(c // width) + 1] = APPLE
            self.dir = int(rng.integers(4))
            self._respawns = []
        else:
            self.room = _room(2 * self.n_colours - 1, 3)
            self.choice_order = [int(c) for c in rng.permutation(self.n_colours)]
            for k, c in enumerate(self.choice_order):
                self.room[1 + 2 * k, 1] = _box(self.colours[c])
            self.pos, self.dir = (self.n_colours, 3), 3
        self._padded = pad_room(self.room)

    def _set(self, x: int, y: int, cell: np.ndarray) -> None:
        self.room[x, y] = cell
        self._padded[x + PAD, y + PAD] = cell

    def _obs(self) -> dict[str, Any]:
        return {"image": egocentric_view(self._padded, self.pos[0], self.pos[1], self.dir), "direction": self.dir}

    # -- gymnasium API -------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.cue_colour = int(self.np_random.integers(self.n_colours))
        self._enter(CUE)
        return self._obs(), {}

    def step(self, action):
        action = int(action)
        reward, terminated, info = 0.0, False, {}
        if action == LEFT:
            self.dir = (self.dir - 1) % 4
        elif action == RIGHT:
            self.dir = (self.dir + 1) % 4
        else:
            dx, dy = DIR_TO_VEC[self.dir]
            x, y = self.pos[0] + dx, self.pos[1] + dy
            obj = self.room[x, y, 0]
            if obj == EMPTY[0]:
                self.pos = (x, y)
            elif obj == BALL and self.phase == DISTRACTOR:
                self.pos = (x, y)
                self._set(x, y, EMPTY)
                self._respawns.append((self.phase_t + self.apple_respawn, x, y))
                reward = self.apple_reward
            elif obj == BOX and self.phase == CHOICE:
                chosen = self.choice_order[(x - 1) // 2]
                success = chosen == self.cue_colour
                reward, terminated = (self.final_reward if success else 0.0), True
                info = {"is_success": success, "choice": chosen}
        self.phase_t += 1
        if self.phase == DISTRACTOR and self._respawns:
            self._respawn()
        if not terminated and self.phase_t >= self.phase_steps[self.phase]:
            if self.phase == CHOICE:
                terminated, info = True, {"is_success": False, "choice": None}
            else:
                self._enter(self.phase + 1)
                while self.phase_steps[self.phase] == 0:  # distractor_steps=0: straight to the choice
                    self._enter(self.phase + 1)
        return self._obs(), reward, terminated, False, info

    def _respawn(self) -> None:
        pending = []
        for due, x, y in self._respawns:
            if due <= self.phase_t and (x, y) != self.pos:
                self._set(x, y, APPLE)
            else:
                pending.append((due, x, y))
        self._respawns = pending

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        from minigrid.core.grid import Grid

        grid, _ = Grid.decode(self.room)
        return grid.render(tile_size=16, agent_pos=self.pos, agent_dir=self.dir)


def make_visual_match(env_id: str, render_mode: str | None = None, **env_kwargs) -> VisualMatchEnv:
    """Family builder for ``urgate/PassiveVisualMatch-v0`` and ``urgate/ActiveVisualMatch-v0``.

    :param env_kwargs: ``VisualMatchEnv``'s keywords but ``active``, which the id sets (its signature is the one
        list of them and of their defaults; the registry checks them against it)
    """
    return VisualMatchEnv(active=env_id == ACTIVE_ID, render_mode=render_mode, **env_kwargs)
