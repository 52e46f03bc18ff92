"""Memory cores: drop-in replacements for ``torch.nn.LSTM`` with the gates and initialisations of Gu et al.

Every core follows nn.LSTM's contract (sequence-first input (T, B, F), states ``(h, c)`` of shape
(num_layers, B, H), parameters ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}``) and adds
one keyword, ``episode_starts`` (T, B): where it is 1 the state of every layer is zeroed before that step.

Cores are built by name through ``policies.registry.make_core``; adding a variant is one ``CoreSpec`` entry in
``policies.registry.CORES``. The GRU family (``policies.gru``) builds on the classes here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .errors import PolicyConfigError
from .gates import REFINE_GATE_ORDER, chrono_forget_bias, gate_block, lstm_cell, refine_cell, ugi_forget_bias
from .kernels import linear, refine_recurrence
from .recurrence import step_loop

State = tuple[torch.Tensor, torch.Tensor]

DEFAULT_T_MAX = 500


REFINE_BIASES = ("neg_forget", "zero")


def _frozen_block(t: torch.Tensor, gate: str, order: tuple[str, ...]) -> torch.Tensor:
    """``t`` with one gate block detached: that block takes part in the forward pass but receives no gradient."""
    block = gate_block(t, gate, order)
    start = order.index(gate) * block.shape[0]
    return torch.cat([t[:start], block.detach(), t[start + block.shape[0] :]])


def _refine_options(core_name: str, init: str, refine_bias: str | None, freeze_ugi: bool) -> str:
    """Check the refine cores' options; return ``refine_bias`` with None resolved to ``"zero"``, every refine core's
    default (measured better than ``"neg_forget"`` for ``ur`` and ``urgru``; under torch's default init there is
    no forget bias to subtract)."""
    if init not in ("default", "ugi"):
        raise PolicyConfigError(f"unknown init {init!r} for a refine core; valid: default, ugi")
    if refine_bias is None:
        refine_bias = "zero"
    if refine_bias not in REFINE_BIASES:
        raise PolicyConfigError(
            f"core '{core_name}': unknown refine_bias {refine_bias!r}; valid: {', '.join(REFINE_BIASES)}"
        )
    if not isinstance(freeze_ugi, bool):
        raise PolicyConfigError(f"core '{core_name}': freeze_ugi must be true or false, got {freeze_ugi!r}")
    if freeze_ugi and init != "ugi":
        raise PolicyConfigError(f"core '{core_name}': freeze_ugi needs init='ugi' (there is no UGI offset to freeze)")
    return refine_bias


@torch.no_grad()
def _init_refine_biases(
    b_ih: torch.Tensor,
    b_hh: torch.Tensor,
    *,
    order: tuple[str, ...],
    keep_gate: str,
    init: str,
    refine_bias: str,
) -> None:
    """UGI of the keep gate's bias (the LSTM's forget gate, the GRU's update gate) and the refine gate's bias, in
    place on one layer's bias vectors laid out in ``order`` (``gates.*_GATE_ORDER``).

    UGI goes into ``b_ih``'s keep block with ``b_hh``'s zeroed (so a frozen offset sits in one vector and the
    trainable remainder in the other); ``"neg_forget"`` sets ``b_r = -b_f`` the same way; ``"zero"`` leaves the
    refine block at torch's default init (as for an order without a refine gate).
    """
    if init == "ugi":
        b_f = gate_block(b_ih, keep_gate, order)
        b_f.copy_(ugi_forget_bias(b_f.shape[0], dtype=b_ih.dtype))
        gate_block(b_hh, keep_gate, order).zero_()
    if "refine" in order and refine_bias == "neg_forget":
        b_f = gate_block(b_ih, keep_gate, order) + gate_block(b_hh, keep_gate, order)
        gate_block(b_ih, "refine", order).copy_(-b_f)
        gate_block(b_hh, "refine", order).zero_()


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

    def _bias_ih(self, k: int) -> torch.Tensor:
        """``bias_ih`` of layer k as the forward pass uses it (a core with a frozen block detaches it here)."""
        return getattr(self, f"bias_ih_l{k}")

    def _layer_weights(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W_ih, W_hh, b_ih + b_hh) of layer k."""
        return (
            getattr(self, f"weight_ih_l{k}"),
            getattr(self, f"weight_hh_l{k}"),
            self._bias_ih(k) + getattr(self, f"bias_hh_l{k}"),
        )

    @torch.no_grad()
    def gate_trace(
        self, x: torch.Tensor, hx: State | None = None, episode_starts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Effective forget gate of every unit at every step, for diagnostics.

        ``g`` for refine cells, ``f`` for LSTM cells, ``f_hat`` for master-gate cells; computed without dropout by
        the plain step loop, so the normal forward path pays nothing for it.

        :return: tensor of shape (num_layers, T, B, hidden_size)
        """
        hx, starts = self._check(x, hx, episode_starts)
        traces, inp = [], x
        for k in range(self.num_layers):
            inp, g = self._trace_layer(k, inp, hx[0][k], hx[1][k], starts)
            traces.append(g)
        return torch.stack(traces)

    def _trace_layer(self, k: int, inp, h0, c0, starts) -> tuple[torch.Tensor, torch.Tensor]:
        """Outputs and gate values of layer k by the plain step loop (LSTM-layout cores; GRU cores override)."""
        w_ih, w_hh, b = self._layer_weights(k)
        out, _, _, g = step_loop(self._cell, F.linear(inp, w_ih, b), w_hh, h0, c0, starts, keep_gates=True)
        return out, g


def register_layer_parameters(core: nn.Module, rows: int) -> None:
    """nn.LSTM's parameters for every layer of ``core``: ``weight_ih_l{k}`` (rows, in), ``weight_hh_l{k}`` (rows,
    H), ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (rows,), uninitialised."""
    for k in range(core.num_layers):
        width = core.input_size if k == 0 else core.hidden_size
        core.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(rows, width)))
        core.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(rows, core.hidden_size)))
        core.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(rows)))
        core.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(rows)))


def reset_uniform(core: nn.Module) -> None:
    """nn.LSTM's initialisation: every parameter of ``core`` uniform on +-1/sqrt(H)."""
    bound = 1.0 / math.sqrt(core.hidden_size)
    with torch.no_grad():
        for p in core.parameters():
            p.uniform_(-bound, bound)


