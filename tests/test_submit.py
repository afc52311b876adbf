"""The validator rejects every malformed submission."""

import numpy as np
import pandas as pd
import pytest

from pipeline.core.contract import Schema
from pipeline.core.submission import SubmissionError, SubmissionValidator, build_submission


def _schema(**kw):
    base = dict(id_col="id", label_col="target", text_col="text", extra_cols=[], classes=[0, 1],
                submission="label", pred_cols=["target"], metric="f1")
    base.update(kw)
    return Schema(**base)


SAMPLE = pd.DataFrame({"id": [3, 1, 2], "target": [0, 0, 0]})


def _validator(schema=None, sample=SAMPLE):
    return SubmissionValidator().fit(sample, schema or _schema())


def test_accepts_a_good_submission():
    _validator().validate(pd.DataFrame({"id": [3, 1, 2], "target": [1, 0, 1]}))


@pytest.mark.parametrize("sub, message", [
    (pd.DataFrame({"id": [1, 3, 2], "target": [1, 0, 1]}), "out of order"),
    (pd.DataFrame({"id": [3, 1, 9], "target": [1, 0, 1]}), "id '9' is missing from"),
    (pd.DataFrame({"id": [3, 1], "target": [1, 0]}), "has 2 rows"),
    (pd.DataFrame({"id": [3, 1, 2], "target": [1, 0, 1], "extra": [0, 0, 0]}), "columns"),
    (pd.DataFrame({"target": [1, 0, 1], "id": [3, 1, 2]}), "columns"),
    (pd.DataFrame({"id": [3, 1, 2], "target": [1, np.nan, 1]}), "row 2: empty prediction"),
    (pd.DataFrame({"id": [3, 1, 2], "target": [1, 0, 2]}), "row 3, column 'target': 2 is not a label"),
    (pd.DataFrame({"id": [3, 1, 2], "target": ["yes", 0, 1]}), "'yes' is not a label"),
])
def test_rejects(sub, message):
    with pytest.raises(SubmissionError, match=message):
        _validator().validate(sub)


def test_rejects_bad_probabilities():
    schema = _schema(classes=["a", "b", "c"], submission="proba", pred_cols=["a", "b", "c"], metric="logloss")
    sample = pd.DataFrame({"id": [1, 2], "a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    v = _validator(schema, sample)
    v.validate(pd.DataFrame({"id": [1, 2], "a": [0.2, 0.5], "b": [0.3, 0.25], "c": [0.5, 0.25]}))
    with pytest.raises(SubmissionError, match="sum to"):
        v.validate(pd.DataFrame({"id": [1, 2], "a": [0.2, 0.5], "b": [0.3, 0.5], "c": [0.5, 0.25]}))
    with pytest.raises(SubmissionError, match=r"outside \[0, 1\]"):
        v.validate(pd.DataFrame({"id": [1, 2], "a": [1.2, 0.5], "b": [-0.2, 0.25], "c": [0.0, 0.25]}))


def test_build_keeps_string_labels_and_threshold():
    schema = _schema(classes=["no", "yes"])
    test = pd.DataFrame({"id": [1, 2, 3], "p_0": [0.7, 0.4, 0.2], "p_1": [0.3, 0.6, 0.8]})
    sub = build_submission(SAMPLE, schema, test, threshold=0.65, clip=1e-6)
    assert sub["id"].tolist() == [3, 1, 2] and sub["target"].tolist() == ["yes", "no", "no"]
    sub = build_submission(SAMPLE, schema, test, threshold=None, clip=1e-6)
    assert sub["target"].tolist() == ["yes", "no", "yes"]


def _raw_rows(path) -> list[list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_ids_and_labels_verbatim_from_clean_to_submit(tmp_path, workdir):
    """Zero-padded, hex-like, float-looking and mixed ids; label codes with leading zeros;
    a dropped empty label: the submission spells every id and label as the files did."""
    from conftest import NEG, POS, run_stage, synthetic_texts

    texts, labels = synthetic_texts(90, [NEG, POS], 11)
    ids = [f"{i:06d}" if i % 3 == 0 else (f"0x{i:04X}" if i % 3 == 1 else f"{i}.0") for i in range(90)]
    ids[7] = "1e3"  # reads as a float 1000.0 anywhere ids are parsed as numbers
    codes = [f"0{y}" for y in labels]
    codes[5] = ""  # dropped by data.nan_label=drop
    folder = tmp_path / "comp"
    folder.mkdir()
    train = pd.DataFrame({"id": ids[:60], "text": texts[:60], "label": codes[:60]})
    test = pd.DataFrame({"id": ids[60:], "text": texts[60:]})
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    sample_ids = ids[60:][::-1]  # the sample's order, not test's, is the submission's order
    pd.DataFrame({"id": sample_ids, "label": "00"}).to_csv(folder / "sample_submission.csv", index=False)
    sets = ("data.nan_label=drop",)
    assert run_stage("clean", workdir, folder, *sets) == 0
    assert run_stage("folds", workdir, folder, *sets, "folds.n_splits=2") == 0
    assert run_stage("train", workdir, folder, *sets, "train.family=classical", "train.run=lr") == 0
    assert run_stage("submit", workdir, folder, *sets, "submit.source=run:lr") == 0
    rows = _raw_rows(workdir / "submissions/submission.csv")
    assert rows[0] == ["id", "label"]
    assert [r[0] for r in rows[1:]] == sample_ids
    assert {r[1] for r in rows[1:]} <= {"00", "01"} and len({r[1] for r in rows[1:]}) == 2
    folds = _raw_rows(workdir / "data/processed/folds.csv")
    assert {r[0] for r in folds[1:]} == set(ids[:60]) - {ids[5]}
