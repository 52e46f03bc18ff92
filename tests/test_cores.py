"""Every memory core against PAPER.md's equations (and nn.LSTM itself), and the nn.LSTM contract they share."""

import io
import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from policies import CORE_NAMES, PolicyConfigError, kernels, make_core
from policies.kernels import DISABLE_ENV

LSTM_FAMILY = ("lstm", "chrono", "u")
REFINE = ("r", "ur")


@pytest.fixture(params=["compiled", "pure_torch"])
def path(request, monkeypatch):
    """Which implementation of the refine recurrence runs; "nn.LSTM" for the cores that have only torch's."""
    if request.param == "compiled":
        monkeypatch.delenv(DISABLE_ENV, raising=False)
        assert kernels.kernel_available(), f"compiled refine kernel is unavailable: {kernels.REFINE.error}"
    elif request.param == "pure_torch":
        monkeypatch.setenv(DISABLE_ENV, "1")
    return request.param


# Every core on every path it has.
CORE_PATHS = [(n, "nn.LSTM") for n in LSTM_FAMILY] + [(n, p) for n in REFINE for p in ("compiled", "pure_torch")]
on_every_path = pytest.mark.parametrize("name,path", CORE_PATHS, indirect=["path"])


def paper_reference(core, x, hx=None, starts=None):
    """Step-by-step, unit-by-unit from PAPER.md's equations, time-major (every layer at step t, then t + 1).

    :return: (out (T, B, H), (h_n, c_n), gates (L, T, B, H)) with gates the effective forget gate (g or f)
    """
    T, B, _ = x.shape
    L, H = core.num_layers, core.hidden_size
    refine = core.core_name in REFINE
    if hx is None:
        hx = (x.new_zeros(L, B, H), x.new_zeros(L, B, H))
    h, c = list(hx[0]), list(hx[1])
    sigma = torch.sigmoid
    outs, gates = [], [[] for _ in range(L)]
    for t in range(T):
        if starts is not None:
            keep = (1 - starts[t]).unsqueeze(-1)
            h, c = [s * keep for s in h], [s * keep for s in c]
        inp = x[t]
        for k in range(L):
            W = getattr(core, f"weight_ih_l{k}")
            U = getattr(core, f"weight_hh_l{k}")
            b = getattr(core, f"bias_ih_l{k}") + getattr(core, f"bias_hh_l{k}")
            P = inp @ W.T + h[k] @ U.T + b
            P_a, P_f, P_u, P_o = P[:, :H], P[:, H : 2 * H], P[:, 2 * H : 3 * H], P[:, 3 * H :]
            f, u, o = sigma(P_f), torch.tanh(P_u), sigma(P_o)
            if refine:
                r = sigma(P_a)
                g = r * (1 - (1 - f) ** 2) + (1 - r) * f**2
                c[k] = g * c[k] + (1 - g) * u
                gates[k].append(g)
            else:
                i = sigma(P_a)
                c[k] = f * c[k] + i * u
                gates[k].append(f)
            h[k] = o * torch.tanh(c[k])
            inp = h[k]
        outs.append(inp)
    return torch.stack(outs), (torch.stack(h), torch.stack(c)), torch.stack([torch.stack(g) for g in gates])


def random_case(T, B, I, H, L, seed=0, dtype=torch.float64, starts="inner"):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, I, generator=gen, dtype=dtype)
    hx = tuple(torch.randn(L, B, H, generator=gen, dtype=dtype) for _ in range(2))
    if starts is None:
        return x, hx, None
    s = (torch.rand(T, B, generator=gen) < 0.3).to(dtype)
    s[0, 0] = 1.0
    return x, hx, s


def build(name, I, H, L=1, dropout=0.0, seed=0, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    return make_core(name, I, H, num_layers=L, dropout=dropout, **kw).to(dtype)


def close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, atol=tol, rtol=0)


# --- equations ------------------------------------------------------------------------------------------------


@on_every_path
@pytest.mark.parametrize("starts", [None, "inner"])
@pytest.mark.parametrize("T,B,L", [(1, 1, 1), (1, 4, 2), (9, 3, 2), (6, 2, 3)])
def test_core_matches_paper_equations(name, path, starts, T, B, L):
    core = build(name, 4, 5, L)
    x, hx, s = random_case(T, B, 4, 5, L, starts=starts)
    out, (h, c) = core(x, hx, episode_starts=s)
    ref_out, (ref_h, ref_c), _ = paper_reference(core, x, hx, s)
    close(out, ref_out)
    close(h, ref_h)
    close(c, ref_c)


