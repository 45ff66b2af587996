"""Planted-dictionary data: activations built from a known dictionary, so a trained SAE can be
scored on how well it recovers it (issue 12's recovery checks, the tests, bench_train)."""

from __future__ import annotations

import numpy as np


def planted_dictionary(
    n: int, d: int, n_atoms: int, active: int, noise: float = 0.01, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(x [n, d] float32, atoms [n_atoms, d] float32): x = codes @ atoms + noise·N(0, 1), with
    unit-norm random atoms and exactly `active` distinct atoms per row, codes uniform in
    [0.5, 1.5]. Generated in blocks of 8,192 rows, so memory stays bounded at any n."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    x = np.empty((n, d), dtype=np.float32)
    for lo in range(0, n, 8192):
        hi = min(n, lo + 8192)
        idx = np.argsort(rng.random((hi - lo, n_atoms)), axis=1)[:, :active]  # `active` distinct atoms per row
        codes = np.zeros((hi - lo, n_atoms))
        np.put_along_axis(codes, idx, rng.uniform(0.5, 1.5, size=(hi - lo, active)), axis=1)
        x[lo:hi] = codes @ atoms + noise * rng.normal(size=(hi - lo, d))
    return x, atoms.astype(np.float32)


def encoder_like(
    n: int,
    d: int,
    n_atoms: int,
    active: float,
    noise: float = 0.01,
    seed: int = 0,
    mean_scale: float = 4.0,
    zipf: float = 1.0,
    scale_range: tuple[float, float] = (0.5, 2.0),
    pair_fraction: float = 0.1,
    pair_prob: float = 0.8,
    outlier_fraction: float = 0.01,
    outlier_scale: float = 10.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Planted data shaped like real encoder activations (issue 20): (x [n, d] float32, atoms
    [n_atoms, d] float32, outlier [n] bool).

    x = m + s_r·(codes @ atoms) + noise·N(0, 1), with unit random atoms and:
    - Zipf-like frequencies: atom i fires with probability ∝ (i + 1)^−zipf, scaled so that a
      row has `active` atoms on average (each capped at 0.5);
    - per-atom magnitude scales, log-uniform in `scale_range`, times a code uniform in [0.5, 1.5];
    - co-firing: for `pair_fraction`·n_atoms pairs (a, b) of atoms, b also fires with
      probability `pair_prob` on rows where a fires;
    - a shared mean m in a random direction, of norm `mean_scale` × the median norm of the
      rows' sparse part;
    - a fraction `outlier_fraction` of rows (marked in `outlier`) whose sparse part is
      `outlier_scale` × larger (s_r = outlier_scale; else 1).
    Generated in blocks of 8,192 rows, so memory stays bounded at any n."""
    rng = np.random.default_rng(seed)
    atoms = rng.normal(size=(n_atoms, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    freq = (np.arange(n_atoms) + 1.0) ** -zipf
    freq = np.minimum(0.5, freq * active / freq.sum())
    freq = freq[rng.permutation(n_atoms)]  # frequency independent of the atom's index
    scales = np.exp(rng.uniform(*np.log(scale_range), size=n_atoms))
    n_pairs = int(pair_fraction * n_atoms)
    pairs = rng.permutation(n_atoms)[: 2 * n_pairs].reshape(2, n_pairs) if n_pairs else np.zeros((2, 0), int)
    mean_dir = rng.normal(size=d)
    mean_dir /= np.linalg.norm(mean_dir)
    x = np.empty((n, d), dtype=np.float32)
    outlier = rng.random(n) < outlier_fraction
    mean = None
    for lo in range(0, n, 8192):
        hi = min(n, lo + 8192)
        on = rng.random((hi - lo, n_atoms)) < freq
        on[:, pairs[1]] |= on[:, pairs[0]] & (rng.random((hi - lo, n_pairs)) < pair_prob)
        codes = on * scales * rng.uniform(0.5, 1.5, size=(hi - lo, n_atoms))
        sparse = codes @ atoms
        if mean is None:
            mean = mean_dir * mean_scale * float(np.median(np.linalg.norm(sparse, axis=1)))
        sparse[outlier[lo:hi]] *= outlier_scale
        x[lo:hi] = mean + sparse + noise * rng.normal(size=(hi - lo, d))
    return x, atoms.astype(np.float32), outlier


def write_cache(
    folder,
    rows: np.ndarray,
    tokens_per_image: int = 1,
    token_indices: list[int] | None = None,
    model_name: str = "synthetic",
    hook_name: str = "embed",
    patches: np.ndarray | None = None,
    images_root: str = "",
    shard_rows: int | None = None,
    paths: list[str] | None = None,
) -> dict:
    """A minimal activation cache (precompute/FORMAT.md's metadata.json, shards and image table)
    holding `rows` [images·T, d]: what the tests and benchmarks use when no images are embedded.
    Image i is `paths[i]` (default `img_{i:07d}.png`) with id `<path>#<i as 12 hex digits>`;
    `patches` [images, P, d] become patch-token shards. Returns the metadata."""
    import json
    from pathlib import Path

    from .data import CACHE_FORMAT, CACHE_VERSION

    out = Path(folder)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    t = tokens_per_image
    n_images = rows.shape[0] // t
    per = max(1, (shard_rows or rows.shape[0]) // t)
    shards = []
    for s, i0 in enumerate(range(0, n_images, per)):
        i1 = min(n_images, i0 + per)
        entry = {"file": f"shards/acts_{s:06d}.npy", "rows": (i1 - i0) * t, "images": i1 - i0}
        np.save(out / entry["file"], rows[i0 * t : i1 * t])
        if patches is not None:
            entry["patches"] = f"shards/patches_{s:06d}.npy"
            np.save(out / entry["patches"], patches[i0:i1])
        shards.append(entry)
    paths = paths or [f"img_{i:07d}.png" for i in range(n_images)]
    (out / "images.jsonl").write_text(
        "".join(json.dumps({"id": f"{p}#{i:012x}", "path": p}) + "\n" for i, p in enumerate(paths))
    )
    meta = {
        "format": CACHE_FORMAT,
        "format_version": CACHE_VERSION,
        "model_name": model_name,
        "pretrained": "none",
        "hook_name": hook_name,
        "tokens": "cls" if t == 1 else "all",
        "image_size": 0,
        "preprocessing": "",
        "dim": int(rows.shape[1]),
        "dtype": str(rows.dtype),
        "token_indices": token_indices or list(range(t)),
        "tokens_per_image": t,
        "patch_tokens": patches is not None,
        "n_patches": int(patches.shape[1]) if patches is not None else 0,
        "n_images": n_images,
        "n_failed": 0,
        "n_rows": int(rows.shape[0]),
        "images_root": images_root,
        "shard_size": per,
        "shards": shards,
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=2))
    return meta
