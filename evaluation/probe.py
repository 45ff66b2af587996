"""Linear probe (seed 000's table): multinomial logistic regression fitted on the train
split, scored on the test split, on three feature sets:

- CLIP         the image embeddings
- CLIP + SAE   the image embeddings with the SAE reconstruction spliced in at its hook
               (for an `embed` SAE: the reconstructed embeddings)
- SAE latents  the SAE's latents at its hook (max over the SAE's tokens), kept sparse

Dense features are standardised, sparse latents max-abs scaled (sparsity preserved).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .classification import classification_report
from .common import NamedSAE, image_batches, setup
from .configs import ProbeConfig
from .datasets import LabelledImages, open_dataset
from .report import Column, write_table
from .splice import SplicedClip, on_rows


def _keep_latents(sae: NamedSAE, store: list[torch.Tensor]):
    """A reconstruct splice that also records each image's latents (max over its tokens)."""

    def splice(acts: torch.Tensor) -> torch.Tensor:
        found: list[torch.Tensor] = []

        def keep(x: torch.Tensor) -> torch.Tensor:
            res = sae.sae(x)
            found.append(res.f_bs)
            return res.x_hat_bd

        y = on_rows(keep)(acts)
        store.append(found[0].reshape(acts.shape[0], acts.shape[1], -1).amax(dim=1))
        return y

    return splice


@torch.no_grad()
def features(
    clip: SplicedClip, saes: list[NamedSAE], data: LabelledImages, batch_size: int, failures: list[str]
) -> dict[str, object]:
    """One pass over the images: {"y", "clip" [N,d], and per SAE name (name, "clip_sae") [N,d],
    (name, "latents") CSR [N,d_sae]}."""
    ys, base = [], []
    recon: dict[str, list[np.ndarray]] = {s.name: [] for s in saes}
    latents: dict[str, list[torch.Tensor]] = {s.name: [] for s in saes}
    splices = [_keep_latents(s, latents[s.name]) for s in saes]
    for pixels, labels, _ in image_batches(data, clip.preprocess, batch_size, f"features {data.name}", failures):
        ys.append(labels)
        e0, *ers = clip.encode_variants(pixels, [None, *splices])
        base.append(e0.cpu().numpy())
        for s, er in zip(saes, ers):
            recon[s.name].append(er.cpu().numpy())
    if not ys:
        raise ValueError(f"no readable images in {data.name}")
    res: dict[object, object] = {"y": np.concatenate(ys), "clip": np.concatenate(base)}
    for s in saes:
        res[(s.name, "clip_sae")] = np.concatenate(recon[s.name])
        res[(s.name, "latents")] = sp.vstack([sp.csr_matrix(f.float().cpu().numpy()) for f in latents[s.name]]).tocsr()
    return res


def fit_and_score(
    x_train, y_train, x_test, y_test, n_classes: int, C: float = 1.0, max_iter: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Fit the probe on train, report accuracy and macro precision / recall / F1 on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    scaler = MaxAbsScaler() if sp.issparse(x_train) else StandardScaler()
    model = make_pipeline(scaler, LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    model.fit(x_train, y_train)
    return classification_report(y_test, model.predict(x_test), n_classes)


def probe(
    clip: SplicedClip,
    saes: list[NamedSAE],
    train: LabelledImages,
    test: LabelledImages,
    batch_size: int = 64,
    C: float = 1.0,
    max_iter: int = 1000,
) -> tuple[list[dict], list[str]]:
    """Rows: CLIP once, then CLIP + SAE and SAE latents for each SAE."""
    if train.classnames != test.classnames:
        raise ValueError("the train and test splits have different classes")
    n_classes = len(train.classnames)
    failures: list[str] = []
    tr = features(clip, saes, train, batch_size, failures)
    te = features(clip, saes, test, batch_size, failures)
    common = {"dataset": train.name, "hook": clip.hook, "n_train": len(tr["y"]), "n_test": len(te["y"])}  # type: ignore[arg-type]
    m = fit_and_score(tr["clip"], tr["y"], te["clip"], te["y"], n_classes, C, max_iter)
    rows = [{"model": "CLIP", "sae": "", **common, **m}]
    for s in saes:
        for key, title in (("clip_sae", "CLIP + SAE"), ("latents", "SAE latents")):
            k = (s.name, key)
            m = fit_and_score(tr[k], tr["y"], te[k], te["y"], n_classes, C, max_iter)
            rows.append({"model": title, **s.describe(), **common, **m})
    return rows, failures


COLUMNS = [
    Column("model", "Model"),
    Column("sae", "SAE"),
    Column("dataset", "Dataset"),
    Column("accuracy", "Accuracy", "{:.2%}"),
    Column("precision", "Precision", "{:.2%}"),
    Column("recall", "Recall", "{:.2%}"),
    Column("f1", "F1", "{:.2%}"),
]


def probe_main(cfg: ProbeConfig) -> tuple[str, list[str]]:
    """`clipsae eval probe`: OUT/probe.md, .csv, .json; returns (the table, unreadable images)."""
    train = open_dataset(cfg.dataset, "train").subset(cfg.max_images)
    test = open_dataset(cfg.dataset, "test").subset(cfg.max_images)
    saes, clip = setup(cfg.sae, cfg.clip)
    rows, failures = probe(clip, saes, train, test, batch_size=cfg.batch_size, C=cfg.C, max_iter=cfg.max_iter)
    notes = (
        f"logistic regression (C={cfg.C}) fitted on {rows[0]['n_train']} train images, scored on "
        f"{rows[0]['n_test']} test images; precision / recall / F1 are macro averages."
    )
    return write_table(cfg.out, "probe", rows, COLUMNS, title=f"Linear probe {train.name}", notes=notes), failures
