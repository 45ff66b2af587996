"""Zero-shot classification with and without the SAE spliced in (seed 001's CIFAR table),
and CE recovered with zero ablation (seed 002's column, ViT-Prisma's definition):

    logits = s · cos(image embedding, class text embedding)     s = the model's logit scale
    CE     = mean cross-entropy of the logits against the labels
    CE recovered = (CE_zero − CE_sae) / (CE_zero − CE_clip)

CE_zero replaces the hooked activation by zeros and runs the rest of the model. Every
image goes through the model once untouched, once zero-ablated and once per SAE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sae_core.metrics import MetricsAccumulator

from .classification import ce_recovered, classification_report, cross_entropy_sum
from .common import NamedSAE, image_batches, setup
from .configs import ZeroshotConfig
from .datasets import LabelledImages, open_dataset
from .prompts import classes_from_file, templates_for
from .report import Column, scatter_png, write_table
from .splice import SplicedClip, reconstruct, zero_ablate


@dataclass
class _Tally:
    preds: list[np.ndarray] = field(default_factory=list)
    ce_sum: float = 0.0
    cos_sum: float = 0.0

    def add(self, logits: torch.Tensor, labels: np.ndarray, emb: torch.Tensor, ref: torch.Tensor) -> None:
        z = logits.double().cpu().numpy()
        self.preds.append(z.argmax(axis=1))
        self.ce_sum += cross_entropy_sum(z, labels)
        self.cos_sum += float(torch.nn.functional.cosine_similarity(emb.double(), ref.double(), dim=-1).sum())


@torch.no_grad()
def zeroshot(
    clip: SplicedClip,
    saes: list[NamedSAE],
    data: LabelledImages,
    classnames: list[str],
    templates: list[str],
    batch_size: int = 64,
    logit_scale: float | None = None,
) -> tuple[list[dict], list[str]]:
    """One row per SAE (baseline columns repeated on each) and the list of skipped images."""
    if len(classnames) != len(data.classnames):
        raise ValueError(f"{len(classnames)} class names for a dataset of {len(data.classnames)} classes")
    classifier = clip.text_classifier(classnames, templates)
    scale = float(logit_scale) if logit_scale is not None else clip.logit_scale
    base, zero = _Tally(), _Tally()
    per_sae = {s.name: _Tally() for s in saes}
    stats = {s.name: MetricsAccumulator(s.sae.cfg.d_in, s.sae.cfg.d_sae) for s in saes}
    labels_all: list[np.ndarray] = []
    failures: list[str] = []

    def logits(emb: torch.Tensor) -> torch.Tensor:
        return scale * torch.nn.functional.normalize(emb, dim=-1) @ classifier.T

    for pixels, labels, _ in image_batches(data, clip.preprocess, batch_size, f"zero-shot {data.name}", failures):
        labels_all.append(labels)
        e0, ez, *recons = clip.encode_variants(
            pixels, [None, zero_ablate, *(reconstruct(s.sae, stats[s.name]) for s in saes)]
        )
        base.add(logits(e0), labels, e0, e0)
        zero.add(logits(ez), labels, ez, e0)
        for s, er in zip(saes, recons):
            per_sae[s.name].add(logits(er), labels, er, e0)
    if not labels_all:
        raise ValueError(f"no readable images in {data.name}")
    y = np.concatenate(labels_all)
    n, c = len(y), len(classnames)
    b = classification_report(y, np.concatenate(base.preds), c)
    ce_clip, ce_zero = base.ce_sum / n, zero.ce_sum / n
    rows = []
    for s in saes:
        t = per_sae[s.name]
        r = classification_report(y, np.concatenate(t.preds), c)
        m = stats[s.name].result()
        ce_sae = t.ce_sum / n
        rows.append(
            {
                **s.describe(),
                "dataset": data.name,
                "hook": clip.hook,
                "tokens": clip.tokens,
                "n_images": n,
                "acc_clip": b["accuracy"],
                "acc_sae": r["accuracy"],
                "acc_delta": r["accuracy"] - b["accuracy"],
                "f1_clip": b["f1"],
                "f1_sae": r["f1"],
                "ce_clip": ce_clip,
                "ce_sae": ce_sae,
                "ce_zero": ce_zero,
                "ce_recovered": ce_recovered(ce_clip, ce_sae, ce_zero),
                "embed_cos": t.cos_sum / n,
                "hook_ev": m["explained_variance"],
                "hook_l0": m["l0"],
                "hook_cos": m["cosine_similarity"],
                "logit_scale": scale,
                "n_templates": len(templates),
            }
        )
    return rows, failures


COLUMNS = [
    Column("sae", "SAE"),
    Column("sparsity", "Sparsity"),
    Column("d_sae", "Dict size"),
    Column("dataset", "Dataset"),
    Column("acc_clip", "CLIP acc.", "{:.4f}"),
    Column("acc_sae", "CLIP + SAE acc.", "{:.4f}"),
    Column("acc_delta", "Δ", "{:+.4f}"),
    Column("ce_clip", "CE", "{:.4f}"),
    Column("ce_sae", "Recon CE", "{:.4f}"),
    Column("ce_zero", "Zero abl. CE", "{:.4f}"),
    Column("ce_recovered", "% CE recovered", "{:.2%}"),
    Column("embed_cos", "Embed cos sim", "{:.4f}"),
    Column("hook_ev", "Hook expl. var.", "{:.4f}"),
    Column("hook_l0", "Hook L0", "{:.1f}"),
]


def zeroshot_main(cfg: ZeroshotConfig) -> tuple[str, list[str]]:
    """`clipsae eval zeroshot`: OUT/zeroshot.md, .csv, .json and the accuracy plot; returns
    (the table, unreadable images)."""
    data = open_dataset(cfg.dataset, cfg.split if cfg.split == "train" else None).subset(cfg.max_images)
    classnames = classes_from_file(cfg.classes, len(data.classnames)) if cfg.classes else data.classnames
    templates = templates_for(data.kind, cfg.templates)
    saes, clip = setup(cfg.sae, cfg.clip)
    rows, failures = zeroshot(
        clip, saes, data, classnames, templates, batch_size=cfg.batch_size, logit_scale=cfg.logit_scale
    )
    notes = (
        f"{rows[0]['n_images']} {cfg.split} images, {len(classnames)} classes, {len(templates)} templates, "
        f"logit scale {rows[0]['logit_scale']:.4g}, hook {clip.hook} ({clip.tokens}). "
        "CE recovered = (CE_zero − CE_recon) / (CE_zero − CE), zero ablation at the hook."
    )
    table = write_table(cfg.out, "zeroshot", rows, COLUMNS, title=f"Zero-shot {data.name}", notes=notes)
    scatter_png(
        Path(cfg.out) / "zeroshot_accuracy.png",
        [(r["hook_l0"], r["acc_sae"], r["sparsity"]) for r in rows],
        "average L0 at the hook",
        "zero-shot accuracy with the SAE spliced in",
        f"Zero-shot {data.name}",
        log_x=True,
        hline=(rows[0]["acc_clip"], "CLIP"),
    )
    return table, failures
