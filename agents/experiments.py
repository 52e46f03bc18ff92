"""Experiments: a grid of cores x seeds x settings x environments, each cell an ordinary training run.

An experiment directory holds ``experiment.yaml`` (the grid, and the list of runs it expands to) and
``runs/<name>/``, one run directory per cell written by ``agents.train.train``, plus ``logs/<name>.log`` with each
run's own output. Running an experiment again is always safe: runs whose ``summary.json`` says ``finished`` are
skipped, runs with a checkpoint are resumed (``agents.train.resume``), runs that died before their first checkpoint
start over.

Runs are executed by a backend from ``BACKENDS``:

- ``local``: a pool of worker processes on this machine (by default one per CPU core, each run with its
  configured number of torch threads, normally 1);
- ``ray``: one Ray task per run, declaring ``num_cpus`` (the run's threads) and ``num_gpus``, on an existing
  cluster (``address``) or a local Ray runtime. A task trains in a scratch directory on whichever node runs it and
  ships the finished run directory back to the driver as a tarball, so no shared filesystem is needed; a run being
  resumed is shipped out the same way. The nodes need this package installed (the local runtime uses the
  driver's working directory and ``PYTHONPATH``).

Grid keys are environment keywords (``length``, ``distractor_steps``) or, when they name a config field, config
overrides (``ppo.n_steps``, ``policy_kwargs.lstm_hidden_size``): one experiment can sweep the BPTT length too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import itertools
import json
import os
import re
import shutil
import signal
import tarfile
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from .config import RunConfig, load_config, parse_override
from .errors import UrgateError

EXPERIMENT_FILE = "experiment.yaml"
RUNS_DIR = "runs"
LOGS_DIR = "logs"
POLL_S = 2.0


# -- the grid --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSpec:
    """One cell of the grid.

    :param name: the run directory's name under ``runs/``
    :param env_id: environment id
    :param core: memory core name
    :param seed: seed of the run
    :param params: the grid values of this cell, by grid key (env keywords and config overrides)
    """

    name: str
    env_id: str
    core: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Experiment:
    """A grid of training runs and how each run's config is made.

    :param env_ids: environment ids
    :param cores: memory core names
    :param seeds: seeds
    :param grid: grid key -> values; every combination is run (env keywords, or config keys such as ``ppo.n_steps``)
    :param config: config name or YAML path for every run (None: each env family's own config)
    :param timesteps: training steps per run (None: the config's ``total_timesteps``)
    :param overrides: ``key=value`` config overrides applied to every run
    """

    env_ids: list[str]
    cores: list[str]
    seeds: list[int]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    config: str | None = None
    timesteps: int | None = None
    overrides: list[str] = field(default_factory=list)

    def runs(self) -> list[RunSpec]:
        """Every cell of the grid, in a stable order (env, grid values, core, seed)."""
        keys = list(self.grid)
        out = []
        for env_id in self.env_ids:
            for values in itertools.product(*(self.grid[k] for k in keys)):
                params = dict(zip(keys, values, strict=True))
                for core in self.cores:
                    for seed in self.seeds:
                        out.append(RunSpec(run_name(env_id, params, core, seed), env_id, core, seed, params))
        return out

    def run_config(self, spec: RunSpec) -> RunConfig:
        """The validated config of one cell: the config file, then ``overrides``, then the cell's own values."""
        cell = [f"core={spec.core}", f"seed={spec.seed}"]
        if self.timesteps is not None:
            cell.append(f"total_timesteps={self.timesteps}")
        for key, value in spec.params.items():
            path = key if is_config_key(key) else f"env_kwargs.{key}"
            cell.append(f"{path}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
        return load_config(self.config, spec.env_id, [*self.overrides, *cell])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["runs"] = [dataclasses.asdict(r) for r in self.runs()]  # for readers (plots); recomputed on load
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = EXPERIMENT_FILE) -> Experiment:
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k != "runs"}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UrgateError(f"{source}: unknown key(s) {unknown}; valid: {sorted(names)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise UrgateError(f"{source}: {exc}") from None


def is_config_key(key: str) -> bool:
    """Whether a grid key names a config field (``ppo.n_steps``) rather than an environment keyword (``length``)."""
    return key.split(".")[0] in {f.name for f in dataclasses.fields(RunConfig)}


def run_name(env_id: str, params: dict[str, Any], core: str, seed: int) -> str:
    """Directory name of a cell, e.g. ``urgate_TMaze-v0__length=100__ur__s0``."""
    parts = [env_id.replace("/", "_")]
    parts += [f"{k}={_compact(v)}" for k, v in params.items()]
    parts += [core, f"s{seed}"]
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "__".join(parts))


def _compact(v: Any) -> str:
    return json.dumps(v, separators=(",", ":")) if isinstance(v, list | dict) else str(v)


# -- parsing the command line's strings --------------------------------------------------------------------------


def parse_list(text: str, what: str) -> list[str]:
    """``"a,b, c"`` -> ``["a", "b", "c"]``; an empty item is an error."""
    items = [t.strip() for t in str(text).split(",")]
    if not items or any(not t for t in items):
        raise UrgateError(f"{what} must be a comma-separated list without empty items, got {text!r}")
    return items


def parse_seeds(text: str | int) -> list[int]:
    """``"3"`` -> seeds 0, 1, 2; ``"0,5,9"`` -> those seeds."""
    text = str(text).strip()
    try:
        if "," in text:
            seeds = [int(s) for s in parse_list(text, "--seeds")]
        else:
            n = int(text)
            if n < 1:
                raise ValueError
            seeds = list(range(n))
    except ValueError:
        raise UrgateError(f"--seeds must be a count (3: seeds 0, 1, 2) or a list (0,5,9), got {text!r}") from None
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UrgateError(f"--seeds must be distinct integers >= 0, got {text!r}")
    return seeds


def parse_grid(items: Iterable[str]) -> dict[str, list[Any]]:
    """``["length=10,30,100"]`` -> ``{"length": [10, 30, 100]}``; values are YAML scalars."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", key) or not raw.strip():
            raise UrgateError(f"--grid must look like key=v1,v2,... (e.g. length=10,30,100), got {item!r}")
        if key in grid:
            raise UrgateError(f"--grid key {key!r} given twice; put all its values in one --grid {key}=v1,v2")
        values = []
        for token in parse_list(raw, f"--grid {key}"):
            _, value = parse_override(f"{key}={token}")
            values.append(value)
        if len({_compact(v) for v in values}) != len(values):
            raise UrgateError(f"--grid {key} repeats a value: {raw!r}")
        grid[key] = values
    return grid


def experiment_from_args(
    *,
    cores: str,
    seeds: str | int,
    env: str | None,
    grid: Iterable[str] = (),
    config: str | None = None,
    timesteps: int | None = None,
    overrides: Iterable[str] = (),
) -> Experiment:
    """Build an experiment from the command line's strings (``--cores lstm,ur --seeds 3 --grid length=10,30``)."""
    from policies import CORE_NAMES

    core_list = parse_list(cores, "--cores")
    for c in core_list:
        if c not in CORE_NAMES:
            raise UrgateError(f"unknown core {c!r} in --cores; valid: {', '.join(CORE_NAMES)}")
    if timesteps is not None and timesteps < 1:
        raise UrgateError(f"--timesteps must be >= 1, got {timesteps}")
    env_ids = parse_list(env, "--env") if env else [load_config(config, None, list(overrides)).env_id]
    return Experiment(
        env_ids=env_ids,
        cores=core_list,
        seeds=parse_seeds(seeds),
        grid=parse_grid(grid),
        config=config,
        timesteps=timesteps,
        overrides=list(overrides),
    )


def resolve(
    exp_dir: str | Path | None,
    *,
    cores: str | None,
    seeds: str | int | None,
    env: str | None,
    grid: Iterable[str] = (),
    config: str | None = None,
    timesteps: int | None = None,
    overrides: Iterable[str] = (),
) -> tuple[Experiment, Path]:
    """The experiment and directory a ``compare`` command means.

    With ``cores`` the grid comes from the arguments (directory default: :func:`default_exp_dir`); without, it is
    read from the existing ``exp_dir`` (continue an experiment as it was started, with no other grid options).
    """
    if cores is None:
        grid_options = {
            "--seeds": seeds,
            "--env": env,
            "--grid": list(grid),
            "--config": config,
            "--timesteps": timesteps,
            "--set": list(overrides),
        }
        given = [k for k, v in grid_options.items() if v not in (None, [])]
        if exp_dir is None or given:
            raise UrgateError(
                "compare needs --cores (e.g. --cores lstm,ur --seeds 3 --env urgate/TMaze-v0 --grid length=10,100), "
                "or --exp-dir of an existing experiment alone to continue it"
                + (f" (got {', '.join(given)} without --cores)" if given else "")
            )
        return load_experiment(exp_dir), Path(exp_dir)
    exp = experiment_from_args(
        cores=cores,
        seeds=1 if seeds is None else seeds,
        env=env,
        grid=grid,
        config=config,
        timesteps=timesteps,
        overrides=overrides,
    )
    return exp, Path(exp_dir) if exp_dir is not None else default_exp_dir(exp)


def validate(exp: Experiment) -> dict[str, RunConfig]:
    """Resolve every run's config and build each distinct environment once, so bad input fails before any run.

    :return: run name -> config
    :raises UrgateError: for a bad config key, core, env id or env keyword (env errors are re-raised as
        ``UrgateError`` naming the grid)
    """
    import envs

    configs: dict[str, RunConfig] = {}
    checked: set[str] = set()
    for spec in exp.runs():
        try:
            cfg = exp.run_config(spec)
            key = json.dumps([cfg.env_id, cfg.env_kwargs], sort_keys=True, default=str)
            if key not in checked:
                envs.make_env(cfg.env_id, **cfg.env_kwargs).close()
                checked.add(key)
        except envs.EnvConfigError as exc:
            raise UrgateError(f"{exc} (grid cell {spec.name})") from None
        configs[spec.name] = cfg
    return configs


# -- the experiment directory ------------------------------------------------------------------------------------


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


def prepare(exp: Experiment, exp_dir: Path) -> None:
    """Write ``experiment.yaml``, or check that the one already there describes the same experiment."""
    path = exp_dir / EXPERIMENT_FILE
    if path.exists():
        old = load_experiment(exp_dir)
        if dataclasses.asdict(old) == dataclasses.asdict(exp):
            return
        if not extends(old, exp):
            raise UrgateError(
                f"{exp_dir} holds a different experiment (cores {','.join(old.cores)}, seeds {old.seeds}, "
                f"grid {old.grid}); continue it with 'compare --exp-dir {exp_dir}' alone, extend it with more "
                "cores, seeds, envs or grid values and otherwise the same options, or choose a new --exp-dir"
            )
    exp_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))
    tmp.replace(path)


