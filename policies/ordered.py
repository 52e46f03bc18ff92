"""The paper's ordered-gate cores: O-, OR-, OM- (= ON-LSTM) and UM-LSTM (docs/ordered_gates.md).

Gu et al. (2020) name a variant by two letters: how the main forget gate is activated or initialised (``O`` =
cumax, Shen et al. 2019's ordered activation; ``U`` = uniform gate initialisation) and which auxiliary gate
modulates it (``R`` = refine gate, ``M`` = ON-LSTM's master gates). The equations are in ``policies.gates``
(``cumax``, ``master_gates``, ``ordered_cell``, ``ordered_refine_cell``, ``master_cell``); this module lays out
their parameters, initialises them and runs the recurrence (``policies.ordered_kernels``).
"""

from __future__ import annotations

import torch
from torch import nn

from .cores import (
    _REFINE_OPTIONS_DOC,
    RefineCoreBase,
    _CoreContract,
    register_layer_parameters,
    reset_uniform,
    stacked_layers,
)
from .errors import PolicyConfigError
from .gates import ugi_forget_bias
from .kernels import linear
from .ordered_kernels import MASTER, ORDERED, ORDERED_REFINE, cell_for, ordered_recurrence


class _OrderedCore(_CoreContract, nn.Module):
    """nn.LSTM's parameters (plus ``extra_rows`` appended to each), torch's initialisation, and layers that run
    ``ordered_recurrence`` of one kind (``policies.ordered_kernels.KINDS``)."""

    def __init__(
        self, input_size, hidden_size, num_layers, dropout, *, core_name, kind, chunk_size=1, extra_rows=0
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout, self.core_name, self.extra_rows = float(dropout), core_name, extra_rows
        self._kind, self.chunk_size = kind, chunk_size
        self._cell = cell_for(kind, chunk_size)
        register_layer_parameters(self, 4 * hidden_size + extra_rows)

    def reset_parameters(self) -> None:
        reset_uniform(self)

    def _layer(self, k: int, inp, h0, c0, starts):
        w_ih, w_hh, b = self._layer_weights(k)
        return ordered_recurrence(self._kind, linear(inp, w_ih, b), w_hh, h0, c0, starts, chunk_size=self.chunk_size)

    def forward(self, x: torch.Tensor, hx=None, episode_starts: torch.Tensor | None = None):
        hx, starts = self._check(x, hx, episode_starts)
        return stacked_layers(self, x, hx, starts)

    def extra_repr(self) -> str:
        s = f"core={self.core_name!r}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        return s + (f", dropout={self.dropout}" if self.dropout else "")


class OrderedLSTM(_OrderedCore):
    """LSTM whose forget gate is ordered, ``f = cumax(P_f)`` over the H units (O-LSTM); the input gate stays untied.

    Parameters are exactly nn.LSTM's (names, shapes, chunk order i, f, u, o). Initialisation is nn.LSTM's: with
    small pre-activations cumax spreads the forget gates evenly over (0, 1] (unit j of H starts near j / H), the
    ordered cores' own answer to UGI. The last unit's forget gate is exactly 1 at every step (cumax ends at 1): that
    unit only accumulates.

    :param input_size: features per step
    :param hidden_size: units per layer
    :param num_layers: stacked layers
    :param dropout: dropout on the outputs of every layer but the last, as nn.LSTM
    :param core_name: the registry name
    """

    def __init__(self, input_size, hidden_size, num_layers=1, dropout=0.0, *, core_name: str = "o") -> None:
        super().__init__(input_size, hidden_size, num_layers, dropout, core_name=core_name, kind=ORDERED)
        self.reset_parameters()


class OrderedRefineLSTM(RefineCoreBase):
    __doc__ = (
        """The ordered forget gate with a refine gate, input gate tied to ``1 - g`` (OR-LSTM).

    As ``RefineLSTM`` (parameters laid out as nn.LSTM's with the refine gate in the input-gate slot; the refine
    cores' options), with ``f = cumax(P_f)`` over the H units in place of the sigmoid. The last unit has f = 1, so
    g = 1: it keeps its initial cell state.
    """
        + _REFINE_OPTIONS_DOC
    )

    def __init__(self, *args, **kwargs) -> None:
        self._cell = cell_for(ORDERED_REFINE)
        super().__init__(*args, **kwargs)

    def _layer(self, k: int, inp, h0, c0, starts):
        w_ih, w_hh, b = self._layer_weights(k)
        return ordered_recurrence(ORDERED_REFINE, linear(inp, w_ih, b), w_hh, h0, c0, starts)


class MasterLSTM(_OrderedCore):
    """LSTM with ON-LSTM's master forget and input gates: OM-LSTM (= ON-LSTM, cumax master gates) or UM-LSTM
    (sigmoid master gates with uniform gate initialisation).

    Layout: layer k's ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` have
    ``4H + 2n`` rows, ``n = H / chunk_size``: rows ``[0, 4H)`` are nn.LSTM's (i, f, u, o) blocks, rows
    ``[4H, 4H + n)`` the master forget gate and ``[4H + n, 4H + 2n)`` the master input gate, one value per chunk
    of ``chunk_size`` consecutive units (Shen et al.'s layout; ``chunk_size=1`` gives every unit its own).
    Initialisation: nn.LSTM's everywhere; for ``master="ugi"`` the master forget bias is UGI over the n chunks
    (``b_mf = logit(u)``, ``u ~ U[1/n, 1 - 1/n]``) and the master input bias equals it, so that
    ``i_master = 1 - f_master`` at initialisation as cumax's master gates are at zero pre-activation.

    :param input_size: features per step
    :param hidden_size: units per layer
    :param num_layers: stacked layers
    :param dropout: dropout on the outputs of every layer but the last, as nn.LSTM
    :param master: ``"cumax"`` (OM-LSTM, Shen et al.'s ON-LSTM) or ``"ugi"`` (UM-LSTM)
    :param chunk_size: units that share one master gate value; must divide ``hidden_size`` (Shen et al. used 10
        with H = 1150 for language modelling; default 1, one per unit)
    :param core_name: the registry name
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        *,
        master: str = "cumax",
        chunk_size: int = 1,
        core_name: str = "om",
    ) -> None:
        if master not in MASTER:
            raise PolicyConfigError(f"unknown master gate activation {master!r}; valid: cumax, ugi")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise PolicyConfigError(f"core '{core_name}': chunk_size must be a positive integer, got {chunk_size!r}")
        if hidden_size % chunk_size:
            raise PolicyConfigError(
                f"core '{core_name}': chunk_size {chunk_size} does not divide hidden_size {hidden_size}; "
                "use a divisor of the hidden size (1 always works)"
            )
        self.n_chunks = hidden_size // chunk_size
        if master == "ugi" and self.n_chunks < 2:
            raise PolicyConfigError(
                f"core '{core_name}': uniform gate initialisation of the master gates needs at least 2 chunks, "
                f"got hidden_size {hidden_size} / chunk_size {chunk_size} = {self.n_chunks}"
            )
        self.master = master
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            dropout,
            core_name=core_name,
            kind=MASTER[master],
            chunk_size=chunk_size,
            extra_rows=2 * self.n_chunks,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.master != "ugi":
            return
        H, n = self.hidden_size, self.n_chunks
        with torch.no_grad():
            for k in range(self.num_layers):
                b_ih, b_hh = getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")
                b_mf = ugi_forget_bias(n, dtype=b_ih.dtype)
                b_ih[4 * H : 4 * H + n].copy_(b_mf)
                b_ih[4 * H + n :].copy_(b_mf)
                b_hh[4 * H :].zero_()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, master={self.master!r}, chunk_size={self.chunk_size}"
