"""An exclusive advisory file lock that dies with its holder, for everything two processes must not do at once: the
kernel build (``policies.extensions``) and training into a run or experiment directory (``agents``).

The lock is ``fcntl.flock`` on a small file: the operating system releases it when the holding process ends,
however it ends (a killed process leaves nothing that blocks the next one). The holder writes its pid and command
line into the file, so a process that cannot get the lock can say who has it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the lock is then a no-op
    fcntl = None


class LockHeld(RuntimeError):
    """Another process holds the lock.

    :param path: the lock file
    :param owner: what the holder wrote into it: ``"<pid> <command line>"`` (empty if it could not be read)
    """

    def __init__(self, path: Path, owner: str) -> None:
        self.path, self.owner = path, owner.strip()
        pid, _, command = self.owner.partition(" ")
        self.pid = pid or "unknown"
        self.command = command
        super().__init__(f"{path} is held by another process (pid {self.pid})")

    def holder(self) -> str:
        """``pid 123 (run_rl.py compare ...)``: the holder, for messages."""
        command = self.command if len(self.command) <= 100 else self.command[:97] + "..."
        return f"pid {self.pid}" + (f" ({command})" if command else "")


def _owner_text() -> str:
    command = " ".join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]])
    return f"{os.getpid()} {command[:200]}"


@contextlib.contextmanager
def exclusive_lock(
    path: Path, wait_s: float = 0.0, *, on_wait: Callable[[], None] | None = None, remove: bool = False
) -> Iterator[None]:
    """Hold the exclusive lock on ``path`` (created if missing; its folder must exist).

    :param path: the lock file
    :param wait_s: how long to wait for another holder before giving up (0: give up at once)
    :param on_wait: called once when the lock is found held and this process starts waiting
    :param remove: delete the file when releasing the lock (a lock beside a user's folder leaves no litter); a
        process that got the lock on a file deleted meanwhile tries again on the new one
    :raises LockHeld: when another process still holds it after ``wait_s`` seconds
    """
    if fcntl is None:
        yield
        return
    path = Path(path)
    deadline = time.monotonic() + wait_s
    waited = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 512, 0).decode(errors="replace")
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LockHeld(path, owner) from None
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            time.sleep(0.1)
            continue
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the previous holder removed the file after this process opened it: lock the current one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _owner_text().encode(), 0)
        yield
    finally:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # before unlocking: a waiter holding the old file sees it is gone
        else:
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
