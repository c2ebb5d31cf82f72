"""The one error type of data-set runs: a user error, printed by the CLI as one line (exit status 2)."""


class DatasetRunError(ValueError):
    """Bad input to ``attribute_dataset`` / ``show``: the message names the argument and the fix."""
