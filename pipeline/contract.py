"""The data contract: read a competition folder, validate it, detect its shape.

id column = first column of sample_submission.csv; label column = the train column that
test lacks; text column = the longest free-text column unless set; several prediction
columns named after classes = a probability-per-class submission.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config import DataConfig
from pipeline.io import DataError, read_competition_csv, read_json, write_json

log = logging.getLogger(__name__)


@dataclass
class Schema:
    id_col: str
    label_col: str
    text_col: str
    extra_cols: list[str]
    classes: list[Any]  # original label values, sorted; index = encoded label
    submission: str  # "label" (one label per row) or "proba" (probabilities)
    pred_cols: list[str]  # sample_submission's columns after the id
    metric: str
    n_train: int = 0
    n_test: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def binary(self) -> bool:
        return self.n_classes == 2

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> Schema:
        if not Path(path).exists():
            raise DataError(f"{path}: not found; run `make clean` first")
        return cls(**read_json(path))


@dataclass
class Competition:
    train: pd.DataFrame
    test: pd.DataFrame
    sample: pd.DataFrame
    schema: Schema
    files: dict[str, Path]


def _line(i: int) -> int:
    """File line of 0-based data row i (line 1 is the header)."""
    return int(i) + 2


def _show(v: Any) -> str:
    return repr(v.item() if hasattr(v, "item") else v)


def _is_text(s: pd.Series) -> bool:
    return s.dtype == object or pd.api.types.is_string_dtype(s)


def detect_text_col(train: pd.DataFrame, test: pd.DataFrame, exclude: set[str]) -> str | None:
    best, best_len = None, -1.0
    for col in train.columns:
        if col in exclude or col not in test.columns or not _is_text(train[col]):
            continue
        mean_len = train[col].dropna().astype(str).str.len().mean()
        mean_len = 0.0 if np.isnan(mean_len) else float(mean_len)
        if mean_len > best_len:
            best, best_len = col, mean_len
    return best


def _sorted_classes(values: pd.Series) -> list[Any]:
    uniq = pd.unique(values.dropna())
    try:
        ordered = sorted(uniq.tolist())
    except TypeError:
        ordered = sorted(uniq.tolist(), key=str)
    return [v.item() if hasattr(v, "item") else v for v in ordered]


def _detect_submission(sample: pd.DataFrame, pred_cols: list[str], classes: list[Any]) -> str:
    if len(pred_cols) > 1:
        return "proba"
    col = sample[pred_cols[0]]
    if pd.api.types.is_float_dtype(col) and not np.allclose(col.dropna() % 1, 0):
        return "proba"  # e.g. 0.5 everywhere: the positive-class probability
    return "label"


def _default_metric(submission: str, n_classes: int) -> str:
    if submission == "proba":
        return "logloss"
    return "f1" if n_classes == 2 else "accuracy"


def detect_schema(train: pd.DataFrame, test: pd.DataFrame, sample: pd.DataFrame, cfg: DataConfig,
                  files: dict[str, Path]) -> Schema:
    id_col = cfg.id_col or sample.columns[0]
    for name, df in (("train", train), ("test", test), ("sample", sample)):
        if id_col not in df.columns:
            raise DataError(f"{files[name]}: no column {id_col!r} (the id column, first column of "
                            f"sample_submission.csv); columns are {', '.join(df.columns)}")
    pred_cols = [c for c in sample.columns if c != id_col]
    if not pred_cols:
        raise DataError(f"{files['sample']}: needs at least one prediction column after {id_col!r}")
    if cfg.label_col:
        label_col = cfg.label_col
        if label_col not in train.columns:
            raise DataError(f"{files['train']}: no column {label_col!r} (data.label_col); "
                            f"columns are {', '.join(train.columns)}")
    else:
        only_train = [c for c in train.columns if c not in test.columns and c != id_col]
        named = [c for c in only_train if c in pred_cols]
        if len(only_train) == 1:
            label_col = only_train[0]
        elif named:
            label_col = named[0]
        elif not only_train:
            in_test = [c for c in pred_cols if c in train.columns and c in test.columns]
            if in_test:
                raise DataError(f"{files['test']}: column {in_test[0]!r}: the label column must not be in test.csv")
            raise DataError(f"{files['train']}: no label column: every column is also in test.csv; "
                            "set data.label_col")
        else:
            raise DataError(f"{files['train']}: several columns are missing from test.csv "
                            f"({', '.join(only_train)}); set data.label_col")
    if label_col in test.columns:
        raise DataError(f"{files['test']}: column {label_col!r}: the label column must not be in test.csv")

    exclude = {id_col, label_col}
    text_col = cfg.text_col or detect_text_col(train, test, exclude)
    if text_col is None:
        raise DataError(f"{files['train']}: no free-text column shared with test.csv; set data.text_col")
    for name, df in (("train", train), ("test", test)):
        if text_col not in df.columns:
            raise DataError(f"{files[name]}: no column {text_col!r} (data.text_col); "
                            f"columns are {', '.join(df.columns)}")
    for col in cfg.extra_cols:
        for name, df in (("train", train), ("test", test)):
            if col not in df.columns:
                raise DataError(f"{files[name]}: no column {col!r} (data.extra_cols)")

    classes = _sorted_classes(train[label_col])
    if len(classes) < 2:
        raise DataError(f"{files['train']}: column {label_col!r}: needs at least 2 classes, found {classes}")
    submission = _detect_submission(sample, pred_cols, classes)
    if submission == "proba" and len(pred_cols) > 1:
        names = {str(c) for c in classes}
        missing = [c for c in pred_cols if c not in names]
        if missing:
            raise DataError(f"{files['sample']}: column {missing[0]!r} is not a class of "
                            f"{label_col!r} (classes: {', '.join(map(str, classes))})")
    if submission == "proba" and len(pred_cols) == 1 and len(classes) != 2:
        raise DataError(f"{files['sample']}: one probability column needs a binary label; "
                        f"{label_col!r} has {len(classes)} classes")
    metric = cfg.metric or _default_metric(submission, len(classes))
    if metric in ("f1", "roc_auc") and len(classes) != 2:
        raise DataError(f"data.metric={metric} needs a binary label; {label_col!r} has {len(classes)} classes")
    return Schema(id_col=id_col, label_col=label_col, text_col=text_col, extra_cols=list(cfg.extra_cols),
                  classes=classes, submission=submission, pred_cols=pred_cols, metric=metric,
                  n_train=len(train), n_test=len(test))


def _check_ids(df: pd.DataFrame, id_col: str, path: Path) -> None:
    ids = df[id_col]
    if ids.isna().any():
        i = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise DataError(f"{path}: line {_line(i)}, column {id_col!r}: empty id")
    dup = ids.duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((ids == ids.iloc[i]).to_numpy())[0])
        raise DataError(f"{path}: line {_line(i)}, column {id_col!r}: duplicate id {_show(ids.iloc[i])} "
                        f"(first at line {_line(first)})")


def validate(comp: Competition, cfg: DataConfig) -> Competition:
    """Check ids and labels; apply the documented handling of empty texts and NaN labels."""
    s, f = comp.schema, comp.files
    for name in ("train", "test", "sample"):
        _check_ids(getattr(comp, name), s.id_col, f[name])
    test_ids = set(comp.test[s.id_col].tolist())
    missing = ~comp.sample[s.id_col].isin(test_ids).to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"{f['sample']}: line {_line(i)}, column {s.id_col!r}: id "
                        f"{_show(comp.sample[s.id_col].iloc[i])} is not in test.csv")
    if len(comp.sample) != len(comp.test):
        extra = ~comp.test[s.id_col].isin(set(comp.sample[s.id_col].tolist())).to_numpy()
        i = int(np.flatnonzero(extra)[0])
        raise DataError(f"{f['test']}: line {_line(i)}, column {s.id_col!r}: id "
                        f"{_show(comp.test[s.id_col].iloc[i])} is not in sample_submission.csv")

    train = comp.train
    nan_label = train[s.label_col].isna().to_numpy()
    if nan_label.any():
        i = int(np.flatnonzero(nan_label)[0])
        if cfg.nan_label == "error":
            raise DataError(f"{f['train']}: line {_line(i)}, column {s.label_col!r}: empty label "
                            f"({int(nan_label.sum())} rows; set data.nan_label=drop to drop them)")
        log.warning("dropping %d train rows with an empty label (data.nan_label=drop), first at line %d",
                    nan_label.sum(), _line(i))
        s.notes.append(f"dropped {int(nan_label.sum())} train rows with an empty label")
        train = train.loc[~nan_label]
    for name in ("train", "test"):
        df = train if name == "train" else comp.test
        empty = df[s.text_col].isna() | (df[s.text_col].astype(str).str.strip() == "")
        n = int(empty.sum())
        if not n:
            continue
        i = int(np.flatnonzero(empty.to_numpy())[0])
        if name == "train" and cfg.empty_text == "drop":
            log.warning("dropping %d train rows with an empty %r (data.empty_text=drop), first at line %d",
                        n, s.text_col, _line(i))
            s.notes.append(f"dropped {n} train rows with empty text")
            train = train.loc[~empty.to_numpy()]
        else:
            log.warning("%s: %d rows with an empty %r kept as empty strings, first at line %d",
                        f[name], n, s.text_col, _line(i))
            s.notes.append(f"{name}: {n} rows with empty text kept as ''")
    if train.empty:
        raise DataError(f"{f['train']}: no rows left after dropping empty labels/texts")
    comp.train = train.reset_index(drop=True)
    comp.schema.n_train = len(comp.train)
    return comp


def load_competition(raw: Path, cfg: DataConfig) -> Competition:
    files = {"train": raw / "train.csv", "test": raw / "test.csv", "sample": raw / "sample_submission.csv"}
    train = read_competition_csv(files["train"])
    test = read_competition_csv(files["test"])
    sample = read_competition_csv(files["sample"])
    schema = detect_schema(train, test, sample, cfg, files)
    comp = Competition(train=train, test=test, sample=sample, schema=schema, files=files)
    return validate(comp, cfg)


def encode_labels(values: pd.Series, classes: list[Any]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    index.update({str(c): i for i, c in enumerate(classes)})
    return np.array([index[v if v in index else str(v)] for v in values.tolist()], dtype=np.int64)


def model_inputs(df: pd.DataFrame, cfg: DataConfig) -> list[str]:
    """The text a model sees: extra columns (e.g. keyword) joined before the cleaned text."""
    texts = df["text"].fillna("").astype(str)
    if not cfg.extra_cols:
        return texts.tolist()
    parts = []
    for col in cfg.extra_cols:
        vals = df[col].astype("string").fillna("")
        parts.append([cfg.extra_template.format(col=col, value=v) if v else "" for v in vals])
    out = []
    for i, text in enumerate(texts):
        pieces = [p[i] for p in parts if p[i]]
        out.append(cfg.sep.join([*pieces, text]))
    return out
