import pandas as pd
import pytest

from pipeline.core.config import DataConfig
from pipeline.core.contract import encode_labels, load_competition, model_inputs


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


@pytest.mark.parametrize("value, read", [
    ("blown%20up", "blown up"), ("%E2%80%99s", "\u2019s"), ("ablaze", "ablaze"),
    ("100%", "100%"),  # a % that starts no escape: not URL-encoded
    ("50%2", "50%2"), ("x%zz", "x%zz"),
    ("a %20 b", "a %20 b"),  # whitespace: free text, not an encoded token
])
def test_percent_decoding_touches_only_url_encoded_tokens(value, read):
    from pipeline.runtime import percent_decoded

    assert percent_decoded(value) == read


def test_percent_encoded_extra_column_is_decoded_and_said(binary_comp):
    train = pd.read_csv(binary_comp / "train.csv")
    train.loc[0, "keyword"] = "forest%20fire"
    train.to_csv(binary_comp / "train.csv", index=False)
    comp = load_competition(binary_comp, DataConfig(extra_cols=["keyword"]))
    note = [n for n in comp.schema.notes if "percent-encoded" in n]
    n = comp.train["keyword"].notna().sum() + comp.test["keyword"].notna().sum()
    assert note == [f"'keyword': 1 of {n} values are percent-encoded (e.g. 'forest%20fire'); as one of "
                    "data.extra_cols the model reads them decoded ('forest fire')"]
    df = pd.DataFrame({"text": ["smoke everywhere"], "keyword": ["forest%20fire"]})
    assert model_inputs(df, DataConfig(extra_cols=["keyword"])) == ["keyword: forest fire | smoke everywhere"]


def test_disaster_keyword_is_percent_encoded(disaster_dir):
    notes = load_competition(disaster_dir, DataConfig()).schema.notes
    assert [n.split(";")[0] for n in notes if "percent-encoded" in n] == [
        "'keyword': 1702 of 10789 values are percent-encoded (e.g. 'airplane%20accident')"]


def test_f1_on_multiclass_is_rejected(multiclass_comp):
    from pipeline.core.files import DataError

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

    with caplog.at_level(logging.INFO, logger="pipeline.core.contract"):
        comp = load_competition(binary_comp, DataConfig())
    said = caplog.text
    assert "label: 'target' (the only train column that test.csv lacks)" in said
    assert "text: 'text' (the longest free-text column" in said
    assert "metric: f1 (the default for a label submission with 2 classes" in said
    assert "extra columns (usable with data.extra_cols): keyword, location" in said
    assert comp.schema.notes and all(n in said for n in comp.schema.notes)


def test_the_contract_is_logged_in_full_once_per_make_invocation(tmp_path, monkeypatch, caplog):
    """The first stage of a `make` invocation (TEXTCOMP_T0) logs the contract in full; the
    stages after it in the same invocation one summary line; a new invocation in full again."""
    import logging

    from conftest import write_binary_competition

    from pipeline.core.config import DataConfig
    from pipeline.core.contract import load_competition

    comp, stamp = write_binary_competition(tmp_path / "comp"), tmp_path / "interim" / "contract.logged"

    def said(t0: str | None) -> list[str]:
        if t0 is None:
            monkeypatch.delenv("TEXTCOMP_T0", raising=False)
        else:
            monkeypatch.setenv("TEXTCOMP_T0", t0)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="pipeline.core.contract"):
            load_competition(comp, DataConfig(), stamp)
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("contract:")]

    first, second, third = said("100"), said("100"), said("200")
    assert any(m.startswith("contract: id: ") for m in first) and len(first) >= 6
    assert len(second) == 1 and second[0].startswith("contract: as logged above") and "metric f1" in second[0]
    assert len(third) == len(first)
    assert len(said(None)) == len(first) and len(said(None)) == len(first)  # outside make: always in full
