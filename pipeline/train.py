"""train: one model configuration on every fold of folds.csv.

Usage: python -m pipeline train [--config configs/exp/<run>.yaml] [--set train.lr=3e-5 ...]
       python -m pipeline train --plan reports/selected.json   (every run that select/tune chose)
Reads:  data/interim/{train,test}_clean.parquet, data/processed/folds.csv,
        data/interim/augmented/<method>.parquet for each train.augment method
Writes: models/<run>/{config.yaml, env.json, fold<k>/, oof.parquet, test.parquet, cv.json,
        history.csv, curves.png}

A killed run resumes: finished folds are kept (their config fingerprint matches), and a
fold in progress restarts from its last finished epoch.

Under a time budget (reports/plan.json, `make all TIME=30m`), --plan trains the classical
runs first, re-plans before each other run when the stages so far ran slower than planned
(an epoch at a time, then the run), and stops a run at a fold boundary when its next fold
would not finish before ensemble, submit and report must start.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import budget
from pipeline.config import Config, TrainConfig, dump_yaml, with_diff
from pipeline.contract import Schema, model_inputs
from pipeline.folds import load_folds
from pipeline.io import DataError, atomic_path, read_json, save_figure, write_json, write_parquet, write_text
from pipeline.metrics import GREATER_IS_BETTER, score, tune_threshold
from pipeline.modeling.transformer import FoldData, FoldOutput
from pipeline.paths import Paths
from pipeline.transaction import inputs_of, publish, require

log = logging.getLogger(__name__)
# Fields that change where or how fast a run goes, not what it computes.
_NOT_IN_FINGERPRINT = {"run", "folds", "device", "num_workers", "log_every", "eval_batch_size", "searched_folds"}


@dataclass
class TrainingData:
    train: pd.DataFrame  # id, input, label, fold
    test: pd.DataFrame  # id, input
    schema: Schema
    augmented: pd.DataFrame | None  # source_id, input, label (rows made from train rows)
    fingerprint: str
    inputs: dict[str, str]  # the upstream manifests read (transaction.inputs_of)
    cache_dir: Path | None = None  # the embedding family's vectors (data/interim/embeddings)
    pseudo: dict[int, pd.DataFrame] | None = None  # fold k -> confident test rows (id, input, label)


@dataclass
class RunResult:
    run: str
    run_dir: Path
    cv: dict[str, Any] | None  # None until every fold is done
    folds_done: list[int]


def proba_cols(n_classes: int) -> list[str]:
    return [f"p_{i}" for i in range(n_classes)]


def load_training_data(cfg: Config, paths: Paths) -> TrainingData:
    stages = ["clean", "folds"] + (["augment"] if cfg.train.augment else [])
    inputs = inputs_of(paths, stages)  # complete and current, or a one-line error naming what to re-run
    schema = Schema.load(paths.schema_json)
    train = pd.read_parquet(paths.train_clean)
    test = pd.read_parquet(paths.test_clean)
    folds = load_folds(paths, train["id"])
    train = train.merge(folds, on="id", how="left", validate="one_to_one")
    train["input"] = model_inputs(train, cfg.data)
    test["input"] = model_inputs(test, cfg.data)
    digest = [*sorted(inputs.values()), json.dumps(cfg.data.extra_cols)]
    augmented = None
    if cfg.train.augment:
        parts = []
        for method in cfg.train.augment:
            path = paths.augmented(method)
            if not path.exists():
                raise DataError(f"{path}: not found (train.augment lists {method!r}); run `make augment`")
            parts.append(pd.read_parquet(path))
        aug = pd.concat(parts, ignore_index=True)
        # a copy carries its source row's extra columns through the same model_inputs as the
        # originals (e.g. the "keyword: fire | " prefix): the model sees one input format
        extra = train[["id", *cfg.data.extra_cols]].rename(columns={"id": "source_id"})
        aug = aug.drop(columns=[c for c in cfg.data.extra_cols if c in aug.columns])
        aug = aug.merge(extra, on="source_id", how="left", validate="many_to_one")
        aug["input"] = model_inputs(aug, cfg.data)
        augmented = aug[["source_id", "input", "label"]]
    pseudo = None
    if cfg.train.pseudo_teacher:
        teacher = cfg.train.pseudo_teacher
        inputs = {**inputs, **inputs_of(paths, [f"train-{teacher}"])}  # whole and current, or one line
        digest.append(inputs[f"manifest:train-{teacher}"])
        pseudo = pseudo_labels(paths, teacher, test[["id", "input"]], int(train["fold"].max()) + 1,
                               cfg.train.pseudo_threshold, schema.n_classes)
    return TrainingData(train=train[["id", "input", "label", "fold"]], test=test[["id", "input"]], schema=schema,
                        augmented=augmented, fingerprint="|".join(digest), inputs=inputs,
                        cache_dir=paths.embeddings_cache, pseudo=pseudo)


def pseudo_labels(paths: Paths, teacher: str, test: pd.DataFrame, n_splits: int, threshold: float,
                  n_classes: int) -> dict[int, pd.DataFrame]:
    """Fold k's pseudo-labelled test rows come from the teacher's fold-k model only: it never
    saw fold k's labels, so fold k's validation score stays honest (the teacher's averaged
    test predictions would carry them in)."""
    out = {}
    for k in range(n_splits):
        path = paths.fold_dir(teacher, k) / "test.parquet"
        if not path.exists():
            raise DataError(f"{path}: not found; train.pseudo_teacher={teacher!r} needs that run's fold {k}")
        p = pd.read_parquet(path).set_index("id").loc[test["id"], proba_cols(n_classes)].to_numpy()
        keep = p.max(1) >= threshold
        out[k] = pd.DataFrame({"id": test["id"].to_numpy()[keep], "input": test["input"].to_numpy()[keep],
                               "label": p.argmax(1)[keep]})
        log.info("pseudo-labels for fold %d: %d of %d test rows at >= %.2f from %s's fold-%d model", k, keep.sum(),
                 len(test), threshold, teacher, k)
    return out


def fold_rows(td: TrainingData, k: int, max_rows: int | None = None, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training rows of fold k = originals outside fold k + augmented rows whose source is
    outside fold k (+ the pseudo-labelled test rows of fold k's teacher model); validation
    rows = fold-k originals only (never an augmented or pseudo-labelled row)."""
    train, val = td.train[td.train["fold"] != k], td.train[td.train["fold"] == k]
    if max_rows is not None and len(train) > max_rows:
        train = train.sample(n=max_rows, random_state=seed)
    rows = train[["id", "input", "label"]]
    if td.augmented is not None:
        aug = td.augmented[td.augmented["source_id"].isin(set(train["id"]))]
        rows = pd.concat([rows, aug.rename(columns={"source_id": "id"})[["id", "input", "label"]]],
                         ignore_index=True)
    if td.pseudo is not None:  # test rows only: never a validation row
        rows = pd.concat([rows, td.pseudo[k][["id", "input", "label"]]], ignore_index=True)
    return rows.reset_index(drop=True), val.reset_index(drop=True)


