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
The cue (``envs.cue``): ``info["memory_cue"]`` = the cue colour's index (``cue_colour``) on every step, reset
included, whose observation shows the cue box (in the cue room, the only box).

What an LSTM is expected to struggle with: the only information that matters (one colour, seen in the first few
steps) must survive 90+ steps of observations that vary a lot and carry rewards of their own. The apple rewards
make the returns of the first two phases noisy, so the value of remembering (10 points, 100+ steps after the cue,
discounted by gamma**105 ~ 0.35 at gamma = 0.99) is a small signal to assign back through the whole distractor
phase. An LSTM's forget gates start with timescales of a few steps, so its gradient to the cue vanishes unless
some units keep forget gates near 1 for ~100 steps; that is where chrono, UGI and the refine gate should help. The
active task adds exploration: finding the cue pays off only at the end, so a weak memory gives no reason to look.
Shorten ``distractor_steps`` (``memory_kwarg``) to make the tasks easier.

One definition of the rules, ``Copies`` (the state of n copies, stepped as numpy arrays; rooms drawn per copy when
a phase begins), serves two front ends: ``VisualMatchEnv``, a gymnasium env (one copy; it renders), and
``envs.visual_match_vec.VisualMatchVecEnv``, an SB3 VecEnv over many copies with DummyVecEnv's auto-reset semantics
and, for the same seeds, the same episodes as DummyVecEnv over ``VisualMatchEnv``s (``envs.make_vec_env`` returns
it). Episodes last at most ``max_steps = cue_steps + distractor_steps + choice_steps`` steps, which
``ppo.n_steps: auto`` reads.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

from .cue import CUE_INFO
from .errors import EnvConfigError
from .gridview import DIR_TO_VEC, EMPTY, PAD, WALL, egocentric_views
from .wrappers import symbolic_image_space

PASSIVE_ID, ACTIVE_ID = "urgate/PassiveVisualMatch-v0", "urgate/ActiveVisualMatch-v0"
IDS = (PASSIVE_ID, ACTIVE_ID)
LEFT, RIGHT, FORWARD = 0, 1, 2
CUE, DISTRACTOR, CHOICE = 0, 1, 2
PALETTE = ("red", "blue", "purple", "yellow", "grey", "green")  # cue colours, in order of use
BOX, BALL = OBJECT_TO_IDX["box"], OBJECT_TO_IDX["ball"]
APPLE = np.array([BALL, COLOR_TO_IDX["green"], 0], dtype=np.uint8)
DISTRACTOR_SIZE = (9, 5)  # interior width x height


