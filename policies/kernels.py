"""The refine-gate recurrence over a whole sequence: a compiled CPU kernel where available, else pure torch.

``refine_recurrence`` is the one entry point the refine cores call. The pure-torch path is the plain loop of
``recurrence.step_loop`` over ``gates.refine_cell`` (autograd through the loop); a compiled path, where one is
built, must match it (tests/test_kernels.py).
"""

from __future__ import annotations

import torch

from .gates import refine_cell
from .recurrence import step_loop


def refine_recurrence_reference(
    xproj: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pure-torch refine recurrence: ``(out (T, B, H), h_T, c_T)``; see ``refine_recurrence``."""
    out, h, c, _ = step_loop(refine_cell, xproj, w_hh, h0, c0, resets)
    return out, h, c


def refine_recurrence(
    xproj: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine-gate LSTM recurrence for one layer.

    :param xproj: ``W_ih x_t + b_ih + b_hh`` for every step, (T, B, 4H), blocks ordered (r, f, u, o)
    :param w_hh: recurrent weights (4H, H)
    :param h0: initial hidden state (B, H)
    :param c0: initial cell state (B, H)
    :param resets: (T, B), 1 where both states are zeroed before step t; None for no resets
    :return: ``(out, h_T, c_T)``
    """
    return refine_recurrence_reference(xproj, w_hh, h0, c0, resets)
