"""The gating equations of Gu et al. (ICML 2020), each written once.

Notation as in docs/equations.md (the paper's maths in this package's words): ``f`` is the forget gate, ``r`` the refine gate, ``g`` the effective gate
that a refine cell uses in place of ``f``, ``H`` the hidden size. The ordered-neuron pieces (``cumax``, the master
gates of ON-LSTM) follow docs/ordered_gates.md. Everything else in the package (the cores, the compiled kernels'
references, the diagnostics) calls these functions rather than restating them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Activation = Callable[[torch.Tensor], torch.Tensor]

# nn.LSTM packs its four gate blocks in this order; the refine cells reuse the input-gate slot for ``r``. The cells
# below unpack pre-activations in these orders, and ``gate_block`` finds a gate's block in a parameter.
LSTM_GATE_ORDER = ("input", "forget", "cell", "output")
REFINE_GATE_ORDER = ("refine", "forget", "cell", "output")
# nn.GRU packs (reset, update, new); the refine GRU appends one block for the refine gate of the update gate.
GRU_GATE_ORDER = ("reset", "update", "new")
REFINE_GRU_GATE_ORDER = ("reset", "update", "new", "refine")


def gate_block(t: torch.Tensor, gate: str, order: tuple[str, ...] = LSTM_GATE_ORDER) -> torch.Tensor:
    """The rows of a packed (nH, ...) parameter that belong to ``gate`` (a view: writing to it writes ``t``).

    :param t: ``weight_ih_l{k}``, ``bias_hh_l{k}``, ... with the gate blocks stacked along dim 0
    :param gate: a name in ``order``
    :param order: ``LSTM_GATE_ORDER``, ``REFINE_GATE_ORDER``, ``GRU_GATE_ORDER`` or ``REFINE_GRU_GATE_ORDER``
    """
    h = t.shape[0] // len(order)
    slot = order.index(gate)
    return t[slot * h : (slot + 1) * h]


def effective_gate(f: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Effective forget gate ``g = r (1 - (1 - f)^2) + (1 - r) f^2``, written as ``f + (2r - 1) f (1 - f)``.

    The refine gate ``r`` pushes ``g`` towards ``f^2`` (r = 0) or ``1 - (1 - f)^2`` (r = 1); ``r = 1/2`` leaves
    ``g = f``.
    """
    return f + (2.0 * r - 1.0) * f * (1.0 - f)


def timescale(g: torch.Tensor) -> torch.Tensor:
    """Characteristic memory timescale ``1 / (1 - g)`` of a gate value, in steps (infinite at ``g = 1``)."""
    return 1.0 / (1.0 - g)


def cumax(x: torch.Tensor) -> torch.Tensor:
    """Cumulative softmax over the last dimension (Shen et al. 2019): ``cumax(x)_j = sum_{k <= j} softmax(x)_k``.

    Monotone non-decreasing along the units, in [0, 1], and the last entry is exactly 1 whatever ``x`` is. With
    all pre-activations equal (e.g. zero weights) entry ``j`` of ``n`` is ``j / n``: evenly spread gate values.
    """
    return torch.softmax(x, dim=-1).cumsum(dim=-1)


