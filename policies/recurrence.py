"""The plain step-by-step recurrences, shared by the pure-torch refine paths and the gate diagnostics.

An LSTM cell maps gate pre-activations (B, 4H) and the previous cell state to ``(h, c, gate)``; a GRU cell maps the
input and recurrent projections and the previous hidden state to ``(h, gate)`` (see ``gates.py``). These loops are
the definitions that the compiled kernels in ``policies.kernels`` and ``policies.ordered_kernels`` and the Triton
kernels in ``policies.triton_refine`` are tested against; ``refine_recurrence_reference`` and
``gru_recurrence_reference`` are the pure-torch paths of ``policies.kernels``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from .gates import gru_cell, refine_cell, refine_gru_cell

Cell = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
GruCell = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Step = Callable[[int, tuple[torch.Tensor, ...]], tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]]


def _loop(step: Step, state: tuple[torch.Tensor, ...], T: int, resets: torch.Tensor | None, keep_gates: bool):
    """Run ``step(t, state) -> (out, state, gate)`` for t < T, zeroing every state tensor where ``resets[t]``."""
    outs, kept = [], []
    for t in range(T):
        if resets is not None:
            keep = (1.0 - resets[t]).unsqueeze(-1)
            state = tuple(s * keep for s in state)
        out, state, gate = step(t, state)
        outs.append(out)
        if keep_gates:
            kept.append(gate)
    return torch.stack(outs), state, (torch.stack(kept) if keep_gates else None)


def step_loop(
    cell: Cell,
    xproj: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    resets: torch.Tensor | None = None,
    *,
    keep_gates: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run ``cell`` over a sequence.

    :param xproj: input projections ``W_ih x_t + b_ih + b_hh``, shape (T, B, 4H)
    :param w_hh: recurrent weights (4H, H)
    :param h0: initial hidden state (B, H)
    :param c0: initial cell state (B, H)
    :param resets: (T, B) with 1 where the state is zeroed before step t, or None
    :param keep_gates: also return the cell's gate value (the effective forget gate) at every step
    :return: ``(out, h_T, c_T, gates)`` with out (T, B, H) and gates (T, B, H) or None
    """

    def step(t, state):
        h, c, gate = cell(torch.addmm(xproj[t], state[0], w_hh.t()), state[1])
        return h, (h, c), gate

    out, (h, c), gates = _loop(step, (h0, c0), xproj.shape[0], resets, keep_gates)
    return out, h, c, gates


def gru_step_loop(
    cell: GruCell,
    xproj: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    h0: torch.Tensor,
    resets: torch.Tensor | None = None,
    *,
    keep_gates: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run a GRU ``cell`` over a sequence.

    :param xproj: input projections ``W_ih x_t + b_ih``, shape (T, B, nH)
    :param w_hh: recurrent weights (nH, H)
    :param b_hh: recurrent bias (nH,), kept apart because the reset gate multiplies ``W_hn h + b_hn``
    :param h0: initial hidden state (B, H)
    :param resets: (T, B) with 1 where the state is zeroed before step t, or None
    :param keep_gates: also return the cell's gate value (the effective keep gate) at every step
    :return: ``(out, h_T, gates)`` with out (T, B, H) and gates (T, B, H) or None
    """

    def step(t, state):
        h, gate = cell(xproj[t], F.linear(state[0], w_hh, b_hh), state[0])
        return h, (h,), gate

    out, (h,), gates = _loop(step, (h0,), xproj.shape[0], resets, keep_gates)
    return out, h, gates


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


def gru_recurrence_reference(
    xproj: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    h0: torch.Tensor,
    resets: torch.Tensor | None = None,
    *,
    refine: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure-torch GRU / refine-GRU recurrence: ``(out (T, B, H), h_T)``; see ``gru_recurrence``."""
    out, h, _ = gru_step_loop(refine_gru_cell if refine else gru_cell, xproj, w_hh, b_hh, h0, resets)
    return out, h
