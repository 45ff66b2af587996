"""Reconstruction table (seed 001: λ, dictionary size, avg L0, MSE, L1, R²) for one or many
SAEs on held-out activations, and the sparsity / reconstruction trade-off plot."""

from __future__ import annotations

from pathlib import Path

from sae_core.data import ActivationSource
from sae_core.device import resolve_device
from sae_core.evaluate import evaluate_sae

from .common import NamedSAE, load_saes
from .configs import ReconConfig
from .report import Column, scatter_png, write_table


def recon(
    saes: list[NamedSAE], acts: str, batch_size: int = 8192, device: str = "cpu", max_rows: int | None = None
) -> list[dict]:
    """One row per SAE with every metric of sae_core.metrics, evaluated on `acts` in order."""
    source = ActivationSource(acts)
    rows = []
    for s in saes:
        m = evaluate_sae(s.sae, source, batch_size=batch_size, device=device, max_rows=max_rows)
        cfg = s.sae.cfg
        rows.append(
            {
                **s.describe(),
                "l1_coefficient": cfg.metadata.get("l1_coefficient"),
                "k": cfg.k,
                "hook": cfg.metadata.get("hook_name"),
                **m,
            }
        )
    return rows


COLUMNS = [
    Column("sae", "SAE"),
    Column("arch", "Arch"),
    Column("sparsity", "λ / k"),
    Column("d_sae", "Dictionary size"),
    Column("l0", "Avg. L0", "{:.2f}"),
    Column("mse", "Reconstruction MSE", "{:.6g}"),
    Column("l1", "L1", "{:.6g}"),
    Column("explained_variance", "R²", "{:.4f}"),
    Column("cosine_similarity", "Cos sim", "{:.4f}"),
    Column("alive_fraction", "% alive", "{:.1%}"),
]


def recon_main(cfg: ReconConfig) -> str:
    """`clipsae eval recon`: the table (OUT/recon.md, .csv, .json) and the trade-off plot; returns the table."""
    dev = resolve_device(cfg.device)
    rows = recon(load_saes(list(cfg.sae), dev), cfg.acts, batch_size=cfg.batch_size, device=dev, max_rows=cfg.max_rows)
    table = write_table(cfg.out, "recon", rows, COLUMNS, title=f"SAE reconstruction on {cfg.acts}")
    scatter_png(
        Path(cfg.out) / "recon_tradeoff.png",
        [(r["l0"], r["explained_variance"], r["sparsity"]) for r in rows],
        "average L0 (active latents per input)",
        "explained variance (R²)",
        "Sparsity / reconstruction trade-off",
        log_x=True,
    )
    return table
