"""``run_experiment``: validate a grid, write its experiment directory, and run the unfinished cells on a backend."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ... import paths
from ...errors import UrgateError
from ...run import rundir
from . import store
from .backends import BACKENDS
from .execute import Job
from .grid import Experiment, validate
from .progress import ExperimentReport, Progress


def default_workers(threads: int = 1) -> int:
    """One worker per ``threads`` CPU cores of this machine."""
    return max(1, (os.cpu_count() or 1) // max(1, threads))


def run_experiment(
    exp: Experiment,
    exp_dir: str | Path,
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    gpus_per_run: float = 0.0,
    progress: bool = True,
) -> ExperimentReport:
    """Run (or continue) every cell of ``exp`` under ``exp_dir``.

    :param exp: the grid
    :param exp_dir: experiment directory (created; an existing one must hold the same grid)
    :param backend: a key of ``BACKENDS``: ``"local"`` or ``"ray"``
    :param workers: runs in parallel (local processes, or CPUs of a local Ray runtime); default: CPU cores / threads
    :param address: Ray cluster address (``ray`` backend; None starts a local runtime)
    :param gpus_per_run: GPUs each Ray task declares (``ray`` backend)
    :param progress: show an overall progress bar (runs done / total, environment steps, ETA)
    :raises UrgateError: for bad input, before any run starts
    """
    if backend not in BACKENDS:
        raise UrgateError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise UrgateError(f"--workers must be >= 1, got {workers}")
    if gpus_per_run < 0:
        raise UrgateError(f"--gpus-per-run must be >= 0, got {gpus_per_run}")
    exp_dir = paths.check_dir(exp_dir, "experiment directory")
    BACKENDS[backend].require()
    configs = validate(exp)
    with rundir.directory_lock(exp_dir, "experiment directory"):  # a second compare on it stops here
        store.prepare(exp, exp_dir)
        specs = exp.runs()
        jobs = [Job(s, configs[s.name], store.run_dir(exp_dir, s.name), store.log_path(exp_dir, s.name)) for s in specs]
        todo = [j for j in jobs if rundir.run_state(j.run_dir) != "finished"]
        report = ExperimentReport(exp_dir, total=len(jobs), skipped=len(jobs) - len(todo))
        threads = max((j.cfg.threads for j in jobs), default=1)
        n_workers = min(workers or default_workers(threads), max(1, len(todo)))
        t0 = time.perf_counter()
        with Progress(todo, report, enabled=progress) as bar:
            if todo:
                BACKENDS[backend].run(
                    todo,
                    workers=n_workers,
                    address=address,
                    gpus_per_run=gpus_per_run,
                    on_done=bar.done,
                    on_poll=bar.poll,
                )
        report.wall_time_s = time.perf_counter() - t0
        return report
