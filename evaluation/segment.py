"""Class-averaged patch masks (seed 004's figure 6), `clipsae eval segment`:

    clipsae eval segment --dataset imagenet_val/ --sae saes/l1_0.01 --classes "tabby cat,goldfish" --out results/
    clipsae eval segment --dataset photos/ --sae sae/ --latents 12,40 --out results/   # these latents on every class

For each class of an ImageFolder (or CIFAR binary) set: the latents most active on it (the
mean over its images of each latent's image score: the SAE's activation on the image's
row for `embed` SAEs, the max over the SAE's token positions for block hooks), and, for
each of them, its per-patch activation averaged over the class's images: the class mask.
Patch values come from the patch tokens mapped into the embedding space (`ln_post(t) @
proj`, exact for CLS) for `embed` SAEs and from the spatial tokens for block hooks, under
the SAE's element-wise rule (as the atlas's masks: exact for relu, jumprelu and
batchtopk; for topk the latent's drive relu(h)).

Writes OUT/segment.csv, .md, .json (one row per class × latent, the mask as P numbers) and
OUT/segment_<class>.png: a row per latent, its class mask over the class's mean image
(what the model saw, averaged) and over example images of the class.

Memory: one pass encodes every image; the encoder's outputs are kept (fp16) for the mask
pass when they fit in `--keep-mb`, else the images are encoded a second time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from precompute.encoders import load_encoder, spec_from_metadata
from precompute.selection import parse_latents
from sae_core.device import resolve_device
from sae_core.files import atomic_write_with
from sae_core.sae import SparseAutoencoder

from .common import ModelChoice, encoder_metadata, image_batches, load_saes
from .configs import SegmentConfig
from .datasets import LabelledImages, open_dataset
from .heatmap import heat_overlay
from .report import Column, write_table

THUMB = 112
"""Side of the stored mean and example images (masks are a few patches wide)."""


@dataclass
class _Encoded:
    """One batch through the encoder: SAE-input rows [B, t, d], patch tokens [B, P, d]."""

    rows: torch.Tensor
    patches: torch.Tensor
    labels: np.ndarray
    thumbs: np.ndarray  # [B, 3, THUMB, THUMB] float32 in [0, 1]


def _norm_constants(preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean/std of the preprocessing's Normalize (to show what the model saw)."""
    for t in getattr(preprocess, "transforms", []):
        if type(t).__name__ == "Normalize":
            return torch.tensor(t.mean).view(1, 3, 1, 1), torch.tensor(t.std).view(1, 3, 1, 1)
    return torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)


def _select_classes(data: LabelledImages, names: str | None) -> LabelledImages:
    if not names:
        return data
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    norm = {c.lower(): i for i, c in enumerate(data.classnames)}
    missing = [n for n in wanted if n.replace("_", " ").lower() not in norm]
    if missing:
        raise ValueError(
            f"--classes: no class {', '.join(map(repr, missing))} in {data.name}; it has "
            f"{', '.join(data.classnames[:12])}{' …' if len(data.classnames) > 12 else ''}"
        )
    ids = [norm[n.replace("_", " ").lower()] for n in wanted]
    keep = np.flatnonzero(np.isin(data.labels, ids))
    return LabelledImages(
        data.name,
        data.kind,
        data.classnames,
        data.labels[keep],
        None if data.pixels is None else data.pixels[keep],
        None if data.paths is None else [data.paths[i] for i in keep],
    )


