"""The refine-gate recurrence as Triton kernels, for CUDA tensors: a speed trick, not a definition.

The maths is defined once, in ``policies/gates.py`` (``effective_gate``, ``refine_cell``) and
``policies/recurrence.py`` (``step_loop``: the reset, one matrix product and the cell per step). The kernels below
restate it only to run a whole sequence in one launch, with the same contract as the compiled CPU kernel
(``csrc/refine.cpp``):

- the input projection ``W_ih x_t + b`` arrives hoisted over the sequence (one large product, done by the caller);
- the forward kernel loops over time inside one launch, one program per block of ``BLOCK_B`` batch rows; each step
  computes ``h_{t-1} W_hh^T`` tile by tile (``tl.dot``) and applies the cell to that tile at once, so the gate
  pre-activations never leave registers; ``episode_starts`` resets are a per-row factor inside the loop;
- the forward pass saves every step's ``h`` and ``c``; the backward pass recomputes the gate pre-activations with
  one large product (``xproj + h_prev W_hh^T`` over all steps), loops back over time in one launch, and the
  recurrent weight gradient is one large product over all steps afterwards.

A step's hidden state is read by every program thread that needs it, so it goes through global memory (the
output tensor itself) and a barrier ends each step; a program owns its batch rows for the whole sequence, so no
two programs ever touch the same row.

float32 and float64 run in their own precision (``tl.dot`` with ``input_precision="ieee"``, no TF32); float16 and
bfloat16 store ``h`` and the gradients in their dtype but accumulate and carry the cell state in float32.

On CPU tensors the same kernels run under Triton's interpreter (numpy), which is how the tests check them on a
machine without a GPU; ``policies.kernels`` never sends CPU tensors here (its compiled CPU kernel serves them).
``policies.kernels.refine_recurrence`` sends CUDA tensors here once ``unavailable_reason`` has passed a one-time
self-check per device and dtype against the pure-torch path.
"""

from __future__ import annotations

import contextlib
import os
import threading

import torch
from torch.autograd.function import once_differentiable

from .recurrence import refine_recurrence_reference

try:
    import triton
    import triton.language as tl

    _IMPORT_ERROR: str | None = None
except ImportError as e:  # the optional extra gpu
    triton = tl = None
    _IMPORT_ERROR = (
        f"triton is not installed ({e}); in a checkout: pip install -e '.[gpu]' (or pip install 'triton>=3.0')"
    )

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
# Self-check tolerances against the float64 pure-torch recurrence, by dtype.
_CHECK_TOL = {
    torch.float64: 1e-9,
    torch.float32: 1e-4,
    torch.float16: 3e-2,
    torch.bfloat16: 1e-1,
}
_INTERPRET_ENV = "TRITON_INTERPRET"
_MIN_DOT = 16  # tl.dot's smallest tile side on NVIDIA GPUs
_MAX_TILE_N, _MAX_TILE_K = 64, 32

_checked: dict[tuple[str, torch.dtype], str | None] = {}  # (device, dtype) -> why the kernel is unusable, or None
_check_lock = threading.Lock()


@contextlib.contextmanager
def _interpreter_without_gpu():
    """Decorate the kernels for Triton's interpreter when this process has no CUDA device (or asks for it)."""
    previous = os.environ.get(_INTERPRET_ENV)
    interpret = previous not in (None, "", "0") or not torch.cuda.is_available()
    if interpret:
        os.environ[_INTERPRET_ENV] = "1"
    try:
        yield interpret
    finally:
        if previous is None:
            os.environ.pop(_INTERPRET_ENV, None)
        else:
            os.environ[_INTERPRET_ENV] = previous