NO_RESPAWN = np.iinfo(np.int64).max
# Every room, whatever its phase, lies at (PAD, PAD) of one canvas of this size, walls elsewhere: a canvas is a padded
# room (``envs.gridview.pad_room``) for the largest room, so the view sees the same cells in it.
CANVAS = (2 * len(PALETTE) + 1 + 2 * PAD, DISTRACTOR_SIZE[1] + 2 + 2 * PAD)
_CELLS = CANVAS[0] * CANVAS[1]  # a cell of a canvas is numbered x * CANVAS[1] + y (canvas coordinates)
# Direction after each (direction, action), and the step in cell numbers that each (direction, action) tries.
_TURNED = np.array([[(d - 1) % 4, (d + 1) % 4, d] for d in range(4)])
_TRIED = np.array([[0, 0, dx * CANVAS[1] + dy] for dx, dy in DIR_TO_VEC])
# What walking into each (object, phase) does; the agent's own cell is always empty, so turning "walks" in place.
BLOCKED, CHOOSES, WALKS, EATS = 0, 1, 2, 3  # WALKS and above: the agent moves
_MEETS = np.full((256, 3), BLOCKED, dtype=np.int8)
_MEETS[EMPTY[0], :] = WALKS
_MEETS[BALL, DISTRACTOR] = EATS  # apples are eaten by walking onto them
_MEETS[BOX, CHOICE] = CHOOSES  # walking into a box makes the choice; the cue box is only looked at
# The distractor room's interior cells (where apples can be), in the order of ``Copies.due``, and the reverse map.
_INTERIOR = np.array(
    [(x + 1 + PAD) * CANVAS[1] + y + 1 + PAD for y in range(DISTRACTOR_SIZE[1]) for x in range(DISTRACTOR_SIZE[0])]
)
_INTERIOR_INDEX = np.full(_CELLS, -1)
_INTERIOR_INDEX[_INTERIOR] = np.arange(_INTERIOR.size)
_BOX_COLUMN = (np.arange(_CELLS) // CANVAS[1] - PAD - 1) // 2  # choice room: box k lies at x = 1 + 2k


def _room(width: int, height: int) -> np.ndarray:
    """An empty room of the given interior size inside a one-cell wall, as an (W + 2, H + 2, 3) encoding."""
    room = np.empty((width + 2, height + 2, 3), dtype=np.uint8)
    room[:] = WALL
    room[1:-1, 1:-1] = EMPTY
    return room


def _box(colour: str) -> np.ndarray:
    return np.array([BOX, COLOR_TO_IDX[colour], 0], dtype=np.uint8)


def _canvas(room: np.ndarray) -> np.ndarray:
    """``room`` at (PAD, PAD) of a wall canvas of shape ``CANVAS``."""
    canvas = np.empty((*CANVAS, 3), dtype=np.uint8)
    canvas[:] = WALL
    canvas[PAD : PAD + room.shape[0], PAD : PAD + room.shape[1]] = room
    return canvas


def _cell(x: int, y: int) -> int:
    """The canvas cell of room coordinates (x, y)."""
    return (x + PAD) * CANVAS[1] + y + PAD


_BOX_CELLS = np.array([_cell(1 + 2 * k, 1) for k in range(len(PALETTE))])  # the choice room's boxes


def _active_cue_room() -> np.ndarray:
    """Two 3x3 parts, x 1..3 and 5..7, joined by a doorway at (4, 2)."""
    room = _room(7, 3)
    room[4, 1] = room[4, 3] = WALL
    return room


_ACTIVE_CELLS = [(x, y) for x in (1, 2, 3, 5, 6, 7) for y in (1, 2, 3)]  # where the agent and the cue may be


# The per-copy arrays of ``Copies`` (the state a snapshot holds besides the clock and the generators).
_STATE = ("canvas", "cell", "dir", "phase", "cue_colour", "cue_pos", "choice_order", "entered", "phase_end", "due")


def _views(canvas: np.ndarray, cell: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``egocentric_views`` of agents at canvas cells ``cell``."""
    x, y = np.divmod(cell, CANVAS[1])
    return egocentric_views(canvas, x - PAD, y - PAD, direction)


class Copies:
    """The state of ``n`` copies of one Visual Match task and its rules, written once over arrays: ``step`` moves
    every copy (turns, walls, apples eaten and respawned, the choice, phase ends) with numpy operations over all
    copies, ``view`` gives their egocentric views, and a new room is drawn per copy (``enter``, from copy ``i``'s
    generator ``rngs[i]``; once per phase). ``VisualMatchEnv`` is one copy; ``envs.visual_match_vec`` steps many.

    Copy ``i``'s room lies at (PAD, PAD) of ``canvas[i]``, a wall canvas of shape ``CANVAS``; the agent stands at
    canvas cell ``cell[i]`` (``x * CANVAS[1] + y`` in canvas coordinates). Times are counted in steps of all copies
    together (``clock``), so that phase ends and apple respawns are one comparison each.

    :param task: the env whose settings (phase lengths, colours, apples, rewards) the copies follow
    :param n: number of copies
    """

    def __init__(self, task: VisualMatchEnv, n: int) -> None:
        self.task, self.n = task, n
        # Copy i's room is canvas[i] = _slots[i]; slots n.. hold the last rooms of finished episodes (``restart``).
        self._slots = np.empty((2 * n, *CANVAS, 3), dtype=np.uint8)
        self._slots[:] = WALL
        self.canvas = self._slots[:n]
        self._flat = self.canvas.reshape(n * _CELLS, 3)  # the same memory, one row per cell of every copy
        self._first = np.arange(n) * _CELLS  # copy i's cells start at row _first[i] of _flat
        self.cell = np.full(n, _cell(1, 1), dtype=np.int64)
        self.dir = np.full(n, 3, dtype=np.int64)
        self.phase = np.zeros(n, dtype=np.int64)
        self.cue_colour = np.zeros(n, dtype=np.int64)  # index into task.colours
        self.cue_pos = np.zeros((n, 2), dtype=np.int64)
        self.choice_order = np.zeros((n, task.n_colours), dtype=np.int64)  # colour of each box, left to right
        self.clock = 0  # steps taken by every copy
        self.entered = np.zeros(n, dtype=np.int64)  # clock when each copy entered its room
        self.phase_end = np.zeros(n, dtype=np.int64)  # clock at which its phase is over
        # Clock at which each eaten apple of the distractor room reappears, per copy and interior cell (_INTERIOR).
        self.due = np.full((n, _INTERIOR.size), NO_RESPAWN, dtype=np.int64)
        self._next_due = NO_RESPAWN  # the earliest of them
        self.rngs: list[np.random.Generator | None] = [None] * n
        self._boxes = np.array([_box(c) for c in task.colours])
        self._templates = {
            CUE: _canvas(_active_cue_room() if task.active else _room(3, 3)),
            DISTRACTOR: _canvas(_room(*DISTRACTOR_SIZE)),
            CHOICE: _canvas(_room(2 * task.n_colours - 1, 3)),
        }

    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot of everything that decides what the copies do next, generators included."""
        state = {name: getattr(self, name).copy() for name in _STATE}
        state.update(clock=self.clock, next_due=self._next_due, rngs=copy.deepcopy(self.rngs))
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a ``get_state`` snapshot of copies of the same task and number."""
        for name in _STATE:
            if state[name].shape != getattr(self, name).shape:
                raise ValueError(f"state of other Visual Match copies: {name} has shape {state[name].shape}")
        self.canvas[:] = state["canvas"]  # in place: _flat is a view of it
        for name in _STATE[1:]:
            setattr(self, name, state[name].copy())
        self.clock, self._next_due, self.rngs = state["clock"], state["next_due"], copy.deepcopy(state["rngs"])

    @property
    def phase_t(self) -> np.ndarray:
        """Steps taken in the current phase, per copy."""
        return self.clock - self.entered

    @property
    def x(self) -> np.ndarray:
        """Room coordinates of the agents."""
        return self.cell // CANVAS[1] - PAD

    @property
    def y(self) -> np.ndarray:
        return self.cell % CANVAS[1] - PAD

    # -- episode generation, per copy ------------------------------------------------------------------------

    def new_episode(self, i: int) -> None:
        """Start copy ``i``'s next episode: draw the cue colour and enter the cue room."""
        self.cue_colour[i] = self.rngs[i].integers(self.task.n_colours)
        self.enter(i, CUE)

    def enter(self, i: int, phase: int) -> None:
        """Move copy ``i`` into the room of ``phase``, drawn from its generator."""
        task, rng, canvas = self.task, self.rngs[i], self.canvas[i]
        self.phase[i], self.entered[i] = phase, self.clock
        self.phase_end[i] = self.clock + task.phase_steps[phase]
        self.due[i] = NO_RESPAWN
        canvas[:] = self._templates[phase]
        if phase == CUE:
            if task.active:
                # integers(k) draws what choice(k) would, at a fifth of the cost
                start, cue = rng.integers(len(_ACTIVE_CELLS) // 2), rng.integers(len(_ACTIVE_CELLS) - 1)
                (x, y), cue_pos = _ACTIVE_CELLS[start], _ACTIVE_CELLS[cue + (cue >= start)]
                direction = int(rng.integers(4))
            else:
                (x, y), cue_pos, direction = (2, 3), (2, 1), 3
            self.cue_pos[i] = cue_pos
            canvas[cue_pos[0] + PAD, cue_pos[1] + PAD] = self._boxes[self.cue_colour[i]]
            cell = _cell(x, y)
        elif phase == DISTRACTOR:
            # Interior cell k = y * width + x (from 0), _INTERIOR's order: the agent's, then the apples'.
            cells = _INTERIOR[rng.permutation(_INTERIOR.size)[: task.n_apples + 1]]
            cell = cells[0]
            self._flat[self._first[i] + cells[1:]] = APPLE
            direction = int(rng.integers(4))
        else:
            order = rng.permutation(task.n_colours)
            self.choice_order[i] = order
            self._flat[self._first[i] + _BOX_CELLS[: task.n_colours]] = self._boxes[order]  # box k at (1 + 2k, 1)
            cell, direction = _cell(task.n_colours, 3), 3
        self.cell[i], self.dir[i] = cell, direction

    # -- the rules, over arrays --------------------------------------------------------------------------------

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One step of every copy (``action``: int array of shape (n,)); copies whose phase ends enter the next room.

        :return: ``(reward, terminated, success, choice)``: float32 rewards; whether the episode ended (a box
            walked into, or the choice phase over); whether the matching box was chosen; the chosen colour, -1 where
            none was
        """
        task = self.task
        self.clock += 1
        self.dir = _TURNED[self.dir, action]
        target = self.cell + _TRIED[self.dir, action]
        meets = _MEETS[self._flat[self._first + target, 0], self.phase]
        self.cell = np.where(meets >= WALKS, target, self.cell)
        reward = np.zeros(self.n, dtype=np.float32)
        eat = meets == EATS
        if eat.any():
            e = np.flatnonzero(eat)
            self._flat[self._first[e] + target[e]] = EMPTY
            self.due[e, _INTERIOR_INDEX[target[e]]] = due = self.clock - 1 + task.apple_respawn
            self._next_due = min(self._next_due, due)
            reward[e] = task.apple_reward
        if self._next_due <= self.clock:
            self._respawn()
        chose = meets == CHOOSES
        choice = np.full(self.n, -1, dtype=np.int64)
        success = np.zeros(self.n, dtype=bool)
        if chose.any():
            c = np.flatnonzero(chose)
            choice[c] = self.choice_order[c, _BOX_COLUMN[target[c]]]
            success[c] = choice[c] == self.cue_colour[c]
            reward[c] = np.where(success[c], task.final_reward, 0.0)
        ends = (self.phase_end <= self.clock) & ~chose
        timeout = ends & (self.phase == CHOICE)
        if ends.any():
            for i in np.flatnonzero(ends & ~timeout).tolist():
                self.enter(i, self.phase[i] + 1)
                while task.phase_steps[self.phase[i]] == 0:  # distractor_steps=0: straight to the choice
                    self.enter(i, self.phase[i] + 1)
        return reward, chose | timeout, success, choice

    def _respawn(self) -> None:
        """Eaten apples whose time has come reappear, except under the agent (``due`` is set in distractor rooms
        only, and cleared when a room is entered)."""
        i, k = np.divmod(np.flatnonzero(self.due <= self.clock), _INTERIOR.size)
        free = _INTERIOR[k] != self.cell[i]
        i, k = i[free], k[free]
        self._flat[self._first[i] + _INTERIOR[k]] = APPLE
        self.due[i, k] = NO_RESPAWN
        self._next_due = int(self.due.min())

    def cue_shown(self, views: np.ndarray) -> np.ndarray:
        """Whether each copy's view (``views``, of every copy) shows the cue: a box in view in the cue room."""
        shown = self.phase == CUE
        in_cue = np.flatnonzero(shown)
        if in_cue.size:
            shown[in_cue] = (views[in_cue, :, :, 0] == BOX).any(axis=(1, 2))
        return shown

    def view(self) -> np.ndarray:
        """The egocentric 7x7x3 views of every copy, shape (n, 7, 7, 3)."""
        return _views(self.canvas, self.cell, self.dir)

    def restart(self, finished: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start the next episode of copies ``finished`` (indices); return the views of every copy afterwards and
        the last views of the finished episodes, computed together in one call of the view.

        :return: ``(views, last_views)``, shapes (n, 7, 7, 3) and (len(finished), 7, 7, 3)
        """
        n, k = self.n, finished.size
        self._slots[n : n + k] = self.canvas[finished]
        last_cell, last_dir = self.cell[finished], self.dir[finished]
        for i in finished.tolist():
            self.new_episode(i)
        cell, direction = np.concatenate([self.cell, last_cell]), np.concatenate([self.dir, last_dir])
        views = _views(self._slots[: n + k], cell, direction)
        return views[:n], views[n:]


class VisualMatchEnv(gym.Env):
    """Passive or Active Visual Match on a symbolic grid (see the module docstring for the task).

    Steps through ``Copies``, the one definition of the rules, with one copy. Episodes last at most ``max_steps``
    = ``cue_steps + distractor_steps + choice_steps`` steps.

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
        self.max_steps = sum(self.phase_steps)  # every episode ends by then (for ``ppo.n_steps: auto``)
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
        self.copies = Copies(self, 1)

    # The state of the one copy, read-only, for oracles and tests.

    @property
    def phase(self) -> int:
        return int(self.copies.phase[0])

    @property
    def phase_t(self) -> int:
        """Steps taken in the current phase."""
        return int(self.copies.phase_t[0])

    @property
    def cue_colour(self) -> int:
        """Index into ``colours``."""
        return int(self.copies.cue_colour[0])

    @property
    def cue_pos(self) -> tuple[int, int]:
        return int(self.copies.cue_pos[0, 0]), int(self.copies.cue_pos[0, 1])

    @property
    def choice_order(self) -> list[int]:
        """Colour index of each box, left to right."""
        return self.copies.choice_order[0].tolist()

    @property
    def pos(self) -> tuple[int, int]:
        return int(self.copies.x[0]), int(self.copies.y[0])

    @property
    def dir(self) -> int:
        return int(self.copies.dir[0])

    @property
    def room(self) -> np.ndarray:
        """The current room, an (W, H, 3) array of MiniGrid cell encodings (a view of the copy's canvas)."""
        width, height = self.room_size(self.phase)
        return self.copies.canvas[0, PAD : PAD + width, PAD : PAD + height]

    def room_size(self, phase: int) -> tuple[int, int]:
        """Width and height of the room of ``phase``, walls included."""
        if phase == CUE:
            return (9, 5) if self.active else (5, 5)
        if phase == DISTRACTOR:
            return DISTRACTOR_SIZE[0] + 2, DISTRACTOR_SIZE[1] + 2
        return 2 * self.n_colours + 1, 5

    def _obs(self, info: dict[str, Any]) -> dict[str, Any]:
        """The observation; the cue's class goes into ``info`` when the view shows it (``envs.cue``)."""
        views = self.copies.view()
        if self.copies.cue_shown(views)[0]:
            info[CUE_INFO] = self.cue_colour
        return {"image": views[0], "direction": self.dir}

    # -- gymnasium API -------------------------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.copies.rngs[0] = self.np_random
        self.copies.new_episode(0)
        info: dict[str, Any] = {}
        return self._obs(info), info

    def step(self, action):
        reward, terminated, success, choice = self.copies.step(np.array([int(action)]))
        info = {}
        if terminated[0]:
            info = {"is_success": bool(success[0]), "choice": int(choice[0]) if choice[0] >= 0 else None}
        return self._obs(info), float(reward[0]), bool(terminated[0]), False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        from minigrid.core.grid import Grid

        grid, _ = Grid.decode(np.ascontiguousarray(self.room))
        return grid.render(tile_size=16, agent_pos=self.pos, agent_dir=self.dir)


def make_visual_match(env_id: str, render_mode: str | None = None, **env_kwargs) -> VisualMatchEnv:
    """Family builder for ``urgate/PassiveVisualMatch-v0`` and ``urgate/ActiveVisualMatch-v0``.

    :param env_kwargs: ``VisualMatchEnv``'s keywords but ``active``, which the id sets (its signature is the one
        list of them and of their defaults; the registry checks them against it)
    """
    return VisualMatchEnv(active=env_id == ACTIVE_ID, render_mode=render_mode, **env_kwargs)
