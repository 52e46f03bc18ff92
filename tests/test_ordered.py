"""The ordered-gate cores (o, or, om, um): cumax, the master gates, their initialisations and layout, the compiled
kernel against its pure-torch definition, and bad input. The contract shared with every core (the paper
reference, episode starts, dropout, state dicts, gradcheck) is in tests/test_cores.py."""

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from policies import PolicyConfigError, extensions, kernels, make_core, ordered_kernels
from policies.gates import cumax, master_gates
from policies.kernels import DISABLE_ENV
from tests.test_cores import build, close, ks_uniform, paper_reference, random_case

quick = settings(max_examples=150, deadline=None)
rows = st.lists(st.floats(min_value=-30.0, max_value=30.0, allow_nan=False), min_size=1, max_size=40)


@pytest.fixture
def compiled(monkeypatch):
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    assert ordered_kernels.kernel_available(), (
        f"ordered kernel is unavailable: {ordered_kernels.ORDERED_EXTENSION.error}"
    )


# --- cumax ----------------------------------------------------------------------------------------------------


@quick
@given(rows)
def test_cumax_is_monotone_in_unit_interval_and_ends_at_one(values):
    x = torch.tensor(values, dtype=torch.float64)
    y = cumax(x)
    assert (y >= 0).all() and (y <= 1 + 1e-12).all()
    assert (y[1:] >= y[:-1]).all()
    assert y[-1].item() == pytest.approx(1.0, abs=1e-12)


@quick
@given(rows)
def test_cumax_increments_are_a_softmax(values):
    x = torch.tensor(values, dtype=torch.float64)
    p = torch.diff(cumax(x), prepend=x.new_zeros(1))
    assert (p >= -1e-15).all() and p.sum().item() == pytest.approx(1.0, abs=1e-12)
    close(p, torch.softmax(x, dim=-1), 1e-12)


def test_cumax_of_equal_inputs_is_evenly_spread():
    n = 8
    close(cumax(torch.zeros(3, n, dtype=torch.float64)), (torch.arange(1, n + 1) / n).double().expand(3, n), 1e-15)


@quick
@given(st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4))
def test_master_gates_bounds_and_forms(v):
    f, i, fm, im = (torch.tensor(a, dtype=torch.float64) for a in v)
    f_hat, i_hat = master_gates(f, i, fm, im)
    w = fm * im
    close(f_hat, f * w + (fm - w), 1e-15)  # Shen et al. eq. 12, first form
    close(i_hat, i * w + (im - w), 1e-15)
    assert -1e-15 <= f_hat.item() <= fm.item() + 1e-15 and -1e-15 <= i_hat.item() <= im.item() + 1e-15
    # no overlap (fm = 1, im = 0): keep everything, write nothing, whatever f and i are
    one, zero = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
    assert master_gates(f, i, one, zero) == (one, zero)


# --- the ordered forget gate at work ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["o", "or"])
def test_ordered_forget_gate_is_monotone_and_last_unit_keeps(name):
    core = build(name, 3, 6, L=2)
    x, hx, s = random_case(9, 4, 3, 6, 2, seed=2)
    f = core.gate_trace(x, hx, s)  # f (o) or g (or)
    if name == "o":
        assert (f[..., 1:] >= f[..., :-1] - 1e-15).all()
    close(f[..., -1], torch.ones_like(f[..., -1]), 1e-15)  # cumax ends at 1, and g(1, r) = 1


def test_ordered_forget_gates_start_spread_over_the_units():
    # With nn.LSTM's small initial weights the pre-activations are nearly equal, so unit j of H starts near j / H:
    # the ordered cores' counterpart of UGI's spread of timescales.
    torch.manual_seed(0)
    H = 64
    core = make_core("o", 8, H)
    f = core.gate_trace(torch.randn(5, 16, 8) * 0.1)
    mean = f.mean(dim=(0, 1, 2))
    close(mean.double(), torch.arange(1, H + 1, dtype=torch.float64) / H, 0.02)


