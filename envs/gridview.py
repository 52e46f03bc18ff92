"""MiniGrid's egocentric partial view, computed on numpy arrays for many copies at once (the fast path of our grid
tasks: Visual Match and the vectorised MiniGrid Memory tasks).

A room is an (W, H, 3) uint8 array of MiniGrid cell encodings (object, colour, state), indexed [x, y]. The view
reproduces ``MiniGridEnv.gen_obs`` with ``agent_view_size=7`` and ``see_through_walls=False``: the 7x7 square in
front of the agent, rotated so the agent looks up from the bottom centre, with cells hidden behind walls encoded as
unseen (0, 0, 0) and the agent's own cell as empty (the agent carries nothing in our tasks). Only walls block sight:
rooms must not hold closed doors (none of our tasks has doors; keys, balls and boxes do not block sight in MiniGrid).

``egocentric_views`` computes the views of N copies in one go from an (N, A, B, 3) array of padded rooms (rooms of
different sizes share one array: pad each into the same canvas with ``pad_room(room, out=canvas[i])``, walls fill
the rest). ``egocentric_view`` is the same computation for one copy. ``tests/test_envs_tasks.py`` checks both cell
for cell against MiniGrid's ``Grid.slice`` / ``rotate_left`` / ``process_vis`` / ``encode``.
"""

from __future__ import annotations

import functools

import numpy as np
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

VIEW = 7
PAD = VIEW - 1  # rooms are padded with this many walls so that every view slice stays inside the array
WALL = np.array([OBJECT_TO_IDX["wall"], COLOR_TO_IDX["grey"], 0], dtype=np.uint8)
EMPTY = np.array([OBJECT_TO_IDX["empty"], 0, 0], dtype=np.uint8)
# MiniGrid's DIR_TO_VEC: 0 right (+x), 1 down (+y), 2 left (-x), 3 up (-y).
DIR_TO_VEC = ((1, 0), (0, 1), (-1, 0), (0, -1))
# Top-left corner of the view relative to the agent, per direction (MiniGridEnv.get_view_exts).
_VIEW_CORNER = ((0, -3), (-3, 0), (-6, -3), (-3, -6))


def _view_offsets() -> np.ndarray:
    """(4, 2, 7, 7) int64: for direction d, view cell [i, j] shows room cell (x, y) + offsets[d, :, i, j].

    The slice at ``_VIEW_CORNER[d]`` rotated by MiniGrid's ``rotate_left`` d + 1 times (a clockwise quarter turn
    of the [x, y] array each time), tabulated once by applying that rotation to the cells' coordinates."""
    span = np.arange(VIEW)
    offsets = []
    for d, (dx, dy) in enumerate(_VIEW_CORNER):
        ox, oy = np.meshgrid(span + dx, span + dy, indexing="ij")
        offsets.append([np.rot90(o, k=-(d + 1), axes=(0, 1)) for o in (ox, oy)])
    return np.array(offsets, dtype=np.int64)


def _row_visibility_table() -> np.ndarray:
    """``process_vis`` for one row, tabulated over every input.

    Index: ``seen | clear << 7`` (bit i = column i) with ``seen`` the cells of the row made visible by the row
    below and ``clear`` the cells one can see through. Value: ``visible | next_seen << 7``, the row's visible cells
    after MiniGrid's left-to-right then right-to-left sweeps and the cells of the row above they make visible. All
    2**14 cases are computed at once.
    """
    index = np.arange(1 << 14)
    seen = [((index >> i) & 1).astype(bool) for i in range(VIEW)]
    clear = [((index >> (VIEW + i)) & 1).astype(bool) for i in range(VIEW)]
    above = [np.zeros_like(seen[0]) for _ in range(VIEW)]
    for i in range(VIEW - 1):
        spread = seen[i] & clear[i]
        seen[i + 1] = seen[i + 1] | spread
        above[i + 1] = above[i + 1] | spread
        above[i] = above[i] | spread
    for i in range(VIEW - 1, 0, -1):
        spread = seen[i] & clear[i]
        seen[i - 1] = seen[i - 1] | spread
        above[i - 1] = above[i - 1] | spread
        above[i] = above[i] | spread
    visible = sum(s.astype(np.int64) << i for i, s in enumerate(seen))
    next_seen = sum(a.astype(np.int64) << i for i, a in enumerate(above))
    return visible | next_seen << VIEW


_OFFSETS = _view_offsets()


_SPAN = PAD + 1  # a cell PAD + 1 or more away is never in view, nor any cell clipped to that distance


def _inverse_offsets() -> np.ndarray:
    """``_OFFSETS`` inverted, flat: for direction d and a room cell at (dx, dy) from the agent, with dx and dy clipped
    to [-SPAN, SPAN], the view cell i * 7 + j that shows it, -1 where it is outside the view; at index
    (d * (2 * SPAN + 1) + dx + SPAN) * (2 * SPAN + 1) + dy + SPAN."""
    side = 2 * _SPAN + 1
    inverse = np.full((4, side, side), -1, dtype=np.int64)
    for d in range(4):
        for i in range(VIEW):
            for j in range(VIEW):
                inverse[d, _OFFSETS[d, 0, i, j] + _SPAN, _OFFSETS[d, 1, i, j] + _SPAN] = i * VIEW + j
    return inverse.reshape(-1)


