"""The refine-gate and GRU recurrences over a whole sequence: a compiled CPU kernel where available, else pure torch.
The compiled extensions are built and cached by ``policies.extensions``; the pure-torch definitions are in
``policies.recurrence``.

``refine_recurrence`` (R/UR-LSTM) and ``gru_recurrence`` (GRU and UR-GRU, ``csrc/gru.cpp``, built into the same
extension and loaded with it) are the entry points the cores call; what follows describes the first, and the
second is built the same way around ``recurrence.gru_step_loop``. The gru/ugru cores use ``gru_recurrence`` only
where it is compiled (torch's CPU GRU steps through composite ops and is slow) and torch's nn.GRU elsewhere.
The pure-torch path of ``refine_recurrence`` is ``recurrence.refine_recurrence_reference``, the plain loop of
``recurrence.step_loop`` over ``gates.refine_cell`` (autograd through the loop). The compiled path
(``csrc/refine.cpp``) fuses each step's elementwise work into one loop next to one matrix product, and has a
hand-written backward pass whose recurrent weight gradient is one matrix product over all steps. It must match the
pure-torch path, special values (NaN, +-inf) included (tests/test_kernels.py).

The compiled path serves CPU float32/float64 tensors. CUDA tensors go to the Triton kernels of
``policies.triton_refine`` once they pass a one-time self-check per device and dtype (triton is the optional extra
the ``gpu`` extra, ``pip install -e ".[gpu]"``). Elsewhere (other dtypes, no triton, a kernel that cannot be built or fails its self-check) the
pure-torch path runs after a warning that says why (one per cores and reason in a process). ``URGATE_DISABLE_KERNEL=1`` in the environment forces the
pure-torch path silently.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch.autograd.function import once_differentiable

from .extensions import CompiledExtension
from .recurrence import gru_recurrence_reference, refine_recurrence_reference

DISABLE_ENV = "URGATE_DISABLE_KERNEL"


def kernel_disabled() -> bool:
    """True when the user forces the pure-torch path with ``URGATE_DISABLE_KERNEL=1`` (read at every call)."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


# One extension: the refine LSTM and the GRU / refine GRU kernels, and the dense product of ``matmul`` (each file
# registers its ops in urgate's namespace).
REFINE = CompiledExtension(
    "refine", ["refine.cpp", "gru.cpp", "matmul.cpp"], description="refine-gate and GRU CPU kernels"
)
# What runs instead of a compiled kernel, by the cores it concerns (the first words of a fallback warning).
REFINE_FALLBACK = "refine-gate LSTM cores (r, ur) run the slower pure-torch recurrence"
GRU_FALLBACK = "gru/ugru run torch's nn.GRU forward, slower than the compiled kernel on CPU"
URGRU_FALLBACK = "the refine-gate GRU (urgru) runs the slower pure-torch recurrence"
_warned: set[tuple[str, str]] = set()  # (fallback, reason) pairs already warned about in this process


def kernel_available() -> bool:
    """Whether the compiled refine kernel is usable in this process (builds it on first call)."""
    return not kernel_disabled() and REFINE.load()


def warn_fallback(fallback: str, reason: str) -> None:
    """One ``RuntimeWarning`` per distinct fallback and reason in a process: a later fallback of other cores, or of
    the same cores for another reason (another dtype, another device), warns again.

    :param fallback: which cores run which slower path (``REFINE_FALLBACK``, ...)
    :param reason: why the compiled kernel cannot serve this call
    """
    if (fallback, reason) in _warned:
        return
    _warned.add((fallback, reason))
    warnings.warn(
        f"urgate: {fallback} ({reason}); set {DISABLE_ENV}=1 to choose that path explicitly and silence this warning",
        RuntimeWarning,
        stacklevel=3,
    )


def _compiled_matmul(a: torch.Tensor, m: torch.Tensor) -> bool:
    """Whether ``matmul`` runs the compiled loop: float32 CPU tensors, kernels built for AVX-512 (where the loop ran
    a 512 x 128 x 512 product at about twice the rate of torch's MKL on an AMD EPYC CPU; elsewhere torch's BLAS)."""
    return (
        a.device.type == "cpu"
        and a.dtype == m.dtype == torch.float32
        and REFINE.flavour == "avx512"
        and not kernel_disabled()
        and REFINE.load()
    )


