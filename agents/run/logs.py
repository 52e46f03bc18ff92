"""Where log records go: to whatever ``sys.stderr`` is when a record is emitted, so that a run executed inside a
redirection (an experiment's worker writing to the run's log file) logs there, and above a live tqdm progress bar
when one is shown (tqdm clears and redraws it), so a notice never lands on the bar's line.
"""

from __future__ import annotations

import logging
import sys


class CurrentStderr(logging.Handler):
    """Writes each record to the ``sys.stderr`` of the moment (tests and workers swap it), above a tqdm bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never stop a run (a closed stream, say)
            self.handleError(record)


def log_to_stderr() -> None:
    """Send this process's log records to ``sys.stderr``: the library's progress lines ("training ... -> RUN_DIR",
    one line per periodic evaluation) at INFO, other libraries' (the kernel build notice) at WARNING. Idempotent;
    the command line calls it once validation passed, a worker process (which starts with logging unconfigured)
    when it starts."""
    root = logging.getLogger()
    if not any(isinstance(h, CurrentStderr) for h in root.handlers):
        root.addHandler(CurrentStderr())
    logging.getLogger("urgate").setLevel(logging.INFO)
