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
from .common import NamedSAE, image_batches
from .datasets import LabelledImages
from .report import Column
from .splice import SplicedClip, on_rows


@torch.no_grad()
def features(clip: SplicedClip, sae: NamedSAE | None, data: LabelledImages, batch_size: int,
             failures: list[str]) -> dict[str, object]:
    """{"y", "clip" [N,d], and with an SAE "clip_sae" [N,d], "latents" CSR [N,d_sae]}."""
    out: dict[str, list] = {"y": [], "clip": [], "clip_sae": [], "latents": []}
    for pixels, labels, _ in image_batches(data, clip.preprocess, batch_size, f"features {data.name}", failures):
        out["y"].append(labels)
        if sae is None:
            out["clip"].append(clip.encode(pixels).cpu().numpy())
            continue
        latents: list[torch.Tensor] = []

        def keep(x: torch.Tensor) -> torch.Tensor:
            res = sae.sae(x)
            latents.append(res.f_bs)
            return res.x_hat_bd

        def splice(acts: torch.Tensor) -> torch.Tensor:
            y = on_rows(keep)(acts)
            latents[-1] = latents[-1].reshape(acts.shape[0], acts.shape[1], -1).amax(dim=1)
            return y

        e0, er = clip.encode_variants(pixels, [None, splice])
        out["clip"].append(e0.cpu().numpy())
        out["clip_sae"].append(er.cpu().numpy())
        out["latents"].append(sp.csr_matrix(latents[-1].float().cpu().numpy()))
    if not out["y"]:
        raise ValueError(f"no readable images in {data.name}")
    res: dict[str, object] = {"y": np.concatenate(out["y"]), "clip": np.concatenate(out["clip"])}
    if sae is not None:
        res["clip_sae"] = np.concatenate(out["clip_sae"])
        res["latents"] = sp.vstack(out["latents"]).tocsr()
    return res


def fit_and_score(x_train, y_train, x_test, y_test, n_classes: int, C: float = 1.0,
                  max_iter: int = 1000, seed: int = 0) -> dict[str, float]:
    """Fit the probe on train, report accuracy and macro precision / recall / F1 on test."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MaxAbsScaler, StandardScaler

    scaler = MaxAbsScaler() if sp.issparse(x_train) else StandardScaler()
    model = make_pipeline(scaler, LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    model.fit(x_train, y_train)
    return classification_report(y_test, model.predict(x_test), n_classes)


def probe(clip: SplicedClip, saes: list[NamedSAE], train: LabelledImages, test: LabelledImages,
          batch_size: int = 64, C: float = 1.0, max_iter: int = 1000) -> tuple[list[dict], list[str]]:
    """Rows: CLIP once, then CLIP + SAE and SAE latents for each SAE."""
    if train.classnames != test.classnames:
        raise ValueError("the train and test splits have different classes")
    n_classes = len(train.classnames)
    failures: list[str] = []
    common = {"dataset": train.name, "hook": clip.hook, "n_train": 0, "n_test": 0}
    rows = []
    base_done = False
    for s in saes:
        tr = features(clip, s, train, batch_size, failures)
        te = features(clip, s, test, batch_size, failures)
        common.update(n_train=len(tr["y"]), n_test=len(te["y"]))  # type: ignore[arg-type]
        if not base_done:
            m = fit_and_score(tr["clip"], tr["y"], te["clip"], te["y"], n_classes, C, max_iter)
            rows.append({"model": "CLIP", "sae": "", **common, **m})
            base_done = True
        for key, title in (("clip_sae", "CLIP + SAE"), ("latents", "SAE latents")):
            m = fit_and_score(tr[key], tr["y"], te[key], te["y"], n_classes, C, max_iter)
            rows.append({"model": title, **s.describe(), **common, **m})
    return rows, failures


COLUMNS = [
    Column("model", "Model"), Column("sae", "SAE"), Column("dataset", "Dataset"),
    Column("accuracy", "Accuracy", "{:.2%}"), Column("precision", "Precision", "{:.2%}"),
    Column("recall", "Recall", "{:.2%}"), Column("f1", "F1", "{:.2%}"),
]
