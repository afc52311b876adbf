"""The registry of competition metrics: the one place that knows each metric by name.

``metric_of(name)`` returns the ``Metric`` for ``data.metric``. Each declares its direction, what
it scores in a one-label competition (``LABELS``, ``ONE_PROBABILITY``, ``CLASS_PROBABILITIES``)
and in a multi-label one (``LABEL_DECISIONS``, ``LABEL_PROBABILITIES``; ``None`` where it has
no such form), the decision threshold it tunes on the OOF and how (``POSITIVE``: one threshold
on the second class's probability; ``PER_LABEL``; ``ORDINAL``: k - 1 cut points on the
expected class index), the submission kind it implies, and the traits the contract, the CV,
the blends, the planner and the bundle ask about. Callers never compare metric names
(tests/test_architecture.py checks): they ask the metric.

To add a metric: its scoring function and one entry in ``METRICS`` here (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn import metrics as skm

from pipeline import runtime

# what a form of a metric scores
LABELS = "labels"  # one label per row, decided from the probabilities
ONE_PROBABILITY = "one probability"  # the second class's probability (binary)
CLASS_PROBABILITIES = "probabilities per class"
LABEL_DECISIONS = "0/1 per label"
LABEL_PROBABILITIES = "a probability per label"
READS_PROBABILITIES = (ONE_PROBABILITY, CLASS_PROBABILITIES, LABEL_PROBABILITIES)
# how a form tunes its decision threshold on the OOF
POSITIVE = "positive"  # one threshold on P(second class), binary
PER_LABEL = "per label"  # one threshold per label
ORDINAL = "ordinal"  # k - 1 cut points on the expected class index

Threshold = float | list[float] | None
Scorer = Callable[[np.ndarray, np.ndarray, Any], float]


@dataclass(frozen=True)
class Form:
    """A metric on one shape of competition: what it scores, how, and the threshold it tunes."""

    scores: str
    fn: Scorer  # (y, proba, threshold or None) -> score
    tunes: str | None = None
    tune_in_search: bool = True  # a blend's weight search tunes the threshold at every step (cheap: F1's curve)


@dataclass(frozen=True)
class Metric:
    name: str
    greater_is_better: bool
    one: Form | None  # one label column: y (n,) class indices, proba (n, k)
    many: Form | None  # several 0/1 label columns: y (n, L), proba (n, L)
    submission: str  # the submission kind it implies: label, proba or ranked
    per_label: str | None = None  # multi-label: the one-label metric a per-label blend weight fits
    binary: bool = False  # defined on a positive class: needs exactly two classes
    ordinal: bool = False  # the classes are ordered numbers (essay scores)
    top_k: int | None = None  # a ranked submission lists this many labels per row
    calibrated: bool = False  # the probabilities' values count, not only their order or the decisions
    seeds_pay: bool = False  # averaging more seeds' probabilities can move it beyond the noise (the planner)
    about: str = ""

    # -- direction --------------------------------------------------------------------------
    @property
    def sign(self) -> int:
        """+1 where greater is better, -1 where smaller is: ``sign * (a - b) > 0`` means a is better."""
        return 1 if self.greater_is_better else -1

    def better(self, a: float, b: float | None) -> bool:
        """Is score ``a`` better than ``b`` (None or NaN count as worst)?"""
        if b is None or np.isnan(b):
            return not np.isnan(a)
        return a > b if self.greater_is_better else a < b

    def best(self, scores: Sequence[float]) -> int:
        """The index of the best of ``scores``."""
        return int(np.argmax(scores) if self.greater_is_better else np.argmin(scores))

    # -- the two shapes -----------------------------------------------------------------------
    def form(self, multilabel: bool) -> Form:
        f = self.many if multilabel else self.one
        if f is None:
            shape = "several 0/1 label columns" if multilabel else "one label column"
            raise ValueError(f"metric {self.name!r} has no form for {shape}")
        return f

    def tunes(self, multilabel: bool) -> str | None:
        """How a threshold is tuned on the OOF for this shape (POSITIVE, PER_LABEL, ORDINAL), or None."""
        f = self.many if multilabel else self.one
        return f.tunes if f is not None else None

    def reads_probabilities(self, multilabel: bool) -> bool:
        f = self.many if multilabel else self.one
        return f is not None and f.scores in READS_PROBABILITIES

    # -- scoring ------------------------------------------------------------------------------
    def score(self, y: np.ndarray, proba: np.ndarray, threshold: Threshold | np.ndarray = None) -> float:
        """The metric of labels ``y`` ((n,) class indices, or an (n, L) 0/1 matrix) against
        probabilities ``proba`` ((n, k), or (n, L) per label), at ``threshold`` where it takes one."""
        y = np.asarray(y)
        proba = np.asarray(proba, dtype=np.float64)
        f = self.form(y.ndim == 2)
        return float(f.fn(y, proba, threshold if f.tunes else None))

    def tune(self, y: np.ndarray, proba: np.ndarray) -> tuple[Threshold, float]:
        """(threshold, score at it) tuned on these rows: a float (POSITIVE) or a list (PER_LABEL,
        ORDINAL); (None, the plain score) where the metric tunes none."""
        y, proba = np.asarray(y), np.asarray(proba, dtype=np.float64)
        how = self.tunes(y.ndim == 2)
        if how == POSITIVE:
            return tune_threshold(y, proba[:, 1])
        if how == PER_LABEL:
            ts = [float(t) for t in tune_thresholds(y, proba)[0]]
            return ts, self.score(y, proba, ts)
        if how == ORDINAL:
            cuts, s = tune_cuts(y, proba, self.form(False).fn)
            return [float(c) for c in cuts], s
        return None, self.score(y, proba)

    def search_score(self, y: np.ndarray, proba: np.ndarray) -> float:
        """What a blend's weight search maximises (times ``sign``): the score at a threshold tuned
        on the same rows where tuning is cheap, else the plain score (the threshold is tuned
        once, after the search)."""
        f = self.form(np.ndim(y) == 2)
        return self.tune(y, proba)[1] if f.tunes and f.tune_in_search else self.score(y, proba)

    def decided(self, proba: np.ndarray, threshold: Threshold, multilabel: bool) -> np.ndarray:
        """The decisions at ``threshold`` as probabilities of 0 and 1 (one-hot per row, 0/1 per
        label): scored without a threshold they score the decisions (nested estimates)."""
        d = runtime.decisions(proba, threshold if self.tunes(multilabel) else None, multilabel)
        return d.astype(np.float64) if multilabel else np.eye(np.shape(proba)[1])[d]

    def labels(self, proba: np.ndarray, threshold: Threshold = None) -> np.ndarray:
        """One label per row (class indices) as this metric decides them: what a report's confusion
        matrix shows."""
        return runtime.decisions(proba, threshold if self.tunes(False) else None)

    # -- the contract -------------------------------------------------------------------------
    def refusal(self, classes: list[Any], label_col: str, submission: str, multilabel: bool) -> str | None:
        """Why this metric cannot score this competition (one line), or None."""
        if multilabel and self.many is None:
            alt = [m.name for m in METRICS.values() if m.many and m.per_label == self.name]
            use = " or ".join(alt) if alt else ", ".join(m.name for m in METRICS.values() if m.many)
            return (f"data.metric={self.name} scores one label; this competition has {len(classes)} label columns: "
                    f"use {use}")
        if not multilabel and self.one is None:
            alt = [m.name for m in METRICS.values() if m.one and self.per_label in (m.name, m.per_label)]
            return (f"data.metric={self.name} is for multi-label competitions (several 0/1 label columns); "
                    f"{label_col!r} is one label: use {' or '.join(alt)}")
        if self.binary and not multilabel and len(classes) != 2:
            return f"data.metric={self.name} needs a binary label; {label_col!r} has {len(classes)} classes"
        if self.ordinal and not multilabel and not all(_is_number(c) for c in classes):
            return (f"data.metric={self.name} scores ordered labels (numbers, such as essay scores); {label_col!r} "
                    f"has classes {', '.join(map(str, classes[:6]))}: set another data.metric")
        if (self.submission == "ranked") != (submission == "ranked"):
            if self.submission == "ranked":
                return (f"data.metric={self.name} scores the {self.top_k} most probable labels of each row, "
                        f"space-separated, but the submission kind is {submission!r}: set data.submission=ranked")
            return (f"data.submission=ranked lists the top labels of each row, which data.metric={self.name} "
                    f"does not score: use {', '.join(m.name for m in METRICS.values() if m.submission == 'ranked')}")
        if self.reads_probabilities(multilabel) and submission == "label":
            return (f"data.metric={self.name} scores probabilities, but data.submission=label; "
                    "drop one of the two settings")
        return None


def _is_number(v: Any) -> bool:
    try:
        return bool(np.isfinite(float(v)))
    except (TypeError, ValueError):
        return False


# -- the scoring functions ------------------------------------------------------------------
def _logloss(y: np.ndarray, p: np.ndarray, t: Any) -> float:
    p = np.clip(p, 1e-15, 1)
    return float(skm.log_loss(y, p / p.sum(1, keepdims=True), labels=list(range(p.shape[1]))))


def _logloss_per_label(y: np.ndarray, p: np.ndarray, t: Any) -> float:
    """The mean over labels of each column's binary log loss."""
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=0)))


