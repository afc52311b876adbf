"""folds: one stratified k-fold split, made once, read by every later stage.

Usage: python -m pipeline folds [--set folds.n_splits=5 folds.seed=42]
Reads:  data/interim/train_clean.parquet
Writes: data/processed/folds.csv (id, fold) and folds.json beside it

Rows whose text is the same up to case, punctuation and URLs share a fold (a grouped
stratified split, pipeline.cv.splits.FoldMaker), so a duplicate can never sit in training
while its twin is validated on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.config import Config
from pipeline.core.contract import Schema, labels_of
from pipeline.core.files import DataError, write_csv, write_json
from pipeline.core.paths import Paths
from pipeline.core.transaction import inputs_of, publish
from pipeline.cv.splits import FoldMaker
from pipeline.runtime import text_columns

log = logging.getLogger(__name__)


@dataclass
class FoldsResult:
    folds: pd.DataFrame
    report: dict[str, Any]


def _fingerprint(train: pd.DataFrame, cfg: Config) -> dict[str, Any]:
    h = hashlib.sha256()
    for i, t, y in zip(train["id"].astype(str), train["text"], train["label"]):
        h.update(f"{i}\x1f{t}\x1f{y}\x1e".encode())
    return {"n_splits": cfg.folds.n_splits, "seed": cfg.folds.seed, "rows": len(train),
            "grouping": "near_key" if "text_1" not in train.columns else "near_key, pair in either order",
            "data_sha256": h.hexdigest()}


def check_classes(schema: Schema, y: np.ndarray, n_splits: int) -> None:
    """Every class can be stratified over the folds (a one-line error naming the file, the
    column, the class and its count, and the fixes); a multi-label label with fewer positives
    than folds is said, not refused: some folds then validate it without a positive."""
    train_file = schema.files.get("train", "train.csv")
    if y.ndim == 2:
        for j, n in enumerate(y.sum(0)):
            if n < n_splits:
                log.warning("%s: column %r has %d positive row(s), fewer than folds.n_splits=%d: some folds "
                            "validate it without a positive", train_file, schema.classes[j], n, n_splits)
        return
    counts = np.bincount(y, minlength=schema.n_classes)
    i = int(np.argmin(counts))
    if counts[i] < n_splits:
        raise DataError(f"{train_file}: column {schema.label_col!r}: class {schema.classes[i]!r} has {counts[i]} "
                        f"row(s), fewer than folds.n_splits={n_splits}; set folds.n_splits={max(2, int(counts[i]))}, "
                        f"or data.min_class_rows={n_splits} to drop such rows (logged)")


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    return inputs_of(paths, ["clean"], config={"folds": {"n_splits": cfg.folds.n_splits, "seed": cfg.folds.seed,
                                                         **({"group_cols": cfg.folds.group_cols}
                                                            if cfg.folds.group_cols else {})}})


def run(cfg: Config, paths: Paths, force: bool = False) -> FoldsResult:
    inputs = stage_inputs(cfg, paths)
    train = pd.read_parquet(paths.train_clean)
    fp = _fingerprint(train, cfg)
    # seeded: the same data, k and seed give the same bytes on every run
    schema = Schema.load(paths.schema_json)
    y = labels_of(train)
    check_classes(schema, y, cfg.folds.n_splits)
    for col in cfg.folds.group_cols:
        if col not in train.columns:
            raise DataError(f"folds.group_cols: no column {col!r} in the cleaned train (columns: "
                            f"{', '.join(c for c in train.columns if c not in ('id', 'label'))})")
    cols = text_columns(train)
    texts = train[cols[0]].fillna("").astype(str).tolist() if len(cols) == 1 else \
        list(train[cols].fillna("").astype(str).itertuples(index=False, name=None))  # a pair keyed in either order
    maker = FoldMaker(cfg.folds.n_splits, cfg.folds.seed).fit(texts, y, [train[c] for c in cfg.folds.group_cols])
    folds = pd.DataFrame({"id": train["id"], "fold": maker.folds_})
    if y.ndim == 2:  # the share of positives of each label, per fold
        shares = pd.DataFrame(y, columns=[str(c) for c in schema.classes]).groupby(maker.folds_).mean().round(3)
        shares.index.name = "fold"
    else:
        shares = pd.crosstab(folds["fold"], train["label"], normalize="index").round(3)
    report = {**{k: v for k, v in fp.items() if k != "data_sha256"}, "groups": int(len(set(maker.groups_))),
              "merged_near_duplicate_groups": maker.merged_groups_,
              "class_shares": {str(k): {str(c): float(v) for c, v in row.items()} for k, row in shares.iterrows()}}
    with publish(paths, "folds", inputs) as tx:  # folds.csv, its fingerprint and its report together
        write_csv(tx.path(paths.folds_csv), folds)
        write_json(tx.path(paths.folds_fingerprint), fp)
        write_json(tx.path(paths.folds_report), report)
    log.info("folds: %d rows in %d folds (seed %d), %d groups (%d near-duplicate groups merged) -> %s; "
             "class shares per fold:\n%s", len(folds), cfg.folds.n_splits, cfg.folds.seed, report["groups"],
             maker.merged_groups_, paths.folds_csv, shares.to_string())
    return FoldsResult(folds=folds, report=report)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("folds", __doc__, run, argv, inputs=stage_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
