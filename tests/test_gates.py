"""The gate equations of policies/gates.py against the properties listed in docs/equations.md."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.gates import (
    chrono_forget_bias,
    effective_gate,
    lstm_cell,
    refine_cell,
    timescale,
    ugi_forget_bias,
)

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
# hypothesis examples are cheap here; a fixed budget keeps the file well under a second.
quick = settings(max_examples=200, deadline=None)


def t64(v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


def ks_uniform(samples: torch.Tensor, lo: float, hi: float) -> float:
    """Kolmogorov-Smirnov statistic of ``samples`` against Uniform[lo, hi]."""
    x = torch.sort(samples.double().flatten()).values
    n = x.numel()
    cdf = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - cdf).max().item(), (cdf - (i - 1) / n).max().item())


def ks_critical(n: int) -> float:
    """KS critical value at significance 0.001 (c(alpha) = 1.95)."""
    return 1.95 / math.sqrt(n)


# --- property 1: the three forms of g --------------------------------------------------------------------------


@quick
@given(f=unit, r=unit)
def test_three_forms_of_g_are_equal(f, r):
    f_, r_ = t64(f), t64(r)
    g = effective_gate(f_, r_)
    assert torch.allclose(g, r_ * (1 - (1 - f_) ** 2) + (1 - r_) * f_**2, atol=1e-14, rtol=0)
    assert torch.allclose(g, f_**2 + 2 * r_ * f_ * (1 - f_), atol=1e-14, rtol=0)
    assert torch.allclose(g, f_ + (2 * r_ - 1) * f_ * (1 - f_), atol=1e-14, rtol=0)


# --- property 2: bounds and the special values of r -----------------------------------------------------------


@quick
@given(f=unit, r=unit)
def test_g_lies_between_f_squared_and_one_minus_one_minus_f_squared(f, r):
    g = effective_gate(t64(f), t64(r)).item()
    assert f**2 - 1e-15 <= g <= 1 - (1 - f) ** 2 + 1e-15
    assert 0.0 <= g <= 1.0


@quick
@given(f=unit)
def test_special_refine_values(f):
    f_ = t64(f)
    assert torch.allclose(effective_gate(f_, t64(0.5)), f_, atol=1e-15, rtol=0)
    assert torch.allclose(effective_gate(f_, t64(0.0)), f_**2, atol=1e-15, rtol=0)
    assert torch.allclose(effective_gate(f_, t64(1.0)), 2 * f_ - f_**2, atol=1e-15, rtol=0)


# --- property 3: symmetry and derivatives ---------------------------------------------------------------------


@quick
@given(f=unit, r=unit)
def test_symmetry(f, r):
    assert torch.allclose(effective_gate(t64(1 - f), t64(1 - r)), 1 - effective_gate(t64(f), t64(r)), atol=1e-14)


@quick
@given(f=unit, r=unit)
def test_derivatives(f, r):
    f_, r_ = t64(f).requires_grad_(), t64(r).requires_grad_()
    dg_df, dg_dr = torch.autograd.grad(effective_gate(f_, r_), (f_, r_))
    assert dg_df.item() == pytest.approx(1 + (2 * r - 1) * (1 - 2 * f), abs=1e-12)
    assert dg_dr.item() == pytest.approx(2 * f * (1 - f), abs=1e-12)
    assert -1e-12 <= dg_df.item() <= 2 + 1e-12
    assert dg_dr.item() >= -1e-12


# --- property 4: the worked example ---------------------------------------------------------------------------


def test_f_09_r_1_gives_099():
    assert effective_gate(t64(0.9), t64(1.0)).item() == pytest.approx(0.99, abs=1e-14)


@pytest.mark.parametrize("eps", [1e-2, 1e-3, 1e-4])
def test_refine_reaches_one_minus_eps_with_f_one_minus_sqrt_eps(eps):
    f = 1 - math.sqrt(eps)
    assert effective_gate(t64(f), t64(1.0)).item() == pytest.approx(1 - eps, abs=1e-12)


def test_half_the_preactivation_for_g_099():
    # The refine cell reaches an effective gate of 0.99 from a forget pre-activation of 2.197 (with its refine
    # gate saturated), where a plain gate needs 4.595: 0.478 of it.
    plain, refined = 4.595, 2.197
    assert torch.sigmoid(t64(plain)).item() == pytest.approx(0.99, abs=1e-5)
    pre = torch.zeros(1, 4, dtype=torch.float64)
    pre[0, 0], pre[0, 1] = 40.0, refined  # blocks (r, f, u, o), H = 1: r = sigma(40) = 1 to double precision
    _, _, g = refine_cell(pre, torch.zeros(1, 1, dtype=torch.float64))
    assert g.item() == pytest.approx(0.99, abs=1e-5)
    assert effective_gate(torch.sigmoid(t64(refined)), t64(1.0)).item() == pytest.approx(0.99, abs=1e-5)
    assert refined / plain == pytest.approx(0.478, abs=1e-3)


def test_timescale():
    assert timescale(t64(0.9)).item() == pytest.approx(10.0)
    assert timescale(t64(0.0)).item() == 1.0
    assert math.isinf(timescale(t64(1.0)).item())


# --- property 5: uniform gate initialisation ------------------------------------------------------------------


def ugi_samples(hidden_size: int, draws: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([ugi_forget_bias(hidden_size, generator=gen, dtype=torch.float64) for _ in range(draws)])


def test_ugi_bias_range_h256():
    b = ugi_samples(256, 40)
    bound = math.log(255)
    assert bound == pytest.approx(5.541, abs=1e-3)
    assert b.abs().max().item() <= bound + 1e-12
    assert b.min().item() < -0.95 * bound and b.max().item() > 0.95 * bound


def test_ugi_gate_is_uniform_on_1_over_h_to_1_minus_1_over_h():
    H = 256
    f = torch.sigmoid(ugi_samples(H, 40))
    assert ks_uniform(f, 1 / H, 1 - 1 / H) < ks_critical(f.numel())
    # and not uniform on [0, 1] with a wrong spread, which a too-lenient check would also accept
    assert ks_uniform(f, 0.25, 0.75) > ks_critical(f.numel())


def test_ugi_long_timescale_fraction():
    H = 256
    f = torch.sigmoid(ugi_samples(H, 100))
    frac = (timescale(f) > 10).double().mean().item()
    expected = (1 - 1 / H - 0.9) / (1 - 2 / H)  # P(f > 0.9) for f ~ U[1/H, 1 - 1/H]
    assert expected == pytest.approx(0.097, abs=1e-3)
    assert frac == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / f.numel()))


def test_ugi_median_timescale_is_two():
    f = torch.sigmoid(ugi_samples(256, 100))
    assert timescale(f).median().item() == pytest.approx(2.0, rel=0.03)


def test_ugi_dtype_and_seed():
    a = ugi_forget_bias(64, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    b = ugi_forget_bias(64, generator=torch.Generator().manual_seed(3), dtype=torch.float32)
    assert a.dtype == torch.float32 and a.shape == (64,)
    assert torch.equal(a, b)


def test_ugi_rejects_tiny_hidden_size():
    with pytest.raises(ValueError, match="hidden_size >= 2"):
        ugi_forget_bias(1)


# --- property 6: chrono initialisation ------------------------------------------------------------------------


def chrono_samples(hidden_size: int, t_max: float, draws: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([chrono_forget_bias(hidden_size, t_max, generator=gen, dtype=torch.float64) for _ in range(draws)])


def test_chrono_saturates_most_units():
    f = torch.sigmoid(chrono_samples(256, 500, 40))
    frac = (f > 0.9).double().mean().item()
    expected = (499 - 9) / 498  # f > 0.9 <=> v > 9 for v ~ U[1, 499]
    assert expected == pytest.approx(0.98, abs=0.005)
    assert frac == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / f.numel()))


def test_chrono_timescale_uniform_on_2_to_tmax():
    f = torch.sigmoid(chrono_samples(256, 500, 40))
    ts = timescale(f)
    assert ks_uniform(ts, 2.0, 500.0) < ks_critical(ts.numel())
    assert ts.min().item() >= 2.0 - 1e-9 and ts.max().item() <= 500.0 + 1e-6


@pytest.mark.parametrize("bad", [2, 1.5, float("inf"), float("nan"), "500"])
def test_chrono_rejects_bad_t_max(bad):
    with pytest.raises(ValueError, match="t_max"):
        chrono_forget_bias(8, bad)


# --- the cells ------------------------------------------------------------------------------------------------


def test_cells_follow_paper_equations():
    gen = torch.Generator().manual_seed(0)
    pre = torch.randn(3, 4 * 5, generator=gen, dtype=torch.float64) * 2
    c_prev = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    a, b, c, d = pre.chunk(4, dim=-1)

    h, c_new, f = lstm_cell(pre, c_prev)
    i, f_ref, u, o = torch.sigmoid(a), torch.sigmoid(b), torch.tanh(c), torch.sigmoid(d)
    c_ref = f_ref * c_prev + i * u
    assert torch.allclose(f, f_ref, atol=1e-15)
    assert torch.allclose(c_new, c_ref, atol=1e-15)
    assert torch.allclose(h, o * torch.tanh(c_ref), atol=1e-15)

    h, c_new, g = refine_cell(pre, c_prev)
    r, f_ref = torch.sigmoid(a), torch.sigmoid(b)
    g_ref = r * (1 - (1 - f_ref) ** 2) + (1 - r) * f_ref**2
    c_ref = g_ref * c_prev + (1 - g_ref) * u
    assert torch.allclose(g, g_ref, atol=1e-15)
    assert torch.allclose(c_new, c_ref, atol=1e-15)
    assert torch.allclose(h, o * torch.tanh(c_ref), atol=1e-15)
