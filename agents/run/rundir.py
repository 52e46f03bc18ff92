"""The run directory: every file ``agents.run.train`` writes, named once, and read and written only here.

A run directory holds::

    config.yaml          the resolved RunConfig
    summary.json         SUMMARY_KEYS: env_id, core, seed, timesteps, ..., final_eval, memoryless_ceiling, status
    evaluations.csv      one row per periodic evaluation (EVAL_COLUMNS)
    gates.npz            initial_gates / final_gates samples of the actor core's effective forget gates
    progress.csv, tb/    SB3's CSV and TensorBoard logs
    checkpoints/         latest.zip (+ latest.vecnormalize.pkl, latest.state.pkl: the training state, and
                         latest.json), best_model.zip: the best model as of that checkpoint; with keep_checkpoints N
                         also the last N periodic ones, step_<steps>.zip (+ .vecnormalize.pkl)
    best_model.zip       best periodic evaluation;  final_model.zip  at the end of the budget
    eval.json            the statistics of the last ``run_rl.py eval`` of the run

Every file that is replaced (summary, checkpoint metadata, gates, models) is written through a temporary file and
renamed, so a reader never sees half of one; ``evaluations.csv`` grows by appended rows, and a resumed run cuts it
and ``progress.csv`` back to its checkpoint's step (``cut_history``): the records of steps after the checkpoint
belong to a timeline that was discarded.

A process that trains into a run directory (or runs an experiment directory) holds ``.<name>.lock`` beside it
(``directory_lock``): a second process on the same directory stops with one line naming the first.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from policies.locks import LockHeld, exclusive_lock

from ..errors import UrgateError

CONFIG = "config.yaml"
SUMMARY = "summary.json"
EVALUATIONS = "evaluations.csv"
GATES = "gates.npz"
PROGRESS = "progress.csv"
TENSORBOARD = "tb"
CHECKPOINTS = "checkpoints"
LATEST = "latest.zip"
LATEST_META = "latest.json"
STEP_CHECKPOINT = "step_"  # + the step count, zero-padded: checkpoints/step_000000065536.zip
BEST_MODEL = "best_model.zip"
FINAL_MODEL = "final_model.zip"
EVAL_RESULT = "eval.json"

STATUSES = ("finished", "interrupted", "diverged")
EVAL_COLUMNS = ("timesteps", "mean_return", "std_return", "success_rate", "episodes", "ci95_lo", "ci95_hi")


# -- writing ---------------------------------------------------------------------------------------------------


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same directory, then rename: ``path`` is never half-written.

    :param path: the file to create or replace
    :param write: writes the whole content to the path it is given
    """
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_json(path: Path, data: dict[str, Any], indent: int | None = 2) -> None:
    text = json.dumps(data, indent=indent) + "\n"
    atomic_write(path, lambda p: p.write_text(text))


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def directory_lock(directory: Path, what: str = "run directory") -> Iterator[None]:
    """Hold the lock of a run or experiment directory (``.<name>.lock`` beside it, removed on release; the
    operating system releases it when the holder dies, however it dies).

    :param directory: the directory (need not exist yet; its parent is created)
    :param what: what the directory is, for the message
    :raises UrgateError: when another process holds it, naming that process
    """
    directory = Path(directory)
    parent = directory.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UrgateError(f"{what} {str(directory)!r}: cannot create {str(parent)!r} ({exc.strerror})") from None
    lock = parent / f".{directory.absolute().name}.lock"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(exclusive_lock(lock, remove=True))
        except OSError as exc:  # a folder the user cannot write to (/proc, a read-only mount)
            raise UrgateError(f"{what} {str(directory)!r}: cannot write in {str(parent)!r} ({exc.strerror})") from None
        except LockHeld as held:
            raise UrgateError(
                f"{what} {str(directory)!r} is in use by another process, {held.holder()}: wait for it to end, "
                f"or stop it (kill -INT {held.pid}) and run this again"
            ) from None
        yield


