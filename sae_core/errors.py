"""Errors the CLI reports as one clear line (no traceback)."""


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN/inf during training; nothing broken is written."""
