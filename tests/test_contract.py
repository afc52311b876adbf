import pandas as pd
import pytest

from pipeline.config import DataConfig
from pipeline.contract import encode_labels, load_competition, model_inputs


def test_disaster_tweets_contract(disaster_dir):
    comp = load_competition(disaster_dir, DataConfig())
    s = comp.schema
    assert (s.id_col, s.label_col, s.text_col) == ("id", "target", "text")
    assert s.classes == ["0", "1"] and s.binary  # labels as spelled in the file
    assert s.submission == "label" and s.pred_cols == ["target"]
    assert s.metric == "f1"


def test_multiclass_string_labels_probability_submission(multiclass_comp):
    comp = load_competition(multiclass_comp, DataConfig())
    s = comp.schema
    assert (s.id_col, s.label_col, s.text_col) == ("review_id", "sentiment", "body")
    assert s.classes == ["negative", "neutral", "positive"]
    assert s.submission == "proba" and s.pred_cols == ["negative", "neutral", "positive"]
    assert s.metric == "logloss"
    y = encode_labels(comp.train["sentiment"], s.classes)
    assert set(y) == {0, 1, 2}


def test_binary_probability_submission_and_metric_override(binary_comp):
    sample = pd.read_csv(binary_comp / "sample_submission.csv")
    sample["target"] = 0.5
    sample.to_csv(binary_comp / "sample_submission.csv", index=False)
    comp = load_competition(binary_comp, DataConfig(metric="roc_auc"))
    assert comp.schema.submission == "proba" and comp.schema.metric == "roc_auc"
    assert load_competition(binary_comp, DataConfig()).schema.metric == "logloss"


def test_text_column_set_by_config(binary_comp):
    comp = load_competition(binary_comp, DataConfig(text_col="keyword"))
    assert comp.schema.text_col == "keyword"


def test_extra_columns_joined_into_model_input():
    df = pd.DataFrame({"text": ["forest fire", "nice day"], "keyword": ["fire", None]})
    cfg = DataConfig(extra_cols=["keyword"])
    assert model_inputs(df, cfg) == ["keyword: fire | forest fire", "nice day"]
    assert model_inputs(df, DataConfig()) == ["forest fire", "nice day"]


def test_f1_on_multiclass_is_rejected(multiclass_comp):
    from pipeline.io import DataError

    with pytest.raises(DataError, match="f1 needs a binary label"):
        load_competition(multiclass_comp, DataConfig(metric="f1"))


def test_ranking_metric_decides_a_probability_submission_over_a_0_1_sample(binary_comp):
    # the sample shows 0/1, but ROC-AUC ranks: hard labels would throw the ranking away
    comp = load_competition(binary_comp, DataConfig(metric="roc_auc"))
    assert comp.schema.submission == "proba"
    assert any("roc_auc scores probabilities" in n for n in comp.schema.notes)
    assert load_competition(binary_comp, DataConfig()).schema.submission == "label"
    forced = load_competition(binary_comp, DataConfig(metric="f1", submission="proba"))
    assert forced.schema.submission == "proba"


def test_every_choice_is_logged_with_its_reason(binary_comp, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="pipeline.contract"):
        comp = load_competition(binary_comp, DataConfig())
    said = caplog.text
    assert "label: 'target' (the only train column that test.csv lacks)" in said
    assert "text: 'text' (the longest free-text column" in said
    assert "metric: f1 (the default for a label submission with 2 classes" in said
    assert "extra columns (usable with data.extra_cols): keyword, location" in said
    assert comp.schema.notes and all(n in said for n in comp.schema.notes)
