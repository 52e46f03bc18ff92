"""The memory probe (agents' probe_memory) on agents whose memory is known: LSTM cores set by hand on the
passive T-maze, one that holds the cue forever (forget gate ~1) and one that forgets it after one step (~0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

import envs
from agents import FastRecurrentPPO
from agents.errors import UrgateError
from agents.run.probe import probe_memory, probe_steps, write_probe
from policies import MlpGatedPolicy
from policies.gates import gate_block

LENGTH = 20


def hand_set_lstm(forget_bias: float) -> FastRecurrentPPO:
    """A T-maze agent whose actor LSTM (4 units) writes the cue into its cells at the first step (g = tanh(5 cue),
    input gate 1/2) and keeps them with forget gate sigmoid(forget_bias); no recurrent weights."""
    venv = envs.make_vec_env("urgate/TMaze-v0", n_envs=2, length=LENGTH)
    model = FastRecurrentPPO(
        MlpGatedPolicy, venv, n_steps=8, batch_size=16, seed=0, policy_kwargs=dict(core="lstm", lstm_hidden_size=4)
    )
    core = model.policy.lstm_actor
    with th.no_grad():
        for p in core.parameters():
            p.zero_()
        gate_block(core.bias_ih_l0, "forget").fill_(forget_bias)
        gate_block(core.weight_ih_l0, "cell")[:, 0] = 5.0  # the cue is the observation's first entry
    return model


def test_probe_steps_start_at_zero_and_reach_the_maximum():
    steps = probe_steps(1000, 40)
    assert steps[0] == 0 and steps[1] == 1 and steps[-1] == 1000 and np.all(np.diff(steps) > 0)


def test_a_core_that_keeps_the_cue_decodes_it_at_every_delay_and_one_that_forgets_only_at_the_cue():
    kwargs = dict(env_id="urgate/TMaze-v0", env_kwargs={"length": LENGTH}, max_steps=LENGTH, points=12, n_envs=20)
    keeps = probe_memory(hand_set_lstm(20.0), 60, **kwargs)
    forgets = probe_memory(hand_set_lstm(-20.0), 60, **kwargs)
    for result in (keeps, forgets):
        assert result.steps[0] == 0 and result.steps[-1] == LENGTH  # every delay up to the junction is decoded
        assert set(result.test_episodes) == {30}  # held-out half: every episode reaches the junction
    assert np.all(keeps.accuracy == 1.0)
    assert forgets.accuracy[0] == 1.0  # the step that shows the cue
    later = forgets.steps >= 1
    assert np.all(
        forgets.accuracy[later] <= forgets.chance[later]
    )  # from then on nothing to read: no better than chance
    assert np.all(forgets.chance[later] < 0.8)  # both cues are among the held-out episodes
    assert np.all(keeps.unit_timescales >= 1e5) and np.all(forgets.unit_timescales < 1.01)


def test_probe_writes_the_curve_the_summary_and_the_figure(tmp_path):
    result = probe_memory(
        hand_set_lstm(20.0), 20, env_id="urgate/TMaze-v0", env_kwargs={"length": 5}, max_steps=5, points=4
    )
    paths = write_probe(result, tmp_path)
    assert [p.name for p in paths] == ["probe.csv", "probe.json", "probe.png"]
    assert paths[0].read_text().splitlines()[0] == "steps_since_cue,accuracy,chance,fit_episodes,test_episodes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.csv", "probe.json", "probe.png"]  # no leftovers


def test_probe_refuses_an_env_without_a_cue_and_bad_numbers():
    model = hand_set_lstm(20.0)
    with pytest.raises(UrgateError, match="n_episodes"):
        probe_memory(model, 3, env_id="urgate/TMaze-v0")
    with pytest.raises(UrgateError, match="max_steps"):
        probe_memory(model, 20, env_id="urgate/TMaze-v0", max_steps=0)
    no_cue = "popgym-RepeatPreviousEasy-v0"  # a memory task that does not say its cue
    other = FastRecurrentPPO(MlpGatedPolicy, envs.make_vec_env(no_cue, n_envs=2), n_steps=8, batch_size=16)
    with pytest.raises(UrgateError, match="did not show a cue"):
        probe_memory(other, 20, env_id=no_cue)


def test_probe_command_writes_its_files_and_refuses_bad_input_with_one_line(tmp_path, capsys):
    import run_rl

    zip_path = tmp_path / "keeps.zip"
    hand_set_lstm(20.0).save(zip_path)
    out = tmp_path / "probe"
    args = ["probe", str(zip_path), "--env", "urgate/TMaze-v0", "--episodes", "20", "--max-steps", "5"]
    assert run_rl.main([*args, "--points", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "steps since cue | accuracy" in printed and "|    1.000 |" in printed
    assert sorted(p.name for p in out.iterdir()) == ["probe.csv", "probe.json", "probe.png"]
    for bad, message in (
        ([*args], "--out is needed for a model zip"),
        ([*args, "--out", str(out), "--noise", "-1"], "--noise -1.0: must be a number >= 0"),
        (["probe", str(tmp_path / "missing")], "does not exist"),
    ):
        assert run_rl.main(bad) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