@pytest.mark.parametrize("name", LSTM_FAMILY)
@pytest.mark.parametrize("L", [1, 2])
def test_lstm_family_is_nn_lstm(name, L):
    core = build(name, 4, 6, L)
    plain = nn.LSTM(4, 6, num_layers=L).double()
    plain.load_state_dict(core.state_dict())
    x, hx, _ = random_case(8, 3, 4, 6, L, starts=None)
    out, (h, c) = core(x, hx)
    ref_out, (ref_h, ref_c) = plain(x, hx)
    close(out, ref_out, 1e-12)
    close(h, ref_h, 1e-12)
    close(c, ref_c, 1e-12)


@pytest.mark.parametrize("name", REFINE)
@pytest.mark.parametrize("starts", [None, "inner"])
def test_refine_core_gradcheck(name, path, starts):
    core = build(name, 3, 4, L=2)
    x, hx, s = random_case(5, 2, 3, 4, 2, seed=1, starts=starts)
    names = [n for n, _ in core.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in core.parameters()]

    def f(x, h0, c0, *ps):
        out, (h, c) = torch.func.functional_call(core, dict(zip(names, ps, strict=True)), (x, (h0, c0), s))
        return out, h, c

    inputs = (x.requires_grad_(), hx[0].requires_grad_(), hx[1].requires_grad_(), *params)
    assert torch.autograd.gradcheck(f, inputs, fast_mode=True)


@pytest.mark.parametrize("name", CORE_NAMES)
def test_gate_trace_is_the_effective_forget_gate(name):
    core = build(name, 3, 5, L=2, dropout=0.5)
    x, hx, s = random_case(7, 3, 3, 5, 2)
    core.train()  # the trace ignores dropout
    trace = core.gate_trace(x, hx, episode_starts=s)
    assert trace.shape == (2, 7, 3, 5) and not trace.requires_grad
    close(trace, paper_reference(core, x, hx, s)[2])


# --- episode starts -------------------------------------------------------------------------------------------


@on_every_path
def test_episode_starts_equal_stepwise_calls_with_manual_zeroing(name, path):
    core = build(name, 3, 4, L=2)
    x, hx, s = random_case(10, 4, 3, 4, 2, seed=3)
    x.requires_grad_()
    out, (h, c) = core(x, hx, episode_starts=s)
    seq_grads = torch.autograd.grad(out.sum() + h.sum() + c.sum(), [x, *core.parameters()])

    state, outs = hx, []
    for t in range(x.shape[0]):
        keep = (1 - s[t]).view(1, -1, 1)
        o, state = core(x[t : t + 1], (state[0] * keep, state[1] * keep))
        outs.append(o)
    step_out = torch.cat(outs)
    step_grads = torch.autograd.grad(step_out.sum() + state[0].sum() + state[1].sum(), [x, *core.parameters()])
    close(out, step_out, 1e-12)
    close(h, state[0], 1e-12)
    close(c, state[1], 1e-12)
    for a, b in zip(seq_grads, step_grads, strict=True):
        close(a, b, 1e-11)


@pytest.mark.parametrize("name", LSTM_FAMILY)
def test_lstm_family_resets_at_start_make_one_fused_call(name, monkeypatch):
    calls = []
    original = nn.LSTM.forward

    def counting(self, *a, **k):
        calls.append(a[0].shape[0])
        return original(self, *a, **k)

    monkeypatch.setattr(nn.LSTM, "forward", counting)
    core = build(name, 3, 4, L=2, dtype=torch.float32)
    x = torch.randn(12, 5, 3)
    s = torch.zeros(12, 5)
    s[0, [0, 2, 3]] = 1.0
    core(x, episode_starts=s)
    assert calls == [12]
    calls.clear()
    s[4, 1] = s[9, 0] = 1.0
    core(x, episode_starts=s)
    assert calls == [4, 5, 3]  # one call per stretch between inner resets


