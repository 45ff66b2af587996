"""Cost of the scorecard (`clipsae eval card`) at the seeds' sizes, on synthetic activations.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_card.py              # every case
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_card.py --cases ms   # one of them

Cases (each in its own process, so its peak RSS is its own; data are generated once into
--data, default a temporary folder):
- ms:         MS of 98,304 latents over 32,000 images (the seed's CLIP dictionary), from the
              sparse image codes and 768-d evaluator embeddings (DINOv2-base's width): the MS step
- ms_card:    the same through `clipsae eval card` (ViT-B/32 embed rows, 512-d, 98,304 latents):
              the held-out pass that makes the codes, and the MS
- card_embed: the whole card of a 16,384-latent SAE on 100,000 held-out embed rows: pass,
              MS (evaluator cache), sparse probing on 100 classes, seed stability (when
              sae_core/stability.py is there)
- card_tokens: the whole card of a 16,384-latent SAE on 100,000 token rows (2,000 images × 50
              tokens of a 768-d block hook): pass, Moran's I on the 7×7 grid, MS, probing
- label_auc:  label quality of 16,384 labelled latents over 100,000 images (10,000 negatives)

SAEs: ReLU with random unit encoder directions and per-latent thresholds set so the
frequencies are heavy-tailed around ~64 active latents per row (speed depends on the
sparsity, not on the weights). Prints one Markdown table; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = ("ms", "ms_card", "card_embed", "card_tokens", "label_auc")


def sparse_sae(path: Path, d: int, f: int, l0: float, seed: int, meta: dict) -> None:
    """A ReLU SAE on standard-normal inputs whose latent i fires with probability p_i, the p_i
    log-normal with mean l0 / f (heavy-tailed frequencies)."""
    import torch
    from scipy.stats import norm

    from sae_core.config import SAEConfig
    from sae_core.io import save_sae
    from sae_core.sae import SparseAutoencoder

    rng = np.random.default_rng(seed)
    p = np.clip(rng.lognormal(0, 1.2, f), 1e-6, None)
    p = np.clip(p / p.mean() * l0 / f, 1e-7, 0.5)
    sae = SparseAutoencoder(
        SAEConfig(d_in=d, d_sae=f, normalize_activations="none", metadata=meta),
        generator=torch.Generator().manual_seed(seed),
    )
    with torch.no_grad():
        sae.W_enc.copy_(sae.W_dec.T)  # unit columns: h ~ N(b, 1) on standard-normal inputs
        sae.b_enc.copy_(torch.from_numpy(-norm.isf(p)).float())
    save_sae(sae, path)


def make_data(root: Path) -> None:
    """Caches and SAEs of every case (skipped when already there)."""
    from sae_core.synthetic import write_cache

    if (root / "done").is_file():
        return
    rng = np.random.default_rng(7)
    classes = [f"c{c:03d}/img_{i:07d}.png" for i, c in enumerate(rng.integers(0, 100, 100_000))]
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for name, n, d in (("embed32k", 32_000, 512), ("embed100k", 100_000, 512)):
        write_cache(
            root / name,
            rng.normal(size=(n, d)).astype(np.float16),
            images_root=str(root / "labels"),
            paths=classes[:n],
            shard_rows=25_000,
        )
    for name, n in (("eval32k", 32_000), ("eval100k", 100_000)):
        write_cache(
            root / name,
            rng.normal(0.3, 1, size=(n, 768)).astype(np.float16),
            model_name="dinov2-base",
            images_root=str(root / "labels"),
            paths=classes[:n],
            shard_rows=25_000,
        )
    write_cache(
        root / "tokens",
        rng.normal(size=(100_000, 768)).astype(np.float16),
        tokens_per_image=50,
        hook_name="blocks.9.resid_post",
        images_root=str(root / "labels"),
        paths=classes[:2000],
        shard_rows=25_000,
    )
    write_cache(
        root / "eval_tokens",
        rng.normal(0.3, 1, size=(2000, 768)).astype(np.float16),
        model_name="dinov2-base",
        images_root=str(root / "labels"),
        paths=classes[:2000],
    )
    meta = {"model_name": "ViT-B-32", "pretrained": "laion2b_s34b_b79k", "hook_name": "embed"}
    sparse_sae(root / "sae98k", 512, 98_304, 64, 1, meta)
    sparse_sae(root / "sae16k", 512, 16_384, 64, 2, meta)
    sparse_sae(root / "sae16k_b", 512, 16_384, 64, 3, meta)
    sparse_sae(root / "sae16k_tok", 768, 16_384, 64, 4, {**meta, "hook_name": "blocks.9.resid_post"})
    (root / "done").write_text("ok")


def run_case(case: str, root: Path) -> dict:
    """One case in this process: {case, size, seconds, notes}."""
    import scipy.sparse as sp

    from evaluation.card import CardConfig, card_main

    t0 = time.perf_counter()
    if case == "ms":
        from evaluation.card_mono import monosemanticity, unit_rows

        rng = np.random.default_rng(11)
        n, f, e = 32_000, 98_304, 768
        per = rng.poisson(64, n)
        rows = np.repeat(np.arange(n), per)
        cols = (rng.pareto(1.1, rows.size) * 2000).astype(np.int64) % f  # heavy-tailed latent frequencies
        codes = sp.csr_matrix((rng.exponential(1, rows.size).astype(np.float32), (rows, cols)), shape=(n, f))
        emb = unit_rows(rng.normal(0.3, 1, (n, e)))
        t0 = time.perf_counter()
        ms = monosemanticity(codes, emb)
        return {
            "size": f"{f:,} latents × {n:,} images, nnz {codes.nnz:,}, E={e}",
            "seconds": time.perf_counter() - t0,
            "notes": f"{int(np.isfinite(ms).sum()):,} latents scored",
        }
    if case == "label_auc":
        from evaluation.card_labels import label_auc
        from evaluation.card_mono import unit_rows

        rng = np.random.default_rng(12)
        n, f, d = 100_000, 16_384, 512
        per = rng.poisson(64, n)
        rows = np.repeat(np.arange(n), per)
        cols = (rng.pareto(1.1, rows.size) * 300).astype(np.int64) % f
        codes = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(n, f))
        images, texts = unit_rows(rng.normal(size=(n, d))), unit_rows(rng.normal(size=(f, d)))
        t0 = time.perf_counter()
        auc = label_auc(codes, images, texts, max_negatives=10_000)
        return {
            "size": f"{f:,} labelled latents × {n:,} images, nnz {codes.nnz:,}",
            "seconds": time.perf_counter() - t0,
            "notes": f"{int(np.isfinite(auc).sum()):,} AUCs",
        }
    out = root / f"out_{case}"
    if case == "ms_card":
        cfg = CardConfig(
            sae=str(root / "sae98k"),
            acts=str(root / "embed32k"),
            evaluator=str(root / "eval32k"),
            out=str(out),
            device="cpu",
        )
        size = "98,304 latents, 32,000 embed rows (512-d), evaluator 768-d"
    elif case == "card_embed":
        has_stability = Path(REPO / "sae_core" / "stability.py").is_file()
        cfg = CardConfig(
            sae=str(root / "sae16k"),
            acts=str(root / "embed100k"),
            evaluator=str(root / "eval100k"),
            labels=str(root / "labels"),
            compare=(str(root / "sae16k_b"),) if has_stability else (),
            out=str(out),
            device="cpu",
        )
        size = "16,384 latents, 100,000 embed rows (512-d): pass + MS + probing (100 classes)" + (
            " + stability" if has_stability else " (no stability: sae_core/stability.py not on this branch)"
        )
    else:
        cfg = CardConfig(
            sae=str(root / "sae16k_tok"),
            acts=str(root / "tokens"),
            evaluator=str(root / "eval_tokens"),
            labels=str(root / "labels"),
            moran_min_images=20,
            out=str(out),
            device="cpu",
        )
        size = "16,384 latents, 100,000 token rows (2,000 images × 50, 768-d): pass + Moran + MS + probing"
    card = card_main(cfg)
    took = time.perf_counter() - t0
    notes = f"L0 {card['sparsity']['l0_mean']:.0f}"
    if card["localisation"]:
        notes += f", Moran scored {card['localisation']['n_scored']:,}"
    if card["monosemanticity"]:
        notes += f", MS scored {card['monosemanticity']['n_scored']:,}"
    return {"size": size, "seconds": took, "notes": notes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--data", default=None, help="folder for the generated data (kept; default: a temporary one)")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # a child process runs one case
    a = p.parse_args()
    if a.case:
        res = run_case(a.case, Path(a.data))
        res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(res))
        return
    tmp = None if a.data else tempfile.TemporaryDirectory(prefix="bench_card_")
    root = Path(a.data or tmp.name)  # type: ignore[union-attr]
    t = time.perf_counter()
    make_data(root)
    print(f"data ready in {time.perf_counter() - t:.0f} s under {root}", file=sys.stderr)
    rows = []
    for case in a.cases:
        load = os.getloadavg()[0]
        proc = subprocess.run(
            [sys.executable, __file__, "--case", case, "--data", str(root)],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")},
        )
        found = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if not found:
            rows.append(f"| {case} | failed: {proc.stderr.strip().splitlines()[-1][:120]} | | | | |")
            continue
        r = json.loads(found[0][len("RESULT ") :])
        rows.append(
            f"| {case} | {r['size']} | {r['seconds']:.1f} | {r['peak_rss_mb']:,.0f} | {r['notes']} | {load:.2f} |"
        )
    import torch

    print(f"\nbench_card: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| case | size | wall s | peak RSS MB | result | load avg (1 min, at start) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