# --- master gates: layout and initialisation -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["om", "um"])
@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_master_layout(name, chunk_size):
    H, L = 6, 2
    core = make_core(name, 5, H, num_layers=L, chunk_size=chunk_size)
    plain = nn.LSTM(5, H, num_layers=L)
    n = H // chunk_size
    assert core.n_chunks == n and core.chunk_size == chunk_size
    assert list(dict(core.named_parameters())) == list(dict(plain.named_parameters()))
    for key, p in plain.state_dict().items():
        assert core.state_dict()[key].shape == (p.shape[0] + 2 * n, *p.shape[1:]), key
    extra = sum(2 * n * (w.shape[1] if w.dim() == 2 else 1) for w in plain.parameters())
    assert sum(p.numel() for p in core.parameters()) == sum(p.numel() for p in plain.parameters()) + extra


@pytest.mark.parametrize("name", ["om", "um"])
@pytest.mark.parametrize("chunk_size", [2, 3])
def test_master_chunks_match_reference(name, chunk_size, compiled):
    core = build(name, 4, 6, L=2, chunk_size=chunk_size)
    x, hx, s = random_case(7, 3, 4, 6, 2, seed=4)
    out, (h, c) = core(x, hx, episode_starts=s)
    ref_out, (ref_h, ref_c), ref_g = paper_reference(core, x, hx, s)
    close(out, ref_out)
    close(h, ref_h)
    close(c, ref_c)
    close(core.gate_trace(x, hx, s), ref_g)


def test_um_master_bias_is_uniform_gate_init_and_input_is_complementary():
    H, L = 256, 3
    core = build("um", 8, H, L=L, seed=0, dtype=torch.float32)
    n = core.n_chunks
    fm = []
    for k in range(L):
        b = (getattr(core, f"bias_ih_l{k}") + getattr(core, f"bias_hh_l{k}")).detach().double()
        b_mf, b_mi = b[4 * H : 4 * H + n], b[4 * H + n :]
        torch.testing.assert_close(b_mi, b_mf, atol=0, rtol=0)  # i_master = 1 - sigma(b_mi) = 1 - f_master
        fm.append(torch.sigmoid(b_mf))
        assert getattr(core, f"bias_hh_l{k}")[4 * H :].abs().max() == 0
    fm = torch.cat(fm)
    assert ks_uniform(fm, 1 / n, 1 - 1 / n) < 1.95 / math.sqrt(fm.numel())
    assert fm.min() >= 1 / n - 1e-6 and fm.max() <= 1 - 1 / n + 1e-6
    # nn.LSTM's four blocks keep torch's initialisation
    bound = 1 / math.sqrt(H)
    for k in range(L):
        assert getattr(core, f"bias_ih_l{k}")[: 4 * H].abs().max() <= bound


def test_um_ugi_follows_the_chunk_count():
    core = build("um", 4, 64, L=1, chunk_size=8, dtype=torch.float32)
    b = (core.bias_ih_l0 + core.bias_hh_l0).detach()[4 * 64 : 4 * 64 + 8]
    n = 8
    f = torch.sigmoid(b.double())
    assert f.min() >= 1 / n - 1e-6 and f.max() <= 1 - 1 / n + 1e-6


