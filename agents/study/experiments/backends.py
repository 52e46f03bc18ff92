"""Backends execute a list of jobs and report each outcome as it arrives; ``BACKENDS`` maps their names.

- ``local``: a pool of worker processes on this machine (by default one per CPU core, each run with its
  configured number of torch threads, normally 1);
- ``ray``: one Ray task per run, declaring ``num_cpus`` (the run's threads) and ``num_gpus``, on an existing
  cluster (``address``) or a local Ray runtime. A task trains in a scratch directory on whichever node runs it and
  ships the finished run directory back to the driver as a tarball, so no shared filesystem is needed; a run being
  resumed is shipped out the same way. The nodes need this package installed (the local runtime uses the
  driver's working directory and ``PYTHONPATH``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import signal
import sys
import tarfile
import tempfile
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from ...errors import UrgateError
from ...run import rundir
from ...run.logs import log_to_stderr
from .execute import Job, Outcome, execute, init_worker, interrupted, parent_signals

POLL_S = 2.0

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
    ctx = get_context("spawn")
    worker_pids = _WorkerPids(ctx)  # each worker reports its pid when it starts, for forwarding Ctrl-C
    pool_ctx = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=init_worker, initargs=(worker_pids.queue,)
    )
    with pool_ctx as pool, parent_signals():
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
            worker_pids.signal()  # the running trainers checkpoint and stop after their current update
            try:
                wait([f for f in pending if not f.cancelled()])
            except KeyboardInterrupt:  # a second Ctrl-C: the trainers abort without waiting for the update
                worker_pids.signal()
                wait([f for f in pending if not f.cancelled()])
            for fut, job in pending.items():
                if fut.done() and not fut.cancelled():
                    on_done(job, fut.result())
            raise


class _WorkerPids:
    """The process ids of a pool's workers, each reported by the worker itself (``init_worker``) through a queue
    the pool hands to its initializer, so the parent can signal them without reading the pool's internals."""

    def __init__(self, ctx) -> None:
        self.queue = ctx.SimpleQueue()
        self.pids: set[int] = set()

    def signal(self, signum: int = signal.SIGINT) -> None:
        """Send ``signum`` once to every worker that has started (a worker that has exited is skipped)."""
        while not self.queue.empty():
            self.pids.add(self.queue.get())
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


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
    log_to_stderr()  # a Ray worker starts with logging unconfigured; execute points stderr at the run's log
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
    summary = rundir.read_summary(run_dir)
    if summary is not None and "run_dir" in summary:
        summary["run_dir"] = str(run_dir)
        rundir.write_summary(run_dir, summary)


RAY_TOKEN_HELP = (
    "set RAY_AUTH_TOKEN to the cluster's token (print it on the head node with `ray get-auth-token`) or "
    "RAY_AUTH_TOKEN_PATH to a file holding it (default ~/.ray/auth_token); RAY_AUTH_MODE=disabled for a cluster "
    "started without authentication"
)


def _ray_token_available() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN", "").strip()) or Path(path).is_file()


def _use_cluster_token() -> None:
    """Connect to a cluster with its token when one is at hand. ``ray start --head`` turns Ray's token
    authentication on by default, but ``ray.init(address=...)`` connects with it off unless ``RAY_AUTH_MODE=token``
    is set (Ray enables it by itself only for a local cluster it finds without an address). An explicit
    ``RAY_AUTH_MODE`` is left as it is."""
    if os.environ.get("RAY_AUTH_MODE") is not None or not _ray_token_available():
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:  # Ray reads its configuration once; refresh it, as Ray does when it enables token mode itself
        from ray._raylet import Config

        Config.initialize("")
    except (ImportError, AttributeError):
        pass


def _ray_init(ray, address: str | None, kwargs: dict[str, Any]) -> None:
    """``ray.init`` with Ray's own console output held back: a cluster that refuses the connection (a missing or
    wrong token) makes Ray's core print one warning per second for 20 s; the user gets one line instead."""
    where = address or "a local runtime"
    with tempfile.TemporaryFile(mode="w+") as captured:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            ray.init(**kwargs)
            failure = None
        except (ConnectionError, RuntimeError, ValueError) as exc:
            failure = exc
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        if failure is None:
            return
        captured.seek(0)
        output = captured.read()
    if "InvalidAuthToken" in output or "Unauthenticated" in output or "AuthenticationError" in type(failure).__name__:
        mode = os.environ.get("RAY_AUTH_MODE", "unset")
        raise UrgateError(
            f"cannot reach Ray at {where}: the cluster refused the connection's authentication (RAY_AUTH_MODE "
            f"{mode}, token {'found' if _ray_token_available() else 'not found'}): {RAY_TOKEN_HELP}"
        ) from None
    reason = " ".join(str(failure).split())
    raise UrgateError(f"cannot start or reach Ray at {where}: {reason}") from None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UrgateError(
            'the ray backend needs Ray, which is not installed: pip install -e ".[ray]" in a checkout of this '
            'package (or pip install "ray>=2.40")'
        ) from None
    return ray


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
    ray = _import_ray()
    started = not ray.is_initialized()
    if started:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR"}
        if address:
            kwargs["address"] = address
            _use_cluster_token()
        else:  # "local": a new runtime, even when `ray start` left a cluster (or its stale address) on this machine
            kwargs.update(address="local", num_cpus=workers)
        _ray_init(ray, address, kwargs)
    task = ray.remote(_ray_task)
    refs = {}
    try:
        for job in jobs:
            shipped = _pack(job.run_dir) if rundir.run_state(job.run_dir) in ("resumable", "finished") else None
            opts = {"num_cpus": job.cfg.threads, "num_gpus": gpus_per_run, "max_retries": 0}
            refs[task.options(**opts).remote(job, shipped)] = job
        with parent_signals():
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


@dataclasses.dataclass(frozen=True)
class Backend:
    """A way to execute jobs: ``run(jobs, workers=, on_done=, on_poll=, address=, gpus_per_run=)``, and ``require()``,
    which fails with one line when the backend cannot work here (called before anything is written)."""

    run: Callable[..., None]
    require: Callable[[], Any] = lambda: None


BACKENDS: dict[str, Backend] = {"local": Backend(run_local), "ray": Backend(run_ray, _import_ray)}