def extends(old: Experiment, new: Experiment) -> bool:
    """Whether ``new`` only adds cores, seeds, envs or grid values to ``old`` (its runs then include old's)."""
    same = (old.config, old.timesteps, old.overrides, list(old.grid)) == (
        new.config,
        new.timesteps,
        new.overrides,
        list(new.grid),
    )
    pairs = [(old.cores, new.cores), (old.seeds, new.seeds), (old.env_ids, new.env_ids)]
    pairs += [(old.grid[k], new.grid[k]) for k in old.grid if k in new.grid]
    return same and all({_compact(v) for v in a} <= {_compact(v) for v in b} for a, b in pairs)


def run_state(run_dir: Path) -> str:
    """``"finished"``, ``"resumable"`` (has a checkpoint), ``"partial"`` (died before one) or ``"new"``."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        if summary.get("status") == "finished":
            return "finished"
    except (OSError, ValueError):
        pass
    if (run_dir / "checkpoints" / "latest.zip").is_file():
        return "resumable"
    return "partial" if run_dir.exists() else "new"


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None


def latest_timesteps(run_dir: Path) -> int:
    """Environment steps a run has reached, from the last row of its ``evaluations.csv`` (0 if none)."""
    try:
        with open(run_dir / "evaluations.csv", "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 512))
            last = fh.read().decode(errors="replace").strip().splitlines()[-1]
        return int(float(last.split(",")[0]))
    except (OSError, ValueError, IndexError):
        return 0


# -- executing one run (in whichever process the backend chose) -------------------------------------------------


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
    import torch

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
            from .train import resume, train

            state = run_state(job.run_dir)
            print(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.spec.name}: {state}", flush=True)
            if state == "finished":
                summary = read_summary(job.run_dir)
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


# The parent of a pool stops the grid on Ctrl-C and on SIGTERM (``kill PID``), also when started in the background,
# where a non-interactive shell leaves SIGINT ignored.
_parent_signals = functools.partial(_sigint, _raise_interrupt, (signal.SIGINT, signal.SIGTERM))


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    # Workers leave the terminal's process group: a Ctrl-C reaches the parent only, which forwards exactly one
    # SIGINT to each worker (the trainer's first SIGINT checkpoints and stops, a second one aborts), also when the
    # parent alone is signalled. An idle worker ignores it; ``execute`` re-enables it around each run.
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _signal_workers(pool: ProcessPoolExecutor) -> None:
    for proc in list(getattr(pool, "_processes", {}).values()):  # CPython's pool keeps its workers there
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)


# -- backends ----------------------------------------------------------------------------------------------------

OnDone = Callable[[Job, Outcome], None]
OnPoll = Callable[[], None]


def run_local(jobs: list[Job], *, workers: int, on_done: OnDone, on_poll: OnPoll, **_: Any) -> None:
    """Execute jobs in a pool of ``workers`` processes (in this process when ``workers`` is 1)."""
    if workers <= 1:
        for job in jobs:
            outcome = execute(job)
            on_done(job, outcome)
            if interrupted(outcome):
                raise KeyboardInterrupt
        return
    # spawn, not fork: the parent has imported torch and may hold its thread pool; forked children can deadlock.
    pool_ctx = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker)
    with pool_ctx as pool, _parent_signals():
        pending: dict[Future, Job] = {pool.submit(execute, job): job for job in jobs}
        try:
            while pending:
                done, _ = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_done(pending.pop(fut), fut.result())
                on_poll()
        except KeyboardInterrupt:
            for fut in pending:
                fut.cancel()
            _signal_workers(pool)  # the running trainers checkpoint and stop after their current update
            try:
                wait([f for f in pending if not f.cancelled()])
            except KeyboardInterrupt:  # a second Ctrl-C: the trainers abort without waiting for the update
                _signal_workers(pool)
                wait([f for f in pending if not f.cancelled()])
            for fut, job in pending.items():
                if fut.done() and not fut.cancelled():
                    on_done(job, fut.result())
            raise


def _pack(directory: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(directory, arcname=".")
    return buf.getvalue()


def _unpack(blob: bytes, directory: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12 / 3.11.4: refuse links and paths leaving directory
            tar.extractall(directory, filter="data")
        else:
            for member in tar.getmembers():
                if (
                    member.issym()
                    or member.islnk()
                    or Path(member.name).is_absolute()
                    or ".." in Path(member.name).parts
                ):
                    raise UrgateError(f"refusing to unpack {member.name!r} from a shipped run directory")
            tar.extractall(directory)


def _ray_task(job: Job, shipped: bytes | None) -> tuple[Outcome, bytes | None, str]:
    """Run one job in a scratch directory on a Ray worker; ship the run directory and the log back."""
    with tempfile.TemporaryDirectory(prefix="urgate-") as tmp:
        run_dir, log_path = Path(tmp) / "run", Path(tmp) / "run.log"
        if shipped is not None:
            run_dir.mkdir()
            _unpack(shipped, run_dir)
        outcome = execute(dataclasses.replace(job, run_dir=run_dir, log_path=log_path))
        blob = _pack(run_dir) if run_dir.exists() else None
        return outcome, blob, log_path.read_text() if log_path.exists() else ""


def _relocate_summary(run_dir: Path) -> None:
    """Point a shipped-back summary's ``run_dir`` at where the run now lives (it named the worker's scratch dir)."""
    summary = read_summary(run_dir)
    if summary is not None and "run_dir" in summary:
        summary["run_dir"] = str(run_dir)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def run_ray(
    jobs: list[Job],
    *,
    workers: int,
    on_done: OnDone,
    on_poll: OnPoll,
    address: str | None = None,
    gpus_per_run: float = 0.0,
    **_: Any,
) -> None:
    """Execute jobs as Ray tasks on a cluster (``address``) or a local Ray runtime with ``workers`` CPUs."""
    try:
        import ray
    except ImportError:
        raise UrgateError('the ray backend needs Ray: pip install "urgate[ray]" (or pip install ray)') from None
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = workers
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UrgateError(f"cannot start or reach Ray at {address or 'a local runtime'}: {exc}") from None
    task = ray.remote(_ray_task)
    refs = {}
    try:
        for job in jobs:
            shipped = _pack(job.run_dir) if run_state(job.run_dir) in ("resumable", "finished") else None
            opts = {"num_cpus": job.cfg.threads, "num_gpus": gpus_per_run, "max_retries": 0}
            refs[task.options(**opts).remote(job, shipped)] = job
        with _parent_signals():
            _collect_ray(ray, refs, on_done, on_poll)
    except KeyboardInterrupt:
        for ref in refs:
            ray.cancel(ref)
        raise
    finally:
        if started:
            ray.shutdown()


def _collect_ray(ray, refs: dict, on_done: OnDone, on_poll: OnPoll) -> None:
    """Take each Ray task's result as it finishes: unpack its run directory and log, report it."""
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
        for ref in ready:
            job = refs.pop(ref)
            try:
                outcome, blob, log = ray.get(ref)
            except Exception as exc:  # a lost node or a worker crash: report it, keep the other runs going
                outcome, blob, log = Outcome(job.spec.name, error=f"ray task failed: {exc}"), None, ""
            if blob is not None:
                staging = job.run_dir.with_name(job.run_dir.name + ".incoming")
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir(parents=True)
                _unpack(blob, staging)
                shutil.rmtree(job.run_dir, ignore_errors=True)
                staging.rename(job.run_dir)
                _relocate_summary(job.run_dir)
            job.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log_path, "a") as fh:
                fh.write(log)
            on_done(job, outcome)
        on_poll()