def master_gates(
    f: torch.Tensor, i: torch.Tensor, f_master: torch.Tensor, i_master: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """ON-LSTM's update gates from the plain gates and the master gates (Shen et al. 2019, eqs. 11-13).

    With overlap ``w = f_master i_master``: ``f_hat = f w + (f_master - w) = f_master (f i_master + 1 - i_master)``
    and ``i_hat = i w + (i_master - w) = i_master (i f_master + 1 - f_master)``. Where the master gates do not
    overlap the plain gates do not matter; ``f_hat <= f_master`` and ``i_hat <= i_master``.

    :return: ``(f_hat, i_hat)``, the effective forget and input gates
    """
    return f_master * (f * i_master + 1.0 - i_master), i_master * (i * f_master + 1.0 - f_master)


def cell_update(
    forget: torch.Tensor, write: torch.Tensor, u: torch.Tensor, o: torch.Tensor, c_prev: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The LSTM memory update ``c = forget c_prev + write u``, ``h = o tanh(c)`` from activated gates: ``(h, c)``."""
    c = forget * c_prev + write * u
    return o * torch.tanh(c), c


def lstm_cell(
    gates: torch.Tensor, c_prev: torch.Tensor, forget_activation: Activation = torch.sigmoid
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the standard LSTM from pre-activations ``gates`` (B, 4H) in nn.LSTM's order (i, f, u, o).

    :param forget_activation: the forget gate's activation: ``torch.sigmoid`` (LSTM) or ``cumax`` (O-LSTM)
    :return: ``(h, c, f)``: the new hidden and cell states and the forget gate
    """
    i, f, u, o = gates.chunk(4, dim=-1)
    f = forget_activation(f)
    h, c = cell_update(f, torch.sigmoid(i), torch.tanh(u), torch.sigmoid(o), c_prev)
    return h, c, f


def refine_cell(
    gates: torch.Tensor, c_prev: torch.Tensor, forget_activation: Activation = torch.sigmoid
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the refine-gate LSTM (R-, UR-, OR-LSTM) from pre-activations (B, 4H) ordered (r, f, u, o).

    The input gate is tied to ``1 - g``: ``c = g c_prev + (1 - g) u``, ``h = o tanh(c)``.

    :param forget_activation: the forget gate's activation: ``torch.sigmoid`` (R, UR) or ``cumax`` (OR)
    :return: ``(h, c, g)``
    """
    r, f, u, o = gates.chunk(4, dim=-1)
    g = effective_gate(forget_activation(f), torch.sigmoid(r))
    h, c = cell_update(g, 1.0 - g, torch.tanh(u), torch.sigmoid(o), c_prev)
    return h, c, g


def ordered_cell(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """O-LSTM: ``lstm_cell`` with the ordered forget gate ``f = cumax(P_f)`` over the H units."""
    return lstm_cell(gates, c_prev, forget_activation=cumax)


def ordered_refine_cell(gates: torch.Tensor, c_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OR-LSTM: ``refine_cell`` with the ordered forget gate ``f = cumax(P_f)`` over the H units."""
    return refine_cell(gates, c_prev, forget_activation=cumax)


def master_cell(
    gates: torch.Tensor, c_prev: torch.Tensor, *, chunk_size: int, master_activation: Activation
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One step of the master-gate LSTM (OM = ON-LSTM, UM) from pre-activations (B, 4H + 2n), n = H / chunk_size.

    Blocks: nn.LSTM's (i, f, u, o) of H each, then the master forget and master input pre-activations (n each).
    ``f_master = act(P_mf)`` and ``i_master = 1 - act(P_mi)`` per chunk of ``chunk_size`` consecutive units, with
    ``act`` = ``cumax`` (OM, Shen et al.) or ``torch.sigmoid`` (UM); then ``master_gates`` and ``cell_update``.

    :return: ``(h, c, f_hat)`` with ``f_hat`` the effective forget gate
    """
    n = gates.shape[-1] // (4 * chunk_size + 2)
    hidden = n * chunk_size
    i, f, u, o = gates[..., : 4 * hidden].chunk(4, dim=-1)
    mf, mi = gates[..., 4 * hidden :].chunk(2, dim=-1)
    f_master = master_activation(mf).repeat_interleave(chunk_size, dim=-1)
    i_master = (1.0 - master_activation(mi)).repeat_interleave(chunk_size, dim=-1)
    f_hat, i_hat = master_gates(torch.sigmoid(f), torch.sigmoid(i), f_master, i_master)
    h, c = cell_update(f_hat, i_hat, torch.tanh(u), torch.sigmoid(o), c_prev)
    return h, c, f_hat


def _gru_gates(x_gates: torch.Tensor, h_gates: torch.Tensor, h_prev: torch.Tensor):
    """Reset-gated candidate ``n`` and update gate ``z`` of torch's nn.GRU, from blocks ordered (r, z, n, ...)."""
    H = h_prev.shape[-1]
    r = torch.sigmoid(x_gates[..., :H] + h_gates[..., :H])
    z = torch.sigmoid(x_gates[..., H : 2 * H] + h_gates[..., H : 2 * H])
    n = torch.tanh(x_gates[..., 2 * H : 3 * H] + r * h_gates[..., 2 * H : 3 * H])
    return n, z


def gru_cell(x_gates: torch.Tensor, h_gates: torch.Tensor, h_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of torch's nn.GRU: ``r = sigma(x_r + h_r)``, ``z = sigma(x_z + h_z)``, ``n = tanh(x_n + r h_n)``,
    ``h = (1 - z) n + z h_prev``.

    ``x_gates = W_i x + b_i`` and ``h_gates = W_h h_prev + b_h`` are (B, 3H) in nn.GRU's order (r, z, n); the
    recurrent bias of ``n`` sits inside the reset gate's product, so the two projections cannot be summed first.
    The update gate ``z`` keeps the old state: it plays the LSTM forget gate's role (UGI goes on its bias).
    Returns ``(h, z)``.
    """
    n, z = _gru_gates(x_gates, h_gates, h_prev)
    return (1.0 - z) * n + z * h_prev, z


def refine_gru_cell(
    x_gates: torch.Tensor, h_gates: torch.Tensor, h_prev: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the refine-gate GRU (UR-GRU): nn.GRU with its update gate replaced by the effective gate.

    Blocks (B, 4H) ordered (r, z, n, refine): ``g = effective_gate(z, sigma(x_refine + h_refine))``,
    ``h = (1 - g) n + g h_prev``. Returns ``(h, g)``.
    """
    H = h_prev.shape[-1]
    n, z = _gru_gates(x_gates, h_gates, h_prev)
    g = effective_gate(z, torch.sigmoid(x_gates[..., 3 * H :] + h_gates[..., 3 * H :]))
    return (1.0 - g) * n + g * h_prev, g


def ugi_forget_bias(
    hidden_size: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Uniform gate initialisation: ``b_f = logit(u)``, ``u ~ Uniform[1/H, 1 - 1/H]`` per unit.

    At initialisation ``sigma(b_f)`` is uniform, so timescales spread from about 1 to ``H`` steps.
    """
    if hidden_size < 2:
        raise ValueError(f"uniform gate initialisation needs hidden_size >= 2, got {hidden_size}")
    lo = 1.0 / hidden_size
    u = torch.rand(hidden_size, generator=generator, dtype=torch.float64) * (1.0 - 2.0 * lo) + lo
    return torch.logit(u).to(dtype)


def chrono_forget_bias(
    hidden_size: int, t_max: float, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Chrono initialisation (Tallec & Ollivier 2018): ``b_f = log(v)``, ``v ~ Uniform[1, t_max - 1]``.

    Used with ``b_i = -b_f``; at initialisation the timescale ``1 / (1 - f)`` is uniform on ``[2, t_max]``.
    """
    if not (isinstance(t_max, int | float) and math.isfinite(t_max) and t_max > 2):
        raise ValueError(f"chrono initialisation needs a finite t_max > 2 (the longest expected delay), got {t_max!r}")
    v = torch.rand(hidden_size, generator=generator, dtype=torch.float64) * (t_max - 2.0) + 1.0
    return torch.log(v).to(dtype)
