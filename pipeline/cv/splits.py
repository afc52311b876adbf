"""The fold split: how folds.csv is made, and how every later stage reads it."""

from __future__ import annotations

from collections.abc import Callable

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

    def fit(self, texts: list[str] | list[tuple[str, ...]] | pd.Series, labels: np.ndarray,
            group_keys: list[pd.Series] | None = None) -> FoldMaker:
        """``texts``: the text of each row, or its texts (a pair: a tuple, keyed in either order, so
        (b, a) is grouped with (a, b)); ``group_keys``: more columns whose equal values must share
        a fold (folds.group_cols), joined with the near-duplicate groups (connected components:
        A~B by text and B~C by question: one group)."""
        labels = np.asarray(labels)
        if labels.ndim == 1:
            counts = np.bincount(pd.factorize(labels)[0])
            if counts.min() < self.n_splits:
                raise DataError(f"folds: a class has only {counts.min()} rows, fewer than folds.n_splits="
                                f"{self.n_splits}")
        # near-duplicates group together; a text with no letter or digit keeps its own exact key
        keys = [row_key(t, lambda x: near_key(x) or "\x00" + norm_key(x)) for t in texts]
        groups = pd.factorize(pd.Series(keys))[0]
        self.merged_groups_ = int(len({row_key(t, norm_key) for t in texts}) - len(set(groups)))
        if group_keys:  # one namespace: a question id in qid1 of one row and qid2 of another is one question
            codes = pd.factorize(pd.concat([k.astype(str) for k in group_keys], ignore_index=True))[0]
            n = len(groups)
            groups = _components([[groups], [codes[i * n:(i + 1) * n] for i in range(len(group_keys))]])
        self.folds_ = self._multilabel(labels, groups) if labels.ndim == 2 else self._single(labels, groups)
        self.groups_ = groups
        return self

    def _single(self, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
        from sklearn.model_selection import StratifiedGroupKFold

        splitter = StratifiedGroupKFold(n_splits=self.n_splits, shuffle=True, random_state=self.random_state)
        folds = np.full(len(labels), -1, dtype=np.int64)
        for k, (_, val) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            folds[val] = k
        return folds

    def _multilabel(self, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
        """Iterative stratification (Sechidis et al. 2011, iterative-stratification's
        MultilabelStratifiedKFold) over the near-duplicate groups as units: a group's labels are
        the union of its rows' labels, and its rows follow it into one fold."""
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        n_groups = int(groups.max()) + 1
        by_group = np.zeros((n_groups, labels.shape[1]), dtype=np.int64)
        np.maximum.at(by_group, groups, labels)
        splitter = MultilabelStratifiedKFold(n_splits=self.n_splits, shuffle=True, random_state=self.random_state)
        group_fold = np.full(n_groups, -1, dtype=np.int64)
        for k, (_, val) in enumerate(splitter.split(np.zeros(n_groups), by_group)):
            group_fold[val] = k
        return group_fold[groups]


def row_key(texts: str | tuple[str, ...] | list[str], key: Callable[[str], str]) -> str:
    """A row's key under ``key``: its text's, or its texts' in sorted order (a pair in either order
    is one key)."""
    if isinstance(texts, str):
        return key(texts)
    return "\x1f".join(sorted(key(str(t)) for t in texts))


def _components(labelings: list[list[np.ndarray]]) -> np.ndarray:
    """Rows that share a value under any labeling, transitively, get one group id; the arrays of
    one labeling share its values (a value in either of its columns is one node)."""
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    n = len(labelings[0][0])
    rows, cols, offset = [], [], n
    for arrays in labelings:  # a bipartite graph: row -> (labeling, value) node
        for lab in arrays:
            rows.append(np.arange(n))
            cols.append(offset + lab)
        offset += int(max(lab.max() for lab in arrays)) + 1
    r, c = np.concatenate(rows), np.concatenate(cols)
    graph = sp.coo_matrix((np.ones(len(r)), (r, c)), shape=(offset, offset))
    _, comp = connected_components(graph, directed=False)
    return pd.factorize(comp[:n])[0]


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