Backend = Callable[..., None]
BACKENDS: dict[str, Backend] = {"local": run_local, "ray": run_ray}


# -- running an experiment -----------------------------------------------------------------------------------------


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
    exp_dir = Path(exp_dir)
    configs = validate(exp)
    prepare(exp, exp_dir)
    specs = exp.runs()
    jobs = [Job(s, configs[s.name], exp_dir / RUNS_DIR / s.name, exp_dir / LOGS_DIR / f"{s.name}.log") for s in specs]
    todo = [j for j in jobs if run_state(j.run_dir) != "finished"]
    report = ExperimentReport(exp_dir, total=len(jobs), skipped=len(jobs) - len(todo))
    threads = max((j.cfg.threads for j in jobs), default=1)
    n_workers = min(workers or default_workers(threads), max(1, len(todo)))
    t0 = time.perf_counter()
    with _Progress(todo, report, enabled=progress) as bar:
        if todo:
            BACKENDS[backend](
                todo,
                workers=n_workers,
                address=address,
                gpus_per_run=gpus_per_run,
                on_done=bar.done,
                on_poll=bar.poll,
            )
    report.wall_time_s = time.perf_counter() - t0
    return report


class _Progress:
    """Overall progress: runs done / total in the description, a bar over environment steps with an ETA."""

    def __init__(self, todo: list[Job], report: ExperimentReport, enabled: bool) -> None:
        self.todo, self.report, self.enabled = todo, report, enabled
        self.steps_total = sum(j.cfg.total_timesteps for j in todo)
        self.steps_done = 0
        self.open = {j.spec.name: j for j in todo}
        self.progress = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}% steps"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
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
        finished = outcome.summary is not None and outcome.summary.get("status") == "finished"
        if finished:
            self.report.finished.append(job.spec.name)
        elif interrupted(outcome):
            self.report.interrupted.append(job.spec.name)
        else:
            self.report.failed[job.spec.name] = outcome.error or f"status {outcome.summary.get('status')!r}"
        self.steps_done += job.cfg.total_timesteps
        if self.progress is not None:
            if finished:
                ev = outcome.summary.get("final_eval", {})
                sr = ev.get("success_rate")
                score = f"success {sr:.2f}" if sr is not None else f"return {ev.get('mean_return', float('nan')):.2f}"
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
        running = sum(min(latest_timesteps(j.run_dir), j.cfg.total_timesteps) for j in self.open.values())
        self.progress.update(self.task, completed=self.steps_done + running, description=self._describe())
