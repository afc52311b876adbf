"""Blending the runs' out-of-fold predictions: the methods, their nested evaluation, the choice.

Methods compared: the best single run, plain probability mean, rank mean, majority vote,
non-negative weights summing to 1 fitted with scipy.optimize, and stacking (a regularised
logistic regression over the members' log-probabilities). Each gets an in-sample score
(fitted and scored on all OOF) and a nested one (fitted on folds != k, scored on fold k):
only the nested one is an honest estimate. ``one_se_choice`` takes the simplest method whose
nested score is within one standard error of the fold-wise differences from the best. Where the
metric scores decisions (accuracy, F1), a tie must also hold on each method's calibrated log loss
(``calibrated_logloss``): a decision moves the metric by whole rows, and at a few hundred rows a
fold its fold-wise differences hide what the probabilities show (benchmarks/ensemble_choice.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from pipeline.core.files import DataError
from pipeline.core.metrics import LOGLOSS, metric_of, paired_se, score
from pipeline.core.paths import Paths
from pipeline.cv.store import finished_runs
from pipeline.runtime import blend as _blend
from pipeline.runtime import mix as _mix
from pipeline.runtime import rank_mean, vote  # noqa: F401 - the blend primitives live with the bundle's code
from pipeline.runtime import stack_features as _stack_features

log = logging.getLogger(__name__)
METHODS = ("best_single", "mean", "rank", "vote", "weighted", "weighted_per_label", "stack")


def thresholds_for(y: np.ndarray, proba: np.ndarray, metric: str) -> float | list[float] | None:
    """The decision threshold(s) ``metric`` tunes on these OOF rows (binary F1's one, one per
    label, ordinal cut points), or None."""
    return metric_of(metric).tune(y, proba)[0]


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


class WeightedBlender:
    """Non-negative weights summing to 1 over the models' probabilities (scikit-learn style).

    ``objective="logloss"`` minimises the smooth log loss with SLSQP; ``"metric"`` then
    searches (Nelder-Mead over softmax logits, so the simplex constraint holds by
    construction) for the weights that best score ``metric`` itself, from the log-loss
    solution and from equal weights.
    """

    def __init__(self, metric: str = "logloss", objective: str = "metric", random_state: int = 0) -> None:
        self.metric = metric
        self.objective = objective
        self.random_state = random_state

    def _loss(self, probas: np.ndarray, y: np.ndarray, w: np.ndarray, metric: str) -> float:
        m = metric_of(metric)  # F1 at its best threshold(s): tuned after, on the same OOF
        return -m.sign * m.search_score(y, _mix(probas, w))

    def fit(self, probas: np.ndarray, y: np.ndarray) -> WeightedBlender:
        probas = np.asarray(probas, dtype=np.float64)
        m = probas.shape[0]
        equal = np.full(m, 1.0 / m)
        res = optimize.minimize(lambda w: self._loss(probas, y, np.clip(w, 0, 1) / max(np.clip(w, 0, 1).sum(), 1e-12),
                                                     LOGLOSS.name),
                                equal, method="SLSQP", bounds=[(0, 1)] * m,
                                constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
        w = np.clip(res.x, 0, None)
        w = w / w.sum() if w.sum() > 0 else equal
        if self.objective == "metric" and metric_of(self.metric) is not LOGLOSS and m > 1:  # that one is done
            best_w, best = w, self._loss(probas, y, w, self.metric)
            rng = np.random.default_rng(self.random_state)
            starts = [np.log(np.maximum(w, 1e-6)), np.zeros(m), *[rng.normal(0, 1, m) for _ in range(3)]]
            for z0 in starts:
                r = optimize.minimize(lambda z: self._loss(probas, y, _softmax(z), self.metric), z0,
                                      method="Nelder-Mead", options={"maxiter": 200 * m, "xatol": 1e-4,
                                                                      "fatol": 1e-6})
                cand = _softmax(r.x)
                val = self._loss(probas, y, cand, self.metric)
                if val < best - 1e-12:
                    best_w, best = cand, val
            w = best_w
        self.weights_ = w
        return self

    def predict_proba(self, probas: np.ndarray) -> np.ndarray:
        return _mix(np.asarray(probas, dtype=np.float64), self.weights_)


@dataclass
class Blend:
    method: str
    weights: np.ndarray  # (members,), or (labels, members) for weighted_per_label
    threshold: float | list[float] | None
    stacker: dict[str, Any] | None = None  # method "stack": the logistic regression's coef and intercept
    multilabel: bool = False


def fit_stacker(probas: np.ndarray, y: np.ndarray, C: float) -> dict[str, Any]:
    """Stacking: an L2-regularised (multinomial) logistic regression over the members'
    log-probabilities, fitted on the OOF rows it is given (nested: never the scored fold's);
    multi-label: one per label, over the members' logits of that label."""
    from sklearn.linear_model import LogisticRegression

    if np.ndim(y) == 2:
        from pipeline.modeling.classical import _binary_lr, _coef
        from pipeline.runtime import _logit

        per_label = []
        for j in range(y.shape[1]):
            X = _logit(probas[:, :, j]).T
            coef, intercept = _coef(_binary_lr(X, y[:, j], C, 0, 2000), X.shape[1])
            per_label.append({"coef": coef.tolist(), "intercept": [intercept]})
        return {"per_label": per_label, "C": C}
    lr = LogisticRegression(C=C, max_iter=2000).fit(_stack_features(probas), y)
    if len(lr.classes_) != probas.shape[2]:
        raise DataError(f"ensemble: stacking saw {len(lr.classes_)} of {probas.shape[2]} classes in its rows")
    return {"coef": lr.coef_.tolist(), "intercept": lr.intercept_.tolist(), "C": C}


def member_coefs(stacker: dict[str, Any], n_members: int) -> np.ndarray:
    """What a stacker gives each member, one number a member: its coefficient on the member's
    logit (binary), the mean over labels of those (multi-label), or the mean over classes of the
    coefficient of class c on the member's log p(c) (multinomial). For reading only: a stack is
    not a weighted mean, and a member's coefficient may be negative (it corrects another)."""
    if "per_label" in stacker:
        return np.mean([np.asarray(s["coef"], dtype=np.float64).ravel() for s in stacker["per_label"]], axis=0)
    coef = np.asarray(stacker["coef"], dtype=np.float64)
    if coef.shape[0] == 1:
        return coef[0]
    k = coef.shape[0]
    return np.array([np.mean([coef[c, i * k + c] for c in range(k)]) for i in range(n_members)])


def fit_blend(method: str, probas: np.ndarray, y: np.ndarray, metric: str, objective: str,
              tune_thr: bool, stack_C: float = 1.0) -> Blend:
    m = probas.shape[0]
    if method == "best_single":  # picked as it is then used: for F1, at its own tuned threshold
        scores = [metric_of(metric).tune(y, p)[1] if tune_thr else score(metric, y, p) for p in probas]
        w = np.eye(m)[metric_of(metric).best(scores)]
    elif method == "weighted":
        w = WeightedBlender(metric, objective).fit(probas, y).weights_
    elif method == "weighted_per_label":  # a weight set per label, each fitted on its label alone
        one = metric_of(metric).per_label
        w = np.stack([WeightedBlender(one, objective).fit(_as_binary(probas[:, :, j]), y[:, j]).weights_
                      for j in range(y.shape[1])])
    else:
        w = np.full(m, 1.0 / m)
    blend = Blend(method, w, None, fit_stacker(probas, y, stack_C) if method == "stack" else None,
                  multilabel=np.ndim(y) == 2)
    if tune_thr:
        blend.threshold = thresholds_for(y, apply_blend(blend, probas), metric)
    return blend


def _as_binary(p: np.ndarray) -> np.ndarray:
    """(members, n) probabilities of one label -> (members, n, 2), as a binary competition's."""
    return np.stack([1 - p, p], axis=-1)


def apply_blend(blend: Blend, probas: np.ndarray) -> np.ndarray:
    return _blend(blend.method, blend.weights, probas, blend.stacker, blend.multilabel)


@dataclass
class MethodScore:
    """One blend method evaluated on OOF: fitted on all of it, and nested (fold k from the others)."""

    method: str
    in_sample: float
    nested: float
    fold_scores: np.ndarray  # the nested score per fold: the noise a gain must beat
    blend: Blend
    fold_calibrated: np.ndarray | None = None  # single-label: calibrated_logloss of the nested probabilities

    @property
    def calibrated(self) -> float | None:
        return None if self.fold_calibrated is None else float(np.mean(self.fold_calibrated))


def _per_fold(method: str, probas: np.ndarray, y: np.ndarray, folds: np.ndarray, metric: str, objective: str,
              tune_thr: bool, stack_C: float) -> Iterator[tuple[np.ndarray, Blend, np.ndarray]]:
    """Per fold k: its rows, the blend fitted on the other folds, and fold k blended by it."""
    for k in np.unique(folds):
        tr, va = folds != k, folds == k
        b = fit_blend(method, probas[:, tr], y[tr], metric, objective, tune_thr, stack_C)
        yield va, b, apply_blend(b, probas[:, va])


def nested_proba(method: str, probas: np.ndarray, y: np.ndarray, folds: np.ndarray, metric: str, objective: str,
                 tune_thr: bool, stack_C: float = 1.0) -> np.ndarray:
    """Each fold's rows blended by the blend fitted on the other folds: probabilities in which
    no row's own label took part (a student distils from them: pipeline.cv.distill)."""
    out = np.zeros(probas.shape[1:])
    for va, _, pred in _per_fold(method, probas, y, folds, metric, objective, tune_thr, stack_C):
        out[va] = pred
    return out


def evaluate(method: str, probas: np.ndarray, y: np.ndarray, folds: np.ndarray, metric: str, objective: str,
             tune_thr: bool, stack_C: float = 1.0) -> MethodScore:
    blend = fit_blend(method, probas, y, metric, objective, tune_thr, stack_C)
    in_sample = score(metric, y, apply_blend(blend, probas), blend.threshold)
    nested_pred = np.zeros(probas.shape[1:])
    raw = np.zeros(probas.shape[1:])
    for va, b, pred in _per_fold(method, probas, y, folds, metric, objective, tune_thr, stack_C):
        nested_pred[va] = raw[va] = pred
        if tune_thr:  # fold k's decisions at the threshold(s) the other folds chose
            nested_pred[va] = metric_of(metric).decided(nested_pred[va], b.threshold, np.ndim(y) == 2)
    nested = score(metric, y, nested_pred)
    fold_scores = np.array([score(metric, y[folds == k], nested_pred[folds == k]) for k in np.unique(folds)])
    calibrated = calibrated_logloss(raw, y, folds, stack_C) if np.ndim(y) == 1 else None
    return MethodScore(method, in_sample, nested, fold_scores, blend, calibrated)


def calibrated_logloss(proba: np.ndarray, y: np.ndarray, folds: np.ndarray, C: float = 1.0) -> np.ndarray:
    """Per fold k: the log loss of ``proba`` (n, classes; nested, so no row's own label in it)
    after a logistic recalibration fitted on the other folds' rows (a stack of one): what the
    predictions know of the label whatever their scale, so a member's over- or under-confidence
    neither flatters nor sinks it beside a stack, which is calibrated by construction."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    n_classes = proba.shape[1]
    X = _stack_features(proba[None])
    out = []
    for k in np.unique(folds):
        tr, va = folds != k, folds == k
        p = np.full((int(va.sum()), n_classes), 1e-6)
        if len(np.unique(y[tr])) < 2:  # nothing to calibrate against: the other folds' class shares
            p[:, np.unique(y[tr])] = 1.0
        else:
            lr = LogisticRegression(C=C, max_iter=2000).fit(X[tr], y[tr])
            p[:, lr.classes_] = lr.predict_proba(X[va])
        p = np.clip(p, 1e-6, None)
        out.append(log_loss(y[va], p / p.sum(1, keepdims=True), labels=list(range(n_classes))))
    return np.array(out)


# Simpler first: a blend with fitted weights must earn its extra freedom.
COMPLEXITY = {"best_single": 0, "mean": 1, "rank": 1, "vote": 1, "weighted": 2, "weighted_per_label": 3,
              "stack": 3}


def reads_probabilities(results: list[MethodScore], metric: str) -> bool:
    """Does the one-SE rule also read the calibrated log loss? Where the metric scores
    single-label decisions at a threshold or the argmax (accuracy, F1, macro F1) and every method
    has probabilities; not for probability or rank metrics, QWK's cut points, multi-label."""
    m = metric_of(metric)
    return m.submission == "label" and not m.ordinal and all(r.fold_calibrated is not None for r in results)


def informed_ties(ties: list[MethodScore]) -> tuple[list[MethodScore], dict[str, float], MethodScore]:
    """Of methods that tie on the metric, those whose calibrated log loss is within one standard
    error of the fold-wise differences from the lowest among them. Returns (kept, SE per
    method, the lowest)."""
    sharpest = min(ties, key=lambda r: (r.calibrated, COMPLEXITY[r.method]))
    ses = {r.method: paired_se(r.fold_calibrated - sharpest.fold_calibrated) for r in ties}
    return [r for r in ties if r.calibrated - sharpest.calibrated <= ses[r.method] + 1e-12], ses, sharpest


def one_se_choice(results: list[MethodScore], metric: str) -> tuple[MethodScore, dict[str, float], MethodScore]:
    """The one-standard-error rule: the best nested score sets the bar; every method whose
    nested score is within one standard error of the fold-wise differences from it ties; the
    simplest of those is chosen (then the better score). Where the metric scores decisions
    (``reads_probabilities``), a tie must also hold on the calibrated log loss (``informed_ties``):
    a simpler method that knows measurably less than a tied one gives way to it. Returns
    (chosen, SE per method on the metric, best)."""
    sign = metric_of(metric).sign
    best = max(results, key=lambda r: (sign * r.nested, -COMPLEXITY[r.method]))
    ses = {r.method: paired_se(sign * (best.fold_scores - r.fold_scores)) for r in results}
    ties = [r for r in results if sign * (best.nested - r.nested) <= ses[r.method] + 1e-12]
    if reads_probabilities(results, metric):
        ties = informed_ties(ties)[0]
    return min(ties, key=lambda r: (COMPLEXITY[r.method], -sign * r.nested)), ses, best


def applicable(methods: list[str], metric: str, multilabel: bool = False) -> tuple[list[str], dict[str, str]]:
    """Methods whose output the metric can score as meant (and the shape allows); the others
    with the reason."""
    skipped = {}
    if metric_of(metric).calibrated:
        skipped = {"rank": f"ranks are not probabilities: {metric} would score made-up confidences",
                   "vote": f"vote shares of 0 or 1 are not probabilities: {metric} punishes them without limit"}
    if multilabel:
        skipped["vote"] = "a vote takes each member's one class; a multi-label row has several"
    else:
        methods = [m for m in methods if m != "weighted_per_label"]  # one label: weighted itself
    return [m for m in methods if m not in skipped], {m: r for m, r in skipped.items() if m in methods}


def load_runs(paths: Paths, runs: list[str] | None) -> tuple[list[str], list[pd.DataFrame], list[pd.DataFrame]]:
    """Every finished run's OOF and test predictions, aligned by id, checked to share the folds."""
    runs = finished_runs(paths) if runs is None else runs
    if not runs:
        raise DataError(f"{paths.models}: no finished run (models/<run>/oof.parquet); run `make train` first")
    oofs = [pd.read_parquet(paths.run(r).oof) for r in runs]
    tests = [pd.read_parquet(paths.run(r).test) for r in runs]
    ref_oof, ref_test = oofs[0], tests[0]
    for run, oof, test in zip(runs, oofs, tests):
        if set(oof["id"]) != set(ref_oof["id"]) or len(oof) != len(ref_oof):
            raise DataError(f"{paths.run(run).oof}: its ids differ from {runs[0]!r}'s; retrain it on the current folds")
        if set(test["id"]) != set(ref_test["id"]):
            raise DataError(f"{paths.run(run).test}: its ids differ from {runs[0]!r}'s")
    oofs = [o.set_index("id").loc[ref_oof["id"]].reset_index() for o in oofs]
    tests = [t.set_index("id").loc[ref_test["id"]].reset_index() for t in tests]
    for run, o in zip(runs, oofs):
        if not (o["fold"].to_numpy() == oofs[0]["fold"].to_numpy()).all():
            raise DataError(f"{paths.run(run).dir}: trained on other folds than {runs[0]!r}")
    return runs, oofs, tests
