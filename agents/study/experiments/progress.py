"""The live display of an experiment: runs done / total, a bar over environment steps with an ETA, one line per
finished, interrupted or failed run."""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rich.console
import rich.markup
import rich.progress

from ...run import rundir
from .execute import Job, Outcome, finished, interrupted


@dataclass
class ExperimentReport:
    """What ``run_experiment`` did: how many runs were skipped, finished and failed, and how long it took."""

    exp_dir: Path
    total: int
    skipped: int
    finished: list[str] = field(default_factory=list)
    interrupted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    wall_time_s: float = 0.0


class Progress:
    """Overall progress: runs done / total, a bar over environment steps with an ETA, updated as the runs train
    (every ``POLL_S`` seconds, from each running run's ``progress.csv``); and one line per finished, interrupted or
    failed run, also without the bar (``enabled=False``).

    :param todo: the runs to execute
    :param report: the report the outcomes go into
    :param enabled: show the live bar (the per-run lines are printed either way)
    """

    POLL_S = 2.0

    def __init__(self, todo: list[Job], report: ExperimentReport, enabled: bool) -> None:
        self.todo, self.report, self.enabled = todo, report, enabled
        self.steps_total = sum(j.cfg.total_timesteps for j in todo)
        self.steps_done = 0  # of the runs that came back
        self.open = {j.spec.name: j for j in todo}
        self.out = sys.stdout  # bound now: a run executed in this process redirects sys.stdout to its log
        self.progress: rich.progress.Progress | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self.progress = rich.progress.Progress(
                rich.progress.TextColumn("{task.description}"),
                rich.progress.BarColumn(),
                rich.progress.TextColumn("{task.percentage:>3.0f}% steps"),
                rich.progress.TimeElapsedColumn(),
                rich.progress.TextColumn("ETA"),
                rich.progress.TimeRemainingColumn(),
                console=rich.console.Console(file=self.out),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(self._describe(), total=max(1, self.steps_total))
            self._poller = threading.Thread(target=self._poll_until_stopped, name="experiment-progress", daemon=True)
            self._poller.start()
        self._print(
            f"experiment {self.report.exp_dir}: {self.report.total} runs, {self.report.skipped} finished and "
            f"kept, {len(self.todo)} to run"
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()
        if self.progress is not None:
            self.poll()
            self.progress.stop()

    def _print(self, line: str) -> None:
        if self.progress is not None:
            self.progress.console.print(line)
        else:
            print(rich.markup.render(line).plain, file=self.out, flush=True)

    def _describe(self) -> str:
        done = self.report.skipped + len(self.report.finished)
        fail = f", {len(self.report.failed)} failed" if self.report.failed else ""
        stopped = f", {len(self.report.interrupted)} interrupted" if self.report.interrupted else ""
        return f"runs {done}/{self.report.total}{fail}{stopped}"

    def done(self, job: Job, outcome: Outcome) -> None:
        """Record a run that came back, print its line, update the bar."""
        done = finished(outcome)
        with self._lock:
            self.open.pop(job.spec.name, None)
            if done:
                self.report.finished.append(job.spec.name)
                self.steps_done += job.cfg.total_timesteps
            else:  # only the steps it trained: an interrupted grid never shows 100 %
                self.steps_done += min(rundir.latest_timesteps(job.run_dir), job.cfg.total_timesteps)
                if interrupted(outcome):
                    self.report.interrupted.append(job.spec.name)
                else:
                    self.report.failed[job.spec.name] = outcome.error or f"status {outcome.summary.get('status')!r}"
        if done:
            sr = rundir.final_metric(outcome.summary, "success_rate")
            ret = rundir.final_metric(outcome.summary, "mean_return")
            score = f"success {sr:.2f}" if sr is not None else f"return {ret if ret is not None else math.nan:.2f}"
            line = f"[green]done[/] {job.spec.name}: {score} ({outcome.seconds:.0f} s)"
        elif interrupted(outcome):
            line = f"[yellow]interrupted[/] {job.spec.name} (checkpoint kept; it resumes on the next run)"
        else:
            line = f"[red]failed[/] {job.spec.name}: {self.report.failed[job.spec.name]} (log: {job.log_path})"
        self._print(line)
        self.poll()

    def poll(self) -> None:
        """Update the bar with the steps of the runs that came back and of those still training."""
        if self.progress is None:
            return
        with self._lock:
            running = list(self.open.values())
            done = self.steps_done
        steps = done + sum(min(rundir.latest_timesteps(j.run_dir), j.cfg.total_timesteps) for j in running)
        self.progress.update(self.task, completed=steps, description=self._describe())

    def _poll_until_stopped(self) -> None:
        while not self._stop.wait(self.POLL_S):
            self.poll()