INTERPRETED = False  # whether the kernels below run under Triton's interpreter (CPU tensors) instead of on CUDA
if triton is not None:
    with _interpreter_without_gpu() as INTERPRETED:

        @triton.jit
        def _sigmoid(a):
            return 1.0 / (1.0 + tl.exp(-a))

        @triton.jit
        def _tanh(a):
            # tl has no tanh that also runs under the interpreter; 2 sigma(2a) - 1 is exact in exact arithmetic.
            return 2.0 / (1.0 + tl.exp(-2.0 * a)) - 1.0

        @triton.jit
        def _refine_forward_kernel(
            xproj,  # (T, B, 4H), blocks (r, f, u, o)
            w_hh,  # (4H, H)
            hs,  # (T + 1, B, H): hs[0] = h0 on entry, the kernel writes hs[t + 1] = h_t
            cs,  # (T + 1, B, H) with c_stride = B H (cs[t + 1] = c_t), or (1, B, H) with c_stride = 0
            keep,  # (T, B): 1 - resets, read only when HAS_RESETS
            T,
            B,
            H: tl.constexpr,
            c_stride,
            HAS_RESETS: tl.constexpr,
            ACC: tl.constexpr,  # accumulation dtype
            BLOCK_B: tl.constexpr,
            BLOCK_N: tl.constexpr,
            BLOCK_K: tl.constexpr,
        ):
            rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
            rmask = rows < B
            x_t, h_t, c_t, k_t = xproj, hs, cs, keep  # pointers to step t's slices, advanced every step
            for _t in range(T):
                if HAS_RESETS:
                    k = tl.load(k_t + rows, mask=rmask, other=0.0).to(ACC)
                for n0 in range(0, H, BLOCK_N):
                    cols = n0 + tl.arange(0, BLOCK_N)
                    cmask = cols < H
                    m2 = rmask[:, None] & cmask[None, :]
                    acc_r = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype=ACC)
                    acc_f = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype=ACC)
                    acc_u = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype=ACC)
                    acc_o = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype=ACC)
                    for k0 in range(0, H, BLOCK_K):
                        ks = k0 + tl.arange(0, BLOCK_K)
                        kmask = ks < H
                        hk = tl.load(
                            h_t + rows[:, None] * H + ks[None, :], mask=rmask[:, None] & kmask[None, :], other=0.0
                        )
                        # Tile (BLOCK_K, BLOCK_N) of W_gate^T: element (kk, n) is w_hh[gate * H + n, kk].
                        w_ptr = w_hh + cols[None, :] * H + ks[:, None]
                        wmask = kmask[:, None] & cmask[None, :]
                        acc_r = tl.dot(hk, tl.load(w_ptr, mask=wmask, other=0.0), acc_r, input_precision="ieee")
                        acc_f = tl.dot(hk, tl.load(w_ptr + H * H, mask=wmask, other=0.0), acc_f, input_precision="ieee")
                        acc_u = tl.dot(
                            hk, tl.load(w_ptr + 2 * H * H, mask=wmask, other=0.0), acc_u, input_precision="ieee"
                        )
                        acc_o = tl.dot(
                            hk, tl.load(w_ptr + 3 * H * H, mask=wmask, other=0.0), acc_o, input_precision="ieee"
                        )
                    x_ptr = x_t + rows[:, None] * (4 * H) + cols[None, :]
                    c_ptr = c_t + rows[:, None] * H + cols[None, :]
                    c_prev = tl.load(c_ptr, mask=m2, other=0.0).to(ACC)
                    if HAS_RESETS:
                        # A reset zeroes h_{t-1} and c_{t-1}: scaling the product by k is scaling h_{t-1} by k.
                        acc_r, acc_f = acc_r * k[:, None], acc_f * k[:, None]
                        acc_u, acc_o = acc_u * k[:, None], acc_o * k[:, None]
                        c_prev = c_prev * k[:, None]
                    r = _sigmoid(acc_r + tl.load(x_ptr, mask=m2, other=0.0).to(ACC))
                    f = _sigmoid(acc_f + tl.load(x_ptr + H, mask=m2, other=0.0).to(ACC))
                    u = _tanh(acc_u + tl.load(x_ptr + 2 * H, mask=m2, other=0.0).to(ACC))
                    o = _sigmoid(acc_o + tl.load(x_ptr + 3 * H, mask=m2, other=0.0).to(ACC))
                    g = f + (2.0 * r - 1.0) * f * (1.0 - f)
                    c = g * c_prev + (1.0 - g) * u
                    tl.store(c_ptr + c_stride, c.to(cs.dtype.element_ty), mask=m2)
                    tl.store(
                        h_t + B * H + rows[:, None] * H + cols[None, :], (o * _tanh(c)).to(hs.dtype.element_ty), mask=m2
                    )
                # Every tile of h_t must be written before any thread of this program reads it in step t + 1.
                tl.debug_barrier()
                x_t += B * 4 * H
                h_t += B * H
                c_t += c_stride
                k_t += B

        @triton.jit
        def _refine_backward_kernel(
            # Step T - 1's slice of each (T, ...) tensor; the kernel walks back from there.
            pre,  # (T, B, 4H): gate pre-activations, recomputed by the caller
            w_hh,  # (4H, H)
            cs,  # (T + 1, B, H): cs[t] = c_{t-1} before its reset, cs[t + 1] = c_t
            keep,  # (T, B): 1 - resets, read only when HAS_RESETS
            gout,  # (T, B, H): gradient reaching every output h_t (the final state's folded into step T - 1)
            dc,  # (B, H), ACC: gradient reaching c_t; grad of c_T on entry, of c_0 (after its reset) on exit
            dg,  # (T, B, 4H): out, gradient of the pre-activations
            T,
            B,
            H: tl.constexpr,
            HAS_RESETS: tl.constexpr,
            ACC: tl.constexpr,
            BLOCK_B: tl.constexpr,
            BLOCK_N: tl.constexpr,
            BLOCK_K: tl.constexpr,
        ):
            rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
            rmask = rows < B
            p_t, g_t, c_t, o_t, k_t = pre, dg, cs, gout, keep  # pointers to step t's slices, moved back every step
            for i in range(T):
                has_next = i > 0  # step t + 1 exists and its gradient sits at g_t + B 4H
                if HAS_RESETS:
                    k = tl.load(k_t + rows, mask=rmask, other=0.0).to(ACC)
                    kn = tl.load(k_t + B + rows, mask=rmask & has_next, other=0.0).to(ACC)
                for n0 in range(0, H, BLOCK_N):
                    cols = n0 + tl.arange(0, BLOCK_N)
                    cmask = cols < H
                    m2 = rmask[:, None] & cmask[None, :]
                    # Gradient reaching h_t through step t + 1: dG_{t+1} W_hh, tile by tile over the 4H inputs.
                    acc = tl.full((BLOCK_B, BLOCK_N), 0.0, dtype=ACC)
                    for blk in tl.static_range(4):
                        for k0 in range(0, H, BLOCK_K):
                            ks = k0 + tl.arange(0, BLOCK_K)
                            kmask = ks < H
                            dgk = tl.load(
                                g_t + B * 4 * H + rows[:, None] * (4 * H) + blk * H + ks[None, :],
                                mask=rmask[:, None] & kmask[None, :] & has_next,
                                other=0.0,
                            )
                            wk = tl.load(
                                w_hh + (blk * H + ks[:, None]) * H + cols[None, :],
                                mask=kmask[:, None] & cmask[None, :],
                                other=0.0,
                            )
                            acc = tl.dot(dgk, wk, acc, input_precision="ieee")
                    if HAS_RESETS:
                        acc = acc * kn[:, None]
                    dh = tl.load(o_t + rows[:, None] * H + cols[None, :], mask=m2, other=0.0).to(ACC) + acc
                    p_ptr = p_t + rows[:, None] * (4 * H) + cols[None, :]
                    r = _sigmoid(tl.load(p_ptr, mask=m2, other=0.0).to(ACC))
                    f = _sigmoid(tl.load(p_ptr + H, mask=m2, other=0.0).to(ACC))
                    u = _tanh(tl.load(p_ptr + 2 * H, mask=m2, other=0.0).to(ACC))
                    o = _sigmoid(tl.load(p_ptr + 3 * H, mask=m2, other=0.0).to(ACC))
                    c_prev = tl.load(c_t + rows[:, None] * H + cols[None, :], mask=m2, other=0.0).to(ACC)
                    if HAS_RESETS:
                        c_prev = c_prev * k[:, None]
                    tc = _tanh(tl.load(c_t + B * H + rows[:, None] * H + cols[None, :], mask=m2, other=0.0).to(ACC))
                    fq = f * (1.0 - f)
                    r2 = 2.0 * r - 1.0
                    g = f + r2 * fq
                    dc_ptr = dc + rows[:, None] * H + cols[None, :]
                    d_c = tl.load(dc_ptr, mask=m2, other=0.0) + dh * o * (1.0 - tc * tc)
                    d_g = d_c * (c_prev - u)
                    out_ty = dg.dtype.element_ty
                    d_ptr = g_t + rows[:, None] * (4 * H) + cols[None, :]
                    tl.store(d_ptr, (d_g * 2.0 * fq * r * (1.0 - r)).to(out_ty), mask=m2)  # dg/dr = 2 f (1 - f)
                    tl.store(d_ptr + H, (d_g * (1.0 + r2 * (1.0 - 2.0 * f)) * fq).to(out_ty), mask=m2)
                    tl.store(d_ptr + 2 * H, (d_c * (1.0 - g) * (1.0 - u * u)).to(out_ty), mask=m2)
                    tl.store(d_ptr + 3 * H, (dh * tc * o * (1.0 - o)).to(out_ty), mask=m2)
                    d_c = d_c * g
                    if HAS_RESETS:
                        d_c = d_c * k[:, None]
                    tl.store(dc_ptr, d_c, mask=m2)
                # Every tile of dG_t must be written before step t - 1 reads it.
                tl.debug_barrier()
                p_t -= B * 4 * H
                g_t -= B * 4 * H
                c_t -= B * H
                o_t -= B * H
                k_t -= B


