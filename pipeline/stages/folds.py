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

import pandas as pd

from pipeline.core.config import Config
from pipeline.core.files import write_csv, write_json
from pipeline.core.paths import Paths
from pipeline.core.transaction import inputs_of, publish
from pipeline.cv.splits import FoldMaker

log = logging.getLogger(__name__)


@dataclass
class FoldsResult:
    folds: pd.DataFrame
    report: dict[str, Any]


def _fingerprint(train: pd.DataFrame, cfg: Config) -> dict[str, Any]:
    h = hashlib.sha256()
    for i, t, y in zip(train["id"].astype(str), train["text"], train["label"]):
        h.update(f"{i}\x1f{t}\x1f{y}\x1e".encode())
    return {"n_splits": cfg.folds.n_splits, "seed": cfg.folds.seed, "rows": len(train), "grouping": "near_key",
            "data_sha256": h.hexdigest()}


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    return inputs_of(paths, ["clean"], config={"folds": {"n_splits": cfg.folds.n_splits, "seed": cfg.folds.seed}})


def run(cfg: Config, paths: Paths, force: bool = False) -> FoldsResult:
    inputs = stage_inputs(cfg, paths)
    train = pd.read_parquet(paths.train_clean)
    fp = _fingerprint(train, cfg)
    # seeded: the same data, k and seed give the same bytes on every run
    maker = FoldMaker(cfg.folds.n_splits, cfg.folds.seed).fit(train["text"], train["label"].to_numpy())
    folds = pd.DataFrame({"id": train["id"], "fold": maker.folds_})
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