def binary_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of 0/1 labels against scores: the Mann-Whitney U over average ranks (a tie counts
    half), the value sklearn's roc_auc_score gives, without its input checks. A blend's weight
    search scores thousands of candidate blends: on the multi-label shape (5,000 rows, 3 labels,
    5 members) sklearn's checks were 155 s of the ensemble stage's 184 s under a profiler."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC: only one class present in the labels")
    if not np.isfinite(score).all():
        raise ValueError("ROC AUC: the scores contain NaN or infinity")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _roc_auc(y: np.ndarray, p: np.ndarray, t: Any) -> float:
    return binary_auc(y, p[:, 1])


def _mean_auc(y: np.ndarray, p: np.ndarray, t: Any) -> float:
    """Mean column-wise ROC AUC; a label with one value in ``y`` is left out (it has none)."""
    aucs = [binary_auc(y[:, j], p[:, j]) for j in range(y.shape[1]) if len(np.unique(y[:, j])) == 2]
    return float(np.mean(aucs)) if aucs else float("nan")


def _f1(y: np.ndarray, p: np.ndarray, t: Any) -> float:
    return float(skm.f1_score(y, runtime.decisions(p, t), zero_division=0))


def _macro_f1(y: np.ndarray, p: np.ndarray, t: Any) -> float:
    return float(skm.f1_score(y, runtime.decisions(p), average="macro", zero_division=0))


