"""The GRU family of memory cores: torch's nn.GRU (``gru``, ``ugru``) and the refine-gate GRU (``urgru``).

They honour the contract of ``policies.cores`` (sequence-first input, ``forward(x, (h, c), episode_starts=...)``,
``gate_trace``), so that RecurrentPPO, whose buffer stores two state tensors per network, uses them unchanged: a GRU
has no cell state, so ``c`` is accepted (its shape checked, its values ignored) and returned as zeros of ``h``'s
shape. The update gate ``z`` (``h = (1 - z) n + z h_prev``) keeps the old state: it plays the LSTM forget gate's
role, so UGI goes on its bias and the refine gate acts on it (``policies.gates.gru_cell``, ``refine_gru_cell``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .cores import (
    _REFINE_OPTIONS_DOC,
    RefineCoreBase,
    State,
    _CoreContract,
    _init_refine_biases,
    fused_with_resets,
    stacked_layers,
)
from .errors import PolicyConfigError
from .gates import GRU_GATE_ORDER, REFINE_GRU_GATE_ORDER, gru_cell, refine_gru_cell
from .kernels import compiled_kernel_takes, gru_recurrence, linear
from .recurrence import gru_step_loop


class _GruLayers:
    """One layer of a GRU-layout core: its compiled (or reference) recurrence, and its gate diagnostics by the plain
    step loop over the core's cell."""

    _refine = False
    _gru_cell = staticmethod(gru_cell)

    def _layer(self, k: int, inp, h0, c0, starts):
        xproj = linear(inp, getattr(self, f"weight_ih_l{k}"), self._bias_ih(k))
        w_hh, b_hh = getattr(self, f"weight_hh_l{k}"), getattr(self, f"bias_hh_l{k}")
        out, h = gru_recurrence(xproj, w_hh, b_hh, h0, starts, refine=self._refine)
        return out, h, torch.zeros_like(h)

    def _trace_layer(self, k: int, inp, h0, c0, starts):
        b_ih, b_hh = self._bias_ih(k), getattr(self, f"bias_hh_l{k}")
        xproj = F.linear(inp, getattr(self, f"weight_ih_l{k}"), b_ih)
        out, _, g = gru_step_loop(
            self._gru_cell, xproj, getattr(self, f"weight_hh_l{k}"), b_hh, h0, starts, keep_gates=True
        )
        return out, g


class GatedGRU(_GruLayers, _CoreContract, nn.GRU):
    """torch's nn.GRU with a chosen update-gate initialisation (``gru``, ``ugru``).

    Parameters and state dict are nn.GRU's, so an nn.GRU checkpoint of the same sizes loads. On CPU (float32/64)
    the recurrence runs in the compiled kernel of ``policies.kernels.gru_recurrence`` (torch's CPU GRU has no fused
    kernel); elsewhere (CUDA: cuDNN), with ``URGATE_DISABLE_KERNEL=1`` or where the kernel cannot be built, in
    nn.GRU's own forward, one call per stretch between resets. The state is the pair ``(h, c)`` of every core; ``c``
    is ignored and returned as zeros (see the module docstring).

    :param input_size: features per step
    :param hidden_size: units per layer
    :param num_layers: stacked layers
    :param dropout: dropout on the outputs of every layer but the last, as nn.GRU
    :param init: ``"default"`` (torch's) or ``"ugi"`` (uniform gate initialisation of the update gate's bias)
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        *,
        init: str = "default",
        core_name: str = "gru",
    ) -> None:
        if init not in ("default", "ugi"):
            raise PolicyConfigError(f"unknown init {init!r} for a GRU core; valid: default, ugi")
        self.init, self.core_name = init, core_name
        super().__init__(input_size, hidden_size, num_layers=num_layers, dropout=dropout)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.init == "ugi":
            for k in range(self.num_layers):
                _init_refine_biases(
                    getattr(self, f"bias_ih_l{k}"),
                    getattr(self, f"bias_hh_l{k}"),
                    order=GRU_GATE_ORDER,
                    keep_gate="update",
                    init="ugi",
                    refine_bias="zero",
                )

    def _fused(self, x: torch.Tensor, state: tuple[torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor]]:
        out, h = nn.GRU.forward(self, x, state[0])
        return out, (h,)

    def uses_compiled_kernel(self, x: torch.Tensor) -> bool:
        """Whether a call on ``x`` runs the compiled kernel (CPU float32/64 where it builds) rather than nn.GRU's."""
        return compiled_kernel_takes(x)

    def forward(self, x: torch.Tensor, hx: State | None = None, episode_starts: torch.Tensor | None = None):
        hx, starts = self._check(x, hx, episode_starts)
        # torch's CPU GRU steps through composite ops (1.4-8x slower than nn.LSTM at the sizes measured): the
        # compiled kernel serves CPU; nn.GRU's own path (cuDNN) serves the rest.
        if self.uses_compiled_kernel(x):
            return stacked_layers(self, x, hx, starts)
        out, (h,) = fused_with_resets(self._fused, x, (hx[0],), starts)
        return out, (h, torch.zeros_like(h))

    def extra_repr(self) -> str:
        return f"core={self.core_name!r}, {super().extra_repr()}, init={self.init!r}"


class RefineGRU(_GruLayers, RefineCoreBase):
    __doc__ = (
        """GRU whose update gate is replaced by its refine-gated effective gate ``g`` (UR-GRU, ``urgru``).

    nn.GRU's three blocks (reset, update, new) plus one for the refine gate: parameters ``weight_ih_l{k}`` (4H, in),
    ``weight_hh_l{k}`` (4H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H), one block more than nn.GRU. Each layer's
    input projection is one product over the whole sequence; the recurrence runs in
    ``policies.kernels.gru_recurrence`` (a compiled CPU kernel, built on first use; pure torch on CUDA or
    where it cannot be built). The state is the pair ``(h, c)`` of every core; ``c`` is ignored and returned as
    zeros (see the module docstring). "forget" in the options below means the update gate.
    """
        + _REFINE_OPTIONS_DOC
    )

    _ORDER = REFINE_GRU_GATE_ORDER
    _KEEP_GATE = "update"
    _refine = True
    _gru_cell = staticmethod(refine_gru_cell)