def fold_data(td: TrainingData, k: int, cfg: TrainConfig) -> tuple[FoldData, pd.DataFrame]:
    rows, val = fold_rows(td, k, cfg.max_train_rows, cfg.seed + k)
    return FoldData(train_texts=rows["input"].tolist(), train_labels=rows["label"].to_numpy(),
                    val_texts=val["input"].tolist(), val_labels=val["label"].to_numpy(),
                    test_texts=td.test["input"].tolist()), val


def fingerprint(cfg: TrainConfig, td: TrainingData) -> str:
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IN_FINGERPRINT}
    return hashlib.sha256(json.dumps([fields, td.fingerprint], sort_keys=True).encode()).hexdigest()[:20]


def _fold_dir(run_dir: Path, k: int) -> Path:
    return run_dir / f"fold{k}"


def fold_is_done(run_dir: Path, k: int, fp: str, needs_model: bool = False) -> bool:
    """Fold k finished under this fingerprint (and, when models are kept, its model is there:
    `make package` ships it, so a fold from before models were kept is trained again)."""
    fold = _fold_dir(run_dir, k)
    meta = fold / "meta.json"
    return meta.exists() and read_json(meta).get("fingerprint") == fp and (fold / "oof.parquet").exists() and \
        (not needs_model or bool(fold_models(fold)))


