import json

from conftest import run_stage


def test_inspect_report(binary_comp, workdir):
    assert run_stage("inspect", workdir, binary_comp) == 0
    rep = json.loads((workdir / "reports/inspect.json").read_text())
    assert rep["rows"] == {"train": 200, "test": 60, "sample_submission": 60}
    assert rep["duplicates"]["conflicting_groups"] == 1 and rep["duplicates"]["conflicting_rows"] == 3
    assert rep["duplicates"]["exact_duplicate_groups"] == 2
    assert rep["patterns"]["train"]["urls"] == 1 and rep["patterns"]["train"]["mentions"] == 1
    assert rep["patterns"]["train"]["html_entities"] == 1 and rep["patterns"]["train"]["mojibake"] == 1
    assert rep["label_balance"]["1"]["count"] + rep["label_balance"]["0"]["count"] == 200
    assert rep["suggested_max_len"] % 8 == 0 and rep["suggested_max_len"] >= rep["lengths"]["train"]["tokens"]["p99"]
    assert rep["nulls"]["train"]["keyword"] > 0
    assert 0 <= rep["shift"]["adversarial_auc"] <= 1
    md = (workdir / "reports/inspect.md").read_text()
    for png in ("inspect_labels", "inspect_lengths", "inspect_length_by_class"):
        assert (workdir / f"reports/figures/{png}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"figures/{png}.png" in md


def test_inspect_multiclass(multiclass_comp, workdir):
    assert run_stage("inspect", workdir, multiclass_comp, "inspect.adversarial=false") == 0
    rep = json.loads((workdir / "reports/inspect.json").read_text())
    assert set(rep["label_balance"]) == {"negative", "neutral", "positive"}
    assert "adversarial_auc" not in rep["shift"]
