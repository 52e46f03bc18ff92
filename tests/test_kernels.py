"""The compiled refine-gate recurrence against its plain definition, and the fallback rules around it.

The reference is ``policies.recurrence.step_loop`` over ``policies.gates.refine_cell`` (exposed as
``kernels.refine_recurrence_reference``), differentiated by autograd.
"""

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from policies import kernels, make_core
from policies.kernels import DISABLE_ENV, refine_recurrence, refine_recurrence_reference

ROOT = Path(__file__).resolve().parents[1]
TOL = {torch.float64: dict(atol=1e-12, rtol=1e-10), torch.float32: dict(atol=2e-5, rtol=1e-4)}


@pytest.fixture
def compiled(monkeypatch):
    """The compiled path, which must build on a machine with a C++ compiler (built once per test process)."""
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    assert kernels.kernel_available(), f"compiled refine kernel did not build: {kernels._build_error}"


@pytest.fixture(params=["compiled", "pure_torch"])
def path(request, monkeypatch):
    if request.param == "compiled":
        request.getfixturevalue("compiled")
    else:
        monkeypatch.setenv(DISABLE_ENV, "1")
    return request.param


def make_inputs(T, B, H, dtype, resets="none", seed=0):
    gen = torch.Generator().manual_seed(seed)
    xproj = (torch.randn(T, B, 4 * H, generator=gen, dtype=torch.float64) * 1.5).to(dtype).requires_grad_()
    w_hh = (torch.randn(4 * H, H, generator=gen, dtype=torch.float64) / H**0.5).to(dtype).requires_grad_()
    h0 = torch.randn(B, H, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    c0 = torch.randn(B, H, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    if resets == "none":
        rs = None
    else:
        rs = (torch.rand(T, B, generator=gen) < 0.3).to(dtype)
        if resets == "start":
            rs[0] = 1.0
    return xproj, w_hh, h0, c0, rs


def outputs_and_grads(fn, xproj, w_hh, h0, c0, rs, seed=1):
    out, h, c = fn(xproj, w_hh, h0, c0, rs)
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(t) for t in (out, h, c)]
    loss = sum((t * w).sum() for t, w in zip((out, h, c), weights, strict=True))
    grads = torch.autograd.grad(loss, (xproj, w_hh, h0, c0))
    return (out, h, c), grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("resets", ["none", "inner", "start"])
@pytest.mark.parametrize("T,B,H", [(1, 1, 1), (1, 3, 8), (7, 4, 5), (12, 3, 13), (20, 2, 16)])
def test_compiled_matches_reference(compiled, dtype, resets, T, B, H, monkeypatch):
    args = make_inputs(T, B, H, dtype, resets)
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)

    # Make sure the compiled path, not the reference, answers refine_recurrence.
    def forbidden(*a, **k):
        raise AssertionError("refine_recurrence fell back to the pure-torch path")

    monkeypatch.setattr(kernels, "refine_recurrence_reference", forbidden)
    outs, grads = outputs_and_grads(refine_recurrence, *args)
    for name, a, b in zip(("out", "h_T", "c_T"), outs, ref_outs, strict=True):
        assert a.dtype == dtype and a.shape == b.shape, name
        torch.testing.assert_close(a, b, **TOL[dtype], msg=f"{name} differs")
    for name, a, b in zip(("xproj", "w_hh", "h0", "c0"), grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype], msg=f"gradient of {name} differs")


def assert_same_values(got, want, dtype, what):
    """Close within TOL where finite, and NaN and +-inf at exactly the same places."""
    for name, a, b in zip(what, got, want, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype], equal_nan=True, msg=lambda m, name=name: f"{name}: {m}")


def with_special(tensor, value, positions):
    t = tensor.detach().clone()
    for index in positions:
        t[index] = value
    return t.requires_grad_()


SPECIALS = ["nan", "inf", "-inf", "huge", "-huge"]


