"""One run of one config over the folds of folds.csv: each fold through its family, then the
run's OOF, test predictions and CV published together (``scores.publish_run``).

A killed run resumes: finished folds are kept (their config fingerprint matches), and a
fold in progress restarts from its last finished epoch (or its last finished seed).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.budget.clock import Deadline
from pipeline.budget.replan import FoldGuard
from pipeline.core import tracking
from pipeline.core.config import Config, ConfigError, TrainConfig
from pipeline.core.files import DataError
from pipeline.core.metrics import score, tuned
from pipeline.core.paths import FoldPaths, Paths
from pipeline.cv import store
from pipeline.cv.data import TrainingData, fingerprint, fold_data, load_training_data
from pipeline.cv.scores import log_cv, publish_run
from pipeline.modeling import distributed as dist_
from pipeline.modeling.base import FoldContext, FoldOutput
from pipeline.modeling.families import family

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run: str
    run_dir: Path
    cv: dict[str, Any] | None  # None until every fold is done
    folds_done: list[int]
    trained: list[int] = dataclasses.field(default_factory=list)  # the folds this call trained (not kept ones)


def starting_point(tc: TrainConfig, td: TrainingData) -> TrainConfig:
    """``tc`` as its family fits it: under ``train.pretrain_steps`` the backbone is the encoder
    pretrained on this competition's texts (built once, then shared by every fold and run that
    asks for the same: pipeline.modeling.pretrain); its config.yaml and fingerprint keep the
    settings as written."""
    fam = family(tc.family)
    if tc.teacher and not fam.distills:
        raise ConfigError(f"train.teacher: family {tc.family} does not learn from soft targets; distil into a "
                          "transformer (train.family=transformer)")
    if tc.teacher and not td.soft_cols:
        raise ConfigError(f"train.teacher={tc.teacher!r}: these rows were loaded without the teacher's soft targets "
                          "(select and tune screen candidates on their labels: set train.teacher for `make train`)")
    if not tc.pretrain_steps:
        return tc
    if not fam.pretrains:
        raise ConfigError(f"train.pretrain_steps: family {tc.family} has no encoder to pretrain; set it to 0")
    if td.pretrain_cache is None:
        raise DataError("train.pretrain_steps: no cache folder for the pretrained encoder")
    from pipeline.modeling import pretrain

    return dataclasses.replace(tc, backbone=str(pretrain.ensure(tc, td.corpus(), td.pretrain_cache)))


def train_fold(cfg: Config, td: TrainingData, k: int, fold: FoldPaths | None, shared: object | None = None,
               on_eval: Callable[[float, float], None] | None = None) -> tuple[FoldOutput, pd.DataFrame]:
    """Fold k of ``cfg``'s run: fitted by its family, its model saved under ``fold`` (None:
    nothing is kept: screening and tuning); several ``train.seeds`` are averaged."""
    tc = cfg.train
    fam = family(tc.family)
    if fam.epoch_trained and tc.seeds and len(tc.seeds) > 1:
        return train_seeds(cfg, td, k, fold, shared if shared is not None else fam.prepare(tc), on_eval)
    tc = starting_point(tc, td)
    data, val = fold_data(td, k, tc)
    ctx = FoldContext(fold=k, n_classes=td.schema.n_classes, metric=td.schema.metric,
                      checkpoint_dir=fold.resume if fold else None, cache_dir=td.cache_dir, on_eval=on_eval)
    if shared is None and fam.epoch_trained:  # loaded once: the save below needs it too
        shared = fam.prepare(tc)
    out = fam.fit(tc, data, ctx, shared)
    model = out.extra.pop("model", None)
    if fold is not None and tc.save_checkpoints and model is not None:
        fam.save(model, tc, fold.model, shared)
    return out, val


def train_seeds(cfg: Config, td: TrainingData, k: int, fold: FoldPaths | None, shared: object | None,
                on_eval: Callable[[float, float], None] | None) -> tuple[FoldOutput, pd.DataFrame]:
    """Fold k trained once per seed in ``train.seeds``; the probabilities averaged. Each seed's
    model and predictions are kept under fold<k>/seed<s>/ as it finishes, so a killed run
    resumes at the seed it was in."""
    outs = []
    for seed in cfg.train.seeds:
        one = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, seeds=None))
        part = fold.seed(seed) if fold is not None else None
        out = store.load_seed(part) if part is not None else None
        if out is not None:
            log.info("fold %d seed %d: done already: kept", k, seed)
        else:
            if part is not None:
                part.dir.mkdir(parents=True, exist_ok=True)
            out, _ = train_fold(one, td, k, part, shared, on_eval)
            if part is not None:
                store.save_seed(part, seed, out)
            log.info("fold %d seed %d: %s %.4f", k, seed, td.schema.metric, out.best_score)
        outs.append(out)
    data, val = fold_data(td, k, cfg.train)
    proba = np.mean([o.val_proba for o in outs], axis=0)
    return FoldOutput(val_proba=proba, test_proba=np.mean([o.test_proba for o in outs], axis=0),
                      history=[h for o in outs for h in o.history],
                      best_epoch=float(np.mean([o.best_epoch for o in outs])),
                      best_score=score(td.schema.metric, data.val_labels, proba),
                      optimizer_steps=sum(o.optimizer_steps for o in outs), seconds=sum(o.seconds for o in outs),
                      train_samples_per_s=float(np.mean([o.train_samples_per_s for o in outs])),
                      batch_size=outs[0].batch_size, grad_accum=outs[0].grad_accum), val


def train_run(cfg: Config, paths: Paths, force: bool = False, deadline: Deadline | None = None) -> RunResult:
    """Every fold of ``cfg``'s run (or ``train.folds``), then, with all of them done, its
    aggregate published. Under a budget a run stops at a fold boundary when its next fold
    would overrun (``budget.replan.FoldGuard``)."""
    tc = cfg.train
    fam = family(tc.family)
    td = load_training_data(cfg, paths)
    run = paths.run(tc.run)
    n_splits = td.n_splits
    todo = tc.folds if tc.folds is not None else list(range(n_splits))
    bad = [k for k in todo if not 0 <= k < n_splits]
    if bad:
        raise DataError(f"train.folds: fold {bad[0]} does not exist (folds.csv has {n_splits})")
    fp = fingerprint(tc, td)
    main = dist_.is_main()  # under torchrun / accelerate launch only rank 0 writes artifacts
    log.info("train %s (%s, %s): folds %s; metric %s", tc.run, tc.family, fam.describe(tc), todo, td.schema.metric)
    shared = fam.prepare(tc)  # the tokenizer, once (the embedding family loads its encoder only for new texts)

    def done(k: int) -> bool:
        return store.fold_is_done(run.fold(k), fp, tc.save_checkpoints)

    if tc.pretrain_steps and (force or not all(done(k) for k in todo)):
        starting_point(tc, td)  # the pretrained encoder, built before the folds (the fold guard times folds)
    guard = FoldGuard(deadline, paths, tc, n_splits) if deadline is not None else None

    if main:
        store.keep_version(paths, tc.run, fp)  # the run's earlier version, before a fold is replaced

    trained: list[int] = []
    for k in todo:
        if not force and done(k):
            log.info("fold %d: done already (same config and data): kept", k)
            continue
        if guard is not None and guard.stop_before(k, len([j for j in todo if j >= k and not done(j)])):
            break
        if main:
            store.start_fold(paths, run.fold(k), fp, force)
        dist_.barrier()
        t0 = time.perf_counter()
        out, val = train_fold(cfg, td, k, run.fold(k), shared)
        if main:
            store.save_fold(paths, run.fold(k), k, out, val, td.test["id"], td.schema.n_classes, fp)
        dist_.barrier()
        trained.append(k)
        if guard is not None:
            guard.spent.append(time.perf_counter() - t0)
        log.info("fold %d: %s %.4f (best at epoch %.2f) in %.1fs", k, td.schema.metric, out.best_score,
                 out.best_epoch, time.perf_counter() - t0)
    folds_done = [k for k in range(n_splits) if done(k)]
    cv = None
    if len(folds_done) == n_splits and main:
        cv = publish_run(paths, cfg, td, n_splits, fp)
        log_cv(cv, n_splits, run.dir)
        track_run(cfg, paths, cv, fp)
    else:
        log.info("train %s: %d of %d folds done; oof/test/cv are written once all are", tc.run, len(folds_done),
                 n_splits)
    return RunResult(run=tc.run, run_dir=run.dir, cv=cv, folds_done=folds_done, trained=trained)


def track_run(cfg: Config, paths: Paths, cv: dict[str, Any], fp: str) -> str | None:
    """The published run in the tracker: CV and companions, per-fold scores as steps, its files."""
    if not tracking.enabled(cfg):
        return None
    run = paths.run(cfg.train.run)
    metrics = {k: cv.get(k) for k in ("cv", "logloss", "accuracy", "cv_untouched", "cv_searched", "seconds",
                                      "train_samples_per_s") if isinstance(cv.get(k), (int, float))}
    if cv.get("threshold"):
        metrics["cv_at_threshold"] = tuned(cv["threshold"])[0]
    steps = {"fold_score": [(f["fold"], f["score"]) for f in cv["folds"]],
             "fold_seconds": [(f["fold"], f["seconds"]) for f in cv["folds"]]}
    return tracking.log_run(cfg, paths, "train", cfg.train.run, metrics=metrics, steps=steps,
                            params={"family": cfg.train.family, "train_fingerprint": fp[:12]},
                            tags={"textcomp.metric": cv["metric"]},
                            artifacts=[run.cv, run.config, run.curves, run.history, run.env])
