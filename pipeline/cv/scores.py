"""A run's folds put together: the concatenated OOF scored once, the test predictions averaged,
the honest estimates beside the CV, and everything published in one transaction.

Scores are computed on the concatenated OOF, never averaged over folds. Two estimates sit
beside the CV: the CV over the folds select/tune never validated on (``honest_cv``), and
what keeping each fold's best evaluation adds (``epoch_choice``: early stopping's optimism).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.config import Config, dump_yaml
from pipeline.core.contract import labels_of, proba_cols
from pipeline.core.environment import environment
from pipeline.core.files import DataError, read_json, save_figure, write_json, write_parquet, write_text
from pipeline.core.metrics import metric_of, score, tuned
from pipeline.core.paths import Paths
from pipeline.core.transaction import publish
from pipeline.cv.data import TrainingData
from pipeline.modeling.families import family

log = logging.getLogger(__name__)


def publish_run(paths: Paths, cfg: Config, td: TrainingData, n_splits: int, fp: str) -> dict[str, Any]:
    """Concatenate the folds' OOF, average their test predictions, score on the whole OOF, and
    publish the run's files in one transaction, its description (config.yaml) among them."""
    run = paths.run(cfg.train.run)
    s = td.schema
    cols = proba_cols(s.n_classes)
    folds = [run.fold(k) for k in range(n_splits)]
    oof = pd.concat([pd.read_parquet(f.oof) for f in folds], ignore_index=True)
    tests = [pd.read_parquet(f.test) for f in folds]
    if not oof["id"].is_unique or set(oof["id"]) != set(td.train["id"]):
        raise DataError(f"{run.dir}: the folds' OOF ids do not cover train exactly once")
    oof = oof.set_index("id").loc[td.train["id"]].reset_index()
    for t in tests[1:]:
        if not t["id"].equals(tests[0]["id"]):
            raise DataError(f"{run.dir}: fold test predictions are not aligned by id")
    test = tests[0][["id"]].copy()
    test[cols] = np.mean([t[cols].to_numpy() for t in tests], axis=0)
    history = pd.concat([pd.read_csv(f.history) for f in folds])
    cv = cv_summary(cfg, td, oof, [read_json(f.meta) for f in folds], history)
    with publish(paths, f"train-{cfg.train.run}", {**td.inputs, "config:train": fp}) as tx:
        write_parquet(tx.path(run.oof), oof)
        write_parquet(tx.path(run.test), test)
        write_text(tx.path(run.history), history.to_csv(index=False))
        plot_curves(history, tx.path(run.curves), s.metric)
        write_json(tx.path(run.cv), cv)
        write_json(tx.path(run.env), environment())
        write_text(tx.path(run.config), dump_yaml(cfg.to_dict()))
    return cv


def cv_summary(cfg: Config, td: TrainingData, oof: pd.DataFrame, metas: list[dict[str, Any]],
               history: pd.DataFrame) -> dict[str, Any]:
    """cv.json: the CV and companions on the whole OOF, per fold, and the honest estimates."""
    s = td.schema
    cols = proba_cols(s.n_classes)
    y, p = labels_of(oof), oof[cols].to_numpy()
    cv = {"run": cfg.train.run, "family": cfg.train.family, "metric": s.metric,
          "cv": score(s.metric, y, p), "logloss": score("logloss", y, p), "accuracy": score("accuracy", y, p),
          "folds": [{"fold": k, "score": score(s.metric, y[oof["fold"] == k], p[(oof["fold"] == k).to_numpy()]),
                     **{m: metas[k][m] for m in ("best_epoch", "seconds", "train_samples_per_s", "optimizer_steps")}}
                    for k in range(len(metas))],
          "seconds": round(sum(m["seconds"] for m in metas), 2),
          "train_samples_per_s": round(float(np.mean([m["train_samples_per_s"] for m in metas])), 2)}
    if metric_of(s.metric).tunes(s.multilabel):  # a threshold (per label, cut points) tuned on the OOF
        value, at = metric_of(s.metric).tune(y, p)
        cv["threshold"] = {"value": value, "score": at, "how": metric_of(s.metric).tunes(s.multilabel)}
    cv.update(honest_cv(s.metric, y, p, oof["fold"].to_numpy(), cfg.train.searched_folds))
    cv.update(levers(cfg, td))
    if family(cfg.train.family).epoch_trained and (choice := epoch_choice(history, s.metric)):
        cv["epoch_choice"] = choice
    return cv