def train_one_fold(cfg: Config, td: TrainingData, k: int, fold_dir: Path | None, tokenizer: Any = None,
                   on_eval: Callable[[float, float], None] | None = None) -> tuple[FoldOutput, pd.DataFrame]:
    tc = cfg.train
    data, val = fold_data(td, k, tc)
    if tc.family == "embedding":
        from pipeline.modeling.embedding import fit_embedding_fold, save_head

        out = fit_embedding_fold(tc, data, td.schema.metric, k, td.cache_dir)
        if fold_dir is not None and tc.save_checkpoints:
            save_head(out.extra.pop("model"), tc, fold_dir / "model")
        return out, val
    if tc.family == "classical":
        from pipeline.modeling.classical import fit_classical_fold

        out = fit_classical_fold(tc, data, td.schema.metric, k)
        if fold_dir is not None and tc.save_checkpoints:
            out.extra.pop("model").save(fold_dir / "model")
        return out, val
    from pipeline.modeling.transformer import FoldTrainer, load_tokenizer, train_fold_with_oom_retry

    tokenizer = tokenizer or load_tokenizer(tc)
    if tc.seeds and len(tc.seeds) > 1:
        return train_seeds(cfg, td, k, fold_dir, tokenizer, on_eval)

    def make(c: TrainConfig) -> FoldTrainer:
        return FoldTrainer(c, td.schema.n_classes, td.schema.metric, k,
                           checkpoint_dir=fold_dir / "resume" if fold_dir else None, on_eval=on_eval)

    out = train_fold_with_oom_retry(tc, make, data, tokenizer)
    from pipeline.modeling.distributed import is_main

    if fold_dir is not None and tc.save_checkpoints and is_main():
        trainer_model = out.extra.get("model")
        if trainer_model is not None:
            trainer_model.save_pretrained(fold_dir / "model", safe_serialization=True)
            tokenizer.save_pretrained(fold_dir / "model")
    out.extra.pop("model", None)
    return out, val


def train_seeds(cfg: Config, td: TrainingData, k: int, fold_dir: Path | None, tokenizer: Any,
                on_eval: Callable[[float, float], None] | None) -> tuple[FoldOutput, pd.DataFrame]:
    """Fold k trained once per seed in ``train.seeds``; the probabilities averaged. Each seed's
    model and predictions are kept under fold<k>/seed<s>/ as it finishes, so a killed run
    resumes at the seed it was in."""
    outs = []
    for seed in cfg.train.seeds:
        one = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=seed, seeds=None))
        part = fold_dir / f"seed{int(seed)}" if fold_dir is not None else None
        saved = part / "proba.npz" if part is not None else None
        if saved is not None and saved.exists():
            with np.load(saved, allow_pickle=False) as z:
                meta = read_json(part / "meta.json")
                out = FoldOutput(val_proba=z["val"], test_proba=z["test"], history=meta["history"],
                                 best_epoch=meta["best_epoch"], best_score=meta["best_score"],
                                 optimizer_steps=meta["optimizer_steps"], seconds=meta["seconds"],
                                 train_samples_per_s=meta["train_samples_per_s"], batch_size=meta["batch_size"],
                                 grad_accum=meta["grad_accum"])
            log.info("fold %d seed %d: done already: kept", k, seed)
        else:
            if part is not None:
                part.mkdir(parents=True, exist_ok=True)
            out, val = train_one_fold(one, td, k, part, tokenizer, on_eval)
            if part is not None:
                with atomic_path(saved) as tmp, open(tmp, "wb") as f:
                    np.savez(f, val=out.val_proba, test=out.test_proba)
                write_json(part / "meta.json", {"history": [{**h, "seed": seed} for h in out.history],
                                                **{f: getattr(out, f) for f in (
                                                    "best_epoch", "best_score", "optimizer_steps", "seconds",
                                                    "train_samples_per_s", "batch_size", "grad_accum")}})
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


