"""The error a user of the policies package sees for input that a user can get wrong (a name, a size, a kwarg)."""


class PolicyConfigError(ValueError):
    """A bad core name, keyword or tensor shape given to a memory core or policy. The message says what was
    wrong and what would be right."""