def levers(cfg: Config, td: TrainingData) -> dict[str, Any]:
    """What the run started from and learned from beyond its labels: the pretrained encoder
    (its steps, and the seconds its build took, paid once by whichever run built it) and the
    teacher (distillation), for the report's comparisons."""
    tc, out = cfg.train, {}
    if tc.pretrain_steps and td.pretrain_cache is not None:
        from pipeline.modeling import pretrain

        folder = pretrain.find(tc, td.corpus(), td.pretrain_cache)
        if folder is not None:
            meta = read_json(folder / pretrain.META)
            out["pretrain"] = {"folder": folder.name, **{k: meta.get(k) for k in (
                "steps", "seconds", "seconds_per_step", "texts", "windows", "first_loss", "last_loss")}}
    if tc.teacher and td.teacher is not None:
        kind, name = td.teacher
        out["teacher"] = {"kind": kind, "name": name, "temperature": tc.distill_temperature, "alpha": tc.distill_alpha}
    return out


def log_cv(cv: dict[str, Any], n_splits: int, run_dir: Path) -> None:
    extra = ""
    if "threshold" in cv:
        at, words = tuned(cv["threshold"])
        extra = f" ({cv['metric']} {at:.4f} at {words})"
    if "cv_untouched" in cv:
        extra += (f"; on the folds select/tune never saw ({cv['untouched_folds']}) {cv['cv_untouched']:.4f}, "
                  f"on those they did ({cv['searched_folds']}) {cv['cv_searched']:.4f}")
    if "epoch_choice" in cv:
        e = cv["epoch_choice"]
        extra += (f"; mean fold {cv['metric']} {e['own_best']:.4f} at each fold's best evaluation, "
                  f"{e['chosen_on_other_folds']:.4f} at the one the other folds chose (early-stopping "
                  f"optimism {e['optimism']:+.4f})")
    log.info("train %s: CV %s %.4f%s over %d folds -> %s", cv["run"], cv["metric"], cv["cv"], extra, n_splits,
             run_dir)


def honest_cv(metric: str, y: np.ndarray, p: np.ndarray, folds: np.ndarray, searched: list[int]) -> dict[str, Any]:
    """CV over the folds that select/tune never validated on, beside the full-fold CV.

    Screening and tuning pick hyper-parameters by their score on ``searched`` folds, so those
    folds' OOF is optimistic; the untouched folds give the estimate to trust."""
    searched = sorted(set(searched) & set(np.unique(folds).tolist()))
    untouched = sorted(set(np.unique(folds).tolist()) - set(searched))
    if not searched or not untouched:
        return {"searched_folds": searched, "untouched_folds": untouched}
    u, t = np.isin(folds, untouched), np.isin(folds, searched)
    return {"searched_folds": searched, "untouched_folds": untouched, "cv_untouched": score(metric, y[u], p[u]),
            "cv_searched": score(metric, y[t], p[t])}


def epoch_choice(history: pd.DataFrame, metric: str) -> dict[str, Any] | None:
    """What keeping each fold's best evaluation adds to its score: the mean fold metric at each
    fold's own best evaluation (what the OOF holds) against the mean at the evaluation the *other*
    folds' mean curve picks (the choice made without the fold's own labels). The difference is
    the optimism of early stopping on the validation fold; None with fewer than 2 folds or 2
    evaluations that every fold has."""
    ev = history[history["kind"] == "eval"].dropna(subset=["metric"])
    if ev.empty:
        return None
    curves = ev.assign(at=ev["epoch"].round(2)).groupby(["fold", "at"])["metric"].mean().unstack("at")
    common = curves.dropna(axis=1)
    if len(curves) < 2 or common.shape[1] < 2:
        return None
    sign = float(metric_of(metric).sign)
    own = curves.max(axis=1) if sign > 0 else curves.min(axis=1)
    chosen = {}
    for k in common.index:
        others = common.drop(index=k).mean(axis=0) * sign
        chosen[k] = float(others.idxmax())
    nested = np.mean([common.loc[k, chosen[k]] for k in common.index])
    return {"own_best": round(float(own.mean()), 5), "chosen_on_other_folds": round(float(nested), 5),
            "optimism": round(float(sign * (own.mean() - nested)), 5) + 0.0,  # no -0.0
            "epochs": {str(int(k)): v for k, v in chosen.items()}}


def plot_curves(history: pd.DataFrame, path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for fold, h in history.groupby("fold"):
        tr, ev = h[h["kind"] == "train"], h[h["kind"] == "eval"]
        if "train_loss" in tr and tr["train_loss"].notna().any():
            axes[0].plot(tr["epoch"], tr["train_loss"], alpha=0.6, label=f"train f{fold}")
        axes[0].plot(ev["epoch"], ev["val_loss"], "o--", label=f"val f{fold}")
        axes[1].plot(ev["epoch"], ev["metric"], "o-", label=f"fold {fold}")
        if "lr" in tr and tr["lr"].notna().any():
            axes[2].plot(tr["step"], tr["lr"], label=f"fold {fold}")
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].set(title=f"validation {metric}", xlabel="epoch")
    axes[2].set(title="learning rate", xlabel="optimizer step")
    for ax in axes:
        if ax.lines:
            ax.legend(fontsize=6)
    save_figure(path, fig)
