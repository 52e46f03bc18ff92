"""Every memory core against the equations of docs/equations.md (and nn.LSTM / nn.GRU itself), and the contract they share.

GRU-only properties (nn.GRU's layout, the refine GRU's blocks) are in tests/test_gru.py.
"""

import io
import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from policies import CORE_NAMES, PolicyConfigError, kernels, make_core, ordered_kernels
from policies.kernels import DISABLE_ENV

LSTM_FAMILY = ("lstm", "chrono", "u")
REFINE = ("r", "ur")
ORDERED = ("o", "or", "om", "um")  # cumax / master-gate cores (docs/ordered_gates.md)
MASTER = ("om", "um")  # 2 master-gate blocks of n = H / chunk_size rows after nn.LSTM's 4H
GRU_FUSED = ("gru", "ugru")
GRU_FAMILY = (*GRU_FUSED, "urgru")
REFINE_ALL = (*REFINE, "urgru")  # cores with a sigmoid forget gate refined (or's is cumax: tests/test_ordered.py)
COMPILED = (*REFINE, *GRU_FAMILY, *ORDERED)  # cores with a compiled CPU path (gru/ugru: nn.GRU's own on the other path)
LSTM_LAYOUT = tuple(n for n in CORE_NAMES if n not in GRU_FAMILY + MASTER)  # nn.LSTM's parameter names and shapes
REFINE_SLOT = {"r": 0, "ur": 0, "urgru": 3}  # block of the refine gate; the forget/update gate is block 1
TORCH_TWIN = {**{n: nn.LSTM for n in LSTM_LAYOUT}, "gru": nn.GRU, "ugru": nn.GRU}  # a checkpoint of it loads


@pytest.fixture(params=["compiled", "pure_torch"])
def path(request, monkeypatch):
    """Which implementation runs: the compiled kernel, or its fallback (the pure-torch loop; nn.GRU for gru/ugru);
    "fused" for the cores that have only torch's."""
    if request.param == "compiled":
        monkeypatch.delenv(DISABLE_ENV, raising=False)
        assert kernels.kernel_available(), f"compiled refine kernel is unavailable: {kernels.REFINE.error}"
        assert ordered_kernels.kernel_available(), (
            f"ordered kernel is unavailable: {ordered_kernels.ORDERED_EXTENSION.error}"
        )
    elif request.param == "pure_torch":
        monkeypatch.setenv(DISABLE_ENV, "1")
    return request.param


# Every core on every path it has.
CORE_PATHS = [(n, "fused") for n in LSTM_FAMILY] + [(n, p) for n in COMPILED for p in ("compiled", "pure_torch")]
on_every_path = pytest.mark.parametrize("name,path", CORE_PATHS, indirect=["path"])


def cumax_reference(a):
    """cumax(a)_j = sum_{k <= j} softmax(a)_k over the last dimension, unit by unit."""
    p = torch.exp(a - a.max(dim=-1, keepdim=True).values)
    p = p / p.sum(dim=-1, keepdim=True)
    total, out = torch.zeros_like(p[..., 0]), []
    for j in range(a.shape[-1]):
        total = total + p[..., j]
        out.append(total)
    return torch.stack(out, dim=-1)


