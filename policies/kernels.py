"""The refine-gate recurrence over a whole sequence: a compiled CPU kernel where available, else pure torch.

``refine_recurrence`` is the one entry point the refine cores call. The pure-torch path is the plain loop of
``recurrence.step_loop`` over ``gates.refine_cell`` (autograd through the loop). The compiled path
(``csrc/refine.cpp``, built with torch's C++ extension loader and ninja on first use, then cached in
``~/.cache/torch_extensions``) fuses each step's elementwise work into one loop next to one matrix product, and has
a hand-written backward pass whose recurrent weight gradient is one matrix product over all steps. It must match
the pure-torch path (tests/test_kernels.py).

The compiled path serves CPU float32/float64 tensors. Elsewhere (CUDA, other dtypes), or when the build fails, the
pure-torch path runs after one warning. ``URGATE_DISABLE_KERNEL=1`` in the environment forces the pure-torch path
silently.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import warnings
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from .gates import refine_cell
from .recurrence import step_loop

DISABLE_ENV = "URGATE_DISABLE_KERNEL"
_SOURCE = Path(__file__).with_name("csrc") / "refine.cpp"
_EXTENSION_NAME = "urgate_refine"
# ATen's vector types (and the SLEEF exp/tanh that libtorch exports) at the widest width measured to pay here:
# AVX2 on any x86 CPU where torch itself dispatches to AVX2 or AVX-512 (AVX-512 measured no faster); elsewhere
# the generic, scalar build.
_AVX2_FLAGS = ["-mavx2", "-mfma", "-mf16c", "-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]

_STALE_LOCK_S = 600
_lock = threading.Lock()
_ops = None  # torch.ops.urgate once loaded
_build_error: str | None = None  # why the build failed, once it has
_warned = False


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


def kernel_disabled() -> bool:
    """True when the user forces the pure-torch path with ``URGATE_DISABLE_KERNEL=1`` (read at every call)."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _ensure_ninja_on_path() -> None:
    # A venv's python run without activating the venv does not have the venv's ninja on PATH.
    if shutil.which("ninja") is None:
        try:
            import ninja

            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
        except (ImportError, AttributeError):
            pass


def _clear_stale_lock(cpp_extension, name: str) -> None:
    # torch's build lock is a file that a killed build leaves behind, and every later build then waits on it
    # forever. A build takes well under a minute, so a lock older than 10 minutes is such a leftover.
    try:
        lock = Path(cpp_extension._get_build_directory(name, False)) / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > _STALE_LOCK_S:
            lock.unlink()
    except (AttributeError, OSError):
        pass


def _announce_first_build(cpp_extension, name: str) -> None:
    # The first build takes 15-60 s inside whatever called the core: say why the program seems to pause.
    try:
        build_dir = Path(cpp_extension._get_build_directory(name, False))
    except (AttributeError, OSError):
        return
    if not (build_dir / f"{name}.so").exists():
        logging.getLogger(__name__).warning(
            "urgate: building the refine-gate CPU kernel (once per machine, 15-60 s; cached in %s)", build_dir
        )


def load_kernel():
    """Build (first use on a machine, ~30-60 s) or load (cached) the compiled kernel; return its ops or None.

    The result is remembered for the process, so a process builds or loads it at most once; a failed build is
    not retried. Never called at import time.
    """
    global _ops, _build_error
    if _ops is not None or _build_error is not None:
        return _ops
    with _lock:
        if _ops is not None or _build_error is not None:
            return _ops
        try:
            from torch.utils import cpp_extension

            _ensure_ninja_on_path()
            avx2 = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
            name = f"{_EXTENSION_NAME}_{'avx2' if avx2 else 'generic'}"
            _clear_stale_lock(cpp_extension, name)
            _announce_first_build(cpp_extension, name)
            cpp_extension.load(
                name=name,
                sources=[str(_SOURCE)],
                extra_cflags=["-O3", *(_AVX2_FLAGS if avx2 else [])],
                is_python_module=False,
                verbose=False,
            )
            _ops = torch.ops.urgate
        except Exception as e:  # noqa: BLE001 - any build or load failure means: use the pure-torch path
            _build_error = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    return _ops


def kernel_available() -> bool:
    """Whether the compiled CPU kernel is usable in this process (builds it on first call)."""
    return not kernel_disabled() and load_kernel() is not None


def _warn_fallback(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"urgate: refine-gate cores run the slower pure-torch recurrence ({reason}); "
            f"set {DISABLE_ENV}=1 to choose that path explicitly and silence this warning",
            RuntimeWarning,
            stacklevel=3,
        )


class RefineRecurrence(torch.autograd.Function):
    """Autograd wrapper of the compiled forward and backward passes (first-order gradients only)."""

    @staticmethod
    def forward(ctx, xproj, w_hh, h0, c0, resets):
        out, h, c, acts, hprev, cprev, tanhc = _ops.refine_forward(xproj, w_hh, h0, c0, resets, True)
        ctx.save_for_backward(w_hh, acts, hprev, cprev, tanhc, resets)
        return out, h, c

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h, grad_c):
        w_hh, acts, hprev, cprev, tanhc, resets = ctx.saved_tensors
        d_gates, dh0, dc0 = _ops.refine_backward(grad_out, grad_h, grad_c, w_hh, acts, cprev, tanhc, resets)
        # The recurrent weight gradient of all steps as one product: sum_t dG_t^T h_{t-1}.
        d_w = d_gates.flatten(0, 1).t().mm(hprev.flatten(0, 1)) if ctx.needs_input_grad[1] else None
        return d_gates, d_w, dh0, dc0, None


def _kernel_reason(xproj: torch.Tensor, tensors: tuple[torch.Tensor, ...]) -> str | None:
    """Why the compiled kernel cannot take these tensors, or None when it can."""
    if xproj.device.type != "cpu":
        return f"the compiled kernel is CPU-only, got device {xproj.device.type}"
    if xproj.dtype not in (torch.float32, torch.float64):
        return f"the compiled kernel takes float32/float64, got {xproj.dtype}"
    if any(t.dtype != xproj.dtype for t in tensors):
        return "mixed dtypes"
    if load_kernel() is None:
        return f"the compiled kernel failed to build: {_build_error}"
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
    if kernel_disabled():
        return refine_recurrence_reference(xproj, w_hh, h0, c0, resets)
    reason = _kernel_reason(xproj, (w_hh, h0, c0))
    if reason is not None:
        _warn_fallback(reason)
        return refine_recurrence_reference(xproj, w_hh, h0, c0, resets)
    rs = resets.to(xproj.dtype) if resets is not None else xproj.new_empty(0)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (xproj, w_hh, h0, c0)):
        return RefineRecurrence.apply(xproj, w_hh, h0, c0, rs)
    out, h, c, *_ = _ops.refine_forward(xproj, w_hh, h0, c0, rs, False)
    return out, h, c