class _Segmenter:
    """The encoder (with patch tokens) and the SAE of one run."""

    def __init__(self, cfg: SegmentConfig):
        dev = resolve_device(cfg.device)
        named = load_saes([cfg.sae], dev)
        if len(named) != 1:
            raise ValueError(f"--sae {cfg.sae} holds {len(named)} SAEs; name one of them")
        self.sae: SparseAutoencoder = named[0].sae
        meta = encoder_metadata(named, ModelChoice(cfg.model, cfg.pretrained, cfg.hook, cfg.tokens, cfg.device))
        spec = spec_from_metadata(meta, patch_tokens=True)
        if spec.is_kandinsky:
            raise ValueError("class masks need patch tokens; the Kandinsky prior's encoder has none (use a CLIP SAE)")
        self.sae_tokens = spec.tokens
        if spec.hook != "embed":
            spec = replace(spec, tokens="all")  # CLS + spatial: the image score and the patches
        self.encoder = load_encoder(spec, dev)
        if self.encoder.dim != self.sae.cfg.d_in:
            raise ValueError(
                f"the SAE reads {self.sae.cfg.d_in}-d inputs but {spec.model} at {spec.hook} gives "
                f"{self.encoder.dim}-d; pass the matching --model / --hook"
            )
        self.device = dev
        self.mean, self.std = _norm_constants(self.encoder.preprocess)

    def encode(self, pixels: torch.Tensor, labels: np.ndarray) -> _Encoded:
        rows, patches = self.encoder.encode(pixels)
        if patches is None:  # a block hook: rows are every token, CLS first
            patches = rows[:, 1:]
            pick = {"cls": [0], "spatial": list(range(1, rows.shape[1])), "all": list(range(rows.shape[1]))}
            rows = rows[:, pick[self.sae_tokens]]
        shown = (pixels * self.std + self.mean).clamp(0, 1)
        thumbs = torch.nn.functional.interpolate(shown, size=(THUMB, THUMB), mode="bilinear", antialias=True)
        return _Encoded(rows.half(), patches.half(), labels, thumbs.numpy())

    @torch.inference_mode()
    def image_scores(self, e: _Encoded) -> torch.Tensor:
        """[B, F]: each latent's activation on each image (max over the SAE's tokens)."""
        b, t, d = e.rows.shape
        f = self.sae.encode(e.rows.reshape(b * t, d).float().to(self.device))
        return f.reshape(b, t, -1).amax(dim=1).cpu()

    @torch.inference_mode()
    def patch_values(self, e: _Encoded, latents: torch.Tensor) -> torch.Tensor:
        """[B, P, L]: the element-wise rule of each chosen latent on each patch token."""
        b, p, d = e.patches.shape
        return (
            self.sae.elementwise_codes(e.patches.reshape(b * p, d).float().to(self.device), latents.to(self.device))
            .reshape(b, p, -1)
            .cpu()
        )


def _batches(seg: _Segmenter, data: LabelledImages, cfg: SegmentConfig, failures: list[str], desc: str):
    for pixels, labels, _ in image_batches(data, seg.encoder.preprocess, cfg.batch_size, desc, failures):
        yield seg.encode(pixels, labels)


def segment(cfg: SegmentConfig) -> tuple[list[dict], list[str]]:
    """Run the two passes, write the PNGs, and return (table rows, unreadable images)."""
    data = _select_classes(open_dataset(cfg.dataset, None), cfg.classes).subset(cfg.max_images)
    seg = _Segmenter(cfg)
    n_cls, n_lat = len(data.classnames), seg.sae.cfg.d_sae
    sums, counts, fires = np.zeros((n_cls, n_lat)), np.zeros(n_cls), np.zeros((n_cls, n_lat))
    mean_img = np.zeros((n_cls, 3, THUMB, THUMB))
    examples: dict[int, list[np.ndarray]] = {}
    kept: list[_Encoded] | None = []
    kept_bytes, failures = 0, []
    for e in _batches(seg, data, cfg, failures, "segment: latents per class"):
        s = seg.image_scores(e).double().numpy()
        np.add.at(sums, e.labels, s)
        np.add.at(fires, e.labels, s > 0)
        np.add.at(counts, e.labels, 1)
        np.add.at(mean_img, e.labels, e.thumbs)
        for lab, th in zip(e.labels, e.thumbs):
            if len(examples.setdefault(int(lab), [])) < cfg.examples:
                examples[int(lab)].append(th)
        if kept is not None:  # the patch tokens only, for the mask pass
            kept.append(_Encoded(e.rows[:0], e.patches, e.labels, e.thumbs[:0]))
            kept_bytes += e.patches.element_size() * e.patches.nelement()
            if kept_bytes > cfg.keep_mb * 2**20:
                kept = None  # too large to keep: encode again for the masks
    present = np.flatnonzero(counts)
    if not present.size:
        raise ValueError(f"no readable image in {cfg.dataset}")
    class_mean = sums / np.maximum(counts, 1)[:, None]
    selection = parse_latents(cfg.latents)
    chosen = {
        c: (
            selection.resolve(n_lat)
            if selection.ids is not None
            else [int(i) for i in np.argsort(-class_mean[c], kind="stable")[: selection.count]]
        )
        for c in present
    }
    masks = _class_masks(seg, data, cfg, chosen, kept, failures)
    overall = sums.sum(axis=0) / counts.sum()
    rows = []
    for c in present:
        for rank, s in enumerate(chosen[c]):
            m = masks[c][rank] / counts[c]
            rows.append(
                {
                    "class": data.classnames[c],
                    "rank": rank + 1,
                    "latent": s,
                    "class_mean": class_mean[c, s],
                    "class_frequency": fires[c, s] / counts[c],
                    "overall_mean": overall[s],
                    "lift": class_mean[c, s] / overall[s] if overall[s] > 0 else float("nan"),
                    "mask_peak": float(m.max()),
                    "images": int(counts[c]),
                    "mask": " ".join(f"{v:.4g}" for v in m),
                }
            )
        _class_png(
            cfg.out,
            data.classnames[c],
            mean_img[c] / counts[c],
            examples.get(int(c), []),
            [r for r in rows if r["class"] == data.classnames[c]],
        )
    return rows, sorted(set(failures))


