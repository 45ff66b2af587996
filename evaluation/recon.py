"""Reconstruction table (seed 001: λ, dictionary size, avg L0, MSE, L1, R²) for one or many
SAEs on held-out activations, and the sparsity / reconstruction trade-off plot."""

from __future__ import annotations

from sae_core.data import ActivationSource
from sae_core.evaluate import evaluate_sae

from .common import NamedSAE
from .report import Column


def recon(saes: list[NamedSAE], acts: str, batch_size: int = 8192, device: str = "cpu",
          max_rows: int | None = None) -> list[dict]:
    """One row per SAE with every metric of sae_core.metrics, evaluated on `acts` in order."""
    source = ActivationSource(acts)
    rows = []
    for s in saes:
        m = evaluate_sae(s.sae, source, batch_size=batch_size, device=device, max_rows=max_rows)
        cfg = s.sae.cfg
        rows.append({**s.describe(), "l1_coefficient": cfg.metadata.get("l1_coefficient"), "k": cfg.k,
                     "hook": cfg.metadata.get("hook_name"), **m})
    return rows


COLUMNS = [
    Column("sae", "SAE"), Column("arch", "Arch"), Column("sparsity", "λ / k"), Column("d_sae", "Dictionary size"),
    Column("l0", "Avg. L0", "{:.2f}"), Column("mse", "Reconstruction MSE", "{:.6g}"), Column("l1", "L1", "{:.6g}"),
    Column("explained_variance", "R²", "{:.4f}"), Column("cosine_similarity", "Cos sim", "{:.4f}"),
    Column("alive_fraction", "% alive", "{:.1%}"),
]