# -- config.yaml -----------------------------------------------------------------------------------------------


def config_path(run_dir: Path) -> Path:
    return Path(run_dir) / CONFIG


def is_run_dir(run_dir: Path) -> bool:
    """Whether ``run_dir`` was created by the trainer (it has a ``config.yaml``)."""
    return config_path(run_dir).is_file()


def write_config(run_dir: Path, text: str) -> None:
    """``config.yaml`` (the resolved config as YAML text), replaced atomically."""
    atomic_write(config_path(run_dir), lambda p: p.write_text(text))


# -- summary.json ----------------------------------------------------------------------------------------------


def summary(
    *,
    env_id: str,
    core: str,
    seed: int,
    timesteps: int,
    total_timesteps: int,
    wall_time_s: float,
    fps: float | None,
    session_timesteps: int | None = None,
    final_eval: dict[str, Any] | None,
    memoryless_ceiling: float | None,
    status: str,
    message: str,
    run_dir: Path,
) -> dict[str, Any]:
    """The content of ``summary.json``.

    :param env_id: environment id
    :param core: memory core name
    :param seed: seed of the run
    :param timesteps: environment steps trained so far
    :param total_timesteps: the run's budget
    :param wall_time_s: wall time of all sessions of the run, in seconds
    :param fps: environment steps per second of this session (None if it took no time)
    :param session_timesteps: the steps this session trained (what ``fps`` covers; default: ``timesteps``)
    :param final_eval: the final evaluation's statistics (``EpisodeStats.summary()``), None unless ``finished``
    :param memoryless_ceiling: the env family's ceiling without memory (None if undefined)
    :param status: one of ``STATUSES``
    :param message: why a run diverged, or at which step `eval.stop_success` ended it (empty otherwise)
    :param run_dir: where the run lives
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    return {
        "env_id": env_id,
        "core": core,
        "seed": seed,
        "timesteps": int(timesteps),
        "total_timesteps": total_timesteps,
        "wall_time_s": round(float(wall_time_s), 2),
        "session_timesteps": int(timesteps if session_timesteps is None else session_timesteps),
        "fps": fps,
        "final_eval": final_eval,
        "memoryless_ceiling": memoryless_ceiling,
        "status": status,
        "message": message,
        "run_dir": str(run_dir),
    }


def write_summary(run_dir: Path, data: dict[str, Any]) -> None:
    """``summary.json``, replaced atomically (a truncated summary would make a finished run look resumable)."""
    _write_json(Path(run_dir) / SUMMARY, data)


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """``summary.json`` of a run, or None while there is none (or it cannot be read)."""
    return _read_json(Path(run_dir) / SUMMARY)


def final_metric(data: dict[str, Any] | None, metric: str) -> float | None:
    """A statistic of a summary's final evaluation (``success_rate``, ``mean_return``, ...), or None where the
    run has no final evaluation (not finished) or the task does not define the statistic."""
    value = ((data or {}).get("final_eval") or {}).get(metric)
    return None if value is None else float(value)


# -- evaluations.csv -------------------------------------------------------------------------------------------


def evaluations_path(run_dir: Path) -> Path:
    return Path(run_dir) / EVALUATIONS


def append_evaluation(run_dir: Path, timesteps: int, result: dict[str, Any]) -> None:
    """Append one evaluation (``EpisodeStats.summary()``, at ``timesteps``) to ``evaluations.csv``; a task
    without success leaves ``success_rate`` blank."""
    path = evaluations_path(run_dir)
    new_file = not path.is_file()
    sr = result["success_rate"]
    row = [timesteps, result["mean_return"], result["std_return"], "" if sr is None else sr, result["episodes"]]
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new_file:
            w.writerow(EVAL_COLUMNS)
        w.writerow([*row, *result["ci95"]])


def read_evaluations(run_dir: Path) -> dict[str, np.ndarray] | None:
    """``evaluations.csv`` as columns (``EVAL_COLUMNS``) sorted by steps, one row per step count (the last one
    written), or None if missing or empty; blank or missing values become NaN."""
    try:
        with open(evaluations_path(run_dir), newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return None
    if not rows:
        return None

    cols = {c: np.array([_number(r.get(c)) for r in rows]) for c in EVAL_COLUMNS}
    # One row per step count: a run resumed by an older version kept the rows of the discarded steps too; the later
    # row is the one of the run's timeline.
    steps = cols["timesteps"]
    last = {s: i for i, s in enumerate(steps.tolist())}
    order = np.array(sorted(last.values(), key=lambda i: (steps[i], i)), dtype=int)
    return {c: v[order] for c, v in cols.items()}


def cut_history(run_dir: Path, timesteps: int) -> None:
    """Drop the records of steps after ``timesteps`` (a checkpoint's) from ``evaluations.csv`` and ``progress.csv``,
    each rewritten atomically: a run that died after its checkpoint logged steps that its resumed run trains again.

    :param run_dir: the run directory
    :param timesteps: the step count the run resumes from
    """
    evaluations = evaluations_path(run_dir)
    _keep_rows(evaluations, lambda row: _number(row.get("timesteps")) <= timesteps)
    # progress.csv: one row per update, at its step count; the final row of a finished run has none
    progress = Path(run_dir) / PROGRESS
    seen_later = False

    def before_cut(row: dict[str, str]) -> bool:
        nonlocal seen_later
        seen_later = seen_later or _number(row.get("time/total_timesteps")) > timesteps
        return not seen_later

    _keep_rows(progress, before_cut)


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _keep_rows(path: Path, keep: Callable[[dict[str, str]], bool]) -> None:
    try:
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            rows = list(reader)
    except OSError:
        return
    if header is None:
        return
    kept = [r for r in rows if keep(dict(zip(header, r, strict=False)))]
    if len(kept) == len(rows):
        return

    def write(p: Path) -> None:
        with open(p, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(kept)

    atomic_write(path, write)


def latest_timesteps(run_dir: Path) -> int:
    """Environment steps a run has trained, as it goes: the last row of ``progress.csv`` (SB3 writes one per
    update), else of ``evaluations.csv``; 0 before either has a row. Reads only the files' first line and tail, so
    it can be polled while the run writes."""
    for path, column in ((Path(run_dir) / PROGRESS, "time/total_timesteps"), (evaluations_path(run_dir), "timesteps")):
        try:
            with open(path, "rb") as fh:
                header = fh.readline().decode(errors="replace").strip().split(",")
                fh.seek(max(0, os.fstat(fh.fileno()).st_size - 4096))
                last = fh.read().decode(errors="replace").strip().splitlines()[-1].split(",")
            if last != header:
                return int(float(last[header.index(column)]))
        except (OSError, ValueError, IndexError):
            continue
    return 0


# -- gates.npz -------------------------------------------------------------------------------------------------


def gates_path(run_dir: Path) -> Path:
    return Path(run_dir) / GATES


def write_gates(run_dir: Path, initial: tuple[int, np.ndarray], final: tuple[int, np.ndarray]) -> None:
    """``gates.npz``: ``initial_gates``, ``final_gates`` (1-D float32), ``initial_timesteps``, ``final_timesteps``.

    :param initial: ``(timesteps, gates)`` of the first measurement
    :param final: ``(timesteps, gates)`` of the last one
    """
    atomic_write(
        gates_path(run_dir),
        lambda p: np.savez(
            p,
            initial_gates=initial[1],
            final_gates=final[1],
            initial_timesteps=np.int64(initial[0]),
            final_timesteps=np.int64(final[0]),
        ),
    )


def read_gates(run_dir: Path) -> dict[str, np.ndarray] | None:
    """The arrays of ``gates.npz``, or None if there is none (or it cannot be read)."""
    try:
        with np.load(gates_path(run_dir)) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError):
        return None


# -- checkpoints and models ------------------------------------------------------------------------------------


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def checkpoint_path(run_dir: Path) -> Path:
    """``checkpoints/latest.zip``, the checkpoint a run resumes from (replaced at every checkpoint)."""
    return checkpoint_dir(run_dir) / LATEST


def step_checkpoint_path(run_dir: Path, timesteps: int) -> Path:
    """``checkpoints/step_<timesteps>.zip`` (zero-padded, so the names sort by step): a periodic checkpoint kept
    beside ``latest.zip`` when the run's ``keep_checkpoints`` asks for it."""
    return checkpoint_dir(run_dir) / f"{STEP_CHECKPOINT}{int(timesteps):012d}.zip"


def step_checkpoints(run_dir: Path) -> list[Path]:
    """A run's step-numbered checkpoints, oldest first."""
    return sorted(checkpoint_dir(run_dir).glob(f"{STEP_CHECKPOINT}*.zip"))


def final_model_path(run_dir: Path) -> Path:
    return Path(run_dir) / FINAL_MODEL


def best_model_path(run_dir: Path) -> Path:
    return Path(run_dir) / BEST_MODEL


def normalize_stats_path(model_path: Path) -> Path:
    """Where the VecNormalize statistics that belong to a model zip are kept: ``<name>.vecnormalize.pkl``."""
    return model_path.with_name(model_path.name.removesuffix(".zip") + ".vecnormalize.pkl")


def training_state_path(model_path: Path) -> Path:
    """The training state saved with a checkpoint (``agents.run.checkpoints``): ``<name>.state.pkl``."""
    return model_path.with_name(model_path.name.removesuffix(".zip") + ".state.pkl")


def best_snapshot_path(run_dir: Path) -> Path:
    """``checkpoints/best_model.zip``: the run's best model as of its checkpoint."""
    return checkpoint_dir(run_dir) / BEST_MODEL


def write_checkpoint_meta(ckpt_dir: Path, timesteps: int, saved_at: str) -> None:
    """``latest.json`` beside the checkpoint: the step count it holds and when it was written."""
    _write_json(Path(ckpt_dir) / LATEST_META, {"timesteps": int(timesteps), "saved_at": saved_at}, indent=None)


def checkpoint_timesteps(run_dir: Path) -> int | None:
    """The step count of a run's checkpoint, from ``latest.json`` (None if there is none)."""
    meta = _read_json(checkpoint_dir(run_dir) / LATEST_META)
    return None if meta is None else int(meta["timesteps"])


# -- the state of a run ----------------------------------------------------------------------------------------


def next_steps(run_dir: Path) -> str:
    """What a user can still do with an existing run directory, as a command: the one advice that ``train``,
    ``resume`` and ``eval`` give about it."""
    state, r = run_state(run_dir), str(run_dir)
    if state == "finished":
        return f"it is finished: evaluate it with: python run_rl.py eval {r} (or train it longer with: python run_rl.py resume {r} --timesteps N)"
    if state == "resumable":
        return f"continue it with: python run_rl.py resume {r}"
    again = f"python run_rl.py train --config {config_path(run_dir)} --run-dir {r} --overwrite"
    if best_model_path(run_dir).is_file():
        return (
            f"it stopped before its first checkpoint, so it cannot be resumed; evaluate its best model so far with: "
            f"python run_rl.py eval {r}, or start it again with: {again}"
        )
    return f"it stopped before its first checkpoint and holds no model; start it again with: {again}"


def run_state(run_dir: Path) -> str:
    """``"finished"``, ``"resumable"`` (has a checkpoint), ``"partial"`` (died before one) or ``"new"``."""
    data = read_summary(run_dir)
    if data is not None and data.get("status") == "finished":
        return "finished"
    if checkpoint_path(run_dir).is_file():
        return "resumable"
    return "partial" if Path(run_dir).exists() else "new"