def fold_models(fold: Path) -> list[Path]:
    """The saved model folders of one fold: fold<k>/model, or fold<k>/seed<s>/model per seed."""
    if (fold / "model").is_dir():
        return [fold / "model"]
    return sorted((p for p in fold.glob("seed*/model") if p.is_dir()), key=lambda p: int(p.parent.name[4:]))


def _save_fold(paths: Paths, fold_dir: Path, k: int, out: FoldOutput, val: pd.DataFrame, td: TrainingData,
               fp: str) -> None:
    cols = proba_cols(td.schema.n_classes)
    oof = pd.DataFrame(out.val_proba, columns=cols)
    oof.insert(0, "id", val["id"].to_numpy())
    oof.insert(1, "fold", k)
    oof.insert(2, "label", val["label"].to_numpy())
    test = pd.DataFrame(out.test_proba, columns=cols)
    test.insert(0, "id", td.test["id"].to_numpy())
    write_parquet(fold_dir / "oof.parquet", oof)
    write_parquet(fold_dir / "test.parquet", test)
    write_text(fold_dir / "history.csv", pd.DataFrame(out.history).to_csv(index=False))
    write_json(fold_dir / "meta.json", {
        "fingerprint": fp, "fold": k, "score": out.best_score, "best_epoch": out.best_epoch,
        "seconds": round(out.seconds, 2), "train_samples_per_s": round(out.train_samples_per_s, 2),
        "optimizer_steps": out.optimizer_steps, "batch_size": out.batch_size, "grad_accum": out.grad_accum})
    for resume in [fold_dir / "resume", *fold_dir.glob("seed*/resume")]:
        paths.remove_tree(resume)


def aggregate(paths: Paths, cfg: Config, td: TrainingData, n_splits: int, fp: str) -> dict[str, Any]:
    """Concatenate the folds' OOF, average their test predictions, score on the whole OOF, and
    publish the run's files in one transaction, its description (config.yaml) among them."""
    run_dir = paths.run_dir(cfg.train.run)
    s = td.schema
    cols = proba_cols(s.n_classes)
    oofs = [pd.read_parquet(_fold_dir(run_dir, k) / "oof.parquet") for k in range(n_splits)]
    tests = [pd.read_parquet(_fold_dir(run_dir, k) / "test.parquet") for k in range(n_splits)]
    oof = pd.concat(oofs, ignore_index=True)
    if not oof["id"].is_unique or set(oof["id"]) != set(td.train["id"]):
        raise DataError(f"{run_dir}: the folds' OOF ids do not cover train exactly once")
    oof = oof.set_index("id").loc[td.train["id"]].reset_index()
    for t in tests[1:]:
        if not t["id"].equals(tests[0]["id"]):
            raise DataError(f"{run_dir}: fold test predictions are not aligned by id")
    test = tests[0][["id"]].copy()
    test[cols] = np.mean([t[cols].to_numpy() for t in tests], axis=0)
    y, p = oof["label"].to_numpy(), oof[cols].to_numpy()
    metas = [read_json(_fold_dir(run_dir, k) / "meta.json") for k in range(n_splits)]
    cv = {"run": cfg.train.run, "family": cfg.train.family, "metric": s.metric,
          "cv": score(s.metric, y, p), "logloss": score("logloss", y, p), "accuracy": score("accuracy", y, p),
          "folds": [{"fold": k, "score": score(s.metric, y[oof["fold"] == k], p[(oof["fold"] == k).to_numpy()]),
                     **{m: metas[k][m] for m in ("best_epoch", "seconds", "train_samples_per_s", "optimizer_steps")}}
                    for k in range(n_splits)],
          "seconds": round(sum(m["seconds"] for m in metas), 2),
          "train_samples_per_s": round(float(np.mean([m["train_samples_per_s"] for m in metas])), 2)}
    if s.binary and s.metric == "f1":
        t, f1 = tune_threshold(y, p[:, 1])
        cv["threshold"] = {"value": t, "f1": f1}
    cv.update(honest_cv(s.metric, y, p, oof["fold"].to_numpy(), cfg.train.searched_folds))
    history = pd.concat([pd.read_csv(_fold_dir(run_dir, k) / "history.csv") for k in range(n_splits)])
    if cfg.train.family == "transformer" and (choice := epoch_choice(history, s.metric)):
        cv["epoch_choice"] = choice
    from pipeline.cli import environment

    with publish(paths, f"train-{cfg.train.run}", {**td.inputs, "config:train": fp}) as tx:
        write_parquet(tx.path(run_dir / "oof.parquet"), oof)
        write_parquet(tx.path(run_dir / "test.parquet"), test)
        write_text(tx.path(run_dir / "history.csv"), history.to_csv(index=False))
        plot_curves(history, tx.path(run_dir / "curves.png"), s.metric)
        write_json(tx.path(run_dir / "cv.json"), cv)
        write_json(tx.path(run_dir / "env.json"), environment())
        write_text(tx.path(run_dir / "config.yaml"), dump_yaml(cfg.to_dict()))
    return cv


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
    sign = 1.0 if GREATER_IS_BETTER[metric] else -1.0
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