_INVERSE = _inverse_offsets()
_ROW_TABLE = _row_visibility_table()
_BIT_ROWS = ((np.arange(1 << VIEW)[:, None] >> np.arange(VIEW)) & 1).astype(bool)  # 7 bits -> bool row
_AGENT_SEES = 1 << (VIEW // 2)  # the agent's cell, bottom centre, is visible
_CLEAR_BITS = (1 << (VIEW + np.arange(VIEW))).astype(np.uint16)


@functools.lru_cache(maxsize=16)
def _flat_offsets(height: int) -> np.ndarray:
    """``_OFFSETS`` as offsets into the flattened [x, y] cells of a canvas ``height`` cells high, (4, 7, 7)."""
    return _OFFSETS[:, 0] * height + _OFFSETS[:, 1]


def pad_room(room: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Surround a room with walls, at least ``PAD`` on every side (MiniGrid treats outside cells as walls).

    :param room: (W, H, 3) cell encodings
    :param out: a (A, B, 3) uint8 canvas with A >= W + 2 * PAD and B >= H + 2 * PAD to fill (e.g. one copy's slot
        in a batch of padded rooms); the room goes at [PAD, PAD], walls everywhere else. Default: a new
        (W + 2 * PAD, H + 2 * PAD, 3) array
    """
    width, height = room.shape[:2]
    if out is None:
        out = np.empty((width + 2 * PAD, height + 2 * PAD, 3), dtype=np.uint8)
    out[:] = WALL
    out[PAD : PAD + width, PAD : PAD + height] = room
    return out


def visibility(clear: np.ndarray) -> np.ndarray:
    """MiniGrid's ``Grid.process_vis`` for N 7x7 views with the agent at (3, 6).

    :param clear: (N, 7, 7) bool, indexed [copy, x, y]: whether one can see through the cell
    :return: (N, 7, 7) bool visibility masks, indexed the same way
    """
    # Row y of copy n as the bits 7..13 of rows[y, n] (bit 7 + x: cell (x, y) is clear), the table's index layout.
    rows = (clear.transpose(2, 0, 1).view(np.uint8) @ _CLEAR_BITS).astype(np.intp)  # (7, N)
    entries = np.empty_like(rows)
    seen = _AGENT_SEES
    for j in range(VIEW - 1, -1, -1):  # bottom row (the agent's) first, as MiniGrid sweeps
        entries[j] = entry = _ROW_TABLE[rows[j] | seen]
        seen = entry >> VIEW
    return _BIT_ROWS[entries & ((1 << VIEW) - 1)].transpose(1, 2, 0)  # [y, n, x] -> [n, x, y]


def egocentric_views(
    padded: np.ndarray, x: np.ndarray, y: np.ndarray, direction: np.ndarray, rooms: np.ndarray | None = None
) -> np.ndarray:
    """The 7x7x3 symbolic observations of N agents, as MiniGrid encodes them.

    :param padded: (R, A, B, 3) uint8 rooms padded as ``pad_room`` does (room cell (x, y) of room r at
        [r, x + PAD, y + PAD], at least ``PAD`` walls around it); R = N unless ``rooms`` is given
    :param x: (N,) agent columns in room coordinates
    :param y: (N,) agent rows in room coordinates
    :param direction: (N,) directions, 0 right, 1 down, 2 left, 3 up
    :param rooms: (N,) the room of each agent, indices into ``padded`` (default: agent i is in room i); several
        agents may share a room
    :return: (N, 7, 7, 3) uint8 views, indexed [agent, view x, view y, channel]
    """
    width, height = padded.shape[1:3]
    if rooms is None:
        rooms = np.arange(len(x))
    cells = _flat_offsets(height)[direction]
    cells += ((rooms * width + x + PAD) * height + y + PAD)[:, None, None]
    views = np.take(padded.reshape(-1, 3), cells, axis=0)  # (N, 7, 7, 3)
    views *= visibility(views[..., 0] != WALL[0])[..., None]
    views[:, VIEW // 2, VIEW - 1] = EMPTY
    return views


def view_position(
    x: np.ndarray, y: np.ndarray, direction: np.ndarray, cell_x: np.ndarray | int, cell_y: np.ndarray | int
) -> np.ndarray:
    """Where room cell (cell_x, cell_y) lies in each agent's 7x7 view (MiniGridEnv.relative_coords).

    :return: (N,) int64: view cell (i, j) as i * 7 + j (index into a view reshaped to (49, 3)), -1 where the cell
        is outside the view; whether it is visible is for the view itself to say (hidden cells are encoded 0)
    """
    side = 2 * _SPAN + 1
    dx = np.minimum(np.maximum(cell_x - x, -_SPAN), _SPAN)
    dy = np.minimum(np.maximum(cell_y - y, -_SPAN), _SPAN)
    return _INVERSE[(direction * side + dx) * side + dy + (_SPAN * side + _SPAN)]


def egocentric_view(padded: np.ndarray, x: int, y: int, direction: int) -> np.ndarray:
    """``egocentric_views`` for one agent: its 7x7x3 observation.

    :param padded: the room after ``pad_room``
    :param x: agent column in room coordinates
    :param y: agent row in room coordinates
    :param direction: 0 right, 1 down, 2 left, 3 up
    """
    return egocentric_views(padded[None], np.array([x]), np.array([y]), np.array([direction]))[0]
