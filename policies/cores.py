"""Memory cores: drop-in replacements for ``torch.nn.LSTM`` with the gates and initialisations of Gu et al.

Every core follows nn.LSTM's contract (sequence-first input (T, B, F), states ``(h, c)`` of shape
(num_layers, B, H), parameters ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``) and adds
one keyword, ``episode_starts`` (T, B): where it is 1 the state of every layer is zeroed before that step.

Cores are built by name through ``make_core``; adding a variant is one ``CoreSpec`` entry in ``CORES``.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .errors import PolicyConfigError
from .gates import REFINE_GATE_ORDER, chrono_forget_bias, gate_block, lstm_cell, refine_cell, ugi_forget_bias
from .kernels import refine_recurrence
from .recurrence import step_loop

State = tuple[torch.Tensor, torch.Tensor]

DEFAULT_T_MAX = 500


class _CoreContract:
    """Input checks, ``episode_starts`` handling and gate diagnostics shared by every core."""

    input_size: int
    hidden_size: int
    num_layers: int
    core_name: str = "core"
    _cell: Callable = staticmethod(lstm_cell)

    def _check(self, x: torch.Tensor, hx: State | None, episode_starts: torch.Tensor | None):
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise PolicyConfigError(
                f"core '{self.core_name}' expects input of shape (T, B, {self.input_size}) (sequence first), "
                f"got {tuple(x.shape)}"
            )
        T, B = x.shape[:2]
        want = (self.num_layers, B, self.hidden_size)
        if hx is None:
            z = x.new_zeros(want)
            hx = (z, z)
        else:
            if not (isinstance(hx, tuple | list) and len(hx) == 2):
                raise PolicyConfigError(f"core '{self.core_name}' expects the state as a pair (h, c)")
            for name, s in zip(("h", "c"), hx, strict=True):
                if tuple(s.shape) != want:
                    raise PolicyConfigError(
                        f"core '{self.core_name}': state {name} has shape {tuple(s.shape)}, expected {want} "
                        "(num_layers, batch, hidden_size)"
                    )
        if episode_starts is not None:
            if tuple(episode_starts.shape) != (T, B):
                raise PolicyConfigError(
                    f"core '{self.core_name}': episode_starts has shape {tuple(episode_starts.shape)}, "
                    f"expected {(T, B)} (T, B)"
                )
            episode_starts = episode_starts.to(dtype=x.dtype, device=x.device)
        return hx, episode_starts

    def _layer_weights(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W_ih, W_hh, b_ih + b_hh) of layer k."""
        return (
            getattr(self, f"weight_ih_l{k}"),
            getattr(self, f"weight_hh_l{k}"),
            getattr(self, f"bias_ih_l{k}") + getattr(self, f"bias_hh_l{k}"),
        )

    @torch.no_grad()
    def gate_trace(
        self, x: torch.Tensor, hx: State | None = None, episode_starts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Effective forget gate of every unit at every step, for diagnostics.

        ``g`` for refine cells, ``f`` for LSTM cells; computed without dropout by the plain step loop, so the
        normal forward path pays nothing for it.

        :return: tensor of shape (num_layers, T, B, hidden_size)
        """
        hx, starts = self._check(x, hx, episode_starts)
        traces, inp = [], x
        for k in range(self.num_layers):
            w_ih, w_hh, b = self._layer_weights(k)
            inp, _, _, g = step_loop(
                self._cell, F.linear(inp, w_ih, b), w_hh, hx[0][k], hx[1][k], starts, keep_gates=True
            )
            traces.append(g)
        return torch.stack(traces)


class GatedLSTM(_CoreContract, nn.LSTM):
    """torch's nn.LSTM (fused kernel, cuDNN on GPU) with a chosen forget-gate initialisation.

    :param input_size: features per step
    :param hidden_size: units per layer
    :param num_layers: stacked layers
    :param dropout: dropout on the outputs of every layer but the last, as nn.LSTM
    :param init: ``"default"`` (torch's), ``"chrono"`` (b_f = log U[1, t_max - 1], b_i = -b_f) or ``"ugi"``
        (uniform gate initialisation of the forget bias; input gate untied)
    :param t_max: longest expected dependency in steps, for ``init="chrono"``
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        *,
        init: str = "default",
        t_max: float = DEFAULT_T_MAX,
        core_name: str = "lstm",
    ) -> None:
        self.init, self.t_max, self.core_name = init, t_max, core_name
        super().__init__(input_size, hidden_size, num_layers=num_layers, dropout=dropout)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            for k in range(self.num_layers):
                b_ih, b_hh = getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")
                if self.init == "default":
                    continue
                if self.init == "chrono":
                    b_f = chrono_forget_bias(self.hidden_size, self.t_max, dtype=b_ih.dtype)
                    gate_block(b_ih, "input").copy_(-b_f)
                    gate_block(b_hh, "input").zero_()
                elif self.init == "ugi":
                    b_f = ugi_forget_bias(self.hidden_size, dtype=b_ih.dtype)
                else:
                    raise PolicyConfigError(f"unknown init {self.init!r}; valid: default, chrono, ugi")
                gate_block(b_ih, "forget").copy_(b_f)
                gate_block(b_hh, "forget").zero_()

    def forward(self, x: torch.Tensor, hx: State | None = None, episode_starts: torch.Tensor | None = None):
        hx, starts = self._check(x, hx, episode_starts)
        if starts is None:
            return super().forward(x, hx)
        # One fused call per stretch between resets; resets only at step 0 (the training case) make one call.
        # (A PackedSequence of episode segments would be a single call, but torch runs packed input through its
        # unfused per-step LSTM on CPU: measured 3-5x slower than these calls with one reset per column.)
        reset_steps = torch.nonzero(starts[1:].any(dim=1)).flatten().add(1).tolist()
        bounds = [0, *reset_steps, x.shape[0]]
        h, c = hx
        outs = []
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            keep = (1.0 - starts[a]).view(1, -1, 1)
            out, (h, c) = super().forward(x[a:b], (h * keep, c * keep))
            outs.append(out)
        return (outs[0] if len(outs) == 1 else torch.cat(outs)), (h, c)

    def extra_repr(self) -> str:
        s = f"core={self.core_name!r}, {super().extra_repr()}, init={self.init!r}"
        return s + (f", t_max={self.t_max}" if self.init == "chrono" else "")


class RefineLSTM(_CoreContract, nn.Module):
    """LSTM whose input gate is tied to ``1 - g``, with ``g`` the refine-gated forget gate (R- / UR-LSTM).

    Parameters are laid out as nn.LSTM's (4 blocks: refine, forget, candidate, output), so an R/UR core has
    exactly the parameter count and state-dict shapes of an nn.LSTM of the same sizes. Each layer's input projection
    is one product over the whole sequence; the recurrence runs in ``policies.kernels.refine_recurrence`` (a compiled
    CPU kernel, built on first use; pure torch on CUDA or where it cannot be built).

    :param input_size: features per step
    :param hidden_size: units per layer
    :param num_layers: stacked layers
    :param dropout: dropout on the outputs of every layer but the last, as nn.LSTM
    :param init: ``"default"`` (nn.LSTM's uniform +-1/sqrt(H)) or ``"ugi"`` (uniform gate initialisation of the
        forget bias and ``b_r = -b_f``, as the paper's pseudo-code)
    """

    _cell = staticmethod(refine_cell)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        *,
        init: str = "ugi",
        core_name: str = "ur",
    ) -> None:
        super().__init__()
        if init not in ("default", "ugi"):
            raise PolicyConfigError(f"unknown init {init!r} for a refine core; valid: default, ugi")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout, self.init, self.core_name = float(dropout), init, core_name
        for k in range(num_layers):
            width = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size, width)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
            self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size)))
            self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound)
            if self.init == "ugi":
                for k in range(self.num_layers):
                    b_ih, b_hh = getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")
                    b_f = ugi_forget_bias(self.hidden_size, dtype=b_ih.dtype)
                    gate_block(b_ih, "forget", REFINE_GATE_ORDER).copy_(b_f)
                    gate_block(b_ih, "refine", REFINE_GATE_ORDER).copy_(-b_f)
                    gate_block(b_hh, "forget", REFINE_GATE_ORDER).zero_()
                    gate_block(b_hh, "refine", REFINE_GATE_ORDER).zero_()

    def forward(self, x: torch.Tensor, hx: State | None = None, episode_starts: torch.Tensor | None = None):
        hx, starts = self._check(x, hx, episode_starts)
        h_n, c_n, inp = [], [], x
        for k in range(self.num_layers):
            if k > 0 and self.dropout > 0.0 and self.training:
                inp = F.dropout(inp, self.dropout, training=True)
            w_ih, w_hh, b = self._layer_weights(k)
            inp, h, c = refine_recurrence(F.linear(inp, w_ih, b), w_hh, hx[0][k], hx[1][k], starts)
            h_n.append(h)
            c_n.append(c)
        return inp, (torch.stack(h_n), torch.stack(c_n))

    def extra_repr(self) -> str:
        s = f"core={self.core_name!r}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        return s + (f", dropout={self.dropout}" if self.dropout else "") + f", init={self.init!r}"


