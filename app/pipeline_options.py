"""How the Kandinsky 2.2 pipelines run: precision, attention kernels, a compiled decoder.

The flags of `clipsae serve` and `clipsae icons` come from `KandinskyOptions`' fields
(`--precision`, `--attention`, `--compile-decoder/--no-compile-decoder`); this module imports no
torch, so building the CLI parser stays light. `app.kandinsky.load_pipelines` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["auto", "float32", "float16", "bfloat16"]
Attention = Literal["sdpa", "eager"]
PRECISIONS = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class KandinskyOptions:
    """How the Kandinsky 2.2 pipelines run (the flags of `clipsae serve` and `clipsae icons`)."""

    precision: Precision = "auto"
    """Compute precision of the Kandinsky pipelines: auto (float16 on CUDA, float32 on the CPU),
    float32, float16 or bfloat16."""
    attention: Attention = "sdpa"
    """Attention kernels: sdpa (PyTorch's scaled_dot_product_attention, flash / memory-efficient
    kernels on CUDA; diffusers' and transformers' default) or eager (plain matmul + softmax)."""
    compile_decoder: bool = False
    """torch.compile the decoder's UNet, channels-last (for CUDA: the first generation at each
    resolution compiles, about a minute; later ones run the compiled graph)."""


def resolve_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """The torch dtype of a precision name: auto is float16 on any CUDA device, else float32."""
    import torch

    if precision == "auto":
        return torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be auto, float32, float16 or bfloat16; got {precision!r}")
    return getattr(torch, precision)
