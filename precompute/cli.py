"""`clipsae` subcommands of the precompute stage (registered by `sae_core.cli`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []
