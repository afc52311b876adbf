import pandas as pd
from conftest import run_stage

from pipeline.core.config import DataConfig
from pipeline.core.paths import Paths
from pipeline.core.sources import resolve_raw


def test_empty_data_raw_uses_embedded_default(workdir):
    paths = Paths.make(workdir)
    raw = resolve_raw(paths, DataConfig(embedded_train_rows=300, embedded_test_rows=100))
    assert raw == paths.embedded
    train = pd.read_csv(raw / "train.csv")
    test = pd.read_csv(raw / "test.csv")
    sample = pd.read_csv(raw / "sample_submission.csv")
    held = pd.read_csv(paths.holdout_labels)
    assert (len(train), len(test)) == (300, 100)
    assert "sentiment" not in test.columns and list(sample.columns) == ["id", "sentiment"]
    assert held["id"].tolist() == test["id"].tolist()
    assert set(held["sentiment"]) <= {"negative", "neutral", "positive"}
    assert not set(train["text"]) & set(test["text"])  # corpus duplicates dropped before the split
    first = (raw / "train.csv").read_bytes()
    resolve_raw(paths, DataConfig(embedded_train_rows=300, embedded_test_rows=100))
    assert (raw / "train.csv").read_bytes() == first  # fixed seed


def test_stages_run_on_embedded_default(workdir):
    sets = ("data.embedded_train_rows=300", "data.embedded_test_rows=100")
    assert run_stage("clean", workdir, None, *sets) == 0
    assert run_stage("folds", workdir, None, *sets) == 0
    folds = pd.read_csv(workdir / "data/processed/folds.csv")
    assert 290 <= len(folds) <= 300
