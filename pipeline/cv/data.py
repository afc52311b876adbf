"""The rows a run trains on: cleaned train and test, their folds, augmented and pseudo-labelled
rows, and what one fold may see of them.

``fold_rows`` is the leakage rule in one place: fold k trains on the originals outside fold k,
the augmented copies of those originals and fold k's pseudo-labelled test rows; it validates
on fold k's originals only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.core.config import Config, TrainConfig
from pipeline.core.contract import Schema, model_inputs, proba_cols
from pipeline.core.files import DataError
from pipeline.core.paths import Paths
from pipeline.core.transaction import inputs_of
from pipeline.cv.splits import load_folds
from pipeline.modeling.base import FoldData

log = logging.getLogger(__name__)
# Fields that change where or how fast a run goes, not what it computes.
NOT_IN_FINGERPRINT = {"run", "folds", "device", "num_workers", "log_every", "eval_batch_size", "searched_folds"}


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

    @property
    def n_splits(self) -> int:
        return int(self.train["fold"].max()) + 1


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
    augmented = _augmented(cfg, paths, train) if cfg.train.augment else None
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


def _augmented(cfg: Config, paths: Paths, train: pd.DataFrame) -> pd.DataFrame:
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
    return aug[["source_id", "input", "label"]]


def pseudo_labels(paths: Paths, teacher: str, test: pd.DataFrame, n_splits: int, threshold: float,
                  n_classes: int) -> dict[int, pd.DataFrame]:
    """Fold k's pseudo-labelled test rows come from the teacher's fold-k model only: it never
    saw fold k's labels, so fold k's validation score stays honest (the teacher's averaged
    test predictions would carry them in)."""
    out = {}
    for k in range(n_splits):
        path = paths.run(teacher).fold(k).test
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
    """Fold k as a family sees it, and its validation rows (ids and labels, for the OOF table)."""
    rows, val = fold_rows(td, k, cfg.max_train_rows, cfg.seed + k)
    return FoldData(train_texts=rows["input"].tolist(), train_labels=rows["label"].to_numpy(),
                    val_texts=val["input"].tolist(), val_labels=val["label"].to_numpy(),
                    test_texts=td.test["input"].tolist()), val


def fingerprint(cfg: TrainConfig, td: TrainingData) -> str:
    """What a fold's results depend on: the training settings and the data; a finished fold
    with another fingerprint is trained again."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_FINGERPRINT}
    return hashlib.sha256(json.dumps([fields, td.fingerprint], sort_keys=True).encode()).hexdigest()[:20]