def _accuracy(y: np.ndarray, p: np.ndarray, t: Any) -> float:
    return float(np.mean(runtime.decisions(p) == y))


def _f1_per_label(average: str) -> Scorer:
    def fn(y: np.ndarray, p: np.ndarray, t: Any) -> float:
        return float(skm.f1_score(y, runtime.decisions(p, t, multilabel=True), average=average, zero_division=0))

    return fn


def _exact_match(y: np.ndarray, p: np.ndarray, t: Any) -> float:
    """Every label of a row right (at 0.5)."""
    return float((runtime.decisions(p, None, multilabel=True) == y).all(axis=1).mean())


def quadratic_weighted_kappa(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Cohen's kappa with quadratic weights (i - j)^2 / (k - 1)^2 over class indices, as Kaggle
    (and sklearn's cohen_kappa_score(weights="quadratic")) computes it; 0 where chance
    agreement is total (one class in both)."""
    observed = np.bincount(np.asarray(y) * k + np.asarray(pred), minlength=k * k).reshape(k, k).astype(np.float64)
    w = np.subtract.outer(np.arange(k), np.arange(k)) ** 2 / max((k - 1) ** 2, 1)
    expected = np.outer(observed.sum(1), observed.sum(0)) / max(observed.sum(), 1.0)
    chance = float((w * expected).sum())
    return 1.0 - float((w * observed).sum()) / chance if chance > 0 else 0.0


def _qwk(y: np.ndarray, p: np.ndarray, t: Any) -> float:
    """QWK of the labels cut from the expected class index: at ``t``'s cut points, else at the
    halves between classes (the expected index rounded)."""
    cuts = np.arange(p.shape[1] - 1) + 0.5 if t is None else t
    return quadratic_weighted_kappa(y, runtime.decisions(p, list(np.ravel(cuts))), p.shape[1])


def _map_at(k: int) -> Scorer:
    def fn(y: np.ndarray, p: np.ndarray, t: Any) -> float:
        """MAP@k with one true label per row: 1 / its rank among the k labels listed, 0 if absent."""
        hit = runtime.top_classes(p, k) == np.asarray(y)[:, None]
        return float((hit / np.arange(1, hit.shape[1] + 1)).sum(1).mean())

    return fn


def _map_at_k(k: int) -> Metric:
    return Metric(f"map@{k}", True, Form(CLASS_PROBABILITIES, _map_at(k)), None, "ranked", top_k=k, seeds_pay=True,
                  about=f"mean average precision of the {k} most probable labels, space-separated (Kaggle's MAP@{k})")


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("f1", True, Form(LABELS, _f1, POSITIVE), None, "label", binary=True,
           about="F1 of the positive (second) class, at the threshold tuned on the OOF"),
    Metric("macro_f1", True, Form(LABELS, _macro_f1), Form(LABEL_DECISIONS, _f1_per_label("macro"), PER_LABEL),
           "label", per_label="f1", about="F1 per class (per label) averaged"),
    Metric("micro_f1", True, None, Form(LABEL_DECISIONS, _f1_per_label("micro"), PER_LABEL), "label",
           per_label="f1", about="F1 over every label decision"),
    Metric("accuracy", True, Form(LABELS, _accuracy), Form(LABEL_DECISIONS, _exact_match), "label",
           per_label="accuracy", about="the share of rows right (multi-label: every label of the row)"),
    Metric("logloss", False, Form(CLASS_PROBABILITIES, _logloss), Form(LABEL_PROBABILITIES, _logloss_per_label),
           "proba", per_label="logloss", calibrated=True, seeds_pay=True,
           about="log loss (multi-label: the mean of each label's binary log loss)"),
    Metric("roc_auc", True, Form(ONE_PROBABILITY, _roc_auc), None, "proba", binary=True, seeds_pay=True,
           about="ROC AUC of the positive (second) class"),
    Metric("mean_auc", True, None, Form(LABEL_PROBABILITIES, _mean_auc), "proba", per_label="roc_auc",
           about="mean column-wise ROC AUC (Jigsaw)"),
    Metric("qwk", True, Form(LABELS, _qwk, ORDINAL, tune_in_search=False), None, "label", ordinal=True,
           about="quadratic weighted kappa of ordered labels, cut from the expected class at cut points tuned "
                 "on the OOF (essay scoring)"),
    _map_at_k(3),
    _map_at_k(5),
)}
NAMES = tuple(METRICS)
LOGLOSS = METRICS["logloss"]  # the smooth loss a blend's weights are fitted on first


def metric_of(name: str) -> Metric:
    """The metric called ``name`` (``data.metric``)."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}") from None


def score(name: str, y: np.ndarray, proba: np.ndarray, threshold: Threshold | np.ndarray = None) -> float:
    """``metric_of(name).score``: integer labels ``y`` (n,) against probabilities ``proba`` (n, k);
    or, for a multi-label competition, a 0/1 matrix ``y`` (n, L) against per-label probabilities."""
    return metric_of(name).score(y, proba, threshold)


def better(name: str, a: float, b: float | None) -> bool:
    """Is score ``a`` better than ``b`` under metric ``name`` (None counts as worst)?"""
    return metric_of(name).better(a, b)


# -- thresholds tuned on the OOF ------------------------------------------------------------
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


def tune_thresholds(y: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the threshold on its probability that maximises its F1 on (out-of-fold)
    predictions, and that F1 (macro F1 is their mean; micro F1 rises with each of them)."""
    pairs = [tune_threshold(y[:, j], proba[:, j]) for j in range(y.shape[1])]
    return np.array([t for t, _ in pairs]), np.array([f for _, f in pairs])


def tune_cuts(y: np.ndarray, proba: np.ndarray, fn: Scorer, rounds: int = 3,
              grid: int = 40) -> tuple[np.ndarray, float]:
    """Cut points on the expected class index that maximise ``fn`` (QWK) on (out-of-fold)
    predictions, and that score: from the halves between classes, each cut in turn moved to
    the best of ``grid`` quantiles of the expected index between its neighbours, for up to
    ``rounds`` passes (coordinate ascent, deterministic; the cuts stay in order)."""
    k = proba.shape[1]
    ev = runtime.expected_class(proba)
    cuts = np.arange(k - 1) + 0.5
    best = fn(y, proba, cuts)
    for _ in range(rounds):
        moved = False
        for j in range(k - 1):
            lo = cuts[j - 1] if j > 0 else -np.inf
            hi = cuts[j + 1] if j < k - 2 else np.inf
            inside = ev[(ev > lo) & (ev < hi)]
            if not len(inside):
                continue
            for c in np.unique(np.quantile(inside, np.linspace(0, 1, grid))):
                trial = cuts.copy()
                trial[j] = c
                s = fn(y, proba, trial)
                if s > best + 1e-12:
                    best, cuts, moved = s, trial, True
        if not moved:
            break
    return cuts, float(best)


TUNED_WORDS = {POSITIVE: "threshold", PER_LABEL: "per-label thresholds", ORDINAL: "cut points"}


def tuned(entry: dict[str, Any]) -> tuple[float, str]:
    """A cv.json's ``threshold`` entry: (the score at the tuned threshold, the threshold in
    words). Entries written before other metrics than F1 tuned one say "f1" and no "how"."""
    value = entry["value"]
    how = entry.get("how") or (PER_LABEL if isinstance(value, list) else POSITIVE)
    shown = [round(v, 3) for v in value] if isinstance(value, list) else value
    return entry["score"] if "score" in entry else entry["f1"], f"{TUNED_WORDS[how]} {shown}"


# -- the rest -------------------------------------------------------------------------------
def paired_se(diffs: np.ndarray) -> float:
    """The standard error of fold-wise score differences: the noise a gain must beat (0 with one
    fold, where there is no spread to measure)."""
    d = np.asarray(diffs, dtype=np.float64)
    return float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0


def confidence(proba: np.ndarray, multilabel: bool = False) -> np.ndarray:
    """Per row, how sure the model is: the top class's probability; multi-label: the mean over
    labels of max(p, 1 - p) (chance is 1/k, resp. 1/2)."""
    proba = np.asarray(proba)
    return np.maximum(proba, 1 - proba).mean(axis=1) if multilabel else proba.max(1)


def confidence_histogram(proba: np.ndarray, bins: int = 10, multilabel: bool = False) -> list[int]:
    """Counts of ``confidence`` in equal bins from chance (1/k, multi-label 1/2) to 1."""
    chance = 0.5 if multilabel else 1 / proba.shape[1]
    return np.histogram(confidence(proba, multilabel), bins=bins, range=(chance, 1.0))[0].tolist()