# --- the nn.LSTM contract -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORE_NAMES)
@pytest.mark.parametrize("L", [1, 3])
def test_parameters_and_state_dict_match_nn_lstm(name, L):
    core = make_core(name, 7, 6, num_layers=L)
    plain = nn.LSTM(7, 6, num_layers=L)
    assert (core.input_size, core.hidden_size, core.num_layers) == (7, 6, L)
    assert sum(p.numel() for p in core.parameters()) == sum(p.numel() for p in plain.parameters())
    assert {k: v.shape for k, v in core.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert list(dict(core.named_parameters())) == list(dict(plain.named_parameters()))


@pytest.mark.parametrize("name", CORE_NAMES)
def test_changing_batch_sizes_and_default_state(name):
    core = build(name, 3, 4, L=2)
    for T, B in [(1, 1), (5, 4), (1, 7), (3, 2)]:
        x, _, _ = random_case(T, B, 3, 4, 2, seed=T * 10 + B, starts=None)
        out, (h, c) = core(x)
        assert out.shape == (T, B, 4) and h.shape == c.shape == (2, B, 4)
        ref_out, (ref_h, _), _ = paper_reference(core, x)
        close(out, ref_out)
        close(h, ref_h)


@pytest.mark.parametrize("name", CORE_NAMES)
def test_float32_forward_backward_reaches_every_parameter(name):
    core = make_core(name, 3, 8, num_layers=2)
    x = torch.randn(6, 2, 3)
    out, (h, c) = core(x, episode_starts=torch.zeros(6, 2))
    assert out.dtype == torch.float32
    (out.sum() + c.sum()).backward()
    for n, p in core.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, n


@pytest.mark.parametrize("name", CORE_NAMES)
def test_dropout_honours_train_and_eval(name):
    x, hx, s = random_case(6, 3, 3, 5, 2, seed=4)
    core = build(name, 3, 5, L=2, dropout=0.5)
    no_drop = build(name, 3, 5, L=2, dropout=0.0)
    no_drop.load_state_dict(core.state_dict())
    core.eval()
    close(core(x, hx, s)[0], no_drop(x, hx, s)[0], 0)
    core.train()
    a, b = core(x, hx, s)[0], core(x, hx, s)[0]
    assert not torch.allclose(a, b) and not torch.allclose(a, no_drop(x, hx, s)[0])


@pytest.mark.parametrize("name", REFINE)
def test_refine_dropout_is_between_layers_as_nn_lstm(name, path):
    # nn.LSTM drops the outputs of every layer but the last: reproduce that with the same random stream.
    core = build(name, 3, 5, L=3, dropout=0.4).train()
    x, hx, s = random_case(6, 3, 3, 5, 3, seed=5)
    layers = [build(name, 5 if k else 3, 5, L=1) for k in range(3)]
    for k, layer in enumerate(layers):
        layer.load_state_dict({f"{n[:-1]}0": v for n, v in core.state_dict().items() if n.endswith(f"_l{k}")})
    torch.manual_seed(11)
    out, (h, c) = core(x, hx, s)
    torch.manual_seed(11)
    inp = x
    for k, layer in enumerate(layers):
        if k:
            inp = F.dropout(inp, 0.4, training=True)
        inp, (h_k, c_k) = layer(inp, (hx[0][k : k + 1], hx[1][k : k + 1]), s)
        close(h[k], h_k[0])
        close(c[k], c_k[0])
    close(out, inp)


@pytest.mark.parametrize("name", CORE_NAMES)
def test_determinism_under_fixed_seed(name):
    a, b = build(name, 3, 6, L=2, seed=7), build(name, 3, 6, L=2, seed=7)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    c = build(name, 3, 6, L=2, seed=8)
    assert not all(torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values(), strict=True))
    x, hx, s = random_case(5, 2, 3, 6, 2)
    assert torch.equal(a(x, hx, s)[0], b(x, hx, s)[0])
    assert torch.equal(a(x, hx, s)[0], a(x, hx, s)[0])


@pytest.mark.parametrize("name", CORE_NAMES)
def test_state_dict_round_trip(name):
    a = build(name, 3, 6, L=2, seed=1)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = build(name, 3, 6, L=2, seed=2)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    x, hx, s = random_case(5, 2, 3, 6, 2)
    assert torch.equal(a(x, hx, s)[0], b(x, hx, s)[0])
    # and a plain nn.LSTM checkpoint loads into any core of the same sizes
    b.load_state_dict(nn.LSTM(3, 6, num_layers=2).double().state_dict())


# --- initialisations ------------------------------------------------------------------------------------------


def ks_uniform(samples, lo, hi):
    x = torch.sort(samples.double().flatten()).values
    n = x.numel()
    cdf = ((x - lo) / (hi - lo)).clamp(0, 1)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - cdf).max().item(), (cdf - (i - 1) / n).max().item())


def bias_block(core, k, slot):
    H = core.hidden_size
    b = getattr(core, f"bias_ih_l{k}") + getattr(core, f"bias_hh_l{k}")
    return b[slot * H : (slot + 1) * H].detach()


@pytest.mark.parametrize("name", ["u", "ur"])
def test_ugi_on_forget_bias(name):
    H = 256
    core = build(name, 8, H, L=3, seed=0, dtype=torch.float32)
    f = torch.cat([torch.sigmoid(bias_block(core, k, 1).double()) for k in range(3)])
    assert ks_uniform(f, 1 / H, 1 - 1 / H) < 1.95 / math.sqrt(f.numel())
    frac = (1 / (1 - f) > 10).double().mean().item()
    assert frac == pytest.approx(0.097, abs=4 * math.sqrt(0.097 * 0.903 / f.numel()))
    for k in range(3):
        b_a = bias_block(core, k, 0)
        if name == "ur":
            torch.testing.assert_close(b_a, -bias_block(core, k, 1))  # b_r = -b_f
        else:
            assert b_a.abs().max() <= 2 / math.sqrt(H)  # the input gate keeps torch's init


