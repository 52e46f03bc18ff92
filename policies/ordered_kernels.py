"""The ordered-gate recurrences over a whole sequence (O, OR, OM, UM): a compiled CPU kernel where available, else
pure torch.

``ordered_recurrence`` is the one entry point the ordered cores call. Its definition is the plain loop of
``recurrence.step_loop`` over the cells of ``policies.gates`` (``ordered_recurrence_reference``, autograd through the
loop). The compiled path (``csrc/ordered.cpp``, an ``extensions.CompiledExtension`` built on first use and cached) fuses
each step's work for a batch row (activations, the cumulative softmax over the units, the cell update) into one
pass next to one matrix product, and has a hand-written backward pass whose recurrent weight gradient is one matrix
product over all steps. It must match the reference (tests/test_ordered.py).

Without the compiled path the pure-torch loop measured 5-14x nn.LSTM's time (forward+backward, the three sizes of
benchmarks/cores.py), against a target of 3x: hence the kernel. As for the refine kernel, it serves CPU
float32/float64 tensors; elsewhere (CUDA, other dtypes), or when the build fails, the pure-torch path runs after
one warning per reason, and ``URGATE_DISABLE_KERNEL=1`` forces it silently.
"""

from __future__ import annotations

import functools

import torch

from .extensions import CompiledExtension
from .gates import cumax, master_cell, ordered_cell, ordered_refine_cell
from .kernels import CompiledRecurrence, _dispatch, kernel_disabled
from .recurrence import Cell, step_loop

ORDERED, ORDERED_REFINE, MASTER_CUMAX, MASTER_UGI = "ordered", "ordered_refine", "master_cumax", "master_ugi"
MASTER = {"cumax": MASTER_CUMAX, "ugi": MASTER_UGI}
KINDS = (ORDERED, ORDERED_REFINE, MASTER_CUMAX, MASTER_UGI)
_KIND_CODE = {kind: code for code, kind in enumerate(KINDS)}  # the kernel's enum Kind


def cell_for(kind: str, chunk_size: int = 1) -> Cell:
    """The cell of ``policies.gates`` that defines recurrence ``kind`` (one of ``KINDS``)."""
    if kind == ORDERED:
        return ordered_cell
    if kind == ORDERED_REFINE:
        return ordered_refine_cell
    activation = cumax if kind == MASTER_CUMAX else torch.sigmoid
    return functools.partial(master_cell, chunk_size=chunk_size, master_activation=activation)


def ordered_recurrence_reference(kind, xproj, w_hh, h0, c0, resets=None, *, chunk_size=1):
    """Pure-torch recurrence: ``(out (T, B, H), h_T, c_T)``; see ``ordered_recurrence``."""
    out, h, c, _ = step_loop(cell_for(kind, chunk_size), xproj, w_hh, h0, c0, resets)
    return out, h, c


ORDERED_EXTENSION = CompiledExtension("ordered", ["ordered.cpp"], description="ordered-gate CPU kernel")
ORDERED_FALLBACK = "ordered-gate cores (o, or, om, um) run the slower pure-torch recurrence"


def kernel_available() -> bool:
    """Whether the compiled ordered kernel is usable in this process (builds it on first call)."""
    return not kernel_disabled() and ORDERED_EXTENSION.load()


def ordered_recurrence(kind, xproj, w_hh, h0, c0, resets=None, *, chunk_size=1):
    """One layer of an ordered-gate core.

    :param kind: one of ``KINDS``
    :param xproj: ``W_ih x_t + b_ih + b_hh`` for every step, (T, B, rows) in the core's block order
    :param w_hh: recurrent weights (rows, H)
    :param h0: initial hidden state (B, H)
    :param c0: initial cell state (B, H)
    :param resets: (T, B), 1 where both states are zeroed before step t; None for no resets
    :param chunk_size: units per master gate value (master kinds only)
    :return: ``(out, h_T, c_T)``
    """
    args = (_KIND_CODE[kind], chunk_size)
    ops = torch.ops.urgate
    return _dispatch(
        lambda *a: ordered_recurrence_reference(kind, *a, chunk_size=chunk_size),
        lambda *a: CompiledRecurrence.apply(ops.ordered_forward, ops.ordered_backward, args, *a),
        lambda *a: ops.ordered_forward(*args, *a, False)[:3],
        (xproj, w_hh, h0, c0),
        resets,
        extension=ORDERED_EXTENSION,
        fallback=ORDERED_FALLBACK,
    )
