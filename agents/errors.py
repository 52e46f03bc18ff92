"""The error a user of ``agents`` (and of ``run_rl.py``) sees for input they can get wrong."""


class UrgateError(ValueError):
    """A bad config key or value, run directory, model file or command-line argument.

    The message is one line that says what was wrong and what would be right; the CLI prints it and exits with
    code 2. Programming errors are never wrapped in it.
    """


class ConfigValueError(UrgateError):
    """A config value out of its range: knows the key, the value and what is valid, so the command line can
    restate it in terms of the flag the user typed (``--timesteps -5`` rather than ``total_timesteps``).

    :param key: the dotted config key
    :param value: the value given
    :param what: what would be valid, as a phrase (``"an integer >= 1"``)
    :param hint: an optional suggestion (``"did you mean 'ur'?"``)
    :param source: where the value came from (a config file, ``--set``), for the message
    """

    def __init__(self, key: str, value: object, what: str, hint: str = "", source: str = "") -> None:
        self.key, self.value, self.what, self.hint, self.source = key, value, what, hint, source
        notes = "; ".join(n for n in (hint, f"from {source}" if source else "") if n)
        super().__init__(f"config key '{key}' must be {what}, got {value!r}{f' ({notes})' if notes else ''}")


def one_line(exc: BaseException) -> str:
    """``"TypeName: first line of the message"``, for wrapping a library's exception in a one-line error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