def train_run(cfg: Config, paths: Paths, force: bool = False, deadline: budget.Deadline | None = None) -> RunResult:
    tc = cfg.train
    td = load_training_data(cfg, paths)
    run_dir = paths.run_dir(tc.run)
    n_splits = int(td.train["fold"].max()) + 1
    todo = tc.folds if tc.folds is not None else list(range(n_splits))
    bad = [k for k in todo if not 0 <= k < n_splits]
    if bad:
        raise DataError(f"train.folds: fold {bad[0]} does not exist (folds.csv has {n_splits})")
    fp = fingerprint(tc, td)
    from pipeline.modeling import distributed as dist_

    main = dist_.is_main()  # under torchrun / accelerate launch only rank 0 writes artifacts
    log.info("train %s (%s, %s): folds %s; metric %s", tc.run, tc.family,
             tc.classical_model if tc.family == "classical" else tc.backbone, todo, td.schema.metric)
    tokenizer = None
    if tc.family == "transformer":  # (the embedding family loads its encoder only for texts not cached)
        from pipeline.modeling.transformer import load_tokenizer

        tokenizer = load_tokenizer(tc)
    spent: list[float] = []  # seconds of the folds trained here: the pace of the next one
    for k in todo:
        fold_dir = paths.fold_dir(tc.run, k)
        if not force and fold_is_done(run_dir, k, fp, tc.save_checkpoints):
            log.info("fold %d: done already (same config and data): kept", k)
            continue
        if deadline is not None and deadline.end is not None and tc.family != "classical":
            planned = _plan_run(deadline, tc.run) or {}
            pace = measured_pace(paths, deadline, tc.run) or deadline.slowdown()
            per_fold = planned.get("estimate_s", 0.0) / n_splits * pace * tc.epochs / max(planned.get("epochs", 1), 1) \
                if tc.family == "transformer" else planned.get("estimate_s", 0.0) / n_splits * pace
            need = float(np.mean(spent)) if spent else per_fold
            left = deadline.left()
            rest = need * len([j for j in todo if j >= k and not fold_is_done(run_dir, j, fp, tc.save_checkpoints)])
            if need > left and rest - left <= deadline.grace():
                log.warning("train %s: finishing its last %d fold(s) ~%.0fs past the deadline (within the %.0fs grace: "
                            "a run without every fold would be thrown away)", tc.run, round(rest / max(need, 1e-9)),
                            rest - left, deadline.grace())
            elif need > left:
                log.warning("train %s: stopped at a fold boundary before fold %d: it needs ~%.0fs, %.0fs left in the "
                            "budget before ensemble/submit/report; the finished folds are kept (a rerun with more "
                            "time resumes here) but a run without every fold is not blended", tc.run, k, need,
                            max(left, 0))
                budget.update_plan(paths, lambda p, k=k, need=need, left=left: p.setdefault("replans", []).append(
                    f"{tc.run}: stopped before fold {k} (needs ~{need:.0f}s, {max(left, 0):.0f}s left)"))
                break
        # A finished fold with another fingerprint, or a half-done one from another config: start over.
        resume_fp = fold_dir / "resume" / "fingerprint"
        stale = (fold_dir / "meta.json").exists() or (resume_fp.exists() and resume_fp.read_text() != fp)
        if main:
            if force or stale:
                paths.remove_tree(fold_dir)
            fold_dir.mkdir(parents=True, exist_ok=True)
            (fold_dir / "resume").mkdir(exist_ok=True)
            write_text(fold_dir / "resume" / "fingerprint", fp)
        dist_.barrier()
        t0 = time.perf_counter()
        out, val = train_one_fold(cfg, td, k, fold_dir, tokenizer)
        if main:
            _save_fold(paths, fold_dir, k, out, val, td, fp)
        dist_.barrier()
        spent.append(time.perf_counter() - t0)
        log.info("fold %d: %s %.4f (best at epoch %.2f) in %.1fs", k, td.schema.metric, out.best_score,
                 out.best_epoch, time.perf_counter() - t0)
    done = [k for k in range(n_splits) if fold_is_done(run_dir, k, fp, tc.save_checkpoints)]
    cv = None
    if len(done) == n_splits and main:
        cv = aggregate(paths, cfg, td, n_splits, fp)
        extra = f" (F1 {cv['threshold']['f1']:.4f} at threshold {cv['threshold']['value']})" if "threshold" in cv else ""
        if "cv_untouched" in cv:
            extra += (f"; on the folds select/tune never saw ({cv['untouched_folds']}) {cv['cv_untouched']:.4f}, "
                      f"on those they did ({cv['searched_folds']}) {cv['cv_searched']:.4f}")
        if "epoch_choice" in cv:
            e = cv["epoch_choice"]
            extra += (f"; mean fold {cv['metric']} {e['own_best']:.4f} at each fold's best evaluation, "
                      f"{e['chosen_on_other_folds']:.4f} at the one the other folds chose (early-stopping "
                      f"optimism {e['optimism']:+.4f})")
        log.info("train %s: CV %s %.4f%s over %d folds -> %s", tc.run, cv["metric"], cv["cv"], extra, n_splits,
                 run_dir)
    else:
        log.info("train %s: %d of %d folds done; oof/test/cv are written once all are", tc.run, len(done),
                 n_splits)
    return RunResult(run=tc.run, run_dir=run_dir, cv=cv, folds_done=done)