def paper_reference(core, x, hx=None, starts=None):
    """Step-by-step, unit-by-unit from docs/equations.md's and docs/ordered_gates.md's equations, time-major (every layer
    at step t, then t + 1).

    GRU cores follow torch's nn.GRU documentation (``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``,
    ``h = (1 - z) n + z h``), with ``z`` refined into ``g`` for urgru; their ``c`` is zeros.

    :return: (out (T, B, H), (h_n, c_n), gates (L, T, B, H)) with gates the effective forget (keep) gate (g, f or f_hat)
    """
    if core.core_name in GRU_FAMILY:
        return gru_reference(core, x, hx, starts)
    T, B, _ = x.shape
    L, H = core.num_layers, core.hidden_size
    name = core.core_name
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
            P_a, P_f, P_u, P_o = P[:, :H], P[:, H : 2 * H], P[:, 2 * H : 3 * H], P[:, 3 * H : 4 * H]
            u, o = torch.tanh(P_u), sigma(P_o)
            f = cumax_reference(P_f) if name in ("o", "or") else sigma(P_f)
            if name in REFINE + ("or",):
                r = sigma(P_a)
                g = r * (1 - (1 - f) ** 2) + (1 - r) * f**2
                c[k] = g * c[k] + (1 - g) * u
            elif name in MASTER:
                n, cs = core.n_chunks, core.chunk_size
                P_mf, P_mi = P[:, 4 * H : 4 * H + n], P[:, 4 * H + n :]
                act = cumax_reference if name == "om" else sigma
                f_m = torch.stack([act(P_mf)[:, j // cs] for j in range(H)], dim=-1)  # unit j in chunk j // cs
                i_m = torch.stack([1 - act(P_mi)[:, j // cs] for j in range(H)], dim=-1)
                w = f_m * i_m
                g = f * w + (f_m - w)
                i_hat = sigma(P_a) * w + (i_m - w)
                c[k] = g * c[k] + i_hat * u
            else:
                g = f
                c[k] = f * c[k] + sigma(P_a) * u
            gates[k].append(g)
            h[k] = o * torch.tanh(c[k])
            inp = h[k]
        outs.append(inp)
    return torch.stack(outs), (torch.stack(h), torch.stack(c)), torch.stack([torch.stack(g) for g in gates])


def gru_reference(core, x, hx=None, starts=None):
    T, B, _ = x.shape
    L, H = core.num_layers, core.hidden_size
    hx = hx if hx is not None else (x.new_zeros(L, B, H), x.new_zeros(L, B, H))
    h = list(hx[0])
    sigma = torch.sigmoid
    outs, gates = [], [[] for _ in range(L)]
    for t in range(T):
        if starts is not None:
            h = [s * (1 - starts[t]).unsqueeze(-1) for s in h]
        inp = x[t]
        for k in range(L):
            A = inp @ getattr(core, f"weight_ih_l{k}").T + getattr(core, f"bias_ih_l{k}")
            C = h[k] @ getattr(core, f"weight_hh_l{k}").T + getattr(core, f"bias_hh_l{k}")
            r = sigma(A[:, :H] + C[:, :H])
            z = sigma(A[:, H : 2 * H] + C[:, H : 2 * H])
            n = torch.tanh(A[:, 2 * H : 3 * H] + r * C[:, 2 * H : 3 * H])
            if core.core_name == "urgru":
                q = sigma(A[:, 3 * H :] + C[:, 3 * H :])  # the refine gate of z
                z = q * (1 - (1 - z) ** 2) + (1 - q) * z**2
            h[k] = (1 - z) * n + z * h[k]
            gates[k].append(z)
            inp = h[k]
        outs.append(inp)
    h_n = torch.stack(h)
    return torch.stack(outs), (h_n, torch.zeros_like(h_n)), torch.stack([torch.stack(g) for g in gates])


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


@pytest.mark.parametrize(
    "name,kw", [(n, {}) for n in COMPILED] + [("om", {"chunk_size": 2}), ("um", {"chunk_size": 2})]
)
@pytest.mark.parametrize("starts", [None, "inner"])
def test_compiled_core_gradcheck(name, kw, path, starts):
    core = build(name, 3, 4, L=2, **kw)
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


@pytest.mark.parametrize("name", (*LSTM_FAMILY, *GRU_FUSED))
def test_fused_cores_resets_at_start_make_one_fused_call(name, monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, "1")  # gru/ugru: nn.GRU's path
    calls = []
    torch_class = TORCH_TWIN[name]
    original = torch_class.forward

    def counting(self, *a, **k):
        calls.append(a[0].shape[0])
        return original(self, *a, **k)

    monkeypatch.setattr(torch_class, "forward", counting)
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


@pytest.mark.parametrize("name", LSTM_LAYOUT)
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


@pytest.mark.parametrize("name", (*REFINE_ALL, *ORDERED))
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
    if name in TORCH_TWIN:  # and a plain nn.LSTM (nn.GRU) checkpoint loads into any core of that layout
        b.load_state_dict(TORCH_TWIN[name](3, 6, num_layers=2).double().state_dict())


# --- initialisations ------------------------------------------------------------------------------------------


def ks_uniform(samples, lo, hi):
    x = torch.sort(samples.double().flatten()).values
    n = x.numel()
    cdf = ((x - lo) / (hi - lo)).clamp(0, 1)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return max((i / n - cdf).max().item(), (cdf - (i - 1) / n).max().item())


def _slot(b, slot, n_blocks=4):
    h = b.shape[0] // n_blocks
    return b[slot * h : (slot + 1) * h]


def bias_block(core, k, slot):
    """Block ``slot`` of layer k's summed bias ``b_ih + b_hh`` (a GRU's new-gate biases do not add up: not used)."""
    b = getattr(core, f"bias_ih_l{k}") + getattr(core, f"bias_hh_l{k}")
    return _slot(b, slot, b.shape[0] // core.hidden_size).detach()


@pytest.mark.parametrize("name", ["u", "ur", "ugru", "urgru"])
def test_ugi_on_forget_bias(name):
    """UGI on the gate that keeps the old state: the LSTM's forget gate, the GRU's update gate (block 1)."""
    H = 256
    core = build(name, 8, H, L=3, seed=0, dtype=torch.float32)
    f = torch.cat([torch.sigmoid(bias_block(core, k, 1).double()) for k in range(3)])
    assert ks_uniform(f, 1 / H, 1 - 1 / H) < 1.95 / math.sqrt(f.numel())
    frac = (1 / (1 - f) > 10).double().mean().item()
    assert frac == pytest.approx(0.097, abs=4 * math.sqrt(0.097 * 0.903 / f.numel()))
    for k in range(3):
        if name in REFINE_SLOT and core.refine_bias == "neg_forget":
            torch.testing.assert_close(bias_block(core, k, REFINE_SLOT[name]), -bias_block(core, k, 1))  # b_r = -b_f
        else:  # the refine gate (ur's default b_r = 0) or the input / reset gate: torch's init
            assert bias_block(core, k, REFINE_SLOT.get(name, 0)).abs().max() <= 2 / math.sqrt(H)
    other = torch.sigmoid(bias_block(build(name, 8, H, L=1, seed=1), 0, 1))
    assert not torch.equal(other, f[:H].float())  # drawn from the seed, not fixed


def gates_from_biases(core):
    """(f, r, g) of every unit of every layer at initialisation, from the biases alone (zero input and state)."""
    slot = REFINE_SLOT[core.core_name]
    f = torch.cat([torch.sigmoid(bias_block(core, k, 1).double()) for k in range(core.num_layers)])
    r = torch.cat([torch.sigmoid(bias_block(core, k, slot).double()) for k in range(core.num_layers)])
    x = torch.zeros(1, 1, core.input_size, dtype=core.weight_ih_l0.dtype)
    trace = core.gate_trace(x)  # goes through the core's own forward for layer 0
    return f, r, trace[0, 0, 0].double()


@pytest.mark.parametrize("name", ["ur", "urgru"])
def test_refine_bias_neg_forget_makes_g_about_f_squared(name):
    H = 256
    core = build(name, 8, H, L=3, seed=0, dtype=torch.float32, refine_bias="neg_forget")
    f, r, g0 = gates_from_biases(core)
    torch.testing.assert_close(r, 1 - f, atol=1e-6, rtol=0)  # b_r = -b_f
    torch.testing.assert_close(g0, (f + (2 * r - 1) * f * (1 - f))[:H], atol=1e-6, rtol=0)
    g = f + (2 * r - 1) * f * (1 - f)
    slow = f > 0.9  # near 1, g = f + (1 - 2f) f (1 - f) ~ f^2: the timescale 1 / (1 - g) is about halved
    assert slow.sum() > 50
    torch.testing.assert_close(g[slow], f[slow] ** 2, atol=2e-2, rtol=0)
    ratio = (1 - f[slow]) / (1 - g[slow])
    assert ratio.min() > 0.5 and ratio.median() < 0.56


@pytest.mark.parametrize("name", REFINE_ALL)
def test_refine_bias_zero_keeps_torch_default_so_g_is_about_f(name):
    H = 256
    core = build(name, 8, H, L=3, seed=0, dtype=torch.float32, refine_bias="zero")
    assert core.refine_bias == "zero"
    f, r, g0 = gates_from_biases(core)
    bound = 1 / math.sqrt(H)
    for k in range(3):
        for vec in ("bias_ih", "bias_hh"):
            b = _slot(getattr(core, f"{vec}_l{k}"), REFINE_SLOT[name]).detach()
            assert b.abs().max() <= bound and ks_uniform(b, -bound, bound) < 1.95 / math.sqrt(H)
    g = f + (2 * r - 1) * f * (1 - f)
    torch.testing.assert_close(g0, g[:H], atol=1e-6, rtol=0)
    # |2r - 1| <= |b_r| / 2 <= 1/sqrt(H): g stays within f (1 - f) / sqrt(H) of f, centred on it
    assert ((g - f).abs() <= f * (1 - f) * bound + 1e-7).all()
    assert abs((g - f).mean().item()) < 4 * (g - f).std().item() / math.sqrt(g.numel())
    if name != "r":  # the forget gate keeps UGI
        assert ks_uniform(f, 1 / H, 1 - 1 / H) < 1.95 / math.sqrt(f.numel())


def test_refine_bias_defaults():
    # ur and urgru: b_r = 0 (measured better than the paper's b_r = -b_f)
    assert make_core("ur", 3, 4).refine_bias == make_core("r", 3, 4).refine_bias == make_core("or", 3, 4).refine_bias
    assert make_core("ur", 3, 4).refine_bias == "zero"
    assert make_core("urgru", 3, 4).refine_bias == "zero"
    for name in ("ur", "urgru"):  # the default is the same core as the option given explicitly
        torch.manual_seed(5)
        default = make_core(name, 3, 8, num_layers=2)
        torch.manual_seed(5)
        explicit = make_core(name, 3, 8, num_layers=2, refine_bias=default.refine_bias)
        for (key, a), (_, b) in zip(default.state_dict().items(), explicit.state_dict().items(), strict=True):
            assert torch.equal(a, b), key
    torch.manual_seed(3)
    r_default = make_core("r", 3, 8)
    torch.manual_seed(3)
    r_neg = make_core("r", 3, 8, refine_bias="neg_forget")
    f_b = bias_block(r_neg, 0, 1)
    torch.testing.assert_close(_slot(r_neg.bias_ih_l0, 0).detach(), -f_b)
    assert torch.equal(_slot(r_default.bias_ih_l0, 1), _slot(r_neg.bias_ih_l0, 1))


@pytest.mark.parametrize("name", ["ur", "urgru"])
def test_freeze_ugi_keeps_the_offset_and_the_layout(name):
    torch.manual_seed(0)
    plain = make_core(name, 3, 8, num_layers=2)
    torch.manual_seed(0)
    frozen = make_core(name, 3, 8, num_layers=2, freeze_ugi=True)
    assert {k: v.shape for k, v in frozen.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    for a, b in zip(plain.state_dict().values(), frozen.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the same initialisation; only training differs
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    opt = torch.optim.Adam(frozen.parameters(), lr=1e-2)
    x = torch.randn(6, 4, 3)
    for _ in range(3):
        opt.zero_grad()
        out, _ = frozen(x, episode_starts=torch.zeros(6, 4))
        out.square().sum().backward()
        opt.step()
    for k in range(2):
        assert torch.equal(_slot(frozen.state_dict()[f"bias_ih_l{k}"], 1), _slot(before[f"bias_ih_l{k}"], 1))
        for vec, slot in (("bias_hh", 1), ("bias_ih", 0), ("bias_ih", 2), ("bias_ih", 3)):
            name = f"{vec}_l{k}"
            assert not torch.equal(_slot(frozen.state_dict()[name], slot), _slot(before[name], slot)), name


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(refine_bias="zeros"), r"core 'ur': unknown refine_bias 'zeros'; valid: neg_forget, zero"),
        (dict(freeze_ugi="yes"), r"core 'ur': freeze_ugi must be true or false, got 'yes'"),
    ],
)
def test_bad_refine_options(kwargs, match):
    with pytest.raises(PolicyConfigError, match=match):
        make_core("ur", 3, 4, **kwargs)
    with pytest.raises(PolicyConfigError, match=match.replace("'ur'", "'urgru'")):
        make_core("urgru", 3, 4, **kwargs)
    with pytest.raises(PolicyConfigError, match=r"keyword for core 'ugru': 'refine_bias'; valid: \(none\)"):
        make_core("ugru", 3, 4, refine_bias="zero")
    with pytest.raises(PolicyConfigError, match=r"keyword for core 'r': 'freeze_ugi'; valid: refine_bias"):
        make_core("r", 3, 4, freeze_ugi=True)


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


@pytest.mark.parametrize("name", ["lstm", "r", "gru", "o", "or", "om"])
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
    with pytest.raises(PolicyConfigError, match=r"core 'u'.*'t_max'; valid: \(none\)"):
        make_core("u", 3, 4, t_max=100)
    with pytest.raises(PolicyConfigError, match=r"core 'ur'.*'t_max'; valid: refine_bias, freeze_ugi"):
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