@dataclass(frozen=True)
class CoreSpec:
    """A registered core: how to build it, what it is, and which keyword arguments it accepts."""

    builder: Callable[..., nn.Module]
    summary: str
    fixed: dict[str, Any] = field(default_factory=dict)
    options: tuple[str, ...] = ()  # the builder's keywords that mean something for this core (e.g. t_max)

    def accepted_kwargs(self) -> tuple[str, ...]:
        """Keywords a user may pass through ``core_kwargs``."""
        return self.options


CORES: dict[str, CoreSpec] = {
    "lstm": CoreSpec(GatedLSTM, "standard LSTM, torch's default init (stock RecurrentPPO)", {"init": "default"}),
    "chrono": CoreSpec(
        GatedLSTM, "LSTM with chrono init of forget/input biases (t_max=500)", {"init": "chrono"}, ("t_max",)
    ),
    "u": CoreSpec(GatedLSTM, "LSTM with uniform gate init of the forget bias (U-LSTM)", {"init": "ugi"}),
    "r": CoreSpec(RefineLSTM, "refine-gate LSTM, input gate tied to 1-g, default init (R-LSTM)", {"init": "default"}),
    "ur": CoreSpec(RefineLSTM, "refine gate + uniform gate init: the paper's UR-LSTM", {"init": "ugi"}),
}
CORE_NAMES: tuple[str, ...] = tuple(CORES)