FAMILY_ORDER = {"classical": 0, "embedding": 1, "transformer": 2}  # cheap first: a submission exists early


def run(cfg: Config, paths: Paths, force: bool = False, plan: str | None = None) -> list[RunResult]:
    if not plan:
        return [train_run(cfg, paths, force)]
    plan_path = Path(plan) if Path(plan).is_absolute() else paths.root / plan  # relative to the work directory
    if not plan_path.exists():
        raise DataError(f"{plan_path}: not found; run `make select` (and `make tune`) first")
    if plan_path.resolve() == paths.runs_json.resolve():
        require(paths, "tune")  # the plan tune published, whole and current
    configs = [with_diff(cfg, entry["diff"]) for entry in read_json(plan_path)["runs"]]
    configs.sort(key=lambda c: FAMILY_ORDER.get(c.train.family, 3))
    deadline = budget.Deadline.load(budget.active(cfg))
    results = []
    for i, c in enumerate(configs):
        if deadline.end is not None:
            c = replan(c, configs[i:], deadline, paths, pinned=budget.pinned_keys(cfg))
            if c is None:
                continue
        t0 = time.time()
        result = train_run(c, paths, force, deadline)
        budget.update_plan(paths, lambda p, r=result, s=time.time() - t0: _record_run(p, r, s))
        results.append(result)
    return results


def _record_run(plan: dict[str, Any], result: RunResult, seconds: float) -> None:
    for r in plan["runs"]:
        if r.get("run", r["name"]) == result.run:
            r["actual_s"], r["folds_done"] = round(seconds, 1), result.folds_done
            r["complete"] = result.cv is not None


def _plan_run(deadline: budget.Deadline, run: str) -> dict[str, Any] | None:
    plan = deadline.plan or {}
    return next((r for r in plan.get("runs", []) if r.get("run", r["name"]) == run), None)


def planned_seconds(deadline: budget.Deadline, run: str) -> float | None:
    r = _plan_run(deadline, run)
    return r["estimate_s"] if r else None