@pytest.mark.parametrize("t_max", [500, 50])
def test_chrono_init(t_max):
    kw = {} if t_max == 500 else {"t_max": t_max}
    core = build("chrono", 8, 256, L=2, dtype=torch.float32, **kw)
    assert core.t_max == t_max
    f = torch.cat([torch.sigmoid(bias_block(core, k, 1).double()) for k in range(2)])
    ts = 1 / (1 - f)
    assert ks_uniform(ts, 2, t_max) < 1.95 / math.sqrt(ts.numel())
    if t_max == 500:
        expected = (499 - 9) / 498
        assert (f > 0.9).double().mean().item() == pytest.approx(expected, abs=4 * math.sqrt(expected / ts.numel()))
    for k in range(2):
        i = torch.sigmoid(bias_block(core, k, 0).double())
        torch.testing.assert_close(i, 1 - torch.sigmoid(bias_block(core, k, 1).double()), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["lstm", "r"])
def test_default_init_is_torch_uniform(name):
    H = 64
    core = build(name, 8, H, L=2, dtype=torch.float32)
    bound = 1 / math.sqrt(H)
    for n, p in core.named_parameters():
        assert p.abs().max() <= bound, n
        assert ks_uniform(p.detach(), -bound, bound) < 1.95 / math.sqrt(p.numel()), n


# --- bad input ------------------------------------------------------------------------------------------------


def test_unknown_core_name_suggests():
    with pytest.raises(PolicyConfigError, match=r"unknown core 'urr' \(did you mean 'ur'\?\); valid: lstm, chrono"):
        make_core("urr", 3, 4)


def test_unknown_kwarg_lists_valid():
    with pytest.raises(PolicyConfigError, match=r"'t_maxx' \(did you mean 't_max'\?\); valid: t_max"):
        make_core("chrono", 3, 4, t_maxx=100)
    with pytest.raises(PolicyConfigError, match=r"core 'ur'.*'t_max'; valid: \(none\)"):
        make_core("ur", 3, 4, t_max=100)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(hidden_size=0), "hidden_size must be a positive integer"),
        (dict(input_size=2.5), "input_size must be a positive integer"),
        (dict(num_layers=True), "num_layers must be a positive integer"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_sizes(kwargs, match):
    args = dict(input_size=3, hidden_size=4, num_layers=1, dropout=0.0) | kwargs
    with pytest.raises(PolicyConfigError, match=match):
        make_core("ur", **args)


def test_bad_t_max():
    with pytest.raises(PolicyConfigError, match="t_max must be a number > 2"):
        make_core("chrono", 3, 4, t_max=2)


@pytest.mark.parametrize("name", CORE_NAMES)
def test_bad_tensors(name):
    core = make_core(name, 3, 4, num_layers=2)
    x = torch.randn(5, 2, 3)
    with pytest.raises(
        PolicyConfigError, match=r"expects input of shape \(T, B, 3\) \(sequence first\), got \(5, 2, 4\)"
    ):
        core(torch.randn(5, 2, 4))
    with pytest.raises(PolicyConfigError, match="expects input of shape"):
        core(torch.randn(2, 3))
    with pytest.raises(PolicyConfigError, match=r"state h has shape \(1, 2, 4\), expected \(2, 2, 4\)"):
        core(x, (torch.zeros(1, 2, 4), torch.zeros(2, 2, 4)))
    with pytest.raises(PolicyConfigError, match=r"state c has shape \(2, 3, 4\), expected \(2, 2, 4\)"):
        core(x, (torch.zeros(2, 2, 4), torch.zeros(2, 3, 4)))
    with pytest.raises(PolicyConfigError, match=r"state as a pair \(h, c\)"):
        core(x, torch.zeros(2, 2, 4))
    with pytest.raises(PolicyConfigError, match=r"episode_starts has shape \(2, 5\), expected \(5, 2\)"):
        core(x, episode_starts=torch.zeros(2, 5))
    assert issubclass(PolicyConfigError, ValueError)


# --- CUDA -----------------------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", CORE_NAMES)
def test_cuda_matches_cpu(name):
    core = build(name, 3, 4, L=2)
    x, hx, s = random_case(6, 3, 3, 4, 2)
    out, (h, c) = core(x, hx, s)
    gpu = build(name, 3, 4, L=2).cuda()
    gpu.load_state_dict(core.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the refine cores' one fallback warning
        g_out, (g_h, g_c) = gpu(x.cuda(), (hx[0].cuda(), hx[1].cuda()), s.cuda())
    close(g_out.cpu(), out, 1e-9)
    close(g_h.cpu(), h, 1e-9)
    close(g_c.cpu(), c, 1e-9)
