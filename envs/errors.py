"""The error a user of the envs package sees for input a user can get wrong (an id, a keyword, a missing extra)."""


class EnvConfigError(ValueError):
    """An unknown environment id, a bad keyword or value, or a missing optional package. The message says what was
    wrong and what would be right (the closest ids, the accepted keywords, the exact install command)."""
