"""Errors the CLI reports as one clear line and a non-zero exit (no traceback).

Expected user-facing failures are `ValueError`, `FileNotFoundError`, `FileExistsError`
(bad input, missing or existing files) or a subclass of `UserError` below (a run that
cannot go on: NaN activations, unfinished shards, a diverged training).
"""


class UserError(RuntimeError):
    """A run stopped for a reason the user can act on; the message says what to do."""


class TrainingDiverged(UserError):
    """The loss or the weights became NaN/inf during training; nothing broken is written."""


class BadActivations(UserError):
    """The model or the data produced NaN/inf activations."""


class Incomplete(UserError):
    """A multi-step output is not finished (shards missing); repeat the command to resume."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
    UserError,
)
"""What a command-line entry point turns into one line (`cliargs.run_reporting`)."""
