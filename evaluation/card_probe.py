"""Sparse probing (ViSAEBench's M4): how well k latents alone predict the images' classes.

Per image its latent scores (max over its tokens, as the atlas ranks images). The labelled
images are split once, stratified and seeded, into train (80%) and test (20%). Latents are
ranked by their ANOVA F statistic against the classes on the train split only (sklearn's
`f_classif`; a latent that is constant there ranks last), and for each k in K a multinomial
logistic regression (lbfgs, C = 1, as ViSAEBench) is fitted on the top-k latents. Reported
per k: test accuracy and the probe's macro one-vs-rest ROC AUC (from its class
probabilities); and ViSAEBench's headline, the area under the k–accuracy curve normalised by
the k range (trapezoid). ViSAEBench ranks on every image before splitting; ranking on train
only keeps the test images unseen.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

K_VALUES = (1, 5, 10, 20, 50, 100)
TEST_FRACTION = 0.2


def _split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    stratify = y if np.bincount(y).min() >= 2 else None
    return train_test_split(idx, test_size=TEST_FRACTION, stratify=stratify, random_state=seed)


def _auc(y_test: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    seen = np.isin(y_test, classes)  # a class with one image may be missing from train
    y_test, proba = y_test[seen], proba[seen]
    present = np.isin(classes, np.unique(y_test))
    if present.sum() < 2:
        return float("nan")
    if len(classes) == 2:
        return float(roc_auc_score(y_test == classes[1], proba[:, 1]))
    p = proba[:, present] / proba[:, present].sum(axis=1, keepdims=True)
    return float(roc_auc_score(y_test, p, multi_class="ovr", average="macro", labels=classes[present]))


def sparse_probing(
    codes: sp.csr_matrix, classes: np.ndarray, k_values: tuple[int, ...] = K_VALUES, seed: int = 0, max_iter: int = 500
) -> dict:
    """The card's probing section from image scores [N, F] and class indices [N] (−1: unlabelled)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.feature_selection import f_classif
    from sklearn.linear_model import LogisticRegression

    keep = classes >= 0
    x, y_raw = sp.csr_matrix(codes)[np.flatnonzero(keep)], classes[keep]
    labels, y = np.unique(y_raw, return_inverse=True)
    if len(labels) < 2 or len(y) < 10:
        raise ValueError(
            f"sparse probing needs at least 2 classes and 10 labelled images; got {len(labels)} "
            f"classes and {len(y)} images"
        )
    train, test = _split(y, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # constant latents: F is undefined
        warnings.simplefilter("ignore", UserWarning)
        f_stat, _ = f_classif(x[train], y[train])
    ranked = np.argsort(-np.nan_to_num(f_stat, nan=-np.inf), kind="stable")
    ks = [k for k in k_values if k <= x.shape[1]]
    acc, auc = [], []
    for k in ks:
        cols = ranked[:k]
        x_tr, x_te = x[train][:, cols].toarray(), x[test][:, cols].toarray()
        model = LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x_tr, y[train])
        acc.append(float((model.predict(x_te) == y[test]).mean()))
        auc.append(_auc(y[test], model.predict_proba(x_te), model.classes_))
    area = float(np.trapezoid(acc, x=ks) / (ks[-1] - ks[0])) if len(ks) > 1 else (acc[0] if acc else float("nan"))
    return {
        "k": ks,
        "accuracy": acc,
        "auc": auc,
        "area_under_k_accuracy": area,
        "n_train": int(len(train)),
        "n_test": int(len(test)),
        "n_classes": int(len(labels)),
        "top_latents": [int(i) for i in ranked[:10]],
    }
