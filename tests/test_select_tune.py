import json

import pandas as pd
import pytest
from conftest import run_stage


@pytest.fixture
def exp_dir(tmp_path, tiny_bert):
    d = tmp_path / "exp"
    d.mkdir()
    (d / "tiny.yaml").write_text(f"train:\n  run: tiny\n  family: transformer\n  backbone: {tiny_bert}\n"
                                 "  max_len: 32\n  batch_size: 16\n  lr: 1.0e-3\n")
    (d / "broken.yaml").write_text("train:\n  run: broken\n  family: transformer\n"
                                   "  backbone: /nonexistent/model-dir-xyz\n")
    (d / "lr.yaml").write_text("train:\n  run: lr\n  family: classical\n  classical_model: lr\n")
    (d / "nbsvm.yaml").write_text("train:\n  run: nbsvm\n  family: classical\n  classical_model: nbsvm\n")
    return d


def test_select_ranks_records_failures_and_pins(prepared, exp_dir):
    data, workdir = prepared
    cands = f"select.candidates=[{exp_dir}/lr.yaml,{exp_dir}/broken.yaml,{exp_dir}/tiny.yaml]"
    assert run_stage("select", workdir, data, cands, "select.top_k=1", "select.max_train_rows=60") == 0
    table = pd.read_csv(workdir / "reports/model_selection.csv")
    assert table["rank"].tolist()[:2] == [1.0, 2.0]
    ok = table[table["score"].notna()]
    assert ok["score"].is_monotonic_decreasing  # f1: higher is better
    broken = table[table["candidate"].str.contains("broken")]
    assert broken["score"].isna().all() and broken["error"].str.len().gt(0).all()
    sel = json.loads((workdir / "reports/selected.json").read_text())
    assert len(sel["runs"]) == 1 and sel["runs"][0]["candidate"] == ok["candidate"].iloc[0]
    assert (workdir / "reports/figures/model_selection.png").exists()
    assert run_stage("select", workdir, data, cands, f"select.pinned=[{exp_dir}/tiny.yaml]") == 0
    sel = json.loads((workdir / "reports/selected.json").read_text())
    assert [r["run"] for r in sel["runs"]] == ["tiny"]


def test_tune_resumes_its_study_and_writes_a_plan(prepared, exp_dir):
    data, workdir = prepared
    cands = f"select.candidates=[{exp_dir}/lr.yaml]"
    assert run_stage("select", workdir, data, cands) == 0
    assert run_stage("tune", workdir, data, "tune.n_trials=2") == 0
    best = json.loads((workdir / "tune/lr/best.json").read_text())
    assert best["trials"] == 2 and 0.5 <= best["params"]["C"] <= 20
    trials = pd.read_csv(workdir / "tune/lr/trials.csv")
    assert trials.loc[0, "params_C"] == pytest.approx(4.0)  # the hand-set config is trial 0
    assert run_stage("tune", workdir, data, "tune.n_trials=4") == 0  # resumes: 2 more, not 4
    assert json.loads((workdir / "tune/lr/best.json").read_text())["trials"] == 4
    plan = json.loads((workdir / "reports/runs.json").read_text())
    assert plan["runs"][0]["tuned"]
    assert plan["runs"][0]["diff"]["train"]["C"] == json.loads((workdir / "tune/lr/best.json").read_text())["params"]["C"]
    gen = (workdir / "configs/generated/lr.yaml").read_text()
    assert "C:" in gen and "classical" in gen


def test_tune_transformer_with_pruning_then_train_plan(prepared, exp_dir):
    data, workdir = prepared
    assert run_stage("select", workdir, data, f"select.candidates=[{exp_dir}/tiny.yaml,{exp_dir}/lr.yaml]",
                     "select.top_k=2") == 0
    assert run_stage("tune", workdir, data, "tune.n_trials=3", "tune.epochs=[1,2]", "tune.families=[transformer]",
                     "tune.max_train_rows=60") == 0
    trials = pd.read_csv(workdir / "tune/tiny/trials.csv")
    assert len(trials) == 3 and set(trials["state"]) <= {"COMPLETE", "PRUNED"}
    plan = json.loads((workdir / "reports/runs.json").read_text())
    assert {r["run"]: r["tuned"] for r in plan["runs"]} == {"tiny": True, "lr": False}
    from pipeline.__main__ import main

    assert main(["train", "--workdir", str(workdir), "--data", str(data), "-q", "--plan",
                 str(workdir / "reports/runs.json")]) == 0
    for run in ("tiny", "lr"):
        assert (workdir / "models" / run / "cv.json").exists()
    tiny_cfg = (workdir / "models/tiny/config.yaml").read_text()
    tiny_plan = next(r for r in plan["runs"] if r["run"] == "tiny")
    assert f"lr: {tiny_plan['diff']['train']['lr']}" in tiny_cfg


