"""SAE core: models, training, metrics and file formats.

Shape-suffix key used in names (saev style): b = batch, d = d_in (model width),
s = d_sae (latents), n = rows of a dataset, k = top-k slots, t = tokens per image.

    from sae_core import load_sae
    sae = load_sae("saes/topk_32")
    x_hat = sae.decode(sae.encode(x))       # input space, for every normalisation

The names below load torch on first use (PEP 562), so importing a submodule that needs no
torch (`sae_core.config`, `sae_core.cliargs`: every `clipsae ... --help`) stays quick.
"""

from __future__ import annotations

from typing import Any

from .config import SAEConfig, TrainConfig

__all__ = ["SAEConfig", "TrainConfig", "SparseAutoencoder", "SAEOutput", "load_sae", "save_sae", "convert"]
__version__ = "0.1.0"

_LAZY = {"SparseAutoencoder": "sae", "SAEOutput": "sae", "load_sae": "io", "save_sae": "io", "convert": "interop"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
