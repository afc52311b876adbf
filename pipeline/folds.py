"""folds: one stratified k-fold split, made once, read by every later stage.

Usage: python -m pipeline folds [--set folds.n_splits=5 folds.seed=42]
Reads:  data/interim/train_clean.parquet
Writes: data/processed/folds.csv (id, fold) and folds.json beside it

Rows whose text is the same up to case, punctuation and URLs (``textstats.near_key``: a
retweet with another t.co link, a copy with "!!!") share a fold (grouped stratified split),
so a duplicate can never sit in training while its twin is validated on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.config import Config
from pipeline.io import DataError, write_csv, write_json
from pipeline.paths import Paths
from pipeline.textstats import near_key, norm_key
from pipeline.transaction import inputs_of, publish

log = logging.getLogger(__name__)


class FoldMaker:
    """scikit-learn-style: ``fit(texts, labels)`` learns ``folds_`` (one fold index per row)."""

    def __init__(self, n_splits: int = 5, random_state: int = 42) -> None:
        self.n_splits = n_splits
        self.random_state = random_state

    def fit(self, texts: list[str] | pd.Series, labels: np.ndarray) -> FoldMaker:
        from sklearn.model_selection import StratifiedGroupKFold

        labels = np.asarray(labels)
        counts = np.bincount(pd.factorize(labels)[0])
        if counts.min() < self.n_splits:
            raise DataError(f"folds: a class has only {counts.min()} rows, fewer than folds.n_splits="
                            f"{self.n_splits}")
        texts = pd.Series(list(texts))
        # near-duplicates group together; a text with no letter or digit keeps its own exact key
        keys = [near_key(t) or "\x00" + norm_key(t) for t in texts]
        groups = pd.factorize(pd.Series(keys))[0]
        self.merged_groups_ = int(texts.map(norm_key).nunique() - len(set(groups)))
        splitter = StratifiedGroupKFold(n_splits=self.n_splits, shuffle=True, random_state=self.random_state)
        folds = np.full(len(labels), -1, dtype=np.int64)
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            folds[val] = k
        self.folds_ = folds
        self.groups_ = groups
        return self


@dataclass
class FoldsResult:
    folds: pd.DataFrame
    report: dict


def _fingerprint(train: pd.DataFrame, cfg: Config) -> dict:
    h = hashlib.sha256()
    for i, t, y in zip(train["id"].astype(str), train["text"], train["label"]):
        h.update(f"{i}\x1f{t}\x1f{y}\x1e".encode())
    return {"n_splits": cfg.folds.n_splits, "seed": cfg.folds.seed, "rows": len(train), "grouping": "near_key",
            "data_sha256": h.hexdigest()}


def read_folds_csv(paths: Paths) -> pd.DataFrame:
    """folds.csv with ids as the text they are (a zero-padded id keeps its zeros)."""
    return pd.read_csv(paths.folds_csv, dtype={"id": str}, keep_default_na=False)


def load_folds(paths: Paths, ids: pd.Series | None = None) -> pd.DataFrame:
    """folds.csv, checked against the ids it must cover."""
    if not paths.folds_csv.exists():
        raise DataError(f"{paths.folds_csv}: not found; run `make folds` first")
    folds = read_folds_csv(paths)
    if ids is not None:
        missing = set(ids.astype(str)) - set(folds["id"].astype(str))
        if missing:
            raise DataError(f"{paths.folds_csv}: {len(missing)} train ids have no fold (e.g. "
                            f"{sorted(missing)[0]!r}); rerun `make folds`")
    return folds


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
        write_json(tx.path(paths.folds_csv.with_suffix(".json")), fp)
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
