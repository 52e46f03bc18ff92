"""The experiment directory on disk: ``experiment.yaml`` (the grid), ``runs/<name>/`` (one run directory per cell,
``agents.run.rundir``) and ``logs/<name>.log`` (each run's own output)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from ...errors import UrgateError
from ...paths import make_dir
from ...run.rundir import atomic_write
from .grid import EXPERIMENT_FILE, Experiment

RUNS_DIR = "runs"
LOGS_DIR = "logs"


def load_experiment(exp_dir: str | Path) -> Experiment:
    """Read ``experiment.yaml`` of an experiment directory."""
    path = Path(exp_dir) / EXPERIMENT_FILE
    if not path.is_file():
        raise UrgateError(f"{str(exp_dir)!r} is not an experiment directory (no {EXPERIMENT_FILE})")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UrgateError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UrgateError(f"{path} must be a mapping")
    return Experiment.from_dict(data, source=str(path))


def default_exp_dir(exp: Experiment) -> Path:
    """``experiments/<env>[_<grid keys>]``: the same command resumes the same directory."""
    env = "+".join(e.split("/")[-1] for e in exp.env_ids)
    return Path("experiments") / "_".join([env, *exp.grid])


def run_dir(exp_dir: Path, name: str) -> Path:
    """The run directory of the cell ``name``."""
    return Path(exp_dir) / RUNS_DIR / name


def log_path(exp_dir: Path, name: str) -> Path:
    """The log file of the cell ``name``."""
    return Path(exp_dir) / LOGS_DIR / f"{name}.log"


def prepare(exp: Experiment, exp_dir: Path) -> None:
    """Write ``experiment.yaml``, or check that the one already there describes the same experiment."""
    path = exp_dir / EXPERIMENT_FILE
    if path.exists():
        old = load_experiment(exp_dir)
        if dataclasses.asdict(old) == dataclasses.asdict(exp):
            return
        if not exp.extends(old):
            raise UrgateError(
                f"{exp_dir} holds a different experiment ({'; '.join(exp.differences(old))}); continue it with "
                f"'compare --exp-dir {exp_dir}' alone, extend it with more cores, seeds, envs or grid values and "
                "otherwise the same options, or choose a new --exp-dir"
            )
    make_dir(exp_dir, "experiment directory")
    text = yaml.safe_dump(exp.to_dict(), sort_keys=False)
    atomic_write(path, lambda p: p.write_text(text))
