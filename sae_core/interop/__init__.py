"""Other libraries' SAEs in and out, exactly: `clipsae convert` and `clipsae export-sae`.

Every field of a foreign config and every tensor of a foreign file is honoured exactly
(folded into our weights where the maths allows, see `common.py`) or refused with a message
naming the field and its value. `layouts.py` tells the sources apart and runs the reader
or writer; one module per source:

    saelens.py       SAELens folders (in and out)
    sparsify.py      EleutherAI sparsify folders and trainer folders (in and out)
    prisma.py        ViT-Prisma Hugging Face folders and n_images_N.pt checkpoints
    saev.py          saev sae.pt (JSON header line + tensors)
    dictlearn.py     dictionary-learning trainer_N/ae.pt + config.json
    overcomplete.py  overcomplete state dicts (documented key mapping)
    hooks.py         SAELens / Prisma hook spellings -> ours

Nothing is unpickled beyond plain tensors (`torch.load(weights_only=True)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..cliargs import POSITIONAL

__all__ = [
    "Hints",
    "ConvertConfig",
    "ExportSAEConfig",
    "Refused",
    "convert",
    "detect_source",
    "export_sae",
    "EXPORT_TARGETS",
]

EXPORT_TARGETS = ("saelens", "sparsify")


@dataclass(frozen=True)
class Hints:
    """What a source may not record, given by the user (each refused where the file has it)."""

    norm_scaling_factor: float | None = None
    """SAELens expected_average_only_in: the factor, when no activation_scaler.json is beside
    cfg.json (SAELens's pretrained_saes.yaml lists it); refused when the file records another
    value, or for any other normalisation."""
    arch: Literal["relu", "topk", "jumprelu", "batchtopk"] | None = None
    """overcomplete only (its state dict does not record the class): SAE=relu, TopKSAE=topk,
    JumpSAE=jumprelu, BatchTopKSAE=batchtopk."""
    k: int | None = None
    """overcomplete TopKSAE only: its top_k."""
    dictionary_norm: str = "l2"
    """overcomplete only: the dictionary normalisation it was built with (l2, the default;
    max_l2, l1, max_l1, identity)."""


@dataclass(frozen=True)
class ConvertConfig:
    """One `clipsae convert` run."""

    src: str = field(metadata=POSITIONAL)
    """The foreign SAE: a SAELens folder, sparsify folder or trainer folder, ViT-Prisma folder
    (config.json + weights.pt) or n_images_N.pt, saev sae.pt, dictionary-learning trainer_N/
    (ae.pt + config.json), overcomplete state dict (.pt/.safetensors, with --arch)."""
    dst: str = field(metadata=POSITIONAL)
    """Output SAE folder (one sub-folder per hookpoint for a sparsify trainer folder)."""
    hints: Hints = Hints()
    """What the source does not record."""


@dataclass(frozen=True)
class ExportSAEConfig:
    """One `clipsae export-sae` run."""

    sae: str = field(metadata=POSITIONAL)
    """Our SAE folder."""
    dst: str = field(metadata=POSITIONAL)
    """Output folder."""
    to: Literal["saelens", "sparsify"]
    """Target library."""


def __getattr__(name: str) -> Any:
    """`convert`, `detect_source`, `export_sae` and `Refused` load the importers (and torch)
    on first use, so the CLI's --help and the configs above stay light."""
    if name in ("convert", "detect_source", "export_sae", "Refused"):
        from . import layouts

        globals()[name] = value = getattr(layouts, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