def matmul(a: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``a @ m`` for 2-D ``a`` (rows x k) and ``m`` (k x cols), without autograd: the compiled register-blocked loop
    (``csrc/matmul.cpp``) where ``_compiled_matmul`` allows it, else ``torch.mm``. The two differ by float rounding."""
    return torch.ops.urgate.matmul(a, m) if _compiled_matmul(a, m) else a.mm(m)


class _Linear(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` with its three products on ``matmul`` (first-order gradients only)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1])
        out = matmul(x2, weight.t())
        if bias is not None:
            out.add_(bias)
        ctx.save_for_backward(x2, weight)
        ctx.has_bias = bias is not None
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x2, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, weight.shape[0])
        d_x = matmul(g2, weight).view(*grad.shape[:-1], weight.shape[1]) if ctx.needs_input_grad[0] else None
        d_w = matmul(x2.t(), g2).t().contiguous() if ctx.needs_input_grad[1] else None
        d_b = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return d_x, d_w, d_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, its forward and gradient products on ``matmul``'s compiled loop where that is
    faster (a core's input projection over a whole minibatch; first-order gradients only, as the compiled
    recurrences), torch's ``F.linear`` otherwise."""
    if _compiled_matmul(x, weight):
        return _Linear.apply(x, weight, bias)
    return torch.nn.functional.linear(x, weight, bias)


class CompiledRecurrence(torch.autograd.Function):
    """Autograd wrapper of a compiled LSTM-state kernel's forward and backward passes (first-order gradients only).

    ``forward_op(*args, xproj, w_hh, h0, c0, resets, save)`` returns ``(out, h, c, acts, hprev, cprev, tanh_c)``
    and ``backward_op(*args, grad_out, grad_h, grad_c, w_hh, acts, cprev, tanh_c, resets)`` returns
    ``(d_xproj, dh0, dc0)``; ``args`` are the kernel's leading options (none for the refine kernel, the kind and
    chunk size for the ordered one).
    """

    @staticmethod
    def forward(ctx, forward_op, backward_op, args, xproj, w_hh, h0, c0, resets):
        out, h, c, acts, hprev, cprev, tanhc = forward_op(*args, xproj, w_hh, h0, c0, resets, True)
        ctx.backward_op, ctx.args = backward_op, args
        ctx.save_for_backward(w_hh, acts, hprev, cprev, tanhc, resets)
        return out, h, c

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h, grad_c):
        w_hh, acts, hprev, cprev, tanhc, resets = ctx.saved_tensors
        d_gates, dh0, dc0 = ctx.backward_op(*ctx.args, grad_out, grad_h, grad_c, w_hh, acts, cprev, tanhc, resets)
        # The recurrent weight gradient of all steps as one product: sum_t dG_t^T h_{t-1}.
        d_w = matmul(hprev.flatten(0, 1).t(), d_gates.flatten(0, 1)).t() if ctx.needs_input_grad[4] else None
        return None, None, None, d_gates, d_w, dh0, dc0, None


def _kernel_reason(
    xproj: torch.Tensor, tensors: tuple[torch.Tensor, ...], extension: CompiledExtension | None = None
) -> str | None:
    """Why the compiled kernel (of ``extension``, the refine extension by default) cannot take these tensors, or None
    when it can."""
    extension = extension or REFINE
    if xproj.device.type != "cpu":
        return f"the compiled kernel is CPU-only, got device {xproj.device.type}"
    if xproj.dtype not in (torch.float32, torch.float64):
        return f"the compiled kernel takes float32/float64, got {xproj.dtype}"
    if any(t.dtype != xproj.dtype for t in tensors):
        return "mixed dtypes"
    if not extension.load():
        return f"the compiled kernel is unavailable: {extension.error}"
    return None


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
    if xproj.device.type == "cuda" and not kernel_disabled():
        from . import triton_refine  # imports triton only when CUDA tensors arrive

        reason = triton_refine.unavailable_reason(xproj, (w_hh, h0, c0))
        if reason is None:
            return triton_refine.refine_recurrence_triton(xproj, w_hh, h0, c0, resets)
        warn_fallback(REFINE_FALLBACK, reason)
        return refine_recurrence_reference(xproj, w_hh, h0, c0, resets)
    return _dispatch(
        lambda *a: refine_recurrence_reference(*a),
        lambda *a: CompiledRecurrence.apply(torch.ops.urgate.refine_forward, torch.ops.urgate.refine_backward, (), *a),
        lambda *a: torch.ops.urgate.refine_forward(*a, False)[:3],
        (xproj, w_hh, h0, c0),
        resets,
    )