def test_tune_study_is_keyed_by_data_folds_search_space_and_metric(prepared, exp_dir):
    data, workdir = prepared
    assert run_stage("select", workdir, data, f"select.candidates=[{exp_dir}/lr.yaml]") == 0
    assert run_stage("tune", workdir, data, "tune.n_trials=2") == 0
    first = json.loads((workdir / "tune/lr/best.json").read_text())
    assert first["trials"] == 2 and first["study"].startswith("lr-")
    # another search space: its trials were scored on other terms, so a new study starts
    assert run_stage("tune", workdir, data, "tune.n_trials=2", "tune.C=[1.0,2.0]") == 0
    other = json.loads((workdir / "tune/lr/best.json").read_text())
    assert other["study"] != first["study"] and other["trials"] == 2 and 1.0 <= other["params"]["C"] <= 2.0
    # other folds: a new study too
    assert run_stage("folds", workdir, data, "folds.n_splits=2", "folds.seed=5") == 0
    assert run_stage("select", workdir, data, f"select.candidates=[{exp_dir}/lr.yaml]") == 0
    assert run_stage("tune", workdir, data, "tune.n_trials=3") == 0
    refolded = json.loads((workdir / "tune/lr/best.json").read_text())
    assert refolded["study"] not in (first["study"], other["study"]) and refolded["trials"] == 3
    # back to the first folds and space: the first study resumes (2 done, 1 more)
    assert run_stage("folds", workdir, data, "folds.n_splits=2") == 0
    assert run_stage("select", workdir, data, f"select.candidates=[{exp_dir}/lr.yaml]") == 0
    assert run_stage("tune", workdir, data, "tune.n_trials=3") == 0
    again = json.loads((workdir / "tune/lr/best.json").read_text())
    assert again["study"] == first["study"] and again["trials"] == 3


def test_cv_and_ensemble_are_scored_on_the_folds_select_and_tune_never_saw(binary_comp, workdir, exp_dir):
    import numpy as np

    from pipeline.core.metrics import score
    from pipeline.cv.blend import evaluate

    data = binary_comp
    assert run_stage("clean", workdir, data) == 0
    assert run_stage("folds", workdir, data, "folds.n_splits=4") == 0
    assert run_stage("select", workdir, data, f"select.candidates=[{exp_dir}/lr.yaml,{exp_dir}/nbsvm.yaml]",
                     "select.top_k=2", "select.folds=[0]") == 0
    assert run_stage("tune", workdir, data, "tune.n_trials=2", "tune.folds=[1]", "tune.families=[classical]") == 0
    from pipeline.__main__ import main

    assert main(["train", "--workdir", str(workdir), "--data", str(data), "-q", "--plan",
                 str(workdir / "reports/runs.json")]) == 0
    cv = json.loads((workdir / "models/lr/cv.json").read_text())
    assert cv["searched_folds"] == [0, 1] and cv["untouched_folds"] == [2, 3]  # screened on 0, tuned on 1
    oof = pd.read_parquet(workdir / "models/lr/oof.parquet")
    y, p, u = oof["label"].to_numpy(), oof[["p_0", "p_1"]].to_numpy(), oof["fold"].isin([2, 3]).to_numpy()
    assert cv["cv_untouched"] == pytest.approx(score("f1", y[u], p[u]))
    assert cv["cv_searched"] == pytest.approx(score("f1", y[~u], p[~u]))
    assert run_stage("ensemble", workdir, data) == 0
    ens = json.loads((workdir / "ensembles/blend/cv.json").read_text())
    assert ens["scored_on_folds"] == [2, 3]
    nb = pd.read_parquet(workdir / "models/nbsvm/oof.parquet").set_index("id").loc[oof["id"]]
    probas = np.stack([p, nb[["p_0", "p_1"]].to_numpy()])
    mean = evaluate("mean", probas[:, u], y[u], oof["fold"].to_numpy()[u], "f1", "metric", True)
    row = next(m for m in ens["methods"] if m["method"] == "mean")
    assert row["nested"] == pytest.approx(mean.nested, abs=1e-5)
    assert run_stage("submit", workdir, data) == 0
    table = json.loads((workdir / "submissions/submission.json").read_text())["table"]
    assert "CV (folds select/tune never saw)" in table


KILL_IN_TUNE = r"""
import os, signal, sys
from pipeline.__main__ import main
from pipeline.stages import tune
work, data, kill_at, *sets = sys.argv[1:]
calls, _fold = [0], tune.train_fold


def train_fold(*args, **kw):  # the search dies mid-trial, as a kill leaves it: the trial stays RUNNING
    calls[0] += 1
    if calls[0] == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
    return _fold(*args, **kw)


tune.train_fold = train_fold
sys.exit(main(["tune", "--workdir", work, "--data", data, "-q", "--set", *sets]))
"""


def test_a_search_killed_mid_trial_resumes_to_the_uninterrupted_studys_best(prepared, exp_dir, tmp_path):
    import shutil
    import subprocess
    import sys

    data, workdir = prepared
    sets = [f"select.candidates=[{exp_dir}/nbsvm.yaml]", "tune.n_trials=5", "tune.pruner=none"]
    assert run_stage("select", workdir, data, *sets) == 0
    killed = tmp_path / "killed"
    shutil.copytree(workdir, killed)
    assert run_stage("tune", workdir, data, *sets) == 0  # uninterrupted
    proc = subprocess.run([sys.executable, "-c", KILL_IN_TUNE, str(killed), str(data), "3", *sets],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert run_stage("tune", killed, data, *sets) == 0  # resumed
    ref, got = (json.loads((w / "tune/nbsvm/best.json").read_text()) for w in (workdir, killed))
    assert got["params"] == ref["params"] and got["value"] == ref["value"]
    trials = pd.read_csv(killed / "tune/nbsvm/trials.csv")
    assert (trials["state"] == "FAIL").sum() == 1 and (trials["state"] == "COMPLETE").sum() == 5
    assert trials.loc[trials["state"] == "FAIL", "params_C"].iloc[0] in set(trials.loc[trials["state"] == "COMPLETE",
                                                                                       "params_C"])  # retried
