"""The whole classical flow on 300 real tweets committed under tests/data (runs everywhere)."""

import pandas as pd
from conftest import run_stage


def test_real_tweets_from_clean_to_submit(real_tweets_comp, workdir):
    data = real_tweets_comp
    assert run_stage("clean", workdir, data) == 0
    clean = pd.read_json(workdir / "reports/clean.json", typ="series")
    assert "mentions" not in clean["rows_changed"]["train"]  # kept by default (clean.mentions: None)
    cleaned = pd.read_parquet(workdir / "data/interim/train_clean.parquet")
    assert cleaned["text"].str.contains("@").sum() > 50 and not cleaned["text"].str.contains(r"\[USER\]").any()
    assert run_stage("folds", workdir, data, "folds.n_splits=3") == 0
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=lr") == 0
    assert run_stage("submit", workdir, data, "submit.source=run:lr") == 0
    sub = pd.read_csv(workdir / "submissions/submission.csv", dtype=str)
    truth = pd.read_csv(data.parent / "test_labels.csv", dtype=str)
    assert sub["id"].tolist() == truth["id"].tolist()
    accuracy = (sub["sentiment"] == truth["sentiment"]).mean()
    majority = truth["sentiment"].value_counts(normalize=True).max()
    assert accuracy > majority  # learned something from 240 real tweets, beyond the majority class
