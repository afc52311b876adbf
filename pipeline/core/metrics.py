"""Competition metrics on probabilities, and the F1 decision threshold."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

from pipeline.core.config import METRICS

GREATER_IS_BETTER = {"f1": True, "macro_f1": True, "accuracy": True, "logloss": False, "roc_auc": True,
                     "mean_auc": True, "micro_f1": True}
THRESHOLD_METRICS = ("f1", "micro_f1", "macro_f1")  # tuned thresholds on OOF (binary f1; multi-label: per label)


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


def score(metric: str, y: np.ndarray, proba: np.ndarray, threshold: float | np.ndarray | None = None) -> float:
    """``metric`` of integer labels ``y`` (n,) against probabilities ``proba`` (n, k); or, for a
    multi-label competition, of a 0/1 matrix ``y`` (n, L) against per-label probabilities."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    y = np.asarray(y)
    proba = np.asarray(proba, dtype=np.float64)
    if y.ndim == 2:
        return multilabel_score(metric, y, proba, threshold)
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


def confidence_histogram(proba: np.ndarray, bins: int = 10, multilabel: bool = False) -> list[int]:
    """Counts of ``confidence`` in equal bins from chance (1/k, multi-label 1/2) to 1."""
    chance = 0.5 if multilabel else 1 / proba.shape[1]
    return np.histogram(confidence(proba, multilabel), bins=bins, range=(chance, 1.0))[0].tolist()


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


def multilabel_predictions(proba: np.ndarray, threshold: float | np.ndarray | None = None) -> np.ndarray:
    """0/1 decisions per label: p >= the label's threshold (0.5 without one)."""
    t = 0.5 if threshold is None else np.asarray(threshold, dtype=np.float64)
    return (np.asarray(proba) >= t).astype(np.int64)


def multilabel_score(metric: str, y: np.ndarray, proba: np.ndarray, threshold: float | np.ndarray | None) -> float:
    """mean_auc: mean column-wise ROC AUC (a label with one value in ``y`` is left out, as it
    has none); logloss: mean column-wise binary log loss; micro_f1 / macro_f1: F1 of the 0/1
    decisions, over all of them / per label then averaged; accuracy: every label of a row right."""
    if metric == "mean_auc":
        aucs = [skm.roc_auc_score(y[:, j], proba[:, j]) for j in range(y.shape[1]) if len(np.unique(y[:, j])) == 2]
        return float(np.mean(aucs)) if aucs else float("nan")
    if metric == "logloss":
        p = np.clip(proba, 1e-15, 1 - 1e-15)
        return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=0)))
    pred = multilabel_predictions(proba, threshold)
    if metric == "micro_f1":
        return float(skm.f1_score(y, pred, average="micro", zero_division=0))
    if metric == "macro_f1":
        return float(skm.f1_score(y, pred, average="macro", zero_division=0))
    if metric == "accuracy":
        return float((pred == y).all(axis=1).mean())
    raise ValueError(f"metric {metric!r} scores one label, not {y.shape[1]} label columns")


def tune_thresholds(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the threshold on its probability that maximises its F1 on (out-of-fold)
    predictions, and that F1 (macro F1 is their mean; micro F1 rises with each of them)."""
    pairs = [tune_threshold(y[:, j], proba[:, j]) for j in range(y.shape[1])]
    return np.array([t for t, _ in pairs]), np.array([f for _, f in pairs])


def confidence(proba: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Per row, how sure the model is: the top class's probability; multi-label: the mean over
    labels of max(p, 1 - p) (chance is 1/k, resp. 1/2)."""
    proba = np.asarray(proba)
    return np.maximum(proba, 1 - proba).mean(axis=1) if multilabel else proba.max(1)