def _class_masks(
    seg: _Segmenter,
    data: LabelledImages,
    cfg: SegmentConfig,
    chosen: dict[int, list[int]],
    kept: list[_Encoded] | None,
    failures: list[str],
) -> dict[int, np.ndarray]:
    """Per class: the sum over its images of the chosen latents' patch values [L, P]."""
    union = sorted({s for ids in chosen.values() for s in ids})
    col = {s: j for j, s in enumerate(union)}
    index = torch.tensor(union)
    out = {c: None for c in chosen}
    source = kept if kept is not None else _batches(seg, data, cfg, [], "segment: class masks")
    for e in source:
        v = seg.patch_values(e, index).double().numpy()  # [B, P, U]
        for c in np.unique(e.labels):
            if c not in chosen:
                continue
            part = v[e.labels == c].sum(axis=0)[:, [col[s] for s in chosen[c]]].T  # [L, P]
            out[c] = part if out[c] is None else out[c] + part
    return {c: (m if m is not None else np.zeros((len(chosen[c]), 1))) for c, m in out.items()}


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def _to_image(chw: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(chw, 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8))


def _class_png(out: str, classname: str, mean_chw: np.ndarray, examples: list[np.ndarray], rows: list[dict]) -> Path:
    """segment_<class>.png: per latent, its class mask over the mean image and the examples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 1 + len(examples)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.2 * cols, 2.45 * len(rows)), dpi=110, squeeze=False)
    backgrounds = [_to_image(mean_chw)] + [_to_image(e) for e in examples]
    for r, row in enumerate(rows):
        mask = np.array([float(v) for v in row["mask"].split()])
        side = int(round(np.sqrt(mask.size)))
        grid = mask.reshape(side, side) if side * side == mask.size else mask[None, :]
        for j, bg in enumerate(backgrounds):
            ax = axes[r, j]
            ax.imshow(heat_overlay(bg, grid, size=224))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("class mean image" if j == 0 else f"example {j}", fontsize=8)
        axes[r, 0].set_ylabel(
            f"latent {row['latent']}\nmean {row['class_mean']:.3g} · lift {row['lift']:.2g}\n"
            f"fires on {row['class_frequency']:.0%}",
            fontsize=8,
        )
    fig.suptitle(f"{classname}: class-averaged patch masks ({rows[0]['images']} images)", fontsize=10)
    fig.tight_layout()
    path = Path(out) / f"segment_{_safe_name(classname)}.png"
    try:
        return atomic_write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


COLUMNS = [
    Column("class", "Class"),
    Column("rank", "Rank"),
    Column("latent", "Latent"),
    Column("class_mean", "Mean act. on class", "{:.4g}"),
    Column("class_frequency", "Fires on class", "{:.0%}"),
    Column("overall_mean", "Mean act. overall", "{:.4g}"),
    Column("lift", "Lift", "{:.2f}"),
    Column("mask_peak", "Mask peak", "{:.4g}"),
    Column("images", "Images"),
]


def segment_main(cfg: SegmentConfig) -> tuple[str, list[str]]:
    """Run and write OUT/segment.md, .csv, .json (+ the PNGs); returns (the table, unreadable images)."""
    rows, failures = segment(cfg)
    notes = (
        "Mean act. = the mean over the class's images of the latent's image score; lift = that mean over "
        "the mean on every image; the mask (CSV/JSON) is the class-averaged per-patch activation, row-major. "
        "PNGs: segment_<class>.png."
    )
    table = write_table(cfg.out, "segment", rows, COLUMNS, title=f"Class-averaged masks, {cfg.sae}", notes=notes)
    return table, failures
