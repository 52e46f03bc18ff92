"""The error a user of ``agents`` (and of ``run_rl.py``) sees for input they can get wrong."""


class UrgateError(ValueError):
    """A bad config key or value, run directory, model file or command-line argument.

    The message is one line that says what was wrong and what would be right; the CLI prints it and exits with
    code 2. Programming errors are never wrapped in it.
    """


def one_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``, for wrapping a library's exception in a one-line error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