def _unknown(kind: str, name: str, valid) -> PolicyConfigError:
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return PolicyConfigError(f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid) or '(none)'}")


def make_core(
    name: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0, **core_kwargs: Any
) -> nn.Module:
    """Build the memory core registered as ``name`` (one of ``CORE_NAMES``).

    :param name: core name, e.g. ``"ur"``
    :param input_size: features per step
    :param hidden_size: units per layer
    :param num_layers: stacked layers
    :param dropout: dropout between layers (training mode only), as nn.LSTM
    :param core_kwargs: the core's own keywords, e.g. ``t_max`` for ``"chrono"``
    """
    if name not in CORES:
        raise _unknown("core", name, CORE_NAMES)
    spec = CORES[name]
    accepted = spec.accepted_kwargs()
    for key in core_kwargs:
        if key not in accepted:
            raise _unknown(f"keyword for core '{name}':", key, accepted)
    for what, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PolicyConfigError(f"core '{name}': {what} must be a positive integer, got {v!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise PolicyConfigError(f"core '{name}': dropout must be in [0, 1), got {dropout!r}")
    if "t_max" in core_kwargs:
        t_max = core_kwargs["t_max"]
        if isinstance(t_max, bool) or not isinstance(t_max, int | float) or not t_max > 2:
            raise PolicyConfigError(
                f"core '{name}': t_max must be a number > 2 (longest delay in steps), got {t_max!r}"
            )
    return spec.builder(input_size, hidden_size, num_layers, dropout, core_name=name, **spec.fixed, **core_kwargs)
