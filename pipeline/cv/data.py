"""The rows a run trains on: cleaned train and test, their folds, augmented and pseudo-labelled
rows, a teacher's soft targets, and what one fold may see of them.

``fold_rows`` is the leakage rule in one place: fold k trains on the originals outside fold k,
the augmented copies of those originals and fold k's pseudo-labelled test rows; it validates
on fold k's originals only. A distilled run's training rows carry the teacher's out-of-fold
probability (pipeline.cv.distill): an augmented copy its source row's, a pseudo-labelled row
its pseudo-label.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.config import Config, TrainConfig
from pipeline.core.contract import Schema, labels_of, model_inputs, proba_cols
from pipeline.core.files import DataError
from pipeline.core.paths import Paths
from pipeline.core.transaction import inputs_of
from pipeline.cv import distill
from pipeline.cv.splits import load_folds
from pipeline.modeling.base import FoldData
from pipeline.runtime import other_texts

log = logging.getLogger(__name__)
# Fields that change where or how fast a run goes, not what it computes.
NOT_IN_FINGERPRINT = {"run", "folds", "device", "log_every", "eval_batch_size", "eval_batch_tokens", "searched_folds"}


@dataclass
class TrainingData:
    train: pd.DataFrame  # id, input (input_1 ... for the other text columns), label, fold
    test: pd.DataFrame  # id, input (input_1 ...)
    schema: Schema
    augmented: pd.DataFrame | None  # source_id, input, label (rows made from train rows)
    fingerprint: str
    inputs: dict[str, str]  # the upstream manifests read (transaction.inputs_of)
    cache_dir: Path | None = None  # the embedding family's vectors (data/interim/embeddings)
    pseudo: dict[int, pd.DataFrame] | None = None  # fold k -> confident test rows (id, input, label)
    pretrain_cache: Path | None = None  # encoders pretrained on these texts (data/interim/pretrained)
    teacher: tuple[str, str] | None = None  # distillation: ("run" | "ensemble", name) of train.teacher

    @property
    def n_splits(self) -> int:
        return int(self.train["fold"].max()) + 1

    @property
    def inputs_cols(self) -> list[str]:
        return input_columns(self.train)

    @property
    def soft_cols(self) -> list[str]:
        """The teacher's probability columns of ``train`` (distillation), or none."""
        return [c for c in self.train.columns if c.startswith(SOFT)]

    def corpus(self) -> list[str]:
        """Every model input of train and test, each text column's (pretraining's texts): each
        distinct text once, in order, empty ones left out."""
        cols = self.inputs_cols
        texts = [t for df in (self.train, self.test) for c in cols for t in df[c].astype(str).tolist()]
        return [t for t in dict.fromkeys(texts) if t.strip()]


SOFT = "soft_"  # the teacher's probability columns of TrainingData.train: soft_0, soft_1, ...


def input_columns(df: pd.DataFrame) -> list[str]:
    """input, then input_1, input_2 ... (one per text column after the first)."""
    return ["input", *[c for c in df.columns if c.startswith("input_")]]


def _with_inputs(df: pd.DataFrame, cfg: Config, names: list[str]) -> pd.DataFrame:
    """The model inputs of a cleaned table, as the bundle makes them (pipeline/runtime.py): the
    first text with the extra columns joined before it, then the other text columns
    (``names``: the text columns' own names, which three or more of them carry)."""
    df = df.copy()
    df["input"] = model_inputs(df, cfg.data, names)
    for i, col in enumerate(other_texts(df, names) or [], start=1):
        df[f"input_{i}"] = col
    return df