def special_value(name, dtype):
    # "huge": finite, but its exp overflows (and so does 2x its exp for tanh's 2 sigma(2a) - 1).
    return {"huge": 1, "-huge": -1}[name] * torch.finfo(dtype).max / 2 if "huge" in name else float(name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("value", SPECIALS)
@pytest.mark.parametrize("resets", ["none", "inner"])
def test_compiled_matches_reference_on_special_pre_activations(compiled, dtype, value, resets):
    # One special pre-activation in each gate block (r, f, u, o), at different steps and rows. ATen's AVX2 float
    # exp clamps a NaN to a finite number: the kernel used to return sigma(NaN) = 0 and tanh(NaN) = -1.
    T, B, H = 7, 3, 5
    xproj, w_hh, h0, c0, rs = make_inputs(T, B, H, dtype, resets, seed=4)
    xproj = with_special(xproj, special_value(value, dtype), [(1 + k, k % B, k * H + k) for k in range(4)])
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, xproj, w_hh, h0, c0, rs)
    outs, grads = outputs_and_grads(refine_recurrence, xproj, w_hh, h0, c0, rs)
    if value == "nan":
        assert ref_outs[0].isnan().any() and ref_grads[0].isnan().any()  # the case tests propagation
    assert_same_values(outs, ref_outs, dtype, ("out", "h_T", "c_T"))
    assert_same_values(grads, ref_grads, dtype, ("d xproj", "d w_hh", "d h0", "d c0"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("value", SPECIALS)
@pytest.mark.parametrize("where", ["w_hh", "h0", "c0"])
def test_compiled_matches_reference_on_special_weights_and_states(compiled, dtype, value, where):
    T, B, H = 6, 3, 5
    args = dict(zip(("xproj", "w_hh", "h0", "c0", "rs"), make_inputs(T, B, H, dtype, "inner", seed=5), strict=True))
    args[where] = with_special(args[where], special_value(value, dtype), [(1, 2)])
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args.values())
    outs, grads = outputs_and_grads(refine_recurrence, *args.values())
    assert_same_values(outs, ref_outs, dtype, ("out", "h_T", "c_T"))
    if where == "c0" and value != "nan":
        # An infinite (or huge) cell state makes dL/dg = dc (c_prev - u) infinite (huge). The kernel applies the
        # chain rule in factored form, autograd term by term (inf - inf = NaN where the kernel gets +-inf), and
        # float32's approximate tanh has an absolute error that a huge gradient scales up: compare which entries
        # are finite, and the finite ones relative to the gradient's size.
        for name, a, b in zip(("d xproj", "d w_hh", "d h0", "d c0"), grads, ref_grads, strict=True):
            assert torch.equal(a.isfinite(), b.isfinite()), name
            finite = b[b.isfinite()]
            scale = max([1.0, *finite.abs().flatten().tolist()])
            torch.testing.assert_close(a[a.isfinite()], finite, atol=TOL[dtype]["atol"] * scale, rtol=0)
    else:
        assert_same_values(grads, ref_grads, dtype, ("d xproj", "d w_hh", "d h0", "d c0"))


@pytest.mark.parametrize("resets", ["none", "inner", "start"])
def test_gradcheck(path, resets):
    xproj, w_hh, h0, c0, rs = make_inputs(5, 3, 4, torch.float64, resets, seed=2)
    assert torch.autograd.gradcheck(lambda *a: refine_recurrence(*a, rs), (xproj, w_hh, h0, c0))


def test_gradcheck_compiled_partial_inputs(compiled):
    # Only some inputs need gradients (e.g. a frozen recurrent matrix): the others must come back as None.
    xproj, w_hh, h0, c0, rs = make_inputs(4, 2, 3, torch.float64, "inner", seed=3)
    w_hh = w_hh.detach()
    h0 = h0.detach()
    assert torch.autograd.gradcheck(lambda x, c: refine_recurrence(x, w_hh, h0, c, rs), (xproj, c0))


def test_compiled_inference_path_equals_training_path(compiled):
    args = make_inputs(9, 4, 6, torch.float32, "inner")
    train = refine_recurrence(*args)
    assert all(t.requires_grad for t in train)
    with torch.no_grad():
        infer = refine_recurrence(*args)
    assert not any(t.requires_grad for t in infer)
    for a, b in zip(train, infer, strict=True):
        torch.testing.assert_close(a.detach(), b, atol=0, rtol=0)


def test_compiled_accepts_non_contiguous_inputs(compiled):
    xproj, w_hh, h0, c0, rs = make_inputs(6, 3, 5, torch.float64, "inner")
    x_nc = xproj.detach().transpose(0, 1).contiguous().transpose(0, 1).requires_grad_()
    w_nc = w_hh.detach().t().contiguous().t().requires_grad_()
    assert not x_nc.is_contiguous() and not w_nc.is_contiguous()
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, xproj, w_hh, h0, c0, rs)
    outs, grads = outputs_and_grads(refine_recurrence, x_nc, w_nc, h0, c0, rs)
    for a, b in zip((*outs, *grads), (*ref_outs, *ref_grads), strict=True):
        torch.testing.assert_close(a, b, **TOL[torch.float64])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", ["r", "ur"])
