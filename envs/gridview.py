"""MiniGrid's egocentric partial view, computed on numpy arrays (the fast path of our grid tasks).

A room is an (W, H, 3) uint8 array of MiniGrid cell encodings (object, colour, state), indexed [x, y]. The view
reproduces ``MiniGridEnv.gen_obs`` with ``agent_view_size=7`` and ``see_through_walls=False``: the 7x7 square in
front of the agent, rotated so the agent looks up from the bottom centre, with cells hidden behind walls encoded as
unseen (0, 0, 0) and the agent's own cell as empty. ``tests/test_envs_visual_match.py`` checks it cell for cell
against MiniGrid's ``Grid.slice`` / ``rotate_left`` / ``process_vis`` / ``encode``.
"""

from __future__ import annotations

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


def _row_visibility_table() -> np.ndarray:
    """``process_vis`` for one row, tabulated over every input.

    Index: ``seen | transparent << 7`` (bit i = column i) with ``seen`` the cells of the row made visible by the row
    below. Value: ``visible | next_seen << 7``, the row's visible cells after MiniGrid's left-to-right then
    right-to-left sweeps and the cells of the row above they make visible. All 2**14 cases are computed at once.
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
    return (visible | next_seen << VIEW).tolist()


_ROW_TABLE = _row_visibility_table()
_BIT_ROWS = ((np.arange(1 << VIEW)[:, None] >> np.arange(VIEW)) & 1).astype(bool)  # bits -> bool row
_POWERS = 1 << np.arange(VIEW)


def pad_room(room: np.ndarray) -> np.ndarray:
    """Surround a room with ``PAD`` walls on every side (MiniGrid treats outside cells as walls)."""
    width, height = room.shape[:2]
    padded = np.empty((width + 2 * PAD, height + 2 * PAD, 3), dtype=np.uint8)
    padded[:] = WALL
    padded[PAD : PAD + width, PAD : PAD + height] = room
    return padded


def visibility(view: np.ndarray) -> np.ndarray:
    """MiniGrid's ``Grid.process_vis`` for a 7x7 view with the agent at (3, 6): bool mask indexed [x, y].

    Only walls block sight (our rooms have no doors).
    """
    clear_rows = (_POWERS @ (view[:, :, 0] != WALL[0])).tolist()  # per row j, bit i = cell (i, j) is see-through
    mask_rows = [0] * VIEW
    seen = 1 << (VIEW // 2)
    for j in range(VIEW - 1, -1, -1):
        entry = _ROW_TABLE[seen | clear_rows[j] << VIEW]
        mask_rows[j] = entry & 0x7F
        seen = entry >> VIEW
    return _BIT_ROWS[mask_rows].T


def egocentric_view(padded: np.ndarray, x: int, y: int, direction: int) -> np.ndarray:
    """The agent's 7x7x3 symbolic observation, as MiniGrid encodes it.

    :param padded: the room after ``pad_room``
    :param x: agent column in room coordinates
    :param y: agent row in room coordinates
    :param direction: 0 right, 1 down, 2 left, 3 up
    """
    dx, dy = _VIEW_CORNER[direction]
    left, top = x + dx + PAD, y + dy + PAD
    # rotate_left applied direction + 1 times == a clockwise quarter turn of the [x, y] array each time.
    view = np.rot90(padded[left : left + VIEW, top : top + VIEW], k=-(direction + 1), axes=(0, 1))
    obs = np.where(visibility(view)[:, :, None], view, np.uint8(0))
    obs[VIEW // 2, VIEW - 1] = EMPTY
    return obs
