"""Stage outputs are transactions: a reader sees the complete previous set or the complete new
one, and refuses (naming the stage to re-run) a half-published or stale set."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import run_stage

from pipeline.core.files import write_text
from pipeline.core.paths import Paths
from pipeline.core.transaction import StaleInput, publish, require


def test_a_failure_inside_the_block_leaves_the_previous_set(tmp_path):
    paths = Paths.make(tmp_path)
    a, b = paths.reports / "a.txt", paths.reports / "b.txt"
    with publish(paths, "demo", {"config:x": "1"}) as tx:
        write_text(tx.path(a), "old a")
        write_text(tx.path(b), "old b")
    before = require(paths, "demo")
    with pytest.raises(RuntimeError), publish(paths, "demo", {"config:x": "2"}) as tx:
        write_text(tx.path(a), "new a")
        raise RuntimeError("killed between the two files")
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert require(paths, "demo").digest == before.digest
    assert not paths.staging("demo").exists()


def test_a_half_published_set_is_refused(tmp_path):
    paths = Paths.make(tmp_path)
    a, b = paths.reports / "a.txt", paths.reports / "b.txt"
    with publish(paths, "demo", {}) as tx:
        write_text(tx.path(a), "a1")
        write_text(tx.path(b), "b1")
    # what a kill after the first rename looks like: no manifest, one new file
    paths.manifest("demo").unlink()
    a.write_text("a2")
    with pytest.raises(StaleInput, match="no manifest for stage 'demo'.*run `make demo`"):
        require(paths, "demo")
    # a manifest whose files do not match it (an edit by hand, a mixed set)
    with publish(paths, "demo", {}) as tx:
        write_text(tx.path(a), "a3")
        write_text(tx.path(b), "b3")
    b.write_text("b-edited")
    with pytest.raises(StaleInput, match="b.txt: not the file stage 'demo' published"):
        require(paths, "demo")


def test_outputs_outside_the_project_cannot_be_staged(tmp_path):
    from pipeline.core.paths import PathError

    paths = Paths.make(tmp_path / "work")
    with pytest.raises(PathError), publish(paths, "demo", {}) as tx:
        tx.path(tmp_path / "elsewhere.txt")


def test_downstream_stages_refuse_stale_inputs(prepared, workdir):
    data, workdir = prepared
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=lr") == 0
    # clean again with another setting: folds (and everything after) were made from the old one
    assert run_stage("clean", workdir, data, "clean.lowercase=true") == 0
    with pytest.raises(StaleInput, match="stage 'folds' is stale: 'clean' has changed since it ran; run `make folds`"):
        require(Paths.make(workdir), "folds")
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=lr") == 2
    assert run_stage("ensemble", workdir, data) == 2  # the run was made from the old clean
    # re-running the named stages repairs the chain
    assert run_stage("folds", workdir, data, "folds.n_splits=2") == 0
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=lr") == 0
    assert run_stage("ensemble", workdir, data) == 0
    assert run_stage("submit", workdir, data) == 0
    m = json.loads((workdir / ".manifests/submit.json").read_text())
    assert set(m["outputs"]) == {"submissions/submission.csv", "submissions/submission.json"}
    assert "manifest:ensemble-blend" in m["inputs"]


def test_submit_refuses_an_ensemble_whose_run_was_retrained(prepared, workdir):
    data, workdir = prepared
    for model in ("lr", "nbsvm"):
        assert run_stage("train", workdir, data, "train.family=classical", f"train.classical_model={model}",
                         f"train.run={model}") == 0
    assert run_stage("ensemble", workdir, data) == 0
    assert run_stage("submit", workdir, data) == 0
    first = (workdir / "submissions/submission.json").read_text()
    # retrain one member with another C: the blend's weights and threshold belong to the old run
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=lr", "train.C=0.01") == 0
    assert run_stage("submit", workdir, data) == 2
    assert (workdir / "submissions/submission.json").read_text() == first  # the good artifact stays
    assert run_stage("ensemble", workdir, data) == 0
    assert run_stage("submit", workdir, data) == 0


def test_train_writes_its_run_description_only_with_its_results(prepared, workdir):
    data, workdir = prepared
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=lr", "train.folds=[0]") == 0
    run_dir = workdir / "models/lr"
    assert not (run_dir / "config.yaml").exists() and not (run_dir / "cv.json").exists()  # one fold of two
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=lr") == 0
    assert (run_dir / "config.yaml").exists() and (run_dir / "cv.json").exists()
    oof = pd.read_parquet(run_dir / "oof.parquet")
    assert len(oof) == len(pd.read_parquet(workdir / "data/interim/train_clean.parquet"))


def _loud(stage: str, workdir, data, *sets: str) -> int:
    from pipeline.__main__ import main

    return main([stage, "--workdir", str(workdir), "--data", str(data), "--set", *sets])


def test_a_stage_whose_inputs_have_not_changed_does_nothing(prepared, workdir, capsys):
    data, workdir = prepared
    assert run_stage("train", workdir, data, "train.family=classical", "train.run=lr") == 0
    assert run_stage("ensemble", workdir, data) == 0
    before = {p: p.stat().st_mtime_ns for p in (workdir / ".manifests").glob("*.json")}
    capsys.readouterr()
    for stage, sets in (("clean", []), ("folds", ["folds.n_splits=2"]), ("ensemble", [])):
        assert _loud(stage, workdir, data, *sets) == 0
        assert f"{stage}: up to date" in capsys.readouterr().err, stage
    assert {p: p.stat().st_mtime_ns for p in (workdir / ".manifests").glob("*.json")} == before
    # a changed setting re-runs the stage it touches, and what reads it is then stale
    assert _loud("folds", workdir, data, "folds.n_splits=2", "folds.seed=7") == 0
    assert "folds: up to date" not in capsys.readouterr().err
    assert run_stage("ensemble", workdir, data) == 2
