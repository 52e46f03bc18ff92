"""Output paths a user names (a run or experiment directory, a figure folder, a JSON or video file): checked before
any work starts and created here, so that a file in the way, a missing or read-only parent, or a place where
nothing can be created is one ``UrgateError`` line naming the path, never an ``OSError`` traceback.

``check_dir`` / ``check_file`` look without touching anything (the command line calls them on every path argument
before starting work); ``make_dir`` creates a directory and turns what the operating system still refuses (a
pseudo-filesystem such as ``/proc``, a full disk) into the same kind of line.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UrgateError


def _existing_ancestor(path: Path) -> Path:
    """The nearest ancestor of ``path`` (or ``path`` itself) that exists; ``.`` for a relative path with none."""
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return Path(".")


def _dir_problem(path: Path, it: str = "it") -> str | None:
    """Why ``path`` cannot be (or become) a directory we write into, or None; ``it`` names ``path`` itself."""
    base = _existing_ancestor(path)
    if not base.is_dir():
        return f"{it if base == path else repr(str(base))} is a file, not a directory"
    if not os.access(base, os.W_OK | os.X_OK):
        return f"{repr(str(base))} is not writable"
    return None


def check_dir(path: str | Path, what: str) -> Path:
    """Fail unless ``path`` is a writable directory or could be created as one; creates nothing.

    :param path: the directory
    :param what: how the user named it, for the message (``"--run-dir"``, ``"run directory"``)
    :return: ``path`` as a ``Path``
    :raises UrgateError: a file is in the way, or the nearest existing parent is not writable
    """
    path = Path(path)
    problem = _dir_problem(path)
    if problem is not None:
        raise UrgateError(f"{what} {str(path)!r}: {problem}; choose another path")
    return path


def check_file(path: str | Path, what: str) -> Path:
    """Fail unless a file could be written at ``path`` (not a directory; its folder a directory or creatable).

    :param path: the file
    :param what: how the user named it, for the message (``"--out"``)
    :return: ``path`` as a ``Path``
    :raises UrgateError: ``path`` is a directory or not writable, or its folder cannot be a directory
    """
    path = Path(path)
    if path.is_dir():
        problem: str | None = "it is a directory; give a file name"
    elif path.exists() and not os.access(path, os.W_OK):
        problem = "it is not writable; choose another path"
    else:
        problem = _dir_problem(path.parent, it=repr(str(path.parent)))
        problem = problem and f"{problem}; choose another path"
    if problem is not None:
        raise UrgateError(f"{what} {str(path)!r}: {problem}")
    return path


def make_dir(path: str | Path, what: str, *, exist_ok: bool = True) -> Path:
    """Create the directory ``path`` with its parents (``check_dir`` first).

    :param path: the directory
    :param what: how the user named it, for the message
    :param exist_ok: accept an existing directory
    :return: ``path`` as a ``Path``
    :raises UrgateError: it cannot be created (and, without ``exist_ok``, it exists)
    """
    path = check_dir(path, what)
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except OSError as exc:
        raise UrgateError(f"{what} {str(path)!r}: cannot create it: {exc.strerror or exc}") from None
    return path


def make_parent(path: str | Path, what: str) -> Path:
    """Create the folder of the file ``path`` (``check_file`` first), so that the file can be written.

    :param path: the file
    :param what: how the user named it, for the message
    :return: ``path`` as a ``Path``
    """
    path = check_file(path, what)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UrgateError(f"{what} {str(path)!r}: cannot create its folder: {exc.strerror or exc}") from None
    return path


def write_text(path: str | Path, text: str, what: str) -> Path:
    """Write ``text`` to ``path`` (creating its folder), any refusal as one line.

    :param path: the file
    :param text: its whole content
    :param what: how the user named it, for the message
    """
    path = make_parent(path, what)
    try:
        path.write_text(text)
    except OSError as exc:
        raise UrgateError(f"{what} {str(path)!r}: cannot write it: {exc.strerror or exc}") from None
    return path
