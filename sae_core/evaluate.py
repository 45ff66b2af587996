"""Evaluate trained SAEs on (held-out) activations: `clipsae metrics --acts PATH --sae DIR`.

    clipsae metrics --acts heldout.npy --sae saes/            # every SAE of a sweep
    clipsae metrics --acts cache/ --sae saes/l1_0.01 --out metrics.md
    clipsae metrics --sae saes/k_32_seed_0 --compare saes/k_32_seed_1   # seed stability

Prints a seed-001 style Markdown table; `--out` also writes it (and a `.json` beside it). A
refitted relu SAE (`refit.py`) gets two rows: "NAME (before refit)" (its before_refit/
sub-folder) and NAME, so the refit's effect at the same L0 is read off the table.
`--compare` adds a table of one-to-one decoder matches (`stability.match_dictionaries`):
the fraction of latents matched at cos >= 0.9 and the mean matched cosine per pair of SAEs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from . import io
from .files import atomic_write_text
from .data import ActivationSource
from .metrics import MetricsAccumulator, markdown_table
from .progress import Progress
from .refit import BEFORE_REFIT_DIR
from .sae import SparseAutoencoder
from .device import resolve_device


@torch.no_grad()
def evaluate_sae(
    sae: SparseAutoencoder,
    source: ActivationSource,
    batch_size: int = 8192,
    device: torch.device | str = "cpu",
    max_rows: int | None = None,
) -> dict[str, float]:
    """Stream rows in order (no shuffling) through the SAE and return every metric."""
    if sae.cfg.d_in != source.d:
        raise ValueError(f"SAE d_in={sae.cfg.d_in} but {source.path} has width {source.d}")
    sae = sae.to(device).eval()
    acc = MetricsAccumulator(sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.groups)
    n = source.n_rows if max_rows is None else min(max_rows, source.n_rows)
    bar = Progress(n, "metrics", unit="rows")
    for start in range(0, n, batch_size):
        x = torch.from_numpy(source.read(start, min(n, start + batch_size))).to(device)
        if not torch.isfinite(x).all():
            raise ValueError(f"{source.path}: rows {start}..{start + len(x)} contain NaN or inf")
        out = sae(x)
        acc.update(out.x_norm_bd, out.x_hat_norm_bd, out.f_bs)
        if sae.cfg.groups is not None:
            acc.update_prefixes(out.x_norm_bd, sae.prefix_reconstructions(out.f_bs))
        bar.update(len(x))
    bar.close()
    return acc.result()


def describe(sae: SparseAutoencoder, name: str) -> dict[str, str]:
    cfg = sae.cfg
    sparsity = f"k={cfg.k}" if cfg.k is not None else f"λ={cfg.metadata.get('l1_coefficient', '?')}"
    if cfg.groups is not None:
        sparsity += " groups=" + ",".join(map(str, cfg.groups))
    return {"SAE": name, "Arch": cfg.architecture, "Sparsity": sparsity, "Dict size": str(cfg.d_sae)}


def metrics_main(
    acts: str,
    sae_path: str,
    out: str | None = None,
    batch_size: int = 8192,
    device: str = "auto",
    max_rows: int | None = None,
) -> str:
    """Evaluate every SAE under `sae_path` on `acts`; return (and optionally write) the table."""
    source = ActivationSource(acts)
    dev = resolve_device(device)
    rows, records = [], []
    root = Path(sae_path)
    for top in io.find_sae_dirs(root):
        name = top.name if top != root else root.name
        # a refitted SAE (relu, `refit.py`) is shown beside its weights before the refit
        before = top / BEFORE_REFIT_DIR
        pairs = [(before, f"{name} (before refit)")] if (before / io.CFG_FILE).exists() else []
        for d, label in pairs + [(top, name)]:
            sae = io.load_sae(d, device=dev)
            m = evaluate_sae(sae, source, batch_size=batch_size, device=dev, max_rows=max_rows)
            rows.append((describe(sae, label), m))
            records.append({"sae": str(d), **describe(sae, label), **m})
    table = markdown_table(rows)
    if out:
        atomic_write_text(out, table + "\n")
        atomic_write_text(Path(out).with_suffix(".json"), json.dumps(records, indent=2))
    return table


def compare_saes(sae_path: str | Path, compare: tuple[str, ...] | list[str], threshold: float = 0.9) -> list[dict]:
    """Seed stability: each SAE under `sae_path` against each SAE under the `compare` paths
    (itself skipped), one record per pair: the one-to-one match of their decoder rows
    (`stability.match_dictionaries`, Hungarian on cosines) over all latents."""
    from .stability import match_dictionaries

    others = [d for path in compare for d in io.find_sae_dirs(path)]
    records = []
    for d in io.find_sae_dirs(sae_path):
        sae = io.load_sae(d)
        for o in others:
            if o.resolve() == d.resolve():
                continue
            other = io.load_sae(o)
            if other.cfg.d_in != sae.cfg.d_in:
                raise ValueError(f"--compare {o} reads {other.cfg.d_in}-d inputs, {d} {sae.cfg.d_in}-d")
            m = match_dictionaries(sae.W_dec, other.W_dec, threshold=threshold)
            records.append(
                {"sae": str(d), "other": str(o), "d_sae": sae.cfg.d_sae, "other_d_sae": other.cfg.d_sae, **m.summary()}
            )
    if not records:
        raise ValueError(f"--compare {' '.join(compare)}: no SAE there other than {sae_path} itself")
    return records


def compare_table(records: list[dict]) -> str:
    """The seed-stability records as a Markdown table."""
    t = records[0]["threshold"]
    lines = [
        f"| SAE | compared with | latents | matched at cos ≥ {t:g} | mean matched cosine | method |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {Path(r['sae']).name} | {Path(r['other']).name} | {r['d_sae']} vs {r['other_d_sae']} | "
            f"{r['matched_fraction']:.3f} | {r['mean_cosine']:.3f} | {r['method']} |"
        )
    return "\n".join(lines)


def compare_main(sae_path: str, compare: tuple[str, ...], threshold: float = 0.9, out: str | None = None) -> str:
    """`clipsae metrics --compare`: the table (also written as OUT.compare.md/.json with --out)."""
    records = compare_saes(sae_path, compare, threshold)
    table = compare_table(records)
    if out:
        atomic_write_text(Path(out).with_suffix(".compare.md"), table + "\n")
        atomic_write_text(Path(out).with_suffix(".compare.json"), json.dumps(records, indent=2))
    return table
