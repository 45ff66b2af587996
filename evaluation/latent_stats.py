"""Latent statistics (seed 004's figures 3 and 5 and its Table 1; PatchSAE's map),
`clipsae eval latents`:

    clipsae eval latents --atlas atlas/ --out results/
    clipsae eval latents --atlas atlas/ --acts heldout_cache/ --class-folders imagenet/ --out results/

- latents.csv: per latent, its activation frequency (fraction of images with a non-zero
  score), mean activation when active, number of images it fires on, on the atlas's
  (training) images and, with --acts, on held-out activations (same SAE, same image-score
  rule as the atlas); with --class-folders, its label entropy.
- latents_map.png: frequency against mean activation, log–log, one point per latent (train
  | held-out); dead latents (never fire) cannot sit on a log axis and are counted in the
  panel titles; coloured by label entropy when classes are known.
- latents_images.png: histogram of the number of images each latent fires on (seed 004's
  figure 5), dead latents in their own bar.
- latents_table.md / .csv / .json: seed 004's Table 1 per split (MSE, mean activation, L0,
  activation entropy, plus explained variance, % alive, dead and always-on latents), from
  the atlas's activation cache (train) and --acts (held-out).

Label entropy (PatchSAE, `calculate_entropy` of its analysis utilities): over a latent's
top images, p(class) = the summed activation of its top images of that class / the total;
entropy = −Σ p log p (nats). Classes come from --class-folders, an ImageFolder tree holding the
atlas's images (`<class>/…`, optionally under train/, val/ or test/); images outside it are
unlabelled and left out. Latents without a labelled top image get no entropy (empty).
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from precompute.atlas_format import read_manifest
from precompute.atlas_stats import score_stats
from sae_core.data import ActivationSource
from sae_core.device import resolve_device
from sae_core.evaluate import evaluate_sae
from sae_core.files import atomic_write_text, atomic_write_with
from sae_core.io import load_sae

from .configs import LatentStatsConfig
from .report import Column, write_table


@dataclass
class SplitStats:
    """Per-latent statistics of one split."""

    name: str
    n_images: int
    frequency: np.ndarray  # [F]
    mean_activation: np.ndarray  # [F] mean of the non-zero scores

    @property
    def images_per_latent(self) -> np.ndarray:
        return np.rint(self.frequency.astype(np.float64) * self.n_images).astype(np.int64)


def image_classes(images_root: str | Path, rel_paths: list[str], labels: str | Path) -> tuple[np.ndarray, list[str]]:
    """Class index of each atlas image (−1: not under `labels`) and the class names (sorted)."""
    base = Path(os.path.abspath(labels))
    if not base.is_dir():
        raise FileNotFoundError(f"--class-folders {labels}: no such folder (an ImageFolder tree: <class>/<image>)")
    names: list[str | None] = []
    root = Path(os.path.abspath(images_root))
    for rel in rel_paths:
        try:
            parts = Path(os.path.abspath(root / rel)).relative_to(base).parts
        except ValueError:
            names.append(None)
            continue
        if len(parts) > 2 and parts[0] in ("train", "val", "test"):
            parts = parts[1:]
        names.append(parts[0] if len(parts) >= 2 else None)
    classes = sorted({n for n in names if n is not None})
    if not classes:
        raise ValueError(
            f"--class-folders {labels}: none of the atlas's images lies in a class folder of it "
            f"(the atlas's images are under {root})"
        )
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[n] if n is not None else -1 for n in names], dtype=np.int64), classes


def label_entropy(
    topk_ids: np.ndarray, topk_values: np.ndarray, image_class: np.ndarray, eps: float = 1e-9
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PatchSAE's weighted label entropy of each latent's top images (nats; NaN when none is
    labelled), with the top class and its share of the activation."""
    n_latents = topk_ids.shape[0]
    entropy = np.full(n_latents, np.nan)
    top_class = np.full(n_latents, -1, dtype=np.int64)
    share = np.full(n_latents, np.nan)
    cls = np.where(topk_ids >= 0, image_class[np.clip(topk_ids, 0, None)], -1)
    for s in range(n_latents):
        keep = (cls[s] >= 0) & (topk_values[s] > 0)
        if not keep.any():
            continue
        labels, inverse = np.unique(cls[s][keep], return_inverse=True)
        mass = np.bincount(inverse, weights=topk_values[s][keep].astype(np.float64))
        p = mass / mass.sum()
        entropy[s] = float(-(p * np.log(p + eps)).sum())
        top_class[s], share[s] = int(labels[np.argmax(p)]), float(p.max())
    return entropy, top_class, share


