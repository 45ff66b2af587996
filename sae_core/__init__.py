"""SAE core: models, training, metrics and file formats.

Shape-suffix key used in names (saev style): b = batch, d = d_in (model width),
s = d_sae (latents), n = rows of a dataset, k = top-k slots, t = tokens per image.
"""

from .config import SAEConfig, TrainConfig
from .interop import convert
from .io import load_sae, save_sae
from .sae import SAEOutput, SparseAutoencoder

__all__ = ["SAEConfig", "TrainConfig", "SparseAutoencoder", "SAEOutput", "load_sae", "save_sae", "convert"]
__version__ = "0.1.0"
