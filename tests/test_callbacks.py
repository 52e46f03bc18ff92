"""agents.run.callbacks: the progress bar (total, time left, a dead stream) and the stop signals."""

from __future__ import annotations

import io
import os
import signal
import time
from types import SimpleNamespace

import pytest

from agents.run import callbacks
from agents.run.callbacks import ProgressBar, StopRequest, end_of_run


class FakeModel(SimpleNamespace):
    """What the bar reads from an SB3 model."""


def fake_model(start: int = 0, budget: int = 300, n_steps: int = 16, n_envs: int = 4) -> FakeModel:
    return FakeModel(
        num_timesteps=start,
        _total_timesteps=budget,
        n_steps=n_steps,
        n_envs=n_envs,
        ep_info_buffer=[{"r": 1.0}],
        ep_success_buffer=[1.0],
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def drive(bar: ProgressBar, model: FakeModel, clock: Clock, update_s: list[float], rollout_s: float = 1.0) -> None:
    """Run whole rollout + update cycles: each rollout's steps one at a time, then an update of each of ``update_s`` seconds."""
    rollout = model.n_steps * model.n_envs
    for update in update_s:
        bar._on_rollout_start()
        for _ in range(model.n_steps):
            model.num_timesteps += model.n_envs
            clock.now += rollout_s / model.n_steps
            bar._on_step()
        clock.now += update
        assert model.num_timesteps % rollout == 0


@pytest.fixture
def clock(monkeypatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(callbacks.time, "perf_counter", c)
    return c


def test_end_of_run_is_the_rollout_boundary_sb3_stops_at():
    assert end_of_run(fake_model(budget=300), 0) == 320  # 5 rollouts of 64 steps: SB3 passes 300
    assert end_of_run(fake_model(budget=320), 0) == 320
    assert end_of_run(fake_model(budget=1000), 640) == 1024  # resumed at 640 of a new budget


def test_bar_total_is_never_exceeded(clock, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(callbacks.sys, "stderr", err)
    model = fake_model(budget=300)
    bar = ProgressBar(300)
    bar.model = model
    bar._on_training_start()
    drive(bar, model, clock, [0.5] * 5)
    assert model.num_timesteps == 320 and bar.bar.total == 320
    bar.close()
    assert "320/320" in err.getvalue() and "100%" in err.getvalue()


def test_time_left_ignores_a_slow_first_update(clock, monkeypatch):
    """A first update that holds a one-off cost (the kernel build, 600 s here) must not set the time left."""
    monkeypatch.setattr(callbacks.sys, "stderr", io.StringIO())
    model = fake_model(budget=64 * 100)
    bar = ProgressBar(model._total_timesteps)
    bar.model = model
    bar._on_training_start()
    drive(bar, model, clock, [600.0, 1.0, 1.0, 1.0])  # then 2 s per 64-step cycle: 32 steps/s
    bar._on_rollout_start()
    assert bar._rate == pytest.approx(32.0)
    clock.now += 1.0
    bar._on_step()
    left = bar.bar.postfix.split("left=")[1].split(",")[0]
    assert left == callbacks.format_duration((6400 - 256) / 32.0) == "3:12"
    bar.close()


def test_bar_survives_a_stream_that_went_away(clock, monkeypatch):
    class Dead(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(callbacks.sys, "stderr", Dead())
    model = fake_model()
    bar = ProgressBar(300)
    bar.model = model
    bar._on_training_start()
    drive(bar, model, clock, [0.5] * 2)
    bar.close()
    assert bar.bar is None


@pytest.mark.parametrize("sig", StopRequest.SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_stop_request_handles_sigint_and_sigterm_and_restores_them(sig, capsys):
    """A real signal to this process: the first asks to stop (and says so), the second aborts; afterwards the
    previous handlers are back."""
    before = {s: signal.getsignal(s) for s in StopRequest.SIGNALS}
    with StopRequest() as stop:
        os.kill(os.getpid(), sig)
        time.sleep(0.05)  # the handler runs in the main thread between bytecodes
        assert stop.requested
        assert f"{signal.Signals(sig).name}: stopping and saving a checkpoint" in capsys.readouterr().err
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), sig)
            time.sleep(1.0)  # interrupted by the handler's KeyboardInterrupt
    assert {s: signal.getsignal(s) for s in StopRequest.SIGNALS} == before


def test_stop_request_notice_to_a_closed_pipe_does_not_raise(monkeypatch):
    class Dead(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(callbacks.sys, "stderr", Dead())
    stop = StopRequest()
    stop._handle(signal.SIGINT, None)
    assert stop.requested
    with pytest.raises(KeyboardInterrupt):  # the second one aborts
        stop._handle(signal.SIGTERM, None)
