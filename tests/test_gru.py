"""The GRU family (policies/gru.py): nn.GRU's maths for gru/ugru, the refine GRU's layout, the (h, c) contract.

The equations, episode starts, gradchecks, dropout, initialisations and bad input of every core, the GRU family
included, are tested in tests/test_cores.py; the compiled refine-GRU kernel in tests/test_kernels.py.
"""

import pytest
import torch
from torch import nn

from policies import GatedGRU, RefineGRU, kernels, make_core
from tests.test_cores import build, close, path, random_case  # noqa: F401 - path: the fixture

GRU_FUSED = ("gru", "ugru")


@pytest.mark.usefixtures("path")
@pytest.mark.parametrize("name", GRU_FUSED)
@pytest.mark.parametrize("L", [1, 2])
def test_gru_and_ugru_are_nn_gru(name, L):
    """On both paths (the compiled kernel, nn.GRU's own forward): nn.GRU's outputs to 1e-12 in float64."""
    core = build(name, 4, 6, L)
    assert isinstance(core, nn.GRU) and isinstance(core, GatedGRU)
    plain = nn.GRU(4, 6, num_layers=L).double()
    plain.load_state_dict(core.state_dict())
    assert list(dict(core.named_parameters())) == list(dict(plain.named_parameters()))
    x, hx, s = random_case(9, 3, 4, 6, L)
    out, (h, c) = core(x, hx)
    ref_out, ref_h = plain(x, hx[0])
    close(out, ref_out, 1e-12)
    close(h, ref_h, 1e-12)
    assert torch.equal(c, torch.zeros_like(h))
    # with episode starts: nn.GRU one step at a time, the state zeroed by hand
    out, (h, _) = core(x, hx, episode_starts=s)
    state, outs = hx[0], []
    for t in range(x.shape[0]):
        o, state = plain(x[t : t + 1], state * (1 - s[t]).view(1, -1, 1))
        outs.append(o)
    close(out, torch.cat(outs), 1e-12)
    close(h, state, 1e-12)


@pytest.mark.parametrize("L", [1, 3])
def test_refine_gru_layout_is_nn_gru_plus_one_block(L):
    core = make_core("urgru", 7, 6, num_layers=L)
    assert isinstance(core, RefineGRU)
    plain = nn.GRU(7, 6, num_layers=L)
    ours, theirs = dict(core.named_parameters()), dict(plain.named_parameters())
    assert list(ours) == list(theirs)
    for key, p in theirs.items():
        assert ours[key].shape == (p.shape[0] * 4 // 3, *p.shape[1:]), key
    assert sum(p.numel() for p in core.parameters()) == 4 * sum(p.numel() for p in plain.parameters()) // 3


@pytest.mark.usefixtures("path")
def test_refine_gru_with_a_neutral_refine_gate_is_nn_gru():
    """With the refine gate held at 1/2 (zero weights and biases), g = z: urgru computes nn.GRU exactly."""
    H, L = 5, 2
    core = build("urgru", 4, H, L)
    plain = nn.GRU(4, H, num_layers=L).double()
    with torch.no_grad():
        for name, p in core.named_parameters():
            p[3 * H :] = 0.0
            getattr(plain, name).copy_(p[: 3 * H])
    x, hx, s = random_case(8, 3, 4, H, L)
    out, (h, _) = core(x, hx, episode_starts=s)
    state, outs = hx[0], []
    for t in range(x.shape[0]):
        o, state = plain(x[t : t + 1], state * (1 - s[t]).view(1, -1, 1))
        outs.append(o)
    close(out, torch.cat(outs))
    close(h, state)


@pytest.mark.usefixtures("path")
@pytest.mark.parametrize("name", ("gru", "ugru", "urgru"))
def test_cell_state_is_ignored_and_returned_as_zeros(name):
    core = build(name, 3, 4, L=2)
    x, hx, s = random_case(6, 2, 3, 4, 2)
    out, (h, c) = core(x, hx, episode_starts=s)
    out2, (h2, c2) = core(x, (hx[0], torch.randn_like(hx[1])), episode_starts=s)
    assert torch.equal(out, out2) and torch.equal(h, h2)
    assert torch.equal(c, torch.zeros_like(h)) and torch.equal(c2, c)


def test_gru_runs_the_compiled_kernel_on_cpu_and_nn_gru_when_disabled(monkeypatch):
    calls = []
    original = nn.GRU.forward
    monkeypatch.setattr(nn.GRU, "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    core = make_core("gru", 3, 4)
    x = torch.randn(5, 2, 3)
    monkeypatch.delenv("URGATE_DISABLE_KERNEL", raising=False)
    assert core.uses_compiled_kernel(x)
    core(x)
    assert calls == []
    monkeypatch.setenv("URGATE_DISABLE_KERNEL", "1")
    assert not core.uses_compiled_kernel(x)
    core(x)
    assert calls == [1]
    monkeypatch.delenv("URGATE_DISABLE_KERNEL")
    monkeypatch.setattr(kernels, "_warned", set())
    with pytest.warns(RuntimeWarning, match="gru/ugru run torch's nn.GRU forward.*bfloat16"):
        assert not core.uses_compiled_kernel(x.to(torch.bfloat16))  # a dtype the kernel does not take: nn.GRU
