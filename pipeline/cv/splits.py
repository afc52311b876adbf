"""The fold split: how folds.csv is made, and how every later stage reads it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.core.files import DataError
from pipeline.core.paths import Paths
from pipeline.core.textstats import near_key, norm_key


class FoldMaker:
    """scikit-learn-style: ``fit(texts, labels)`` learns ``folds_`` (one fold index per row).

    Rows whose text is the same up to case, punctuation and URLs (``textstats.near_key``: a
    retweet with another t.co link, a copy with "!!!") share a fold (grouped stratified split),
    so a duplicate can never sit in training while its twin is validated on."""

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


def n_splits(paths: Paths) -> int:
    """How many folds folds.csv holds."""
    return int(read_folds_csv(paths)["fold"].astype(int).max()) + 1
