"""The data contract: read a competition folder, validate it, detect its shape.

id column = first column of sample_submission.csv; label column = the train column that
test lacks; text column = the longest free-text column unless set; several prediction
columns named after classes = a probability-per-class submission.

Shapes beyond one text and one label, detected and logged with the reason (or pinned):
- multi-label: two or more train-only columns, each with two values, each a column of the
  sample (``data.label_cols``): labels become an (n, L) 0/1 matrix;
- text pairs: a second free-text column at least a quarter of the first's median length
  (``data.text_cols``); three or more such columns are refused, naming the two settings.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.config import DataConfig
from pipeline.core.files import DataError, read_competition_csv, read_json, row_line, write_json
from pipeline.core.metrics import METRICS, metric_of
from pipeline.core.sources import competition_files
from pipeline.runtime import PERCENT_ENCODED, percent_decoded

log = logging.getLogger(__name__)

MIN_TEXT_CHARS = 10  # a guessed text column with a shorter median is refused
HUGE_TEXT_CHARS = 100_000  # texts longer than this are reported (and truncated by the tokenizer)
PAIR_RATIO = 0.25  # a second free-text column this long (median, against the first's) is a text of its own


def proba_cols(n_outputs: int) -> list[str]:
    """The probability columns of every OOF and test prediction table: p_0 .. p_{n-1}."""
    return [f"p_{i}" for i in range(n_outputs)]


@dataclass
class Schema:
    id_col: str
    label_col: str  # multi-label: the first label column
    text_col: str  # the first text column
    extra_cols: list[str]
    # single label: the label values, sorted (index = encoded label); multi-label: the label
    # columns (index = output column): either way one entry per probability column
    classes: list[Any]
    submission: str  # "label" (one label per row), "proba" (probabilities) or "ranked" (top-k labels, MAP@k)
    pred_cols: list[str]  # sample_submission's columns after the id
    metric: str
    n_train: int = 0
    n_test: int = 0
    notes: list[str] = field(default_factory=list)
    multilabel: bool = False
    label_values: list[list[str]] = field(default_factory=list)  # multi-label: [negative, positive] per label
    text_cols: list[str] = field(default_factory=list)  # every text column, in order (a pair: two)
    guessed: list[str] = field(default_factory=list)  # choices made without a setting: to confirm
    files: dict[str, str] = field(default_factory=dict)  # train / test / sample as read

    @property
    def n_classes(self) -> int:
        """Probability columns: classes (single label) or labels (multi-label)."""
        return len(self.classes)

    @property
    def n_outputs(self) -> int:
        return len(self.classes)

    @property
    def binary(self) -> bool:
        return self.n_classes == 2 and not self.multilabel

    @property
    def texts(self) -> list[str]:
        return self.text_cols or [self.text_col]

    @property
    def label_cols(self) -> list[str]:
        return list(self.classes) if self.multilabel else [self.label_col]

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


def _line(df: pd.DataFrame, i: int) -> int:
    """File line of the row at position i (line 1 is the header)."""
    return row_line(df, i)


def _show(v: Any) -> str:
    return repr(v.item() if hasattr(v, "item") else v)


def _is_text(s: pd.Series) -> bool:
    return s.dtype == object or pd.api.types.is_string_dtype(s)


def _as_number(v: str) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None


def _agree(train: pd.DataFrame, test: pd.DataFrame, label_cols: list[str], cfg: DataConfig,
           files: dict[str, Path]) -> None:
    """Train and test hold the same columns, bar the labels and what data.ignore_cols lists."""
    ignored = set(cfg.ignore_cols)
    for name, df, other, other_name in (("train", train, test, "test"), ("test", test, train, "train")):
        for col in df.columns:
            if col in ignored or col in label_cols or col in other.columns:
                continue
            raise DataError(f"{files[name]}: column {col!r} is not in {other_name}.csv; a model can only use "
                            f"columns both files have: rename it to match, or list it in data.ignore_cols")


def _two_valued(train: pd.DataFrame, col: str) -> bool:
    return train[col].dropna().astype(str).nunique() == 2


def _pick_labels(train: pd.DataFrame, test: pd.DataFrame, id_col: str, pred_cols: list[str], cfg: DataConfig,
                 files: dict[str, Path]) -> tuple[list[str], str, bool]:
    """(label columns, why, multi-label)."""
    if cfg.label_cols:
        for col in cfg.label_cols:
            if col not in train.columns:
                raise DataError(f"{files['train']}: no column {col!r} (data.label_cols); "
                                f"columns are {', '.join(train.columns)}")
        return [c for c in pred_cols if c in cfg.label_cols] or list(cfg.label_cols), "set by data.label_cols", True
    if cfg.label_col:
        if cfg.label_col not in train.columns:
            raise DataError(f"{files['train']}: no column {cfg.label_col!r} (data.label_col); "
                            f"columns are {', '.join(train.columns)}")
        return [cfg.label_col], "set by data.label_col", False
    only_train = [c for c in train.columns if c not in test.columns and c != id_col and c not in cfg.ignore_cols]
    named = [c for c in only_train if c in pred_cols]
    if len(only_train) == 1:
        return only_train, "the only train column that test.csv lacks", False
    if len(only_train) >= 2 and len(named) == len(only_train) and all(_two_valued(train, c) for c in only_train):
        return [c for c in pred_cols if c in only_train], (
            f"{len(only_train)} train columns that test.csv lacks, each with two values and each a column of "
            "sample_submission.csv: a multi-label competition"), True
    if len(named) == 1:
        return named, "the train column that test.csv lacks and sample_submission.csv names", False
    if not only_train:
        in_test = [c for c in pred_cols if c in train.columns and c in test.columns]
        if in_test:
            raise DataError(f"{files['test']}: column {in_test[0]!r}: the label column must not be in test.csv")
        raise DataError(f"{files['train']}: no label column: every column is also in test.csv; "
                        "set data.label_col")
    raise DataError(f"{files['train']}: several columns are missing from test.csv "
                    f"({', '.join(only_train)}); set data.label_col (and data.ignore_cols for the others), or "
                    "data.label_cols for a multi-label competition")


def detect_text_col(train: pd.DataFrame, test: pd.DataFrame, exclude: set[str]) -> str | None:
    """The free-text column with the longest median length (ties: the first)."""
    ranked = _text_candidates(train, test, exclude)
    return ranked[0][0] if ranked else None


def _text_candidates(train: pd.DataFrame, test: pd.DataFrame, exclude: set[str]) -> list[tuple[str, float, float]]:
    out = []
    for col in train.columns:
        if col in exclude or col not in test.columns or not _is_text(train[col]):
            continue
        values = train[col].dropna().astype(str)
        median = float(values.str.len().median()) if len(values) else 0.0
        out.append((col, median, 1 - len(values) / max(len(train), 1)))
    return sorted(out, key=lambda t: -t[1])


def _pick_texts(train: pd.DataFrame, test: pd.DataFrame, exclude: set[str], cfg: DataConfig,
                files: dict[str, Path]) -> tuple[list[str], str]:
    """(text columns, why): one, or a pair, never a free-text column dropped without a word."""
    if cfg.text_cols:
        return list(cfg.text_cols), "set by data.text_cols"
    if cfg.text_col:
        return [cfg.text_col], "set by data.text_col"
    ranked = _text_candidates(train, test, exclude)
    if not ranked:
        raise DataError(f"{files['train']}: no free-text column shared with test.csv; set data.text_col")
    col, median, empty = ranked[0]
    others = ", ".join(f"{c} ({m:.0f})" for c, m, _ in ranked[1:]) or "none"
    if empty > 0.5 or median < MIN_TEXT_CHARS:
        raise DataError(f"{files['train']}: column {col!r}, the longest text column, is not free text "
                        f"(median {median:.0f} characters, {empty:.0%} empty); set data.text_col")
    texts = [c for c, m, e in ranked[1:] if m >= max(MIN_TEXT_CHARS, PAIR_RATIO * median) and e <= 0.5]
    if len(texts) == 1:
        second = next(m for c, m, _ in ranked if c == texts[0])
        pair = [c for c in train.columns if c in (col, texts[0])]  # in the file's order: question1, question2
        return pair, (f"a text pair: {texts[0]!r} (median {second:.0f} characters) is free text beside "
                      f"{col!r} (median {median:.0f}), at least {PAIR_RATIO:.0%} of its length; "
                      f"set data.text_col={col} to model one of them")
    if texts:
        names = ", ".join([col, *texts])
        raise DataError(f"{files['train']}: columns {names} are all free text (median lengths "
                        f"{', '.join(f'{m:.0f}' for c, m, _ in ranked if c in [col, *texts])}); set "
                        f"data.text_cols=[{names.replace(' ', '')}] to model them together, or data.text_col to model "
                        "one")
    return [col], f"the longest free-text column (median {median:.0f} characters; others: {others})"


def sorted_classes(values: pd.Series, path: Path | None = None, col: str = "") -> list[Any]:
    """Distinct labels as spelled in the file, in numeric order when all are numbers.

    Two spellings of one number (``1`` and ``1.0``) would become two classes: refused."""
    frame = values.dropna()
    uniq = [str(v) for v in pd.unique(frame)]
    numbers = {v: _as_number(v) for v in uniq}
    if all(x is not None for x in numbers.values()):
        seen: dict[float, str] = {}
        for v in uniq:
            if numbers[v] in seen:
                i = int(np.flatnonzero((frame.astype(str) == v).to_numpy())[0])
                where = f"line {row_line(frame, i)}, " if path else ""
                raise DataError(f"{path or 'labels'}: {where}column {col!r}: label {v!r} is the number "
                                f"{seen[numbers[v]]!r} spelled differently; use one spelling per class")
            seen[numbers[v]] = v
        return sorted(uniq, key=lambda v: numbers[v])
    return sorted(uniq)


KIND_WORDS = {"proba": "probabilities", "label": "labels",
              "ranked": "the most probable labels of each row, space-separated"}
KIND_NAMES = {"proba": "probability", "label": "label", "ranked": "ranked-labels"}


def _ranked_width(sample: pd.DataFrame, pred_cols: list[str], classes: list[Any]) -> int | None:
    """How many labels each row of the sample lists, where it lists several of the classes,
    space-separated (a MAP@k sample: ``14-35-14 10-26-26 Urea``); else None."""
    if len(pred_cols) != 1:
        return None
    known = {str(c) for c in classes}
    values = sample[pred_cols[0]].dropna().astype(str)
    if values.empty or values.isin(known).any():
        return None
    tokens = values.str.split()
    if tokens.str.len().min() < 2 or not all(set(t) <= known for t in tokens):
        return None
    return int(tokens.str.len().max())


def _detect_submission(sample: pd.DataFrame, pred_cols: list[str], metric: str | None,
                       cfg: DataConfig, multilabel: bool = False, width: int | None = None) -> tuple[str, str]:
    if cfg.submission:
        return cfg.submission, "set by data.submission"
    if len(pred_cols) > 1 and not multilabel:
        return "proba", f"sample_submission.csv has {len(pred_cols)} prediction columns (one per class)"
    if metric:
        kind = metric_of(metric).submission
        whatever = ", whatever the sample's values look like" if kind == "proba" else ""
        return kind, f"data.metric={metric} scores {KIND_WORDS[kind]}{whatever}"
    if width:
        example = sample[pred_cols[0]].dropna().astype(str).iloc[0]
        return "ranked", f"sample_submission.csv's {pred_cols[0]!r} lists {width} labels per row (e.g. {example!r})"
    values = [_as_number(v) for v in sample[pred_cols[0]].dropna().astype(str)]
    if values and all(x is not None for x in values) and any(x % 1 for x in values):
        return "proba", f"sample_submission.csv's {pred_cols[0]!r} holds fractions (e.g. {values[0]})"
    return "label", f"sample_submission.csv's {pred_cols[0]!r} holds labels, not fractions"


def _default_metric(submission: str, n_classes: int, multilabel: bool = False, width: int | None = None,
                    files: dict[str, Path] | None = None) -> str:
    if multilabel:  # Jigsaw's mean column-wise ROC AUC; a 0/1 sample: F1 over every label decision
        return "mean_auc" if submission == "proba" else "micro_f1"
    if submission == "ranked":  # MAP@k, k = the labels the sample lists per row
        ranked = {m.top_k: m.name for m in METRICS.values() if m.submission == "ranked"}
        k = width or min(ranked)
        if k not in ranked:
            raise DataError(f"{(files or {}).get('sample', 'sample_submission.csv')}: lists {k} labels per row; no "
                            f"metric scores {k} (registered: {', '.join(ranked.values())}): set data.metric")
        return ranked[k]
    if submission == "proba":
        return "logloss"
    return "f1" if n_classes == 2 else "accuracy"


def _check_metric(metric: str, classes: list[Any], label_col: str, submission: str, multilabel: bool) -> None:
    why = metric_of(metric).refusal(classes, label_col, submission, multilabel)
    if why:
        raise DataError(why)


def _check_expressible(train: pd.DataFrame, label_col: str, classes: list[Any], submission: str,
                       pred_cols: list[str], files: dict[str, Path]) -> None:
    """Every train label can be written in the submission the sample asks for."""
    if submission == "proba" and len(pred_cols) > 1:
        names = set(pred_cols)
        extra = [c for c in pred_cols if c not in set(classes)]
        if extra:
            raise DataError(f"{files['sample']}: column {extra[0]!r} is not a class of {label_col!r} "
                            f"(classes: {', '.join(map(str, classes))})")
        bad = ~train[label_col].isna() & ~train[label_col].astype(str).isin(names)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{files['train']}: line {_line(train, i)}, column {label_col!r}: label "
                            f"{_show(train[label_col].iloc[i])} has no column in sample_submission.csv "
                            f"(columns: {', '.join(pred_cols)})")
    if submission == "ranked":
        if len(pred_cols) != 1:
            raise DataError(f"{files['sample']}: a ranked submission is one column of labels; the sample has "
                            f"{len(pred_cols)} ({', '.join(pred_cols)})")
        spaced = [c for c in classes if len(str(c).split()) != 1]
        if spaced:
            raise DataError(f"{files['train']}: column {label_col!r}: label {spaced[0]!r} holds a space, but a ranked "
                            "submission separates its labels by spaces")
    if submission == "proba" and len(pred_cols) == 1 and len(classes) != 2:
        raise DataError(f"{files['sample']}: one probability column needs a binary label; "
                        f"{label_col!r} has {len(classes)} classes")


def _label_values(train: pd.DataFrame, label_cols: list[str], files: dict[str, Path]) -> list[list[str]]:
    """Multi-label: each column's [negative, positive] spelling (positive: the second sorted, as
    for a binary label)."""
    out = []
    for col in label_cols:
        values = sorted_classes(train[col], files["train"], col)
        if len(values) != 2:
            raise DataError(f"{files['train']}: column {col!r}: a multi-label column needs two values (0/1), "
                            f"found {len(values)} ({', '.join(values[:5])})")
        out.append(values)
    return out


def _check_columns(train: pd.DataFrame, test: pd.DataFrame, id_col: str, label_cols: list[str],
                   text_cols: list[str], ignored: list[str], cfg: DataConfig, files: dict[str, Path]) -> None:
    for col in label_cols:
        if col in test.columns:
            raise DataError(f"{files['test']}: column {col!r}: the label column must not be in test.csv")
    for col in cfg.ignore_cols:
        if col == id_col or col in label_cols:
            raise DataError(f"data.ignore_cols lists {col!r}, the {'id' if col == id_col else 'label'} column")
    for col in text_cols:
        for name, df in (("train", train), ("test", test)):
            if col not in df.columns:
                key = "data.text_cols" if cfg.text_cols else "data.text_col"
                raise DataError(f"{files[name]}: no column {col!r} ({key}); columns are {', '.join(df.columns)}")
    for col in cfg.extra_cols:
        for name, df in (("train", train), ("test", test)):
            if col not in df.columns or col in ignored:
                raise DataError(f"{files[name]}: no column {col!r} (data.extra_cols)")
        if col in text_cols:
            raise DataError(f"data.extra_cols lists {col!r}, a text column the models read already")


def detect_schema(train: pd.DataFrame, test: pd.DataFrame, sample: pd.DataFrame, cfg: DataConfig,
                  files: dict[str, Path]) -> Schema:
    """Classify the columns of both files once; log each choice and why; refuse weak guesses."""
    id_col = cfg.id_col or sample.columns[0]
    for name, df in (("train", train), ("test", test), ("sample", sample)):
        if id_col not in df.columns:
            raise DataError(f"{files[name]}: no column {id_col!r} (the id column, first column of "
                            f"sample_submission.csv); columns are {', '.join(df.columns)}")
    pred_cols = [c for c in sample.columns if c != id_col]
    if not pred_cols:
        raise DataError(f"{files['sample']}: needs at least one prediction column after {id_col!r}")
    label_cols, label_why, multilabel = _pick_labels(train, test, id_col, pred_cols, cfg, files)
    label_col = label_cols[0]
    if label_col in test.columns:
        raise DataError(f"{files['test']}: column {label_col!r}: the label column must not be in test.csv")
    _agree(train, test, label_cols, cfg, files)
    ignored = [c for c in cfg.ignore_cols if c in train.columns or c in test.columns]
    exclude = {id_col, *label_cols, *ignored}
    text_cols, text_why = _pick_texts(train, test, exclude, cfg, files)
    _check_columns(train, test, id_col, label_cols, text_cols, ignored, cfg, files)
    if multilabel:
        missing = [c for c in label_cols if c not in pred_cols] or [c for c in pred_cols if c not in label_cols]
        if missing:
            raise DataError(f"{files['sample']}: column {missing[0]!r}: a multi-label sample holds one column per "
                            f"label ({', '.join(label_cols)}) and nothing else")
        values, classes = _label_values(train, label_cols, files), list(label_cols)
    else:
        values, classes = [], sorted_classes(train[label_col], files["train"], label_col)
        if len(classes) < 2:
            raise DataError(f"{files['train']}: column {label_col!r}: needs at least 2 classes, found {classes}")
    width = None if multilabel else _ranked_width(sample, pred_cols, classes)
    submission, sub_why = _detect_submission(sample, pred_cols, cfg.metric, cfg, multilabel, width)
    if not multilabel:
        _check_expressible(train, label_col, classes, submission, pred_cols, files)
        _refuse_id_like_label(train, label_col, classes, submission, pred_cols, cfg, files)
    metric = cfg.metric or _default_metric(submission, len(classes), multilabel, width, files)
    _check_metric(metric, classes, label_col, submission, multilabel)
    shape = f"{len(classes)} labels" if multilabel else f"{len(classes)} classes"
    metric_why = "set by data.metric" if cfg.metric else (
        f"the default for a {KIND_NAMES[submission]} submission with "
        f"{shape}; Kaggle's metric may differ: set data.metric")
    extra = [c for c in train.columns if c not in exclude and c not in text_cols]
    label_note = (f"labels: {', '.join(label_cols)} ({label_why}); positive values: "
                  f"{', '.join(v[1] for v in values)}" if multilabel else
                  f"label: {label_col!r} ({label_why}); classes: {', '.join(map(str, classes))}")
    notes = [f"id: {id_col!r} (first column of sample_submission.csv)" if not cfg.id_col
             else f"id: {id_col!r} (set by data.id_col)", label_note,
             f"text: {', '.join(repr(c) for c in text_cols)} ({text_why})",
             f"extra columns (usable with data.extra_cols): {', '.join(extra) or 'none'}; "
             f"ignored: {', '.join(ignored) or 'none'}",
             f"submission: {submission} ({sub_why})", f"metric: {metric} ({metric_why})"]
    for col in extra:
        note = percent_note(col, pd.concat([train[col], test[col]]) if col in test.columns else train[col])
        notes += [note] if note else []
    if not multilabel and len(classes) == 2 and metric_of(metric).binary:
        notes.append(f"positive class for {metric}: {classes[1]!r} (the second of the sorted classes)")
    guessed = [g for g, set_ in (
        (f"metric guessed: {metric} — set data.metric to the competition's metric", cfg.metric),
        (f"text column guessed: {', '.join(text_cols)} — set data.text_col (or data.text_cols) to confirm",
         cfg.text_col or cfg.text_cols),
        (f"submission kind guessed: {submission} — set data.submission to confirm", cfg.submission)) if not set_]
    return Schema(id_col=id_col, label_col=label_col, text_col=text_cols[0], extra_cols=list(cfg.extra_cols),
                  classes=classes, submission=submission, pred_cols=pred_cols, metric=metric,
                  n_train=len(train), n_test=len(test), notes=notes, multilabel=multilabel, label_values=values,
                  text_cols=text_cols, guessed=guessed, files={k: str(v) for k, v in files.items()})


def percent_note(col: str, values: pd.Series) -> str | None:
    """Says so when a column's values are URL-encoded (the disaster tweets' ``keyword``:
    ``blown%20up``): the model input decodes them (runtime.percent_decoded) where the column is
    one of data.extra_cols."""
    vals = values.dropna().astype(str)
    encoded = vals[[PERCENT_ENCODED.fullmatch(v) is not None for v in vals]]
    if encoded.empty:
        return None
    example = encoded.iloc[0]
    return (f"{col!r}: {len(encoded)} of {len(vals)} values are percent-encoded (e.g. {example!r}); "
            f"as one of data.extra_cols the model reads them decoded ({percent_decoded(example)!r})")


def _refuse_id_like_label(train: pd.DataFrame, label_col: str, classes: list[Any], submission: str,
                          pred_cols: list[str], cfg: DataConfig, files: dict[str, Path]) -> None:
    """A guessed label with mostly one-row classes is an id or free text, not a label."""
    if cfg.label_col or (submission == "proba" and len(pred_cols) > 1) or len(classes) <= 2:
        return
    counts = train[label_col].astype(str).value_counts()
    singles = int((counts == 1).sum())
    if singles > len(classes) / 2:
        i = int(np.flatnonzero(train[label_col].astype(str).isin(counts.index[counts == 1]).to_numpy())[0])
        raise DataError(f"{files['train']}: line {_line(train, i)}, column {label_col!r}: {singles} of its "
                        f"{len(classes)} values occur once, so it looks like an id or free text, not a label "
                        "(the sample submission implies a few classes); set data.label_col to confirm it")


def _check_ids(df: pd.DataFrame, id_col: str, path: Path) -> None:
    ids = df[id_col]
    if ids.isna().any():
        i = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise DataError(f"{path}: line {_line(df, i)}, column {id_col!r}: empty id")
    dup = ids.duplicated(keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((ids == ids.iloc[i]).to_numpy())[0])
        raise DataError(f"{path}: line {_line(df, i)}, column {id_col!r}: duplicate id {_show(ids.iloc[i])} "
                        f"(first at line {_line(df, first)}; ids are compared as written)")


def validate(comp: Competition, cfg: DataConfig) -> Competition:
    """Check ids and labels; apply the documented handling of empty texts and NaN labels."""
    s, f = comp.schema, comp.files
    for name in ("train", "test", "sample"):
        _check_ids(getattr(comp, name), s.id_col, f[name])
    test_ids = set(comp.test[s.id_col].tolist())
    missing = ~comp.sample[s.id_col].isin(test_ids).to_numpy()
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"{f['sample']}: line {_line(comp.sample, i)}, column {s.id_col!r}: id "
                        f"{_show(comp.sample[s.id_col].iloc[i])} is not in test.csv (ids are compared as written)")
    if len(comp.sample) != len(comp.test):
        extra = ~comp.test[s.id_col].isin(set(comp.sample[s.id_col].tolist())).to_numpy()
        i = int(np.flatnonzero(extra)[0])
        raise DataError(f"{f['test']}: line {_line(comp.test, i)}, column {s.id_col!r}: id "
                        f"{_show(comp.test[s.id_col].iloc[i])} is not in sample_submission.csv")

    train = comp.train
    nan_label = train[s.label_cols].isna().any(axis=1).to_numpy()
    if nan_label.any():
        i = int(np.flatnonzero(nan_label)[0])
        col = next(c for c in s.label_cols if pd.isna(train[c].iloc[i]))
        if cfg.nan_label == "error":
            raise DataError(f"{f['train']}: line {_line(train, i)}, column {col!r}: empty label "
                            f"({int(nan_label.sum())} rows; set data.nan_label=drop to drop them)")
        log.warning("dropping %d train rows with an empty label (data.nan_label=drop), first at line %d",
                    nan_label.sum(), _line(train, i))
        s.notes.append(f"dropped {int(nan_label.sum())} train rows with an empty label")
        train = train.loc[~nan_label]
    for name in ("train", "test"):
        for col in s.texts:
            df = train if name == "train" else comp.test
            empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
            n = int(empty.sum())
            if not n:
                continue
            i = int(np.flatnonzero(empty.to_numpy())[0])
            if name == "train" and cfg.empty_text == "drop":
                log.warning("dropping %d train rows with an empty %r (data.empty_text=drop), first at line %d",
                            n, col, _line(df, i))
                s.notes.append(f"dropped {n} train rows with empty text")
                train = train.loc[~empty.to_numpy()]
            else:
                log.warning("%s: %d rows with an empty %r kept as empty strings, first at line %d",
                            f[name], n, col, _line(df, i))
                s.notes.append(f"{name}: {n} rows with empty text kept as ''")
    if train.empty:
        raise DataError(f"{f['train']}: no rows left after dropping empty labels/texts")
    _note_huge_texts(train, comp.test, s, f)
    ignored = [c for c in cfg.ignore_cols if c in train.columns or c in comp.test.columns]
    comp.test = comp.test.drop(columns=[c for c in ignored if c in comp.test.columns])
    train = train.drop(columns=[c for c in ignored if c in train.columns])
    comp.train = train.reset_index(drop=True)
    comp.schema.n_train = len(comp.train)
    return comp


def _note_huge_texts(train: pd.DataFrame, test: pd.DataFrame, s: Schema, f: dict[str, Path]) -> None:
    """Very long texts are kept (the tokenizer truncates them to train.max_len), and said so."""
    for name, df in (("train", train), ("test", test)):
        long = (df[s.texts].fillna("").astype(str).apply(lambda c: c.str.len()) > HUGE_TEXT_CHARS).any(axis=1)
        if long.any():
            i = int(np.flatnonzero(long.to_numpy())[0])
            msg = (f"{name}: {int(long.sum())} texts longer than {HUGE_TEXT_CHARS:,} characters, first at line "
                   f"{_line(df, i)} of {f[name].name}; kept, and truncated to train.max_len tokens by the models")
            log.warning("%s", msg)
            s.notes.append(msg)


def announce(schema: Schema, stamp: Path | None = None) -> None:
    """Log the contract: in full once per `make` invocation (the first stage that reads the data
    writes ``stamp`` with the invocation's TEXTCOMP_T0), as one summary line in the stages after
    it; in full always outside make."""
    t0 = os.environ.get("TEXTCOMP_T0")
    if stamp is not None and t0 and stamp.exists() and stamp.read_text().strip() == t0:
        labels = ", ".join(map(str, schema.classes)) if schema.multilabel else repr(schema.label_col)
        log.info("contract: as logged above: id %r, label %s (%d %s), text %s, submission %s, metric %s",
                 schema.id_col, labels, len(schema.classes), "labels" if schema.multilabel else "classes",
                 ", ".join(repr(c) for c in schema.text_cols), schema.submission, schema.metric)
        return
    for n in schema.notes:
        log.info("contract: %s", n)
    if stamp is not None and t0:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(t0 + "\n")


def load_competition(raw: Path, cfg: DataConfig, stamp: Path | None = None) -> Competition:
    """Read, detect and validate a competition folder; ``stamp``: see ``announce``."""
    files = competition_files(raw)
    train = read_competition_csv(files["train"])
    test = read_competition_csv(files["test"])
    sample = read_competition_csv(files["sample"])
    if cfg.min_class_rows:
        train = drop_rare_classes(train, test, sample, cfg, files)
    schema = detect_schema(train, test, sample, cfg, files)
    announce(schema, stamp)
    comp = Competition(train=train, test=test, sample=sample, schema=schema, files=files)
    return validate(comp, cfg)


def drop_rare_classes(train: pd.DataFrame, test: pd.DataFrame, sample: pd.DataFrame, cfg: DataConfig,
                      files: dict[str, Path]) -> pd.DataFrame:
    """data.min_class_rows=N: train rows of a class with fewer than N rows are dropped, each class
    logged (a label typo such as one 'maybe' in a 0/1 column). Never a class the sample has a
    probability column for: the submission must still hold it."""
    id_col = cfg.id_col or sample.columns[0]
    label_cols, _, multilabel = _pick_labels(train, test, id_col, [c for c in sample.columns if c != id_col], cfg,
                                             files)
    if multilabel:
        return train
    col = label_cols[0]
    counts = train[col].dropna().astype(str).value_counts()
    rare = counts[counts < cfg.min_class_rows]
    for value, n in rare.items():
        if value in sample.columns:
            raise DataError(f"{files['sample']}: column {value!r}: class {value!r} of {col!r} has {n} rows, fewer than "
                            f"data.min_class_rows={cfg.min_class_rows}, but the submission needs its probability")
        i = int(np.flatnonzero((train[col].astype(str) == value).to_numpy())[0])
        log.warning("%s: column %r: class %r has %d row(s), fewer than data.min_class_rows=%d: dropped (first at "
                    "line %d)", files["train"], col, value, n, cfg.min_class_rows, _line(train, i))
    return train[~train[col].astype(str).isin(set(rare.index))]


def encode_labels(values: pd.Series, classes: list[Any]) -> np.ndarray:
    """Labels as spelled in the files -> class indices (labels are compared as text)."""
    index = {str(c): i for i, c in enumerate(classes)}
    return np.array([index[str(v)] for v in values.tolist()], dtype=np.int64)


def encode_multilabel(df: pd.DataFrame, schema: Schema) -> np.ndarray:
    """Multi-label columns as spelled in the files -> an (n, L) 0/1 matrix (1 = the positive value)."""
    return np.column_stack([(df[col].astype(str) == str(values[1])).to_numpy()
                            for col, values in zip(schema.label_cols, schema.label_values)]).astype(np.int64)


def encode_targets(df: pd.DataFrame, schema: Schema) -> np.ndarray:
    """The label column (n,) of class indices, or the (n, L) matrix of a multi-label competition."""
    return encode_multilabel(df, schema) if schema.multilabel else encode_labels(df[schema.label_col], schema.classes)


def labels_of(df: pd.DataFrame) -> np.ndarray:
    """A table's "label" column as an array: (n,) class indices, or (n, L) for multi-label
    (stored as one list per row)."""
    col = df["label"]
    if len(col) and col.dtype == object:
        return np.stack(col.to_numpy()).astype(np.int64)
    return col.to_numpy()


def with_labels(df: pd.DataFrame, y: np.ndarray) -> pd.DataFrame:
    """``df`` with its "label" column set from ``y`` ((n,) or (n, L))."""
    return df.assign(label=list(y) if np.ndim(y) == 2 else y)


def model_inputs(df: pd.DataFrame, cfg: DataConfig, names: list[str] | None = None) -> list[str]:
    """The text a model sees: extra columns (e.g. keyword) joined before the cleaned text
    (pipeline/runtime.py, shared with the inference bundle); ``names``: the text columns' own
    names, which three or more of them carry."""
    from pipeline.runtime import model_inputs as join

    return join(df, cfg.extra_cols, cfg.extra_template, cfg.sep, names)