def heldout_stats(sae, acts: str, manifest: dict, device) -> tuple[SplitStats, ActivationSource]:
    """Frequency and mean activation per latent on held-out activations, by the atlas's own
    image-score rule (one pass of the atlas's statistics code)."""
    source = ActivationSource(acts)
    if source.d != sae.cfg.d_in:
        raise ValueError(f"--acts {acts} has width {source.d} but the atlas's SAE reads {sae.cfg.d_in}")
    meta = source.metadata or {}
    t = int(meta.get("tokens_per_image", 1))
    token_indices = meta.get("token_indices", [0])
    rule = manifest["config"].get("score", "max") if t > 1 else "max"
    block = max(1, 256 * 2**20 // (4 * sae.cfg.d_sae * t * 2))
    st = score_stats(sae, source, 1, t, block, rule, token_indices.index(0) if 0 in token_indices else None, device)
    return SplitStats("held-out", st.n_images, st.frequency, st.mean_activation), source


def table_row(name: str, sae, source: ActivationSource, stats: SplitStats, batch_size: int, device) -> dict:
    """Seed 004's Table 1 for one split, plus EV, % alive and the image-level dead / always-on counts."""
    m = evaluate_sae(sae, source, batch_size=batch_size, device=device)
    return {
        "split": name,
        "rows": int(m["n_inputs"]),
        "images": stats.n_images,
        "mse": m["mse"],
        "mean_activation": m["mean_activation"],
        "l0": m["l0"],
        "entropy": m["activation_entropy"],
        "explained_variance": m["explained_variance"],
        "alive": m["alive_fraction"],
        "dead_latents": int((stats.frequency == 0).sum()),
        "always_on": int((stats.images_per_latent >= stats.n_images).sum()),
    }


TABLE = [
    Column("split", "Split"),
    Column("rows", "Rows"),
    Column("images", "Images"),
    Column("mse", "MSE", "{:.4g}"),
    Column("mean_activation", "Mean activation", "{:.4g}"),
    Column("l0", "L0", "{:.1f}"),
    Column("entropy", "Entropy (nats)", "{:.3f}"),
    Column("explained_variance", "Expl. var.", "{:.4f}"),
    Column("alive", "% alive", "{:.1%}"),
    Column("dead_latents", "Dead (no image)"),
    Column("always_on", "On every image"),
]


def _latents_csv(splits: list[SplitStats], entropy, top_class, share, classes: list[str] | None) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head = ["latent"] + [f"{s.name}_{k}" for s in splits for k in ("frequency", "mean_activation", "images")]
    w.writerow(head + (["label_entropy", "top_class", "top_class_share"] if classes else []))
    n = splits[0].frequency.size
    cols = [(s.frequency, s.mean_activation, s.images_per_latent) for s in splits]
    for i in range(n):
        row = [i] + [v for f, m, c in cols for v in (f"{f[i]:.6g}", f"{m[i]:.6g}", int(c[i]))]
        if classes:
            row += [
                "" if np.isnan(entropy[i]) else f"{entropy[i]:.4f}",
                classes[top_class[i]] if top_class[i] >= 0 else "",
                "" if np.isnan(share[i]) else f"{share[i]:.3f}",
            ]
        w.writerow(row)
    return buf.getvalue()


def _plot(path: Path, draw) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = draw(plt)
    try:
        return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def map_png(path: Path, splits: list[SplitStats], entropy: np.ndarray | None) -> Path:
    """Frequency × mean activation, log–log, one panel per split, coloured by label entropy."""

    def draw(plt):
        fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits) + 0.8, 4.4), dpi=120, squeeze=False)
        for ax, s in zip(axes[0], splits):
            alive = s.frequency > 0
            colour = {"c": entropy[alive], "cmap": "viridis"} if entropy is not None else {"color": "#1f4ed8"}
            sc = ax.scatter(
                s.frequency[alive], s.mean_activation[alive], s=4, alpha=0.6, linewidths=0, rasterized=True, **colour
            )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(f"activation frequency (of {s.n_images} images)")
            ax.set_ylabel("mean activation when active")
            ax.set_title(
                f"{s.name}: {int(alive.sum())} latents shown, {int((~alive).sum())} dead (not shown)", fontsize=9
            )
            ax.grid(True, alpha=0.3, which="both")
            if entropy is not None:
                fig.colorbar(sc, ax=ax, label="label entropy (nats)")
        fig.tight_layout()
        return fig

    return _plot(path, draw)


