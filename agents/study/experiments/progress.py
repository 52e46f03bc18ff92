"""The live display of an experiment: runs done / total, a bar over environment steps with an ETA, one line per
finished, interrupted or failed run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    """Overall progress: runs done / total in the description, a bar over environment steps with an ETA."""

    def __init__(self, todo: list[Job], report: ExperimentReport, enabled: bool) -> None:
        self.todo, self.report, self.enabled = todo, report, enabled
        self.steps_total = sum(j.cfg.total_timesteps for j in todo)
        self.steps_done = 0
        self.open = {j.spec.name: j for j in todo}
        self.progress = None

    def __enter__(self) -> Progress:
        if self.enabled:
            self.progress = rich.progress.Progress(
                rich.progress.TextColumn("{task.description}"),
                rich.progress.BarColumn(),
                rich.progress.TextColumn("{task.percentage:>3.0f}% steps"),
                rich.progress.TimeElapsedColumn(),
                rich.progress.TextColumn("ETA"),
                rich.progress.TimeRemainingColumn(),
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(self._describe(), total=max(1, self.steps_total))
            self.progress.console.print(
                f"experiment {self.report.exp_dir}: {self.report.total} runs, {self.report.skipped} finished and "
                f"kept, {len(self.todo)} to run"
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()

    def _describe(self) -> str:
        done = self.report.skipped + len(self.report.finished)
        fail = f", {len(self.report.failed)} failed" if self.report.failed else ""
        return f"runs {done}/{self.report.total}{fail}"

    def done(self, job: Job, outcome: Outcome) -> None:
        self.open.pop(job.spec.name, None)
        done = finished(outcome)
        if done:
            self.report.finished.append(job.spec.name)
        elif interrupted(outcome):
            self.report.interrupted.append(job.spec.name)
        else:
            self.report.failed[job.spec.name] = outcome.error or f"status {outcome.summary.get('status')!r}"
        self.steps_done += job.cfg.total_timesteps
        if self.progress is not None:
            if done:
                sr = rundir.final_metric(outcome.summary, "success_rate")
                ret = rundir.final_metric(outcome.summary, "mean_return")
                score = f"success {sr:.2f}" if sr is not None else f"return {ret if ret is not None else math.nan:.2f}"
                line = f"[green]done[/] {job.spec.name}: {score} ({outcome.seconds:.0f} s)"
            elif interrupted(outcome):
                line = f"[yellow]interrupted[/] {job.spec.name} (checkpoint kept; it resumes on the next run)"
            else:
                line = f"[red]failed[/] {job.spec.name}: {self.report.failed[job.spec.name]} (log: {job.log_path})"
            self.progress.console.print(line)
        self.poll()

    def poll(self) -> None:
        if self.progress is None:
            return
        running = sum(min(rundir.latest_timesteps(j.run_dir), j.cfg.total_timesteps) for j in self.open.values())
        self.progress.update(self.task, completed=self.steps_done + running, description=self._describe())