def _dispatch(
    reference,
    train,
    inference,
    tensors: tuple[torch.Tensor, ...],
    resets: torch.Tensor | None,
    *,
    extension: CompiledExtension | None = None,
    fallback: str = REFINE_FALLBACK,
):
    """The one rule of every compiled recurrence: the pure-torch ``reference`` when the kernel is disabled (silently)
    or cannot take these tensors (after a warning, once per reason), else the compiled autograd pass ``train`` when a gradient
    is needed and the compiled ``inference`` pass (nothing saved for backward) when not.

    :param tensors: the recurrence's tensor arguments, ``xproj`` first
    :param resets: (T, B) or None, passed last
    :param extension: the extension the kernel is in (default: the refine/GRU one)
    :param fallback: what the warning says runs instead (default: the refine LSTM cores' pure-torch recurrence)
    """
    if kernel_disabled():
        return reference(*tensors, resets)
    reason = _kernel_reason(tensors[0], tensors[1:], extension)
    if reason is not None:
        warn_fallback(fallback, reason)
        return reference(*tensors, resets)
    rs = resets.to(tensors[0].dtype) if resets is not None else tensors[0].new_empty(0)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return train(*tensors, rs)
    return tuple(inference(*tensors, rs))


class GruRecurrence(torch.autograd.Function):
    """Autograd wrapper of the compiled GRU / refine-GRU forward and backward passes (first-order gradients only)."""

    @staticmethod
    def forward(ctx, refine, xproj, w_hh, b_hh, h0, resets):
        out, h, acts, hprev, a_n = torch.ops.urgate.gru_forward(xproj, w_hh, b_hh, h0, resets, refine, True)
        ctx.refine = refine
        ctx.save_for_backward(w_hh, acts, hprev, a_n, resets)
        return out, h

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h):
        w_hh, acts, hprev, a_n, resets = ctx.saved_tensors
        d_x, d_a, dh0 = torch.ops.urgate.gru_backward(grad_out, grad_h, w_hh, acts, a_n, hprev, resets, ctx.refine)
        d_flat = d_a.flatten(0, 1)
        # The recurrent weight and bias gradients of all steps as one product and one sum.
        d_w = matmul(hprev.flatten(0, 1).t(), d_flat).t() if ctx.needs_input_grad[2] else None
        d_b = d_flat.sum(0) if ctx.needs_input_grad[3] else None
        return None, d_x, d_w, d_b, dh0, None


def gru_recurrence(
    xproj: torch.Tensor,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    h0: torch.Tensor,
    resets: torch.Tensor | None = None,
    *,
    refine: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRU (``refine=False``, nn.GRU's cell) or refine-gate GRU recurrence for one layer: compiled on CPU, else
    pure torch after a warning (once per reason).

    :param xproj: ``W_ih x_t + b_ih`` for every step, (T, B, 3H) ordered (r, z, n), or (T, B, 4H) ordered
        (r, z, n, refine) with ``refine``
    :param w_hh: recurrent weights (3H or 4H, H)
    :param b_hh: recurrent bias (3H or 4H,)
    :param h0: initial hidden state (B, H)
    :param resets: (T, B), 1 where the state is zeroed before step t; None for no resets
    :param refine: whether the update gate is refined (UR-GRU)
    :return: ``(out, h_T)``
    """
    return _dispatch(
        lambda *a: gru_recurrence_reference(*a, refine=refine),
        lambda *a: GruRecurrence.apply(refine, *a),
        lambda *a: torch.ops.urgate.gru_forward(*a, refine, False)[:2],
        (xproj, w_hh, b_hh, h0),
        resets,
        fallback=URGRU_FALLBACK if refine else GRU_FALLBACK,
    )


def compiled_kernel_takes(x: torch.Tensor) -> bool:
    """Whether the compiled kernel is enabled, built and able to take tensors like ``x`` (CPU, float32/64); when it
    is not for a CPU tensor (and not disabled), a fallback warning says why."""
    if kernel_disabled():
        return False
    reason = _kernel_reason(x, ())
    if reason is not None and x.device.type == "cpu":
        warn_fallback(GRU_FALLBACK, reason)
    return reason is None
