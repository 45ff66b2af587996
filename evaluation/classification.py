"""Classification metrics as pure numpy functions (independent of scikit-learn, which the
tests use as the reference): accuracy and macro precision / recall / F1 over all classes,
and the mean cross-entropy of logits."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[true, predicted] counts."""
    idx = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    """accuracy, and precision / recall / F1 averaged over the n_classes classes (macro).

    A class never predicted has precision 0; a class absent from y_true has recall 0 (the
    scikit-learn convention with zero_division=0 and labels=range(n_classes))."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError("y_true and y_pred must be non-empty and of the same length")
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    tp = np.diag(cm)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        "accuracy": float(tp.sum() / cm.sum()),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
    }


def cross_entropy_sum(logits_bc: np.ndarray, labels_b: np.ndarray) -> float:
    """Σ over rows of −log softmax(logits)[label], in float64 (stable log-sum-exp)."""
    z = np.asarray(logits_bc, dtype=np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return float((lse - z[np.arange(len(z)), labels_b]).sum())


def ce_recovered(ce_original: float, ce_spliced: float, ce_zero: float) -> float:
    """(CE_zero − CE_spliced) / (CE_zero − CE_original): 1 for a perfect splice, 0 for zero ablation."""
    gap = ce_zero - ce_original
    return float("nan") if gap == 0 else (ce_zero - ce_spliced) / gap