def measured_pace(paths: Paths, deadline: budget.Deadline, run: str, say: bool = False) -> float | None:
    """Actual / planned seconds of this candidate's screening in select: the real training loop
    on this data and machine, so a better guide than the probe's few steps (clipped to [0.5, 3]).
    1 (the plan's estimate) when other processes shared the machine's CPU during that screening
    and it ran slow: one disturbed screening once cost mpnet an epoch (``say``: log that)."""
    r = _plan_run(deadline, run)
    if not r or not r.get("screen_s") or not paths.selection_csv.exists():
        return None
    table = pd.read_csv(paths.selection_csv)
    row = table[table["candidate"].astype(str) == r["name"]]
    if row.empty or pd.isna(row["seconds"].iloc[0]):
        return None
    pace = float(np.clip(float(row["seconds"].iloc[0]) / r["screen_s"], 0.5, 3.0))
    others = row["others_cpu"].iloc[0] if "others_cpu" in row else None
    if budget.disturbed(None if pd.isna(others) else float(others)) and pace > 1:
        if say:
            log.warning("train: %s's screening ran at x%.2f its planned pace while other processes used %.0f%% "
                        "of the machine's CPU: the plan's estimate stands for it (a disturbance need not last; "
                        "the fold guard still stops a run that would overrun)", run, pace, 100 * float(others))
        return 1.0
    return pace


def replan(c: Config, remaining: list[Config], deadline: budget.Deadline, paths: Paths,
           pinned: list[str]) -> Config | None:
    """Before each run, with the pace measured so far (this candidate's screening in select, else
    the stages so far): if the runs left need more than the time left, cut the one about to
    start (an epoch at a time, then the run itself); if they need less, give it back epochs the
    plan cut. Logged and kept in reports/plan.json. Classical runs are never cut."""
    if c.train.family == "classical":
        return c

    pace = {r.train.run: measured_pace(paths, deadline, r.train.run, say=r.train.run == c.train.run)
            or deadline.slowdown() for r in remaining}  # read once: select's table does not change here
    need_before = need = sum((planned_seconds(deadline, r.train.run) or 0.0) * pace[r.train.run] for r in remaining)
    own = (planned_seconds(deadline, c.train.run) or 0.0) * pace[c.train.run]
    left = deadline.left()
    epochs = c.train.epochs
    planned = _plan_run(deadline, c.train.run) or {}
    per_epoch = planned.get("epoch_s", own / max(epochs, 1)) * pace[c.train.run]  # what an epoch adds (or takes away)
    can_change = c.train.family == "transformer" and "train.epochs" not in pinned
    if need <= left:
        ceiling = planned.get("ceiling_epochs", epochs)
        while can_change and epochs < ceiling and need + per_epoch <= left:
            epochs, need = epochs + 1, need + per_epoch
        if epochs == c.train.epochs:
            return c
        what = f"{c.train.run}: {epochs} epoch(s) instead of {c.train.epochs}"
    else:
        while need > left and can_change and epochs > 1:
            epochs, need, own = epochs - 1, need - per_epoch, own - per_epoch
        if need > left and own > left:
            what = f"{c.train.run}: skipped"
        elif epochs != c.train.epochs:
            what = f"{c.train.run}: {epochs} epoch(s) instead of {c.train.epochs}"
        else:
            return c  # the others after it pay: the fold guard stops whatever would overrun
    msg = (f"re-plan: {c.train.run} measured at x{pace[c.train.run]:.2f} its planned pace; the {len(remaining)} "
           f"run(s) left then need ~{need_before:.0f}s, "
           f"{max(left, 0):.0f}s left before ensemble/submit/report -> {what}")
    log.warning("%s", msg)
    budget.update_plan(paths, lambda p: p.setdefault("replans", []).append(msg))
    if what.endswith("skipped"):
        return None
    return with_diff(c, {"train": {"epochs": epochs}})


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", default=None,
                        help="train every run listed in this plan (reports/runs.json; relative to --workdir)")


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main
    from pipeline.modeling.transformer import TrainingError

    try:
        return stage_main("train", __doc__, run, argv, _args)
    except TrainingError as e:
        log.error("%s", e)
        return 3


if __name__ == "__main__":
    raise SystemExit(main())
