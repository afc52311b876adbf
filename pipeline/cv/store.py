"""A run's folds on disk: what a finished fold holds, how it is written and read back.

A fold is done when its ``meta.json`` (written last) carries the run's config fingerprint and
its OOF is there (and, when models are kept, its model): a killed run keeps every fold done
before the kill. With several seeds, each seed's predictions are kept as it finishes.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.contract import proba_cols
from pipeline.core.files import atomic_path, read_json, write_json, write_parquet, write_text
from pipeline.core.paths import FoldPaths, Paths
from pipeline.core.transaction import load_manifest, published
from pipeline.modeling.base import FoldOutput

log = logging.getLogger(__name__)
META_FIELDS = ("best_epoch", "best_score", "optimizer_steps", "seconds", "train_samples_per_s", "batch_size",
               "grad_accum")


def fold_models(fold: FoldPaths) -> list[Path]:
    """The saved model folders of one fold: fold<k>/model, or fold<k>/seed<s>/model per seed."""
    if fold.model.is_dir():
        return [fold.model]
    return [FoldPaths(d).model for d in fold.seed_dirs() if FoldPaths(d).model.is_dir()]


def fold_is_done(fold: FoldPaths, fp: str, needs_model: bool = False) -> bool:
    """Fold k finished under this fingerprint (and, when models are kept, its model is there:
    `make package` ships it, so a fold from before models were kept is trained again)."""
    return fold.meta.exists() and read_json(fold.meta).get("fingerprint") == fp and fold.oof.exists() and \
        (not needs_model or bool(fold_models(fold)))


def start_fold(paths: Paths, fold: FoldPaths, fp: str, force: bool) -> None:
    """Ready the fold's folder: a finished fold with another fingerprint, or a half-done one
    from another config, starts over; a half-done one of this config keeps its checkpoint."""
    stale = fold.meta.exists() or (fold.resume_fingerprint.exists() and fold.resume_fingerprint.read_text() != fp)
    if force or stale:
        paths.remove_tree(fold.dir)
    fold.dir.mkdir(parents=True, exist_ok=True)
    fold.resume.mkdir(exist_ok=True)
    write_text(fold.resume_fingerprint, fp)


def save_fold(paths: Paths, fold: FoldPaths, k: int, out: FoldOutput, val: pd.DataFrame, test_ids: pd.Series,
              n_outputs: int, fp: str) -> None:
    """The fold's OOF and test predictions, history, and its meta.json last; then its resume
    checkpoints go (the fold is done)."""
    cols = proba_cols(n_outputs)
    oof = pd.DataFrame(out.val_proba, columns=cols)
    oof.insert(0, "id", val["id"].to_numpy())
    oof.insert(1, "fold", k)
    oof.insert(2, "label", val["label"].to_numpy())
    test = pd.DataFrame(out.test_proba, columns=cols)
    test.insert(0, "id", test_ids.to_numpy())
    write_parquet(fold.oof, oof)
    write_parquet(fold.test, test)
    write_text(fold.history, pd.DataFrame(out.history).to_csv(index=False))
    write_json(fold.meta, {
        "fingerprint": fp, "fold": k, "score": out.best_score, "best_epoch": out.best_epoch,
        "seconds": round(out.seconds, 2), "train_samples_per_s": round(out.train_samples_per_s, 2),
        "optimizer_steps": out.optimizer_steps, "batch_size": out.batch_size, "grad_accum": out.grad_accum})
    for d in [fold.dir, *fold.seed_dirs()]:
        paths.remove_tree(FoldPaths(d).resume)


def load_seed(part: FoldPaths) -> FoldOutput | None:
    """One seed's finished predictions (fold<k>/seed<s>/), or None."""
    if not part.seed_proba.exists():
        return None
    with np.load(part.seed_proba, allow_pickle=False) as z:
        meta = read_json(part.meta)
        return FoldOutput(val_proba=z["val"], test_proba=z["test"], history=meta["history"],
                          **{f: meta[f] for f in META_FIELDS})


def save_seed(part: FoldPaths, seed: int, out: FoldOutput) -> None:
    with atomic_path(part.seed_proba) as tmp, open(tmp, "wb") as f:
        np.savez(f, val=out.val_proba, test=out.test_proba)
    write_json(part.meta, {"history": [{**h, "seed": seed} for h in out.history],
                           **{f: getattr(out, f) for f in META_FIELDS}})


def finished_runs(paths: Paths) -> list[str]:
    """Runs whose outputs were published whole (a manifest); a run folder without one was
    killed while publishing, or trained only some folds: left out, and said so."""
    runs = published(paths, "train")
    for r in paths.runs_with_cv():
        if r.dir.name not in runs:
            log.warning("ensemble: %s has outputs but no manifest (killed while publishing?): left out; rerun "
                        "`make train` for it", r.dir)
    return runs


def keep_version(paths: Paths, run: str, fp: str) -> Path | None:
    """Before a run is trained again under other settings, its published version is kept: the
    run folder is copied (hard links: no second copy on disk) to
    ``models/.archive/<run>/<old fingerprint>/``, so the name users type stays the newest version
    and every earlier one can still be read. Nothing happens for a run never published, or
    published under this fingerprint (a resume, a rerun of the same config)."""
    m = load_manifest(paths, f"train-{run}")
    src = paths.run(run).dir
    old = m.inputs.get("config:train") if m else None
    if old is None or old == fp or not src.is_dir():
        return None
    dest = paths.models / ".archive" / run / old[:12]
    if dest.exists():  # kept already: a resumed run whose folds are half replaced, or settings trained back
        return None
    staged = dest.with_name(dest.name + ".partial")
    paths.remove_tree(staged)
    shutil.copytree(src, staged, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("resume"))
    (staged / "manifest.json").write_text((paths.manifest(f"train-{run}")).read_text())
    os.replace(staged, dest)
    log.info("train %s: its settings changed; the earlier version (config %s) is kept in %s", run, old[:12],
             dest.relative_to(paths.root))
    return dest


def _link_or_copy(src: str, dst: str) -> None:
    """A hard link (no second copy on disk; every writer here replaces files, never edits them
    in place), or a copy where the file system has none."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
