"""The Triton refine-gate recurrence (policies/triton_refine.py) against its plain definition.

Without a GPU the kernels run under Triton's interpreter on CPU tensors (numpy), so these tests check the kernels'
arithmetic, masking, tiling and time loop on any machine where triton is installed (the optional extra
the ``gpu`` extra, ``pip install -e ".[gpu]"``). With a CUDA device they run the compiled kernels on it. What the interpreter cannot check is the
speed on a GPU and the GPU memory model (the barrier between steps); the one-time self-check on CUDA covers the
latter before the kernels are used. The reference is ``step_loop`` over ``refine_cell`` differentiated by autograd.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

from policies import kernels, make_core, triton_refine  # noqa: E402
from policies.kernels import DISABLE_ENV, refine_recurrence  # noqa: E402
from policies.recurrence import refine_recurrence_reference  # noqa: E402
from policies.triton_refine import refine_recurrence_triton  # noqa: E402
from tests.test_kernels import TOL, make_inputs, outputs_and_grads  # noqa: E402

DEVICE = torch.device("cpu" if triton_refine.INTERPRETED else "cuda")


def on_device(args):
    return tuple(
        None if a is None else a.detach().to(DEVICE).requires_grad_(a.requires_grad and a.is_floating_point())
        for a in args
    )


def assert_matches_reference(args, tol):
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)
    outs, grads = outputs_and_grads(refine_recurrence_triton, *args)
    for name, a, b in zip(("out", "h_T", "c_T"), outs, ref_outs, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, **tol, msg=f"{name} differs")
    for name, a, b in zip(("xproj", "w_hh", "h0", "c0"), grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, **tol, msg=f"gradient of {name} differs")


# (T, B, H): T = 1; one batch row; B above one 16-row program (two programs, the second partly masked); H not a
# power of two, below one tile, and above one 64-unit tile (two tiles per step, the second partly masked).
SIZES = [(1, 1, 1), (1, 3, 8), (7, 4, 5), (12, 3, 13), (4, 17, 6), (3, 2, 70)]


@pytest.mark.parametrize("resets", ["none", "inner", "start"])
@pytest.mark.parametrize("T,B,H", SIZES)
def test_matches_reference_float64(resets, T, B, H):
    assert_matches_reference(on_device(make_inputs(T, B, H, torch.float64, resets)), TOL[torch.float64])


@pytest.mark.parametrize("resets", ["none", "inner"])
@pytest.mark.parametrize("T,B,H", [(1, 1, 1), (12, 3, 13), (4, 17, 6), (3, 2, 70)])
def test_matches_reference_float32(resets, T, B, H):
    assert_matches_reference(on_device(make_inputs(T, B, H, torch.float32, resets)), TOL[torch.float32])


def test_float16_accumulates_in_float32():
    # h and the gradients are stored in float16, the products and the cell state kept in float32: compare with
    # the float64 reference at float16's resolution.
    args = on_device(make_inputs(9, 5, 12, torch.float64, "inner"))
    half = tuple(None if a is None else a.detach().half().requires_grad_(a.requires_grad) for a in args)
    outs, grads = outputs_and_grads(refine_recurrence_triton, *half)
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)
    assert all(t.dtype == torch.float16 for t in (*outs, *grads))
    for a, b in zip((*outs, *grads), (*ref_outs, *ref_grads), strict=True):
        torch.testing.assert_close(a.double(), b, atol=2e-2, rtol=2e-2)


def test_inference_path_equals_training_path():
    # Without gradients the kernel keeps one cell-state buffer instead of every step's.
    args = on_device(make_inputs(9, 4, 6, torch.float64, "inner"))
    train = refine_recurrence_triton(*args)
    with torch.no_grad():
        infer = refine_recurrence_triton(*args)
    assert all(t.requires_grad for t in train) and not any(t.requires_grad for t in infer)
    for a, b in zip(train, infer, strict=True):
        torch.testing.assert_close(a.detach(), b, atol=0, rtol=0)


def test_partial_inputs_and_non_contiguous():
    xproj, w_hh, h0, c0, rs = on_device(make_inputs(5, 3, 7, torch.float64, "inner", seed=3))
    x_nc = xproj.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    w_frozen = w_hh.detach().t().contiguous().t()  # frozen and non-contiguous: no gradient asked for it
    assert not x_nc.is_contiguous() and not w_frozen.is_contiguous()
    out, h, c = refine_recurrence_triton(x_nc, w_frozen, h0.detach(), c0, rs)
    got = torch.autograd.grad((out.sin().sum() + h.sum() + c.sum()), (x_nc, c0))
    ref = refine_recurrence_reference(xproj, w_frozen, h0.detach(), c0, rs)
    want = torch.autograd.grad((ref[0].sin().sum() + ref[1].sum() + ref[2].sum()), (xproj, c0))
    for a, b in zip((out, h, c, *got), (*ref, *want), strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


@pytest.mark.parametrize("name", ["r", "ur"])
def test_two_layer_core_on_triton_equals_pure_torch(name, monkeypatch):
    # The whole core (hoisted input projection per layer, episode starts as float resets) through the kernels.
    torch.manual_seed(0)
    core = make_core(name, 5, 6, num_layers=2).double().to(DEVICE)
    x = torch.randn(8, 3, 5, dtype=torch.float64, device=DEVICE, requires_grad=True)
    starts = (torch.rand(8, 3) < 0.25).double().to(DEVICE)

    def run():
        core.zero_grad(set_to_none=True)
        x.grad = None
        out, (h, c) = core(x, episode_starts=starts)
        (out.sin().sum() + h.sum() + 2 * c.sum()).backward()
        return [out, h, c, x.grad] + [p.grad for p in core.parameters()]

    monkeypatch.setattr("policies.cores.refine_recurrence", refine_recurrence_triton)
    fast = run()
    monkeypatch.setattr("policies.cores.refine_recurrence", refine_recurrence_reference)
    slow = run()
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


# --- the self-check and the dispatch -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_self_check_passes(dtype):
    assert triton_refine.self_check(DEVICE, dtype) is None


def test_self_check_reports_a_wrong_kernel(monkeypatch):
    def off_by_a_little(*args):
        out, h, c = refine_recurrence_reference(*args)
        return out, h, c * 1.01

    monkeypatch.setattr(triton_refine, "refine_recurrence_triton", off_by_a_little)
    assert "disagreed with the pure-torch path in its self-check (c_T" in triton_refine.self_check(
        DEVICE, torch.float32
    )

    def broken(*args):
        raise RuntimeError("simulated compilation failure")

    monkeypatch.setattr(triton_refine, "refine_recurrence_triton", broken)
    reason = triton_refine.self_check(DEVICE, torch.float32)
    assert "failed its self-check with RuntimeError: simulated compilation failure" in reason


def test_unavailable_reason_checks_once_per_device_and_dtype(monkeypatch):
    calls = []
    monkeypatch.setattr(triton_refine, "_checked", {})
    monkeypatch.setattr(triton_refine, "self_check", lambda device, dtype: calls.append(dtype) or "bad")
    x32, x64 = torch.zeros(1, 1, 4, device=DEVICE), torch.zeros(1, 1, 4, device=DEVICE, dtype=torch.float64)
    for _ in range(3):
        assert triton_refine.unavailable_reason(x32, ()) == "bad"
    assert triton_refine.unavailable_reason(x64, ()) == "bad"
    assert calls == [torch.float32, torch.float64]
    assert "float32/float64/float16/bfloat16" in triton_refine.unavailable_reason(x32.int(), ())
    assert triton_refine.unavailable_reason(x32, (x64,)) == "mixed dtypes"


def test_cpu_tensors_never_reach_triton(monkeypatch):
    # The CPU path is the compiled C++ kernel (or pure torch), whatever triton_refine offers.
    monkeypatch.delenv(DISABLE_ENV, raising=False)

    def forbidden(*a, **k):
        raise AssertionError("CPU tensors were sent to the Triton kernels")

    monkeypatch.setattr(triton_refine, "refine_recurrence_triton", forbidden)
    monkeypatch.setattr(triton_refine, "unavailable_reason", forbidden)
    outs, _ = outputs_and_grads(refine_recurrence, *make_inputs(4, 2, 3, torch.float32, "inner"))
    assert outs[0].shape == (4, 2, 3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_dispatch(monkeypatch):
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setattr(kernels, "_warned", set())
    args = on_device(make_inputs(6, 3, 4, torch.float32, "inner"))

    def forbidden(*a, **k):
        raise AssertionError("refine_recurrence fell back to the pure-torch path")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monkeypatch.setattr(kernels, "refine_recurrence_reference", forbidden)
        outs, grads = outputs_and_grads(refine_recurrence, *args)
    monkeypatch.undo()
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)
    for a, b in zip((*outs, *grads), (*ref_outs, *ref_grads), strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float32])
    # URGATE_DISABLE_KERNEL=1 still forces pure torch, silently.
    monkeypatch.setenv(DISABLE_ENV, "1")
    monkeypatch.setattr(triton_refine, "refine_recurrence_triton", forbidden)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outputs_and_grads(refine_recurrence, *args)


COMPILE_SCRIPT = """
import sys, torch
torch.cuda.is_available = lambda: True  # decorate with the real JIT although this machine has no GPU
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from policies import triton_refine as tr
cc, dt, H = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
state = "fp64" if dt == "fp64" else "fp32"
pointers = {
    tr._refine_forward_kernel: dict(xproj=dt, w_hh=dt, hs=dt, cs=state, keep=dt),
    tr._refine_backward_kernel: dict(pre=dt, w_hh=dt, cs=state, keep=dt, gout=dt, dc=state, dg=dt),
}
tiles = tr._tiles(1, H)
for kernel, ptrs in pointers.items():
    ints = {"T": "i32", "B": "i32", "c_stride": "i32"}
    sig = {a: ("*" + ptrs[a]) if a in ptrs else ints.get(a, "constexpr") for a in kernel.arg_names}
    const = dict(H=H, HAS_RESETS=True, ACC=tl.float64 if dt == "fp64" else tl.float32, **tiles)
    k = triton.compile(ASTSource(kernel, sig, const), target=GPUTarget("cuda", cc, 32),
                       options={"num_warps": 4, "num_stages": 1})
    assert len(k.asm["cubin"]) > 0
print("compiled")
"""


@pytest.mark.slow
@pytest.mark.parametrize("cc,dtype,H", [(90, "fp32", 70), (80, "fp32", 128), (90, "fp64", 20), (90, "bf16", 128)])
def test_kernels_compile_for_nvidia_gpus(cc, dtype, H):
    # Without a GPU: Triton's compiler and the ptxas it ships build both kernels to a cubin for sm_80/sm_90
    # (what the interpreter never exercises: tl.dot's layouts, the tile sizes' register needs, the barrier).
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", COMPILE_SCRIPT, str(cc), dtype, str(H)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(root), "TRITON_INTERPRET": "0"},
    )
    assert done.returncode == 0 and done.stdout.strip() == "compiled", done.stderr[-2000:]