# --- the compiled kernel against its definition ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ordered_kernels.KINDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("T,B,H", [(1, 1, 2), (6, 3, 5), (20, 4, 37)])
def test_kernel_matches_reference(kind, dtype, tol, T, B, H, compiled):
    gen = torch.Generator().manual_seed(T * 100 + H)
    chunk = 1 if H % 2 or not kind.startswith("master") else 2
    G = 4 * H + (2 * H // chunk if kind.startswith("master") else 0)
    x = torch.randn(T, B, G, generator=gen, dtype=dtype).requires_grad_()
    w = (0.5 * torch.randn(G, H, generator=gen, dtype=dtype)).requires_grad_()
    h0 = torch.randn(B, H, generator=gen, dtype=dtype).requires_grad_()
    c0 = torch.randn(B, H, generator=gen, dtype=dtype).requires_grad_()
    resets = (torch.rand(T, B, generator=gen) < 0.3).to(dtype)
    got = ordered_kernels.ordered_recurrence(kind, x, w, h0, c0, resets, chunk_size=chunk)
    want = ordered_kernels.ordered_recurrence_reference(kind, x, w, h0, c0, resets, chunk_size=chunk)
    weights = [torch.randn(t.shape, generator=gen, dtype=dtype) for t in want]
    g_got = torch.autograd.grad(got, [x, w, h0, c0], weights)
    g_want = torch.autograd.grad(want, [x, w, h0, c0], weights)
    for a, b in zip((*got, *g_got), (*want, *g_want), strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=0)
    with torch.no_grad():  # the inference path (no saved activations); the matrix products may round differently
        inference = ordered_kernels.ordered_recurrence(kind, x, w, h0, c0, resets, chunk_size=chunk)
    for a, b in zip(inference, got, strict=True):
        torch.testing.assert_close(a, b, atol=tol, rtol=0)


@pytest.mark.parametrize("kind", ordered_kernels.KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_propagates_nan_and_inf_as_reference(kind, dtype, compiled):
    H, B, T = 8, 3, 4
    G = 4 * H + (2 * H if kind.startswith("master") else 0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, G, generator=gen, dtype=dtype)
    x[1, 0, 3] = float("nan")
    x[2, 1, H + 2] = float("inf")
    x[0, 2, G - 1] = -float("inf")
    w = 0.3 * torch.randn(G, H, generator=gen, dtype=dtype)
    z = torch.zeros(B, H, dtype=dtype)
    got = ordered_kernels.ordered_recurrence(kind, x, w, z, z)[0]
    want = ordered_kernels.ordered_recurrence_reference(kind, x, w, z, z)[0]
    assert torch.equal(torch.isnan(got), torch.isnan(want))
    finite = ~torch.isnan(want)
    torch.testing.assert_close(got[finite], want[finite], atol=2e-5, rtol=0)


def test_fallback_warns_once_and_matches(monkeypatch):
    monkeypatch.delenv(DISABLE_ENV, raising=False)
    monkeypatch.setattr(kernels, "_warned", set())
    unbuilt = extensions.CompiledExtension("ordered", ["ordered.cpp"], description="ordered-gate CPU kernel")
    unbuilt.error = "the build failed: RuntimeError: simulated compiler failure"  # load() then returns False
    monkeypatch.setattr(ordered_kernels, "ORDERED_EXTENSION", unbuilt)
    core = build("om", 3, 4, L=2)
    x, hx, s = random_case(5, 2, 3, 4, 2)
    with pytest.warns(
        RuntimeWarning,
        match=r"ordered-gate cores \(o, or, om, um\) run the slower pure-torch.*simulated compiler failure",
    ):
        out = core(x, hx, s)[0]
    close(out, paper_reference(core, x, hx, s)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        core(x, hx, s)  # once per reason


@pytest.mark.parametrize("refine_bias", [None, "zero", "neg_forget"])
def test_or_refine_bias_option(refine_bias):
    # The refine cores' option: "zero" (r's convention, the default without UGI) keeps torch's init of the refine
    # block; "neg_forget" sets b_r = -b_f, here with b_f the cumax forget gate's (torch-initialised) bias.
    H = 64
    kw = {} if refine_bias is None else {"refine_bias": refine_bias}
    core = build("or", 8, H, L=2, dtype=torch.float32, **kw)
    assert core.refine_bias == (refine_bias or "zero")
    bound = 1 / math.sqrt(H)
    for k in range(2):
        b = (getattr(core, f"bias_ih_l{k}") + getattr(core, f"bias_hh_l{k}")).detach()
        b_r, b_f = b[:H], b[H : 2 * H]
        if core.refine_bias == "neg_forget":
            torch.testing.assert_close(b_r, -b_f, atol=1e-7, rtol=0)
        else:
            assert ks_uniform(getattr(core, f"bias_ih_l{k}")[:H].detach(), -bound, bound) < 1.95 / math.sqrt(H)
    with pytest.raises(PolicyConfigError, match="freeze_ugi"):
        make_core("or", 3, 6, freeze_ugi=True)


# --- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,kwargs,match",
    [
        ("om", dict(chunk_size=4), r"chunk_size 4 does not divide hidden_size 6; use a divisor"),
        ("um", dict(chunk_size=0), "chunk_size must be a positive integer, got 0"),
        ("om", dict(chunk_size=2.0), "chunk_size must be a positive integer, got 2.0"),
        ("um", dict(chunk_size=6), "needs at least 2 chunks"),
        ("o", dict(chunk_size=2), r"'chunk_size'; valid: \(none\)"),
        ("or", dict(t_max=10), r"'t_max'; valid:"),
    ],
)
def test_bad_core_kwargs(name, kwargs, match):
    with pytest.raises(PolicyConfigError, match=match):
        make_core(name, 3, 6, **kwargs)