def test_multilayer_core_compiled_equals_pure_torch(name, dtype, monkeypatch):
    torch.manual_seed(0)
    core = make_core(name, 5, 6, num_layers=3).to(dtype)
    x = torch.randn(11, 4, 5, dtype=dtype, requires_grad=True)
    hx = tuple(torch.randn(3, 4, 6, dtype=dtype) for _ in range(2))
    starts = (torch.rand(11, 4) < 0.25).to(dtype)
    starts[0, 1] = 1.0

    def run():
        core.zero_grad(set_to_none=True)
        x.grad = None
        out, (h, c) = core(x, hx, episode_starts=starts)
        (out.sin().sum() + h.sum() + 2 * c.sum()).backward()
        return [out, h, c, x.grad] + [p.grad for p in core.parameters()]

    monkeypatch.delenv(DISABLE_ENV, raising=False)
    assert kernels.kernel_available()
    fast = run()
    monkeypatch.setenv(DISABLE_ENV, "1")
    slow = run()
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, **TOL[dtype])


# --- fallback rules -------------------------------------------------------------------------------------------


def test_unsupported_dtype_falls_back_with_one_warning(monkeypatch):
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setattr(kernels, "_warned", False)
    args = make_inputs(4, 2, 3, torch.float64, "inner")
    args = tuple(a.detach().to(torch.bfloat16) if a is not None else None for a in args)
    with pytest.warns(RuntimeWarning, match="pure-torch recurrence.*bfloat16"):
        got = refine_recurrence(*args)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = refine_recurrence(*args)  # no second warning
    want = refine_recurrence_reference(*args)
    for a, b, c in zip(got, again, want, strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_failed_build_falls_back_with_one_warning(monkeypatch):
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setattr(kernels, "_warned", False)
    monkeypatch.setattr(kernels, "_ops", None)
    monkeypatch.setattr(kernels, "_build_error", "RuntimeError: simulated compiler failure")
    assert not kernels.kernel_available()
    args = make_inputs(5, 2, 3, torch.float64, "inner")
    with pytest.warns(RuntimeWarning, match="failed to build: RuntimeError: simulated compiler failure"):
        outs, grads = outputs_and_grads(refine_recurrence, *args)
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)
    for a, b in zip((*outs, *grads), (*ref_outs, *ref_grads), strict=True):
        assert torch.equal(a, b)


def test_env_var_forces_pure_torch_silently(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "1")
    monkeypatch.setattr(kernels, "_warned", False)

    class Forbidden:
        def __getattr__(self, name):
            raise AssertionError("compiled kernel used although disabled")

    monkeypatch.setattr(kernels, "_ops", Forbidden())
    assert not kernels.kernel_available()
    args = make_inputs(5, 2, 3, torch.float32, "inner")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outs, grads = outputs_and_grads(refine_recurrence, *args)
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)
    for a, b in zip((*outs, *grads), (*ref_outs, *ref_grads), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("value,disabled", [("1", True), ("yes", True), ("0", False), ("", False), ("false", False)])
def test_env_var_values(monkeypatch, value, disabled):
    monkeypatch.setenv(DISABLE_ENV, value)
    assert kernels.kernel_disabled() is disabled


def test_importing_policies_builds_nothing():
    code = (
        "import policies, policies.kernels as k; "
        "import torch; assert k._ops is None and k._build_error is None; "
        "assert not hasattr(torch.ops.urgate, 'refine_forward'); print('ok')"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_falls_back_and_matches_cpu(monkeypatch):
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setattr(kernels, "_warned", False)
    args = make_inputs(6, 3, 4, torch.float64, "inner")
    ref_outs, ref_grads = outputs_and_grads(refine_recurrence_reference, *args)
    cuda_args = tuple(a.detach().cuda().requires_grad_(a.requires_grad) if a is not None else None for a in args)
    with pytest.warns(RuntimeWarning, match="CPU-only"):
        outs, grads = outputs_and_grads(refine_recurrence, *cuda_args)
    for a, b in zip((*outs, *grads), (*ref_outs, *ref_grads), strict=True):
        torch.testing.assert_close(a.cpu(), b, **TOL[torch.float64])


def test_stale_build_lock_is_cleared_fresh_one_kept(tmp_path):
    class FakeLoader:
        @staticmethod
        def _get_build_directory(name, verbose):
            return str(tmp_path / name)

    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old, new = tmp_path / "old" / "lock", tmp_path / "new" / "lock"
    old.touch()
    new.touch()
    stale = time.time() - kernels._STALE_LOCK_S - 60
    os.utime(old, (stale, stale))
    kernels._clear_stale_lock(FakeLoader, "old")
    kernels._clear_stale_lock(FakeLoader, "new")  # a build in progress elsewhere: leave it alone
    assert not old.exists() and new.exists()
