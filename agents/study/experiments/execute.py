"""Executing one run of a grid, in whichever process a backend chose: train or resume it with its output in its log
file, never raising (an error comes back as text), and the signal plumbing of worker processes.

Ctrl-C: the parent of a pool stops the grid and forwards exactly one SIGINT to each worker, whose trainer then
checkpoints and stops after its current update (a second Ctrl-C aborts).
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ...run import rundir
from ...run.callbacks import STOP_SIGNALS
from ...run.config import RunConfig
from ...run.logs import log_to_stderr
from ...run.train import resume, train
from .grid import RunSpec


@dataclass(frozen=True)
class Job:
    """A run to execute: its cell, resolved config, directory and log file."""

    spec: RunSpec
    cfg: RunConfig
    run_dir: Path
    log_path: Path


@dataclass
class Outcome:
    """What came back from one run: its summary, or the error that stopped it."""

    name: str
    summary: dict[str, Any] | None = None
    error: str | None = None
    seconds: float = 0.0


def execute(job: Job) -> Outcome:
    """Train or resume one run, with its output in ``job.log_path``; never raises (errors come back as text)."""
    torch.set_num_threads(job.cfg.threads)
    job.log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with (
        _sigint(signal.default_int_handler),  # Ctrl-C reaches the trainer, which checkpoints and stops
        open(job.log_path, "a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        try:
            state = rundir.run_state(job.run_dir)
            print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.spec.name}: {state}", flush=True)
            if state == "finished":
                summary = rundir.read_summary(job.run_dir)
            elif state == "resumable":
                summary = resume(job.run_dir, progress_bar=False)
            else:
                summary = train(job.cfg, job.run_dir, overwrite=state == "partial", progress_bar=False)
            return Outcome(job.spec.name, summary=summary, seconds=time.perf_counter() - t0)
        except KeyboardInterrupt:
            return Outcome(job.spec.name, error="interrupted", seconds=time.perf_counter() - t0)
        except Exception as exc:  # one failing run must not stop the grid; its traceback goes to its log
            traceback.print_exc()
            return Outcome(job.spec.name, error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - t0)


def finished(outcome: Outcome) -> bool:
    """Whether a run came back finished."""
    return outcome.summary is not None and outcome.summary.get("status") == "finished"


def interrupted(outcome: Outcome) -> bool:
    """Whether a run stopped because of Ctrl-C (its trainer saved a checkpoint to resume from)."""
    status = (outcome.summary or {}).get("status")
    return outcome.error == "interrupted" or status == "interrupted"


@contextlib.contextmanager
def _sigint(handler, signals=(signal.SIGINT,)):
    try:
        previous = [(sig, signal.signal(sig, handler)) for sig in signals]
    except ValueError:  # not the main thread (some Ray set-ups): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous:
            signal.signal(sig, old)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


# The parent of a pool stops the grid on Ctrl-C, on SIGTERM (``kill PID``) and on SIGHUP (the terminal was closed),
# also when started in the background, where a non-interactive shell leaves SIGINT ignored.
parent_signals = functools.partial(_sigint, _raise_interrupt, STOP_SIGNALS)


def init_worker(pids=None) -> None:
    """Initialiser of a pool's worker process.

    :param pids: a multiprocessing queue that receives this worker's process id (the parent signals it on Ctrl-C)
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    log_to_stderr()  # a spawned process starts with logging unconfigured; execute points stderr at the run's log
    # Workers leave the terminal's process group: a Ctrl-C reaches the parent only, which forwards exactly one
    # SIGINT to each worker (the trainer's first SIGINT checkpoints and stops, a second one aborts), also when the
    # parent alone is signalled. An idle worker ignores it; ``execute`` re-enables it around each run.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if pids is not None:
        pids.put(os.getpid())