def stacked_layers(core, x: torch.Tensor, hx: State, starts: torch.Tensor | None):
    """``core._layer(k, ...)`` layer by layer, with dropout on the outputs of every layer but the last in training,
    as nn.LSTM: ``(out, (h_n, c_n))``."""
    h_n, c_n, inp = [], [], x
    for k in range(core.num_layers):
        if k > 0 and core.dropout > 0.0 and core.training:
            inp = F.dropout(inp, core.dropout, training=True)
        inp, h, c = core._layer(k, inp, hx[0][k], hx[1][k], starts)
        h_n.append(h)
        c_n.append(c)
    return inp, (torch.stack(h_n), torch.stack(c_n))


def fused_with_resets(
    run: Callable[[torch.Tensor, tuple[torch.Tensor, ...]], tuple[torch.Tensor, tuple[torch.Tensor, ...]]],
    x: torch.Tensor,
    state: tuple[torch.Tensor, ...],
    starts: torch.Tensor | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """A fused torch recurrence ``run(x, state) -> (out, state)`` (nn.LSTM's, nn.GRU's) with episode starts.

    One call per stretch between resets, each starting from the state zeroed where that step starts an episode;
    resets only at step 0 (the training case) make one call. (A PackedSequence of episode segments would be a
    single call, but torch runs packed input through its unfused per-step loop on CPU: measured 3-5x slower than
    these calls with one reset per column.)
    """
    if starts is None:
        return run(x, state)
    reset_steps = torch.nonzero(starts[1:].any(dim=1)).flatten().add(1).tolist()
    bounds = [0, *reset_steps, x.shape[0]]
    outs = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        keep = (1.0 - starts[a]).view(1, -1, 1)
        out, state = run(x[a:b], tuple(s * keep for s in state))
        outs.append(out)
    return (outs[0] if len(outs) == 1 else torch.cat(outs)), state


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
        return fused_with_resets(super().forward, x, tuple(hx), starts)

    def extra_repr(self) -> str:
        s = f"core={self.core_name!r}, {super().extra_repr()}, init={self.init!r}"
        return s + (f", t_max={self.t_max}" if self.init == "chrono" else "")


_REFINE_OPTIONS_DOC = """
    :param input_size: features per step
    :param hidden_size: units per layer
    :param num_layers: stacked layers
    :param dropout: dropout on the outputs of every layer but the last, as nn.LSTM
    :param init: ``"default"`` (torch's uniform +-1/sqrt(H)) or ``"ugi"`` (uniform gate initialisation of the
        forget (keep) gate's bias)
    :param refine_bias: ``"neg_forget"`` (``b_r = -b_f``, as three ports read the paper's pseudo-code: at
        initialisation ``g`` is about ``f^2``, halving the timescales near 1) or ``"zero"`` (the refine bias keeps
        torch's default init, so ``r`` is about 1/2 and ``g`` about ``f``, as Gu's later ``Gate('UR')`` in
        state-spaces); None takes ``"zero"`` (docs/equations.md, "The refine gate's bias": it measured better
        for the UR-LSTM and the UR-GRU)
    :param freeze_ugi: keep the UGI offset fixed, as state-spaces does (needs ``init="ugi"``): it lives in
        ``bias_ih``'s forget block, which then receives no gradient, while ``bias_hh``'s forget block (0 at
        initialisation) trains on top of it, so parameter names and state-dict shapes do not change. An
        optimizer's weight decay would still move the offset (Adam without weight decay, SB3's default, leaves it
        exactly)
    """


class RefineCoreBase(_CoreContract, nn.Module):
    """Four gate blocks per layer, one of them a refine gate; the options and initialisation of every refine core.

    Subclasses give the block order (``_ORDER``, with the keep gate ``_KEEP_GATE``) and one layer's recurrence
    (``_layer``). Parameters are named and shaped as nn.LSTM's (``weight_ih_l{k}`` (4H, in), ``weight_hh_l{k}``
    (4H, H), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (4H)).
    """

    _ORDER = REFINE_GATE_ORDER
    _KEEP_GATE = "forget"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        *,
        init: str = "ugi",
        refine_bias: str | None = None,
        freeze_ugi: bool = False,
        core_name: str = "ur",
    ) -> None:
        super().__init__()
        self.refine_bias = _refine_options(core_name, init, refine_bias, freeze_ugi)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout, self.init, self.core_name, self.freeze_ugi = float(dropout), init, core_name, freeze_ugi
        register_layer_parameters(self, 4 * hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_uniform(self)
        for k in range(self.num_layers):
            _init_refine_biases(
                getattr(self, f"bias_ih_l{k}"),
                getattr(self, f"bias_hh_l{k}"),
                order=self._ORDER,
                keep_gate=self._KEEP_GATE,
                init=self.init,
                refine_bias=self.refine_bias,
            )

    def _bias_ih(self, k: int) -> torch.Tensor:
        b = getattr(self, f"bias_ih_l{k}")
        return _frozen_block(b, self._KEEP_GATE, self._ORDER) if self.freeze_ugi else b

    def _layer(self, k: int, inp, h0, c0, starts) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(out, h_T, c_T)`` of layer k."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, hx: State | None = None, episode_starts: torch.Tensor | None = None):
        hx, starts = self._check(x, hx, episode_starts)
        return stacked_layers(self, x, hx, starts)

    def extra_repr(self) -> str:
        s = f"core={self.core_name!r}, {self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        s += (f", dropout={self.dropout}" if self.dropout else "") + f", init={self.init!r}"
        return s + f", refine_bias={self.refine_bias!r}" + (", freeze_ugi=True" if self.freeze_ugi else "")


class RefineLSTM(RefineCoreBase):
    __doc__ = (
        """LSTM whose input gate is tied to ``1 - g``, with ``g`` the refine-gated forget gate (R- / UR-LSTM).

    Parameters are laid out as nn.LSTM's (4 blocks: refine, forget, candidate, output), so an R/UR core has
    exactly the parameter count and state-dict shapes of an nn.LSTM of the same sizes. Each layer's input projection
    is one product over the whole sequence; the recurrence runs in ``policies.kernels.refine_recurrence`` (a compiled
    CPU kernel, built on first use; Triton kernels on CUDA with the ``gpu`` extra, ``pip install -e ".[gpu]"``; else pure torch).
    """
        + _REFINE_OPTIONS_DOC
    )

    _cell = staticmethod(refine_cell)

    def _layer(self, k: int, inp, h0, c0, starts):
        w_ih, w_hh, b = self._layer_weights(k)
        return refine_recurrence(linear(inp, w_ih, b), w_hh, h0, c0, starts)