def _tiles(B: int, H: int) -> dict[str, int]:
    # 64 output units x 32 inputs per tile: compiled for sm_90 with 4 warps, the forward kernel spilled registers
    # with 64 x 64 tiles (1.4 kB of stack) and spills none with these.
    side = triton.next_power_of_2(H)
    return dict(
        BLOCK_B=_MIN_DOT,
        BLOCK_N=max(_MIN_DOT, min(_MAX_TILE_N, side)),
        BLOCK_K=max(_MIN_DOT, min(_MAX_TILE_K, side)),
    )


def _acc_dtype(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _state_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _grid(B: int, tiles: dict[str, int]) -> tuple[int]:
    return (triton.cdiv(B, tiles["BLOCK_B"]),)


def _forward(xproj, w_hh, h0, c0, keep, save: bool):
    """Run the forward kernel: ``(hs (T+1, B, H), cs)`` with hs[1:] the outputs and cs[-1] the final cell state."""
    T, B, H = xproj.shape[0], xproj.shape[1], w_hh.shape[1]
    hs = xproj.new_empty(T + 1, B, H)
    hs[0] = h0
    cs = xproj.new_empty(T + 1 if save else 1, B, H, dtype=_state_dtype(xproj.dtype))
    cs[0] = c0
    tiles = _tiles(B, H)
    _refine_forward_kernel[_grid(B, tiles)](
        xproj,
        w_hh,
        hs,
        cs,
        keep if keep is not None else xproj,
        T,
        B,
        H,
        B * H if save else 0,
        HAS_RESETS=keep is not None,
        ACC=_acc_dtype(xproj.dtype),
        **tiles,
        num_warps=4,
        num_stages=1,
    )
    return hs, cs


class TritonRefineRecurrence(torch.autograd.Function):
    """Autograd wrapper of the Triton forward and backward kernels (first-order gradients only)."""

    @staticmethod
    def forward(ctx, xproj, w_hh, h0, c0, keep):
        hs, cs = _forward(xproj, w_hh, h0, c0, keep, save=True)
        ctx.save_for_backward(xproj, w_hh, hs, cs, keep)
        return hs[1:], hs[-1].clone(), cs[-1].to(xproj.dtype)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, grad_h, grad_c):
        xproj, w_hh, hs, cs, keep = ctx.saved_tensors
        T, B, H = grad_out.shape
        hprev = hs[:-1] if keep is None else hs[:-1] * keep.unsqueeze(-1)
        # The pre-activations of every step in one product instead of T stored gate tensors.
        pre = torch.addmm(xproj.reshape(T * B, 4 * H), hprev.reshape(T * B, H), w_hh.t()).view(T, B, 4 * H)
        gout = grad_out.contiguous().clone()
        gout[-1] += grad_h
        dc = grad_c.to(cs.dtype).contiguous().clone()
        dg = torch.empty_like(xproj)
        tiles = _tiles(B, H)
        _refine_backward_kernel[_grid(B, tiles)](
            pre[-1],
            w_hh,
            cs[-2],
            keep[-1] if keep is not None else xproj,
            gout[-1],
            dc,
            dg[-1],
            T,
            B,
            H,
            HAS_RESETS=keep is not None,
            ACC=_acc_dtype(xproj.dtype),
            **tiles,
            num_warps=4,
            num_stages=1,
        )
        # The recurrent weight gradient of all steps as one product: sum_t dG_t^T h_{t-1}.
        d_w = dg.reshape(T * B, 4 * H).t().mm(hprev.reshape(T * B, H)) if ctx.needs_input_grad[1] else None
        dh0 = dg[0].mm(w_hh)
        if keep is not None:
            dh0 = dh0 * keep[0].unsqueeze(-1)
        return dg, d_w, dh0, dc.to(xproj.dtype), None


