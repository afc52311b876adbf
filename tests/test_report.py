import json
import re

from conftest import run_stage


def test_report_renders_every_section_with_working_links(prepared, tiny_bert):
    data, workdir = prepared
    assert run_stage("inspect", workdir, data, "inspect.adversarial=false") == 0
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=lr") == 0
    assert run_stage("train", workdir, data, f"train.backbone={tiny_bert}", "train.max_len=32", "train.epochs=2",
                     "train.batch_size=16", "train.run=tiny", "train.log_every=2") == 0
    assert run_stage("ensemble", workdir, data) == 0
    assert run_stage("submit", workdir, data) == 0
    assert run_stage("report", workdir, data) == 0
    reports = workdir / "reports"
    md = (reports / "index.md").read_text()
    for section in ("## 1. Data", "## 2. Cleaning", "## 5. Runs and the tuning doctor", "## 6. Ensemble",
                    "## 7. Submission", "## 8. Final CV table"):
        assert section in md
    page = (reports / "runs" / "tiny.md").read_text()
    for section in ("## Tuning doctor", "## Confusion matrix", "## Score by text length", "## Accuracy by keyword",
                    "## Most confident mistakes", "## Calibration"):
        assert section in page
    choice = json.loads((workdir / "models/tiny/cv.json").read_text())["epoch_choice"]  # 2 epochs x 2 folds
    assert f"early-stopping optimism {choice['optimism']:+.4f}" in page
    assert "early-stopping" not in (reports / "runs" / "lr.md").read_text()  # a classical run has no epochs
    for html_file in (reports / "index.html", reports / "runs" / "tiny.html"):
        html = html_file.read_text()
        assert html.startswith("<!DOCTYPE html>") and "<table>" in html
        for src in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert (html_file.parent / src).exists(), (html_file.name, src)
    doctor = json.loads((reports / "doctor.json").read_text())
    assert set(doctor) == {"lr", "tiny"}
    hist = (workdir / "models/tiny/history.csv").read_text()
    assert "update_ratio" in hist and "conf_hist" in hist


def test_report_tables_round_seconds_and_scores_and_never_print_nan():
    import numpy as np

    from pipeline.reporting.markdown import md_table

    t = md_table([["minilm", 20.6, 8.0, 0.812345678, float("nan"), None, np.float32(3.25), True]],
                 ["run", "seconds", "folds", "cv", "nested", "note", "wall_s", "complete"])
    row = t.splitlines()[2]
    assert row == "| minilm | 20.6 | 8 | 0.8123 | - | - | 3.2 | True |", row
