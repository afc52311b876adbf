"""ensemble: blend the runs' out-of-fold predictions; weights and threshold fitted on OOF only.

Usage: python -m pipeline ensemble [--set ensemble.runs=[tfidf,minilm] ensemble.method=weighted]
Reads:  models/<run>/{oof,test}.parquet for every finished run (or ensemble.runs)
Writes: ensembles/<name>/{weights.json, oof.parquet, test.parquet, cv.json, methods.csv}

Methods compared in one table: the best single run, plain probability mean, rank mean,
majority vote, non-negative weights summing to 1 fitted with scipy.optimize, and stacking
(a regularised logistic regression over the members' log-probabilities). Each gets
an in-sample score (fitted and scored on all OOF) and a nested one (fitted on folds != k,
scored on fold k): only the nested one is an honest estimate of the blend's gain. The choice
(`ensemble.method=auto`) takes the simplest method whose nested score is within one standard
error of the fold-wise differences from the best one: a fitted blend must beat plain
averaging or the best single run by more than the folds disagree. Methods the metric cannot
score as meant (rank and vote under log loss) are skipped, with the reason logged.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize

from pipeline.config import Config
from pipeline.contract import Schema
from pipeline.io import DataError, read_json, write_csv, write_json, write_parquet
from pipeline.metrics import GREATER_IS_BETTER, paired_se, score, tune_threshold
from pipeline.paths import Paths
from pipeline.runtime import blend as _blend
from pipeline.runtime import mix as _mix
from pipeline.runtime import rank_mean, vote  # noqa: F401 - the blend primitives live with the bundle's code
from pipeline.runtime import stack_features as _stack_features
from pipeline.train import proba_cols
from pipeline.transaction import inputs_of, publish, published

log = logging.getLogger(__name__)
METHODS = ("best_single", "mean", "rank", "vote", "weighted", "stack")


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
        if metric == "f1":  # F1 at its best threshold: the threshold is tuned after, on the same OOF
            return -float(tune_threshold(y, _mix(probas, w)[:, 1])[1])
        s = score(metric, y, _mix(probas, w))
        return s if not GREATER_IS_BETTER[metric] else -s

    def fit(self, probas: np.ndarray, y: np.ndarray) -> WeightedBlender:
        probas = np.asarray(probas, dtype=np.float64)
        m = probas.shape[0]
        equal = np.full(m, 1.0 / m)
        res = optimize.minimize(lambda w: self._loss(probas, y, np.clip(w, 0, 1) / max(np.clip(w, 0, 1).sum(), 1e-12),
                                                     "logloss"),
                                equal, method="SLSQP", bounds=[(0, 1)] * m,
                                constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1}])
        w = np.clip(res.x, 0, None)
        w = w / w.sum() if w.sum() > 0 else equal
        if self.objective == "metric" and self.metric != "logloss" and m > 1:
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
    weights: np.ndarray
    threshold: float | None
    stacker: dict[str, Any] | None = None  # method "stack": the logistic regression's coef and intercept


def fit_stacker(probas: np.ndarray, y: np.ndarray, C: float) -> dict[str, Any]:
    """Stacking: an L2-regularised (multinomial) logistic regression over the members'
    log-probabilities, fitted on the OOF rows it is given (nested: never the scored fold's)."""
    from sklearn.linear_model import LogisticRegression

    lr = LogisticRegression(C=C, max_iter=2000).fit(_stack_features(probas), y)
    if len(lr.classes_) != probas.shape[2]:
        raise DataError(f"ensemble: stacking saw {len(lr.classes_)} of {probas.shape[2]} classes in its rows")
    return {"coef": lr.coef_.tolist(), "intercept": lr.intercept_.tolist(), "C": C}


def fit_blend(method: str, probas: np.ndarray, y: np.ndarray, metric: str, objective: str,
              tune_thr: bool, stack_C: float = 1.0) -> Blend:
    m = probas.shape[0]
    if method == "best_single":  # picked as it is then used: for F1, at its own tuned threshold
        scores = [score(metric, y, p, tune_threshold(y, p[:, 1])[0] if tune_thr else None) for p in probas]
        i = int(np.argmax(scores) if GREATER_IS_BETTER[metric] else np.argmin(scores))
        w = np.eye(m)[i]
    elif method == "weighted":
        w = WeightedBlender(metric, objective).fit(probas, y).weights_
    else:
        w = np.full(m, 1.0 / m)
    blend = Blend(method, w, None, fit_stacker(probas, y, stack_C) if method == "stack" else None)
    if tune_thr:
        blend.threshold = tune_threshold(y, apply_blend(blend, probas)[:, 1])[0]
    return blend


def apply_blend(blend: Blend, probas: np.ndarray) -> np.ndarray:
    return _blend(blend.method, blend.weights, probas, blend.stacker)


def evaluate(method: str, probas: np.ndarray, y: np.ndarray, folds: np.ndarray, metric: str, objective: str,
             tune_thr: bool, stack_C: float = 1.0) -> dict[str, Any]:
    blend = fit_blend(method, probas, y, metric, objective, tune_thr, stack_C)
    in_sample = score(metric, y, apply_blend(blend, probas), blend.threshold)
    nested_pred = np.zeros(probas.shape[1:])
    thresholds = np.zeros(len(y))
    for k in np.unique(folds):
        tr, va = folds != k, folds == k
        b = fit_blend(method, probas[:, tr], y[tr], metric, objective, tune_thr, stack_C)
        nested_pred[va] = apply_blend(b, probas[:, va])
        thresholds[va] = b.threshold if b.threshold is not None else 0.5
    if tune_thr:
        nested_pred = np.eye(2)[(nested_pred[:, 1] >= thresholds).astype(int)]
    nested = score(metric, y, nested_pred)
    fold_scores = np.array([score(metric, y[folds == k], nested_pred[folds == k]) for k in np.unique(folds)])
    return {"method": method, "in_sample": in_sample, "nested": nested, "fold_scores": fold_scores, "blend": blend}


# Simpler first: a blend with fitted weights must earn its extra freedom.
COMPLEXITY = {"best_single": 0, "mean": 1, "rank": 1, "vote": 1, "weighted": 2, "stack": 3}


def one_se_choice(results: list[dict[str, Any]], metric: str) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
    """The one-standard-error rule: the best nested score sets the bar; every method whose
    nested score is within one standard error of the fold-wise differences from it ties; the
    simplest of those is chosen (then the better score). Returns (chosen, SE per method, best)."""
    sign = 1 if GREATER_IS_BETTER[metric] else -1
    best = max(results, key=lambda r: (sign * r["nested"], -COMPLEXITY[r["method"]]))
    ses = {}
    for r in results:
        d = sign * (best["fold_scores"] - r["fold_scores"])
        ses[r["method"]] = paired_se(d)
    ties = [r for r in results if sign * (best["nested"] - r["nested"]) <= ses[r["method"]] + 1e-12]
    return min(ties, key=lambda r: (COMPLEXITY[r["method"]], -sign * r["nested"])), ses, best


def applicable(methods: list[str], metric: str) -> tuple[list[str], dict[str, str]]:
    """Methods whose output the metric can score as meant; the others with the reason."""
    skipped = {}
    if metric == "logloss":
        skipped = {"rank": "ranks are not probabilities: log loss would score made-up confidences",
                   "vote": "vote shares of 0 or 1 are not probabilities: log loss punishes them without limit"}
    return [m for m in methods if m not in skipped], {m: r for m, r in skipped.items() if m in methods}


@dataclass
class EnsembleResult:
    table: pd.DataFrame
    chosen: str
    weights: dict[str, float]
    threshold: float | None
    cv: dict[str, Any]


def finished_runs(paths: Paths) -> list[str]:
    """Runs whose outputs were published whole (a manifest); a run folder without one was
    killed while publishing, or trained only some folds: left out, and said so."""
    runs = published(paths, "train")
    for d in sorted(p.parent for p in paths.models.glob("*/cv.json")):
        if d.name not in runs:
            log.warning("ensemble: %s has outputs but no manifest (killed while publishing?): left out; rerun "
                        "`make train` for it", d)
    return runs


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    """Every run blended, complete and made from the current clean/folds, or a one-line error."""
    runs = finished_runs(paths) if cfg.ensemble.runs is None else cfg.ensemble.runs
    return inputs_of(paths, [f"train-{run}" for run in runs], config={"ensemble": asdict(cfg.ensemble)})


def load_runs(paths: Paths, runs: list[str] | None) -> tuple[list[str], list[pd.DataFrame], list[pd.DataFrame]]:
    runs = finished_runs(paths) if runs is None else runs
    if not runs:
        raise DataError(f"{paths.models}: no finished run (models/<run>/oof.parquet); run `make train` first")
    oofs, tests = [], []
    for run in runs:
        d = paths.run_dir(run)
        oofs.append(pd.read_parquet(d / "oof.parquet"))
        tests.append(pd.read_parquet(d / "test.parquet"))
    ref_oof, ref_test = oofs[0], tests[0]
    for run, oof, test in zip(runs, oofs, tests):
        if set(oof["id"]) != set(ref_oof["id"]) or len(oof) != len(ref_oof):
            raise DataError(f"{paths.run_dir(run) / 'oof.parquet'}: its ids differ from {runs[0]!r}'s; "
                            "retrain it on the current folds")
        if set(test["id"]) != set(ref_test["id"]):
            raise DataError(f"{paths.run_dir(run) / 'test.parquet'}: its ids differ from {runs[0]!r}'s")
    oofs = [o.set_index("id").loc[ref_oof["id"]].reset_index() for o in oofs]
    tests = [t.set_index("id").loc[ref_test["id"]].reset_index() for t in tests]
    for run, o in zip(runs, oofs):
        if not (o["fold"].to_numpy() == oofs[0]["fold"].to_numpy()).all():
            raise DataError(f"{paths.run_dir(run)}: trained on other folds than {runs[0]!r}")
    return runs, oofs, tests


def run(cfg: Config, paths: Paths, force: bool = False) -> EnsembleResult:
    inputs = stage_inputs(cfg, paths)
    runs, oofs, tests = load_runs(paths, cfg.ensemble.runs)
    schema = Schema.load(paths.schema_json)
    cols = proba_cols(schema.n_classes)
    probas = np.stack([o[cols].to_numpy(np.float64) for o in oofs])
    test_probas = np.stack([t[cols].to_numpy(np.float64) for t in tests])
    y, folds = oofs[0]["label"].to_numpy(), oofs[0]["fold"].to_numpy()
    tune_thr = schema.binary and schema.metric == "f1"
    methods, skipped = applicable([m for m in METHODS if len(runs) > 1 or m == "best_single"], schema.metric)
    for m, why in skipped.items():
        log.info("ensemble: %s skipped for %s: %s", m, schema.metric, why)
    # Choose, fit and score only on folds that no run's select/tune validated on: there the
    # members' OOF is honest, so the ensemble's estimate is too (the full-fold one is beside it).
    searched = sorted({k for run in runs for k in read_json(paths.run_dir(run) / "cv.json").get("searched_folds", [])})
    scope = ~np.isin(folds, searched)
    if len(np.unique(folds[scope])) < 2:
        log.warning("ensemble: fewer than two folds untouched by select/tune (searched %s): scoring on all folds, "
                    "which is optimistic", searched)
        scope[:] = True
    results = [evaluate(m, probas[:, scope], y[scope], folds[scope], schema.metric, cfg.ensemble.objective, tune_thr,
                        cfg.ensemble.stack_C) for m in methods]
    sign = 1 if GREATER_IS_BETTER[schema.metric] else -1
    chosen, ses, best = one_se_choice(results, schema.metric)
    if cfg.ensemble.method != "auto":
        chosen = next((r for r in results if r["method"] == cfg.ensemble.method), None)
        if chosen is None:
            why = skipped.get(cfg.ensemble.method, f"needs at least two runs; found {runs}")
            raise DataError(f"ensemble.method={cfg.ensemble.method}: {why}")
    elif chosen is not best:
        log.info("ensemble: %s has the best nested %s (%.4f) but %s (%.4f) is within one standard error of the "
                 "fold-wise differences (%.4f) and simpler: %s is chosen", best["method"], schema.metric,
                 best["nested"], chosen["method"], chosen["nested"], ses[chosen["method"]], chosen["method"])
    blend: Blend = chosen["blend"]
    ys, ps = y[scope], probas[:, scope]
    # each run alone, in-sample (threshold tuned on the scored folds themselves) and nested as the
    # blends are (threshold from the other folds): the first flatters a run by what its threshold
    # learns of the scored fold
    alone = [evaluate("best_single", ps[i:i + 1], ys, folds[scope], schema.metric, cfg.ensemble.objective, tune_thr)
             for i in range(len(runs))]
    singles = {run: a["in_sample"] for run, a in zip(runs, alone)}
    singles_nested = {run: a["nested"] for run, a in zip(runs, alone)}
    table = pd.DataFrame([{"method": r["method"], "in_sample": round(r["in_sample"], 5), "nested": round(r["nested"], 5),
                           "weights": " ".join(f"{run}={w:.3f}" for run, w in zip(runs, r["blend"].weights)),
                           "threshold": r["blend"].threshold,
                           "behind_best": round(sign * (best["nested"] - r["nested"]), 5),
                           "se_vs_best": round(ses[r["method"]], 5),
                           "within_1se": bool(sign * (best["nested"] - r["nested"]) <= ses[r["method"]] + 1e-12),
                           "chosen": r is chosen} for r in results])
    out_dir = paths.ensemble_dir(cfg.ensemble.name)
    oof_df = oofs[0][["id", "fold", "label"]].copy()
    oof_df[cols] = apply_blend(blend, probas)
    test_df = tests[0][["id"]].copy()
    test_df[cols] = apply_blend(blend, test_probas)
    best_single = next(r for r in results if r["method"] == "best_single")
    gain = sign * (chosen["nested"] - best_single["nested"])
    weights = {run: float(w) for run, w in zip(runs, blend.weights)}
    cv = {"metric": schema.metric, "chosen": blend.method, "in_sample": chosen["in_sample"],
          "nested": chosen["nested"], "best_single_nested": best_single["nested"],
          "beats_best_single_nested": bool(gain > 0), "runs": singles, "runs_nested": singles_nested,
          "threshold": blend.threshold,
          "searched_folds": searched, "scored_on_folds": sorted(np.unique(folds[scope]).tolist()),
          "choice_rule": "simplest method within one standard error (fold-wise) of the best nested score",
          "skipped": skipped,
          "methods": table.drop(columns="chosen").to_dict("records")}
    with publish(paths, f"ensemble-{cfg.ensemble.name}", inputs) as tx:  # weights, threshold, predictions together
        write_parquet(tx.path(out_dir / "oof.parquet"), oof_df)
        write_parquet(tx.path(out_dir / "test.parquet"), test_df)
        write_csv(tx.path(out_dir / "methods.csv"), table)
        write_json(tx.path(out_dir / "weights.json"), {"method": blend.method, "runs": runs, "weights": weights,
                                                       "threshold": blend.threshold, "stacker": blend.stacker})
        write_json(tx.path(out_dir / "cv.json"), cv)
    log.info("ensemble over %s (metric %s):\n%s", ", ".join(runs), schema.metric, table.to_string(index=False))
    log.info("runs alone on the scored folds, threshold in-sample / nested: %s", ", ".join(
        f"{run} {singles[run]:.4f} / {singles_nested[run]:.4f}" for run in runs))
    verdict = "beats" if gain > 0 else "does NOT beat"
    log.info("chosen: %s (nested %.4f); it %s the best single run on the nested estimate (%.4f) -> %s",
             blend.method, chosen["nested"], verdict, best_single["nested"], out_dir)
    return EnsembleResult(table=table, chosen=blend.method, weights=weights, threshold=blend.threshold, cv=cv)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("ensemble", __doc__, run, argv, inputs=stage_inputs,
                      manifest=lambda cfg: f"ensemble-{cfg.ensemble.name}")


if __name__ == "__main__":
    raise SystemExit(main())