def refine_recurrence_triton(
    xproj: torch.Tensor,
    w_hh: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor,
    resets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Refine-gate LSTM recurrence of one layer in two Triton launches (forward, backward); see
    ``policies.kernels.refine_recurrence`` for the contract.

    :param xproj: ``W_ih x_t + b_ih + b_hh`` for every step, (T, B, 4H), blocks ordered (r, f, u, o); T >= 1
    :param w_hh: recurrent weights (4H, H)
    :param h0: initial hidden state (B, H)
    :param c0: initial cell state (B, H)
    :param resets: (T, B), 1 where both states are zeroed before step t; None for no resets
    :return: ``(out, h_T, c_T)``
    """
    if triton is None:
        raise RuntimeError(_IMPORT_ERROR)
    if xproj.shape[0] < 1:
        raise ValueError("the Triton refine recurrence needs at least one step")
    xproj, w_hh, h0, c0 = (t.contiguous() for t in (xproj, w_hh, h0, c0))
    keep = None if resets is None else (1.0 - resets.to(xproj.dtype)).contiguous()
    if torch.is_grad_enabled() and any(t.requires_grad for t in (xproj, w_hh, h0, c0)):
        return TritonRefineRecurrence.apply(xproj, w_hh, h0, c0, keep)
    hs, cs = _forward(xproj, w_hh, h0, c0, keep, save=False)
    return hs[1:], hs[-1].clone(), cs[-1].to(xproj.dtype)


def self_check(device: torch.device, dtype: torch.dtype) -> str | None:
    """Compare the kernels with the pure-torch recurrence on a small input: None if they agree, else why not.

    The input has resets, a batch that fills no tile and a hidden size that is not a power of two; the reference
    runs in float64 on the same device, and outputs, final states and all four gradients are compared.

    :param device: where to run (a CUDA device in use; a CPU device runs the interpreter)
    :param dtype: the dtype to check
    """
    gen = torch.Generator().manual_seed(0)
    T, B, H = 6, 3, 20
    raw = [
        torch.randn(T, B, 4 * H, generator=gen, dtype=torch.float64),
        torch.randn(4 * H, H, generator=gen, dtype=torch.float64) / H**0.5,
        torch.randn(B, H, generator=gen, dtype=torch.float64),
        torch.randn(B, H, generator=gen, dtype=torch.float64),
    ]
    resets = (torch.rand(T, B, generator=gen) < 0.3).to(device)
    weights = [torch.randn(shape, generator=gen, dtype=torch.float64).to(device) for shape in ((T, B, H), (B, H))]

    def run(fn, ts):
        ts = [t.detach().requires_grad_() for t in ts]
        out, h, c = fn(*ts, resets.to(ts[0].dtype))
        loss = (out.double() * weights[0]).sum() + (h.double() * weights[1]).sum() + c.double().sum()
        return [out, h, c, *torch.autograd.grad(loss, ts)]

    try:
        got = run(refine_recurrence_triton, [t.to(device=device, dtype=dtype) for t in raw])
        want = run(refine_recurrence_reference, [t.to(device=device, dtype=dtype).double() for t in raw])
    except Exception as e:  # noqa: BLE001 - a kernel that fails to compile or launch is a kernel we cannot use
        return f"the Triton kernel failed its self-check with {type(e).__name__}: {str(e).strip()[:200]}"
    tol = _CHECK_TOL[dtype]
    for name, a, b in zip(("out", "h_T", "c_T", "dxproj", "dw_hh", "dh0", "dc0"), got, want, strict=True):
        err = (a.double() - b).abs().max().item()
        if not err <= tol * (1.0 + b.abs().max().item()):
            return (
                f"the Triton kernel disagreed with the pure-torch path in its self-check ({name}: max error {err:.3g})"
            )
    return None


def unavailable_reason(xproj: torch.Tensor, tensors: tuple[torch.Tensor, ...]) -> str | None:
    """Why the Triton kernels cannot take these CUDA tensors, or None when they can.

    The first call per (device, dtype) in a process runs ``self_check``; its verdict is remembered.

    :param xproj: the input projections (its device and dtype decide)
    :param tensors: the other tensors of the call, which must share xproj's dtype
    """
    if triton is None:
        return _IMPORT_ERROR
    if xproj.dtype not in SUPPORTED_DTYPES:
        return f"the Triton kernel takes float32/float64/float16/bfloat16, got {xproj.dtype}"
    if any(t.dtype != xproj.dtype for t in tensors):
        return "mixed dtypes"
    key = (str(xproj.device), xproj.dtype)
    if key not in _checked:
        with _check_lock:
            if key not in _checked:
                # The first CUDA call may come from a rollout under no_grad or inference_mode: check with autograd.
                with torch.inference_mode(False), torch.enable_grad():
                    _checked[key] = self_check(xproj.device, xproj.dtype)
    return _checked[key]
