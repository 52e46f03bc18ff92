"""The gradient saturation probe (benchmarks/gradients.py) against plain autograd through the cell definition.

It lives beside the benchmark it tests: tests/ never imports benchmarks/."""

import io
import zipfile

import pytest
import torch
from torch.nn import functional as F

from benchmarks.gradients import core_from_checkpoint, delay_batch, early_step_gradients, train_delay
from policies import make_core
from policies.gates import gru_cell, lstm_cell, refine_cell, refine_gru_cell
from policies.recurrence import gru_step_loop, step_loop

REFINE_BLOCK = {"ur": 0, "urgru": 3}  # the refine gate's block; the forget / update gate is block 1


def plain_outputs(name, core, x):
    """The whole sequence through the plain step loop: ``(out, xr, xproj)`` with ``xr`` the input and ``xproj`` the
    input projections, both differentiated directly. For LSTM cells ``P_1 = xproj_1 + W_hh h_1``; for GRU cells the
    gate pre-activation is ``xproj + (W_hh h + b_hh)`` in the reset/update/refine blocks: in both, the gradient of a
    gate's pre-activation is that of its block of ``xproj``."""
    xr = x.clone().requires_grad_(True)
    zeros = torch.zeros(x.shape[1], core.hidden_size)
    if name in ("gru", "urgru"):
        xproj = F.linear(xr, core.weight_ih_l0, core.bias_ih_l0)
        xproj.retain_grad()
        cell = refine_gru_cell if name == "urgru" else gru_cell
        out, _, _ = gru_step_loop(cell, xproj, core.weight_hh_l0, core.bias_hh_l0, zeros)
    else:
        xproj = F.linear(xr, core.weight_ih_l0, core.bias_ih_l0 + core.bias_hh_l0)
        xproj.retain_grad()
        out, _, _, _ = step_loop(refine_cell if name == "ur" else lstm_cell, xproj, core.weight_hh_l0, zeros, zeros)
    return out, xr, xproj


@pytest.mark.parametrize("name", ["lstm", "chrono", "ur", "gru", "urgru"])
def test_probe_matches_plain_autograd(name):
    torch.manual_seed(0)
    core = make_core(name, 6, 5)
    x, _ = delay_batch(3, 7, 6, torch.Generator().manual_seed(1))
    v = torch.randn(5)
    gx, gf, gr = early_step_gradients(core, x, v)

    out, xr, xproj = plain_outputs(name, core, x)
    (out[-1] @ v).sum().backward()
    torch.testing.assert_close(torch.from_numpy(gx), xr.grad[0].norm(dim=1), rtol=1e-4, atol=1e-7)
    p1 = xproj.grad[1].view(3, -1, 5)
    torch.testing.assert_close(torch.from_numpy(gf), p1[:, 1].norm(dim=1), rtol=1e-4, atol=1e-7)
    if name in REFINE_BLOCK:
        torch.testing.assert_close(torch.from_numpy(gr), p1[:, REFINE_BLOCK[name]].norm(dim=1), rtol=1e-4, atol=1e-7)
    else:
        assert torch.isnan(torch.from_numpy(gr)).all()


def test_delay_batch_puts_one_cue_at_step_zero_only():
    x, cue = delay_batch(5, 4, 7, torch.Generator().manual_seed(0))
    assert x.shape == (4, 5, 7)
    assert torch.equal(x[0, :, :4].argmax(1), cue) and torch.equal(x[0, :, :4].sum(1), torch.ones(5))
    assert x[1:, :, :4].abs().sum() == 0


def test_core_rebuilt_from_checkpoint_weights(tmp_path):
    core = make_core("ur", 6, 8)
    state = {f"lstm_actor.{k}": v for k, v in core.state_dict().items()}
    state["mlp_extractor.policy_net.0.weight"] = torch.zeros(2, 2)
    buf = io.BytesIO()
    torch.save(state, buf)
    path = tmp_path / "latest.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("policy.pth", buf.getvalue())
    rebuilt = core_from_checkpoint(path, "ur")
    x = torch.randn(4, 2, 6)
    torch.testing.assert_close(rebuilt(x)[0], core(x)[0])


def test_training_on_short_delay_beats_chance():
    torch.manual_seed(0)
    core = make_core("chrono", 8, 16)
    loss, acc = train_delay(core, length=5, steps=150, batch=32, lr=1e-2, seed=0)
    assert acc > 0.6 and loss < 1.2  # chance: 0.25 and log 4 = 1.386
