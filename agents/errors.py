"""The error a user of ``agents`` (and of ``run_rl.py``) sees for input they can get wrong."""


class UrgateError(ValueError):
    """A bad config key or value, run directory, model file or command-line argument.

    The message is one line that says what was wrong and what would be right; the CLI prints it and exits with
    code 2. Programming errors are never wrapped in it.
    """