def images_hist_png(path: Path, splits: list[SplitStats]) -> Path:
    """Histogram of the number of images each latent fires on (log bins; dead latents apart)."""

    def draw(plt):
        fig, axes = plt.subplots(1, len(splits), figsize=(5.2 * len(splits), 4.0), dpi=120, squeeze=False)
        for ax, s in zip(axes[0], splits):
            counts = s.images_per_latent
            top = max(int(counts.max()), 1)
            edges = np.unique(np.round(np.logspace(0, np.log10(top + 1), 40)))
            ax.hist(counts[counts > 0], bins=edges, color="#1f4ed8", alpha=0.8, label="latents")
            ax.bar(
                [0.6],
                [int((counts == 0).sum())],
                width=0.25,
                color="#999",
                label=f"dead (0 images): {int((counts == 0).sum())}",
            )
            ax.set_xscale("log")
            ax.set_yscale("symlog", linthresh=1)
            ax.set_xlim(0.45, top * 1.5)
            ax.set_xlabel(f"images a latent fires on (of {s.n_images})")
            ax.set_ylabel("latents")
            ax.set_title(f"{s.name}: {int((counts >= s.n_images).sum())} latents fire on every image", fontsize=9)
            ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    return _plot(path, draw)


def latent_stats_main(cfg: LatentStatsConfig) -> str:
    """Compute everything, write OUT/latents.csv, the two PNGs and Table 1; returns Table 1."""
    atlas = Path(cfg.atlas)
    manifest = read_manifest(atlas)
    dev = resolve_device(cfg.device)
    sae = load_sae(atlas / "sae", device=dev).eval()
    arrays = {
        n: np.load(atlas / f"{n}.npy", mmap_mode="r")
        for n in ("frequency", "mean_activation", "topk_ids", "topk_values")
    }
    train = SplitStats(
        "train", int(manifest["n_images"]), np.asarray(arrays["frequency"]), np.asarray(arrays["mean_activation"])
    )
    splits, rows, notes = [train], [], []
    train_acts = manifest["config"]["acts"]
    if Path(train_acts).exists():
        rows.append(table_row("train", sae, ActivationSource(train_acts), train, cfg.batch_size, dev))
    else:
        notes.append(f"No train row: the atlas's activation cache {train_acts} is not there.")
    if cfg.acts:
        held, source = heldout_stats(sae, cfg.acts, manifest, dev)
        splits.append(held)
        rows.append(table_row("held-out", sae, source, held, cfg.batch_size, dev))
    entropy = top_class = share = None
    classes: list[str] | None = None
    if cfg.labels:
        if not manifest["has_images"]:
            raise ValueError(f"--class-folders needs the atlas's image table; {atlas} was built from a plain matrix")
        rel = [json.loads(line)["path"] for line in (atlas / "images.jsonl").read_text().splitlines() if line]
        image_class, classes = image_classes(manifest["images_root"], rel, cfg.labels)
        entropy, top_class, share = label_entropy(
            np.asarray(arrays["topk_ids"]), np.asarray(arrays["topk_values"]), image_class
        )
        known = entropy[~np.isnan(entropy)]
        notes.append(
            f"Label entropy over each latent's top-{arrays['topk_ids'].shape[1]} images, {len(classes)} "
            f"classes ({int((image_class >= 0).sum())} of {len(image_class)} images labelled): mean "
            f"{known.mean() if known.size else float('nan'):.3f} nats over {known.size} latents "
            f"(max possible {np.log(len(classes)):.3f})."
        )
    out = Path(cfg.out)
    atomic_write_text(out / "latents.csv", _latents_csv(splits, entropy, top_class, share, classes))
    map_png(out / "latents_map.png", splits, entropy)
    images_hist_png(out / "latents_images.png", splits)
    notes.append(
        "Per-latent numbers: latents.csv; plots: latents_map.png (frequency × mean activation), "
        "latents_images.png (images per latent). Mean activation = mean of the non-zero activations; "
        "entropy = of the latents' firing distribution (nats)."
    )
    return write_table(out, "latents_table", rows, TABLE, title=f"Latent statistics, {atlas}", notes=" ".join(notes))
