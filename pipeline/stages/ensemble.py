"""ensemble: blend the runs' out-of-fold predictions; weights and threshold fitted on OOF only.

Usage: python -m pipeline ensemble [--set ensemble.runs=[tfidf,minilm] ensemble.method=weighted]
Reads:  models/<run>/{oof,test}.parquet for every finished run (or ensemble.runs); a run distilled
        from a teacher (train.teacher) only where ensemble.runs names it (its OOF leans its way)
Writes: ensembles/<name>/{weights.json, oof.parquet, oof_nested.parquet, test.parquet, cv.json, methods.csv}
        (oof_nested: each fold blended by the blend fitted on the other folds: a student's soft targets)

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

from pipeline.core import tracking
from pipeline.core.config import Config
from pipeline.core.contract import Schema, labels_of, proba_cols
from pipeline.core.files import DataError, read_json, write_csv, write_json, write_parquet
from pipeline.core.metrics import metric_of
from pipeline.core.paths import Paths
from pipeline.core.transaction import inputs_of, publish
from pipeline.cv.blend import (
    METHODS,
    Blend,
    MethodScore,
    applicable,
    apply_blend,
    evaluate,
    informed_ties,
    load_runs,
    member_coefs,
    nested_proba,
    one_se_choice,
    reads_probabilities,
)
from pipeline.cv.distill import students_of
from pipeline.cv.store import finished_runs

log = logging.getLogger(__name__)


@dataclass
class EnsembleResult:
    table: pd.DataFrame
    chosen: str
    weights: dict[str, float]
    threshold: float | None
    cv: dict[str, Any]


def blended_runs(cfg: Config, paths: Paths) -> list[str]:
    """``ensemble.runs``, or every finished run but the students (``train.teacher``): a student's
    OOF leans its way (its teacher's fold models saw its validation fold: pipeline.cv.distill),
    so a blend fitted on OOF would lean on it; ``ensemble.runs`` naming one blends it."""
    if cfg.ensemble.runs is not None:
        if students := students_of(paths, cfg.ensemble.runs):
            log.warning("ensemble %s: blends %s as ensemble.runs says; a student's OOF leans its way (its teacher's "
                        "fold models saw its validation fold), so the blend's CV does too: check on held-back labels",
                        cfg.ensemble.name, ", ".join(students))
        return cfg.ensemble.runs
    runs = finished_runs(paths)
    students = students_of(paths, runs)
    if students:
        log.info("ensemble %s: leaves out %s, distilled from a teacher (a student's OOF leans its way; "
                 "ensemble.runs naming it blends it)", cfg.ensemble.name, ", ".join(students))
    return [r for r in runs if r not in students]


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    """Every run blended, complete and made from the current clean/folds, or a one-line error."""
    return inputs_of(paths, [f"train-{run}" for run in blended_runs(cfg, paths)],
                     config={"ensemble": asdict(cfg.ensemble)})


def scored_folds(paths: Paths, runs: list[str], folds: np.ndarray) -> tuple[list[int], np.ndarray]:
    """Choose, fit and score only on folds that no run's select/tune validated on: there the
    members' OOF is honest, so the ensemble's estimate is too (the full-fold one is beside it)."""
    searched = sorted({k for run in runs for k in read_json(paths.run(run).cv).get("searched_folds", [])})
    scope = ~np.isin(folds, searched)
    if len(np.unique(folds[scope])) < 2:
        log.warning("ensemble: fewer than two folds untouched by select/tune (searched %s): scoring on all folds, "
                    "which is optimistic", searched)
        scope[:] = True
    return searched, scope


def choose(cfg: Config, results: list[MethodScore], metric: str, skipped: dict[str, str],
           runs: list[str]) -> tuple[MethodScore, dict[str, float], MethodScore]:
    """The one-SE choice, or the method ``ensemble.method`` names."""
    chosen, ses, best = one_se_choice(results, metric)
    if cfg.ensemble.method != "auto":
        chosen = next((r for r in results if r.method == cfg.ensemble.method), None)
        if chosen is None:
            why = skipped.get(cfg.ensemble.method, f"needs at least two runs; found {runs}")
            raise DataError(f"ensemble.method={cfg.ensemble.method}: {why}")
    elif chosen is not best:
        log.info("ensemble: %s has the best nested %s (%.4f) but %s (%.4f) is within one standard error of the "
                 "fold-wise differences (%.4f) and simpler: %s is chosen", best.method, metric,
                 best.nested, chosen.method, chosen.nested, ses[chosen.method], chosen.method)
    if cfg.ensemble.method == "auto" and reads_probabilities(results, metric):
        log.info("ensemble: %s scores decisions, so a tie on it also had to hold on the calibrated log loss (each "
                 "method's nested probabilities recalibrated on the other folds): %s %.4f", metric, chosen.method,
                 chosen.calibrated)
    return chosen, ses, best


def methods_table(results: list[MethodScore], runs: list[str], chosen: MethodScore, best: MethodScore,
                  ses: dict[str, float], metric: str) -> pd.DataFrame:
    """One row a method: its scores, its gap to the best and the SE of that gap; where the metric
    scores decisions, among the methods that tie on it, the same on the calibrated log loss."""
    sign = metric_of(metric).sign
    within = {r.method: sign * (best.nested - r.nested) <= ses[r.method] + 1e-12 for r in results}
    informed = reads_probabilities(results, metric)
    if informed:
        kept, cal_ses, sharpest = informed_ties([r for r in results if within[r.method]])
    rows = []
    for r in results:
        row = {"method": r.method, "in_sample": round(r.in_sample, 5), "nested": round(r.nested, 5),
               "weights": _weights_text(runs, r.blend), "threshold": r.blend.threshold,
               "behind_best": round(sign * (best.nested - r.nested), 5), "se_vs_best": round(ses[r.method], 5),
               "within_1se": within[r.method]}
        if informed:
            tied = r.method in cal_ses
            row |= {"calibrated_logloss": round(r.calibrated, 5),
                    "calibrated_behind": round(r.calibrated - sharpest.calibrated, 5) if tied else None,
                    "calibrated_se": round(cal_ses[r.method], 5) if tied else None,
                    "within_1se_calibrated": r in kept}
        rows.append(row | {"chosen": r is chosen})
    return pd.DataFrame(rows)


def _weights_text(runs: list[str], blend: Blend) -> str:
    """Each run's weight in the blend (per label: its mean over the labels); a stack's are its
    coefficients on each run's logit, not weights (they may be negative): said so."""
    if blend.method == "stack":
        return "coef " + " ".join(f"{run}={v:.3f}" for run, v in zip(runs, member_coefs(blend.stacker, len(runs))))
    w = np.asarray(blend.weights)
    if w.ndim == 2:  # per label: each run's mean weight over the labels
        w = w.mean(0)
    return " ".join(f"{run}={v:.3f}" for run, v in zip(runs, w))


def run(cfg: Config, paths: Paths, force: bool = False) -> EnsembleResult:
    inputs = stage_inputs(cfg, paths)
    runs, oofs, tests = load_runs(paths, blended_runs(cfg, paths))
    schema = Schema.load(paths.schema_json)
    cols = proba_cols(schema.n_classes)
    probas = np.stack([o[cols].to_numpy(np.float64) for o in oofs])
    test_probas = np.stack([t[cols].to_numpy(np.float64) for t in tests])
    y, folds = labels_of(oofs[0]), oofs[0]["fold"].to_numpy()
    tune_thr = metric_of(schema.metric).tunes(schema.multilabel) is not None
    methods, skipped = applicable([m for m in METHODS if len(runs) > 1 or m == "best_single"], schema.metric,
                                  schema.multilabel)
    for m, why in skipped.items():
        log.info("ensemble: %s skipped for %s: %s", m, schema.metric, why)
    searched, scope = scored_folds(paths, runs, folds)
    ys, ps, fs = y[scope], probas[:, scope], folds[scope]
    results = [evaluate(m, ps, ys, fs, schema.metric, cfg.ensemble.objective, tune_thr, cfg.ensemble.stack_C)
               for m in methods]
    sign = metric_of(schema.metric).sign
    chosen, ses, best = choose(cfg, results, schema.metric, skipped, runs)
    blend = chosen.blend
    # each run alone, in-sample (threshold tuned on the scored folds themselves) and nested as the
    # blends are (threshold from the other folds): the first flatters a run by what its threshold
    # learns of the scored fold
    alone = [evaluate("best_single", ps[i:i + 1], ys, fs, schema.metric, cfg.ensemble.objective, tune_thr)
             for i in range(len(runs))]
    singles = {run: a.in_sample for run, a in zip(runs, alone)}
    singles_nested = {run: a.nested for run, a in zip(runs, alone)}
    table = methods_table(results, runs, chosen, best, ses, schema.metric)
    out = paths.ensemble(cfg.ensemble.name)
    oof_df = oofs[0][["id", "fold", "label"]].copy()
    oof_df[cols] = apply_blend(blend, probas)
    test_df = tests[0][["id"]].copy()
    test_df[cols] = apply_blend(blend, test_probas)
    nested_df = oofs[0][["id", "fold", "label"]].copy()  # every fold, searched ones too: a teacher's soft targets
    nested_df[cols] = nested_proba(blend.method, probas, y, folds, schema.metric, cfg.ensemble.objective, tune_thr,
                                   cfg.ensemble.stack_C)
    best_single = next(r for r in results if r.method == "best_single")
    gain = sign * (chosen.nested - best_single.nested)
    # weights.json's weights are what the bundle averages with when it cannot run every member (a
    # stack's: equal); a stack's coefficients, for reading, are beside them
    weights = {run: float(w) for run, w in zip(runs, np.asarray(blend.weights).reshape(-1, len(runs)).mean(0))}
    coefs = ({run: float(c) for run, c in zip(runs, member_coefs(blend.stacker, len(runs)))}
             if blend.method == "stack" else None)
    cv = {"metric": schema.metric, "chosen": blend.method, "in_sample": chosen.in_sample,
          "nested": chosen.nested, "best_single_nested": best_single.nested,
          "beats_best_single_nested": bool(gain > 0), "runs": singles, "runs_nested": singles_nested,
          "threshold": blend.threshold,
          "searched_folds": searched, "scored_on_folds": sorted(np.unique(fs).tolist()),
          "choice_rule": "simplest method within one standard error (fold-wise) of the best nested score"
                         + (", and of the lowest calibrated log loss among those" if reads_probabilities(
                             results, schema.metric) else ""),
          "skipped": skipped,
          "methods": table.drop(columns="chosen").to_dict("records")}
    with publish(paths, f"ensemble-{cfg.ensemble.name}", inputs) as tx:  # weights, threshold, predictions together
        write_parquet(tx.path(out.oof), oof_df)
        write_parquet(tx.path(out.test), test_df)
        write_parquet(tx.path(out.oof_nested), nested_df)
        write_csv(tx.path(out.methods), table)
        write_json(tx.path(out.weights), {"method": blend.method, "runs": runs, "weights": weights,
                                          "threshold": blend.threshold, "stacker": blend.stacker,
                                          **({"stack_coefs": coefs} if coefs else {}),
                                          **({"label_weights": np.asarray(blend.weights).tolist()}
                                             if np.ndim(blend.weights) == 2 else {})})
        write_json(tx.path(out.cv), cv)
    tracking.log_run(cfg, paths, "ensemble", cfg.ensemble.name, metrics={
        "cv": chosen.in_sample, "cv_nested": chosen.nested, "best_single_nested": best_single.nested,
        **{f"nested.{m['method']}": m["nested"] for m in cv["methods"]},
        **({f"coef.{r}": c for r, c in coefs.items()} if coefs else {f"weight.{r}": w for r, w in weights.items()})},
        params={"ensemble.members": ",".join(runs)}, tags={"textcomp.chosen": blend.method,
                                                             "textcomp.metric": schema.metric},
        artifacts=[out.cv, out.weights, out.methods])
    log.info("ensemble over %s (metric %s):\n%s", ", ".join(runs), schema.metric, table.to_string(index=False))
    log.info("runs alone on the scored folds, threshold in-sample / nested: %s", ", ".join(
        f"{run} {singles[run]:.4f} / {singles_nested[run]:.4f}" for run in runs))
    verdict = "beats" if gain > 0 else "does NOT beat"
    log.info("chosen: %s (nested %.4f); it %s the best single run on the nested estimate (%.4f) -> %s",
             blend.method, chosen.nested, verdict, best_single.nested, out.dir)
    return EnsembleResult(table=table, chosen=blend.method, weights=weights, threshold=blend.threshold, cv=cv)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("ensemble", __doc__, run, argv, inputs=stage_inputs,
                      manifest=lambda cfg: f"ensemble-{cfg.ensemble.name}")


if __name__ == "__main__":
    raise SystemExit(main())
