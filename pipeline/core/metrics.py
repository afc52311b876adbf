"""Competition metrics on probabilities, and the F1 decision threshold."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from pipeline.core.config import METRICS

GREATER_IS_BETTER = {"f1": True, "macro_f1": True, "accuracy": True, "logloss": False, "roc_auc": True}


def paired_se(diffs: np.ndarray) -> float:
    """The standard error of fold-wise score differences: the noise a gain must beat (0 with one
    fold, where there is no spread to measure)."""
    d = np.asarray(diffs, dtype=np.float64)
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def predict_labels(proba: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Class indices: argmax, or for binary ``p1 >= threshold`` when a threshold is given."""
    proba = np.asarray(proba)
    if threshold is not None and proba.shape[1] == 2:
        return (proba[:, 1] >= threshold).astype(np.int64)
    return proba.argmax(1)


def score(metric: str, y: np.ndarray, proba: np.ndarray, threshold: float | None = None) -> float:
    """``metric`` of integer labels ``y`` against probabilities ``proba`` (n, k)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    y = np.asarray(y)
    proba = np.asarray(proba, dtype=np.float64)
    if metric == "logloss":
        p = np.clip(proba, 1e-15, 1)
        return float(skm.log_loss(y, p / p.sum(1, keepdims=True), labels=list(range(proba.shape[1]))))
    if metric == "roc_auc":
        return float(skm.roc_auc_score(y, proba[:, 1]))
    pred = predict_labels(proba, threshold if metric == "f1" else None)
    if metric == "f1":
        return float(skm.f1_score(y, pred, zero_division=0))
    if metric == "macro_f1":
        return float(skm.f1_score(y, pred, average="macro", zero_division=0))
    return float(skm.accuracy_score(y, pred))


def confidence_histogram(proba: np.ndarray, bins: int = 10) -> list[int]:
    """Counts of the predicted-class probability in equal bins from chance (1/k) to 1."""
    k = proba.shape[1]
    return np.histogram(proba.max(1), bins=bins, range=(1 / k, 1.0))[0].tolist()


def better(metric: str, a: float, b: float | None) -> bool:
    """Is score ``a`` better than ``b`` (None counts as worst)?"""
    if b is None or np.isnan(b):
        return not np.isnan(a)
    return a > b if GREATER_IS_BETTER[metric] else a < b


def tune_threshold(y: np.ndarray, p1: np.ndarray, grid: np.ndarray | None = None) -> tuple[float, float]:
    """The threshold on P(class 1) that maximises F1 on (out-of-fold) predictions, and that F1."""
    grid = np.round(np.arange(0.05, 0.951, 0.01), 2) if grid is None else grid
    scores = f1_curve(y, p1, grid)
    i = int(np.argmax(scores))
    return float(grid[i]), float(scores[i])


def f1_curve(y: np.ndarray, p1: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F1 of ``p1 >= t`` for every t in ``grid``, vectorised (sorted counts, no loop)."""
    y = np.asarray(y).astype(bool)
    p1 = np.asarray(p1, dtype=np.float64)
    pos = np.sort(p1[y])
    every = np.sort(p1)
    tp = len(pos) - np.searchsorted(pos, grid, side="left")
    predicted = len(every) - np.searchsorted(every, grid, side="left")
    denom = predicted + len(pos)
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