def load_training_data(cfg: Config, paths: Paths) -> TrainingData:
    stages = ["clean", "folds"] + (["augment"] if cfg.train.augment else [])
    inputs = inputs_of(paths, stages)  # complete and current, or a one-line error naming what to re-run
    schema = Schema.load(paths.schema_json)
    train = pd.read_parquet(paths.train_clean)
    test = pd.read_parquet(paths.test_clean)
    folds = load_folds(paths, train["id"])
    train = _with_inputs(train.merge(folds, on="id", how="left", validate="one_to_one"), cfg, schema.texts)
    test = _with_inputs(test, cfg, schema.texts)
    if schema.multilabel and cfg.train.pseudo_teacher:
        raise DataError("train.pseudo_teacher: pseudo-labels are single-label only (a multi-label row has no one "
                        "confident class); unset it")
    digest = [*sorted(inputs.values()), json.dumps(cfg.data.extra_cols)]
    augmented = _augmented(cfg, paths, train, schema.texts) if cfg.train.augment else None
    pseudo = None
    if cfg.train.pseudo_teacher:
        teacher = cfg.train.pseudo_teacher
        inputs = {**inputs, **inputs_of(paths, [f"train-{teacher}"])}  # whole and current, or one line
        digest.append(inputs[f"manifest:train-{teacher}"])
        pseudo = pseudo_labels(paths, teacher, test[["id", "input"]], int(train["fold"].max()) + 1,
                               cfg.train.pseudo_threshold, schema.n_classes)
    cols = input_columns(train)
    train = train[["id", *cols, "label", "fold"]]
    teacher = None
    if cfg.train.teacher:
        teacher = distill.resolve(paths, cfg.train.teacher)
        stage, teacher_digest = distill.teacher_digest(paths, cfg.train.teacher)
        inputs = {**inputs, **inputs_of(paths, [stage])}  # whole and current, or one line
        digest.append(teacher_digest)
        soft = distill.soft_targets(paths, cfg.train.teacher, train, schema.n_outputs, cfg.train.run)
        train = train.assign(**{f"{SOFT}{j}": soft[:, j] for j in range(soft.shape[1])})
    return TrainingData(train=train, test=test[["id", *cols]], schema=schema,
                        augmented=augmented, fingerprint="|".join(digest), inputs=inputs,
                        cache_dir=paths.embeddings_cache, pseudo=pseudo, pretrain_cache=paths.pretrained_cache,
                        teacher=teacher)


def _augmented(cfg: Config, paths: Paths, train: pd.DataFrame, names: list[str]) -> pd.DataFrame:
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
    aug = _with_inputs(aug.merge(extra, on="source_id", how="left", validate="many_to_one"), cfg, names)
    return aug[["source_id", *input_columns(aug), "label"]]


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
    soft = td.soft_cols
    cols = ["id", *td.inputs_cols, "label"]
    rows = train[cols + soft]
    if td.augmented is not None:
        aug = td.augmented[td.augmented["source_id"].isin(set(train["id"]))].rename(columns={"source_id": "id"})
        if soft:  # a copy learns its source row's soft target
            aug = aug.merge(train[["id", *soft]], on="id", how="left", validate="many_to_one")
        rows = pd.concat([rows, aug[cols + soft]], ignore_index=True)
    if td.pseudo is not None:  # test rows only: never a validation row
        pseudo = td.pseudo[k][cols]
        if soft:  # no OOF for a test row: its pseudo-label, one-hot
            pseudo = pseudo.assign(**{c: (pseudo["label"].to_numpy() == j).astype(float) for j, c in enumerate(soft)})
        rows = pd.concat([rows, pseudo], ignore_index=True)
    return rows.reset_index(drop=True), val.reset_index(drop=True)


def fold_data(td: TrainingData, k: int, cfg: TrainConfig) -> tuple[FoldData, pd.DataFrame]:
    """Fold k as a family sees it, and its validation rows (ids and labels, for the OOF table)."""
    rows, val = fold_rows(td, k, cfg.max_train_rows, cfg.seed + k)
    others = td.inputs_cols[1:]

    def pairs(df: pd.DataFrame) -> list[list[str]] | None:
        return [df[c].tolist() for c in others] or None

    soft = rows[td.soft_cols].to_numpy(np.float64) if td.soft_cols and cfg.teacher else None
    return FoldData(train_texts=rows["input"].tolist(), train_labels=labels_of(rows),
                    val_texts=val["input"].tolist(), val_labels=labels_of(val),
                    test_texts=td.test["input"].tolist(), train_pairs=pairs(rows), val_pairs=pairs(val),
                    test_pairs=pairs(td.test), train_soft=soft), val


def fingerprint(cfg: TrainConfig, td: TrainingData) -> str:
    """What a fold's results depend on: the training settings and the data; a finished fold
    with another fingerprint is trained again."""
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_IN_FINGERPRINT}
    return hashlib.sha256(json.dumps([fields, td.fingerprint], sort_keys=True).encode()).hexdigest()[:20]

