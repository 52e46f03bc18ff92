"""Experiments: a grid of cores x seeds x settings x environments, each cell an ordinary training run.

An experiment directory holds ``experiment.yaml`` (the grid, and the list of runs it expands to) and
``runs/<name>/``, one run directory per cell written by ``agents.run.train.train``, plus ``logs/<name>.log`` with each
run's own output. Running an experiment again is always safe: runs whose ``summary.json`` says ``finished`` are
skipped, runs with a checkpoint are resumed (``agents.run.train.resume``), runs that died before their first checkpoint
start over.

The modules, one concern each:

- ``grid``: the grid (``Experiment``, ``RunSpec``), each cell's config, and validating it before any run;
- ``store``: the experiment directory on disk (``experiment.yaml``, ``runs/``, ``logs/``);
- ``execute``: one run in whichever process a backend chose, with its log and its Ctrl-C handling;
- ``backends``: ``local`` (a pool of worker processes on this machine) and ``ray`` (one Ray task per run, on a
  cluster or a local Ray runtime; a task ships its run directory back as a tarball, so no shared filesystem is
  needed);
- ``progress``: the live display (runs done, environment steps, ETA);
- ``run``: ``run_experiment``, which ties them together.

This package imports only ``grid`` and ``store`` (no process pool, no Ray), so reading results stays light.
"""

from .grid import Experiment, RunSpec, is_config_key, run_name, validate
from .store import EXPERIMENT_FILE, LOGS_DIR, RUNS_DIR, default_exp_dir, load_experiment, prepare

__all__ = [
    "EXPERIMENT_FILE",
    "LOGS_DIR",
    "RUNS_DIR",
    "Experiment",
    "RunSpec",
    "default_exp_dir",
    "is_config_key",
    "load_experiment",
    "prepare",
    "run_name",
    "validate",
]
