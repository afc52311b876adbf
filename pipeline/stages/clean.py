"""clean: switchable text cleaning, the same fitted cleaner applied to train and test.

Usage: python -m pipeline clean [--data DIR] [--config YAML] [--set clean.lowercase=true ...]
Reads:  the competition folder
Writes: data/interim/{train,test}_clean.parquet (id, text, label, extra columns),
        data/interim/schema.json, data/interim/clean_log.csv (relabelled/dropped rows),
        reports/clean.json (rows changed per step)

Each step can cost score as well as help (a cased backbone wants its capitals, an emoji
can carry the label), so each one is a config switch and its effect is counted.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.config import CleanConfig, Config
from pipeline.core.contract import Competition, Schema, encode_targets, labels_of, load_competition, with_labels
from pipeline.core.files import write_csv, write_json, write_parquet
from pipeline.core.paths import Paths
from pipeline.core.sources import competition_files, resolve_raw
from pipeline.core.textstats import norm_key
from pipeline.core.transaction import inputs_of, publish
from pipeline.runtime import TextCleaner, text_column, text_columns

log = logging.getLogger(__name__)


def cleaner_from_config(cfg: CleanConfig) -> TextCleaner:
    """The cleaner (pipeline/runtime.py, shared with the inference bundle) for clean.* settings."""
    return TextCleaner(html=cfg.html, urls=cfg.urls, mentions=cfg.mentions, mojibake=cfg.mojibake,
                       unicode_form=cfg.unicode_form, whitespace=cfg.whitespace, lowercase=cfg.lowercase,
                       spelling=cfg.spelling)


def resolve_duplicates(df: pd.DataFrame, mode: str, log_rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Exact duplicates (after cleaning) with conflicting labels: majority label, ties dropped."""
    if mode == "keep":
        return df
    # a pair is a duplicate when both of its texts are
    keys = df[[c for c in text_columns(df)]].astype(str).apply(lambda r: "\x1f".join(map(norm_key, r)), axis=1)
    keep = np.ones(len(df), dtype=bool)
    matrix = labels_of(df)
    # a multi-label row's labels compare as one tuple: a duplicate agrees or it does not
    labels = np.empty(len(df), dtype=object)
    for i, r in enumerate(matrix):
        labels[i] = tuple(int(v) for v in r) if matrix.ndim == 2 else r
    for idx in df.groupby(keys).indices.values():
        if len(idx) < 2 or len(set(labels[idx])) < 2:
            continue
        counts = pd.Series(labels[idx]).value_counts()
        tie = len(counts) > 1 and counts.iloc[0] == counts.iloc[1]
        if mode == "drop_conflicts" or tie:
            keep[idx] = False
            reason = "tie" if tie else "conflict"
            log_rows += [{"split": "train", "id": df["id"].iloc[i], "action": "drop",
                          "detail": f"conflicting duplicate labels ({reason})"} for i in idx]
            continue
        majority = counts.index[0]
        for i in idx:
            if labels[i] != majority:
                log_rows.append({"split": "train", "id": df["id"].iloc[i], "action": "relabel",
                                 "detail": f"label {labels[i]} -> {majority} (majority of {len(idx)} duplicates)"})
                labels[i] = majority
    out = with_labels(df, np.array([list(v) for v in labels]) if matrix.ndim == 2 else labels.astype(np.int64))
    return out.loc[keep].reset_index(drop=True)


@dataclass
class CleanResult:
    train: pd.DataFrame
    test: pd.DataFrame
    schema: Schema
    changes: dict[str, dict[str, int]]
    dropped: int
    relabelled: int


def _frame(comp: Competition, split: str, texts: list[list[str]]) -> pd.DataFrame:
    """id, text (text_1, ... for the other text columns), the extra columns, label."""
    s = comp.schema
    src = comp.train if split == "train" else comp.test
    df = pd.DataFrame({"id": src[s.id_col].to_numpy(), **{text_column(i): t for i, t in enumerate(texts)}})
    for col in src.columns:
        if col not in (s.id_col, *s.texts, *s.label_cols):
            df[col] = src[col].astype("string").to_numpy()
    if split == "train":
        df = with_labels(df, encode_targets(src, s))
    return df


def clean_competition(comp: Competition, cfg: CleanConfig) -> tuple[CleanResult, list[dict[str, Any]]]:
    cleaner = cleaner_from_config(cfg).fit(comp.train[comp.schema.text_col])
    changes = {}
    frames = {}
    for split in ("train", "test"):
        src = comp.train if split == "train" else comp.test
        texts, counts = [], {}
        for col in comp.schema.texts:  # every text column, the same cleaner
            texts.append(cleaner.transform(src[col]))
            counts = {k: counts.get(k, 0) + v for k, v in cleaner.changes_.items()}
        changes[split] = counts
        frames[split] = _frame(comp, split, texts)
    log_rows: list[dict[str, Any]] = []
    train = resolve_duplicates(frames["train"], cfg.duplicates, log_rows)
    comp.schema.n_train = len(train)
    return CleanResult(train=train, test=frames["test"], schema=comp.schema, changes=changes,
                       dropped=sum(r["action"] == "drop" for r in log_rows),
                       relabelled=sum(r["action"] == "relabel" for r in log_rows)), log_rows


def stage_inputs(cfg: Config, paths: Paths) -> dict[str, str]:
    """What clean reads: the three raw files and the data/clean settings."""
    raw = resolve_raw(paths, cfg.data)
    return inputs_of(paths, [], files=competition_files(raw),
                     config={"data": asdict(cfg.data), "clean": asdict(cfg.clean)})


def run(cfg: Config, paths: Paths, force: bool = False) -> CleanResult:
    inputs = stage_inputs(cfg, paths)
    comp = load_competition(resolve_raw(paths, cfg.data), cfg.data, paths.interim / "contract.logged")
    result, log_rows = clean_competition(comp, cfg.clean)
    with publish(paths, "clean", inputs) as tx:  # train, test and schema change together or not at all
        write_parquet(tx.path(paths.train_clean), result.train)
        write_parquet(tx.path(paths.test_clean), result.test)
        result.schema.save(tx.path(paths.schema_json))
        write_csv(tx.path(paths.clean_log), pd.DataFrame(log_rows, columns=["split", "id", "action", "detail"]))
        write_json(tx.path(paths.clean_json), {
            "steps": {k: v for k, v in vars(cfg.clean).items()}, "rows_changed": result.changes,
            "dropped": result.dropped, "relabelled": result.relabelled, "train_rows": len(result.train),
            "test_rows": len(result.test), "notes": result.schema.notes})
    for split, ch in result.changes.items():
        log.info("clean %s: rows changed per step: %s", split, ", ".join(f"{k}={v}" for k, v in ch.items()))
    log.info("clean: duplicates=%s: %d relabelled, %d dropped; %d train / %d test rows -> %s",
             cfg.clean.duplicates, result.relabelled, result.dropped, len(result.train), len(result.test),
             paths.interim)
    return result


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("clean", __doc__, run, argv, inputs=stage_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
