"""The plain step-by-step recurrence, shared by the pure-torch refine path and the gate diagnostics.

A cell maps gate pre-activations (B, 4H) and the previous cell state to ``(h, c, gate)`` (see ``gates.py``).
This loop is the definition that the compiled kernel in ``policies.kernels`` is tested against.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Cell = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


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
    h, c = h0, c0
    outs, kept = [], []
    for t in range(xproj.shape[0]):
        if resets is not None:
            keep = (1.0 - resets[t]).unsqueeze(-1)
            h, c = h * keep, c * keep
        h, c, gate = cell(torch.addmm(xproj[t], h, w_hh.t()), c)
        outs.append(h)
        if keep_gates:
            kept.append(gate)
    return torch.stack(outs), h, c, (torch.stack(kept) if keep_gates else None)
