"""make package: the offline bundle reproduces the pipeline's submission in a process that
cannot import this project and has the network variables off; bad bundles and stale
submissions are refused with one line."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_stage

ONNX = importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
GUARD = "import runpy, sys; sys.modules['pipeline'] = None; p = sys.argv[1]; sys.argv = sys.argv[1:]; " \
        "runpy.run_path(p, run_name='__main__')"


def predict(bundle: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """predict.py as a Kaggle notebook runs it: no PYTHONPATH, `import pipeline` impossible."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, "-c", GUARD, str(bundle / "predict.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def _flow(comp: Path, work: Path, runs: list[tuple[str, ...]], *sets: str) -> None:
    assert run_stage("clean", work, comp, *sets) == 0
    assert run_stage("folds", work, comp, *sets, "folds.n_splits=2") == 0
    for run in runs:
        assert run_stage("train", work, comp, *sets, *run) == 0
    assert run_stage("ensemble", work, comp, *sets) == 0
    assert run_stage("submit", work, comp, *sets) == 0


@pytest.fixture(scope="module")
def binary_bundle(tmp_path_factory, tiny_bert):
    """tiny BERT + TF-IDF over two folds, blended by their mean, packaged (and verified);
    built once for the module: tests that change it work on copies."""
    from conftest import write_binary_competition

    root = tmp_path_factory.mktemp("bundle")
    binary_comp, workdir = write_binary_competition(root / "comp"), root / "work"
    sets = ("ensemble.method=mean", "package.name=b1", f"package.onnx={ONNX}")
    bert = ("train.run=bert", f"train.backbone={tiny_bert}", "train.max_len=32", "train.epochs=1",
            "train.batch_size=16", "train.eval_batch_size=7")
    _flow(binary_comp, workdir, [("train.run=tfidf", "train.family=classical"), bert], *sets)
    assert run_stage("package", workdir, binary_comp, *sets) == 0
    return binary_comp, workdir, workdir / "dist" / "b1", sets


def test_bundle_reproduces_the_submission_offline_without_the_project(binary_bundle, tmp_path):
    comp, work, bundle, _ = binary_bundle
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [m["run"] for m in manifest["predict"]["members"]] in (["tfidf", "bert"], ["bert", "tfidf"])
    assert manifest["verification"]["labels_differing"] == 0
    assert all(m["max_abs_diff_vs_run"] < 1e-5 for m in manifest["predict"]["members"])
    # no pickle anywhere: classical models are JSON + npz, transformers safetensors
    suffixes = {p.suffix for p in bundle.rglob("*") if p.is_file()}
    assert not suffixes & {".pkl", ".pickle", ".joblib", ".bin", ".pt"}, suffixes
    with np.load(bundle / "models/tfidf/fold0/model.npz", allow_pickle=False) as z:
        assert "coef" in z.files
    # the test's own run, from another folder, with the sample's order taken from next to test.csv
    out = tmp_path / "sub.csv"
    proc = predict(bundle, tmp_path, "--test", str(comp / "test.csv"), "--out", str(out), "--stats",
                   str(tmp_path / "stats.json"))
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == (work / "submissions/submission.csv").read_text()
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["peak_mb"] > 0 and sorted(stats["members_used"]) == ["bert", "tfidf"]
    assert "wall time" in proc.stderr and "peak memory" in proc.stderr


def test_max_minutes_keeps_a_valid_submission_with_fewer_members(binary_bundle, tmp_path):
    comp, work, bundle, _ = binary_bundle
    out = tmp_path / "sub.csv"
    proc = predict(bundle, tmp_path, "--test", str(comp / "test.csv"), "--out", str(out), "--max-minutes",
                   "0.00001", "--stats", str(tmp_path / "s.json"))
    assert proc.returncode == 0, proc.stderr
    used = json.loads((tmp_path / "s.json").read_text())["members_used"]
    assert len(used) == 1 and "skipped" in proc.stderr
    sub, ref = pd.read_csv(out, dtype=str), pd.read_csv(work / "submissions/submission.csv", dtype=str)
    assert sub["id"].tolist() == ref["id"].tolist() and set(sub["target"]) <= {"0", "1"}


def test_damaged_bundle_and_bad_test_file_are_one_line_errors(binary_bundle, tmp_path):
    comp, _, bundle, _ = binary_bundle
    test = pd.read_csv(comp / "test.csv", dtype=str).drop(columns="text")
    test.to_csv(tmp_path / "test.csv", index=False)
    proc = predict(bundle, tmp_path, "--test", str(tmp_path / "test.csv"), "--out", str(tmp_path / "o.csv"))
    assert proc.returncode == 2 and "no column 'text'" in proc.stderr and str(tmp_path / "test.csv") in proc.stderr
    test = pd.read_csv(comp / "test.csv", dtype=str)
    pd.concat([test, test.iloc[[3]]]).to_csv(tmp_path / "test.csv", index=False)
    proc = predict(bundle, tmp_path, "--test", str(tmp_path / "test.csv"), "--out", str(tmp_path / "o.csv"))
    assert proc.returncode == 2 and f"row {len(test) + 2}, column 'id': id {test['id'][3]!r} appears twice" in proc.stderr
    (tmp_path / "bad.csv").write_bytes(b"id,text\n1,caf\xe9 fire\n")
    proc = predict(bundle, tmp_path, "--test", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o.csv"))
    assert proc.returncode == 2 and "bad.csv: bytes that are not UTF-8" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "error" in line]) == 1 and "Traceback" not in proc.stderr
    shutil.copytree(bundle, tmp_path / "b1")
    bundle = tmp_path / "b1"
    npz = bundle / "models/tfidf/fold1/model.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    proc = predict(bundle, tmp_path, "--test", str(comp / "test.csv"), "--out", str(tmp_path / "o.csv"))
    assert proc.returncode == 2 and "fold1/model.npz: differs from manifest.json" in proc.stderr
    assert not (tmp_path / "o.csv").exists()


def test_package_refuses_a_stale_submission_and_a_run_without_models(binary_bundle, tmp_path, capsys):
    comp, work, _, sets = binary_bundle
    shutil.copytree(work, tmp_path / "work")
    work = tmp_path / "work"
    assert run_stage("package", work, comp, *sets, "submit.clip=0.01") == 2
    assert "submission.csv: made from other settings" in capsys.readouterr().err
    assert run_stage("train", work, comp, *sets, "train.run=tfidf", "train.family=classical",
                     "train.save_checkpoints=false", "train.C=2.0") == 0
    for stage in ("ensemble", "submit"):
        assert run_stage(stage, work, comp, *sets) == 0
    capsys.readouterr()
    assert run_stage("package", work, comp, *sets) == 2
    assert "models/tfidf/fold0/model: missing" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["weighted", "stack"])
def test_multiclass_probability_bundle_within_1e5(multiclass_comp, workdir, tmp_path, method):
    """String labels, a probability per class, TF-IDF LR + NB-SVM blended by fitted weights
    or stacked: the bundle's probabilities equal the submission's within 1e-5."""
    sets = (f"ensemble.method={method}", "package.name=m1", "data.metric=logloss")
    _flow(multiclass_comp, workdir, [("train.run=lr", "train.family=classical"),
                                     ("train.run=nb", "train.family=classical", "train.classical_model=nbsvm")], *sets)
    assert run_stage("package", workdir, multiclass_comp, *sets) == 0
    out = tmp_path / "sub.csv"
    proc = predict(workdir / "dist/m1", tmp_path, "--test", str(multiclass_comp / "test.csv"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    sub, ref = pd.read_csv(out), pd.read_csv(workdir / "submissions/submission.csv")
    assert list(sub.columns) == list(ref.columns) == ["review_id", "negative", "neutral", "positive"]
    assert sub["review_id"].tolist() == ref["review_id"].tolist()
    assert np.abs(sub.iloc[:, 1:].to_numpy() - ref.iloc[:, 1:].to_numpy()).max() <= 1e-5
    spec = json.loads((workdir / "dist/m1/manifest.json").read_text())["predict"]
    assert spec["method"] == method and (spec["stacker"] is not None) == (method == "stack")


def test_classical_models_rebuilt_from_plain_files_predict_the_same():
    """lr, nbsvm and the calibrated svm, binary and 3-class: the runtime's numpy rebuild of the
    saved arrays gives scikit-learn's probabilities."""
    import tempfile

    from conftest import NEG, POS, synthetic_texts

    from pipeline.modeling.classical import TfidfClassifier
    from pipeline.runtime import LinearTfidfModel

    texts, y = synthetic_texts(240, [NEG, POS, ["awful", "hate", "okay", "fine"]], 4)
    y = np.array(y)
    for k in (2, 3):
        labels = y % k
        for kind in ("lr", "nbsvm", "svm"):
            clf = TfidfClassifier(kind, C=2.0).fit(texts[:180], labels[:180])
            with tempfile.TemporaryDirectory() as d:
                clf.save(Path(d))
                got = LinearTfidfModel.load(Path(d)).predict_proba(texts[180:])
            assert np.abs(got - clf.predict_proba(texts[180:])).max() < 1e-12, (k, kind)


@pytest.mark.skipif(not ONNX, reason="onnx/onnxruntime not installed (pip install -e '.[onnx]')")
def test_onnx_int8_export_predicts_close_to_torch_and_is_measured(binary_bundle, tmp_path):
    from pipeline import runtime

    comp, work, bundle, _ = binary_bundle
    member = next(m for m in json.loads((bundle / "manifest.json").read_text())["predict"]["members"]
                  if m["family"] == "transformer")
    report = member["onnx"]
    assert report["speedup_vs_torch"] > 0 and 0 <= report["oof_int8"] <= 1 and report["oof_metric"] == "f1"
    assert abs(report["oof_diff"] - (report["oof_int8"] - report["oof_torch"])) < 1e-12
    texts = pd.read_csv(comp / "test.csv")["text"].tolist()
    fold = bundle / member["folds"][0]
    p8 = runtime.predict_onnx(*runtime.load_onnx(fold), texts, 32, 7)
    p32 = runtime.predict_transformer(*runtime.load_transformer(fold), texts, 32, 7)
    assert np.abs(p8 - p32).max() < 0.05  # an export with swapped inputs or a lost mask is far off
    out = tmp_path / "sub.csv"
    proc = predict(bundle, tmp_path, "--test", str(comp / "test.csv"), "--out", str(out), "--onnx")
    assert proc.returncode == 0, proc.stderr
    sub, ref = pd.read_csv(out, dtype=str), pd.read_csv(work / "submissions/submission.csv", dtype=str)
    assert sub["id"].tolist() == ref["id"].tolist() and set(sub["target"]) <= {"0", "1"}


def test_multi_seed_run_averages_seeds_resumes_and_packages(prepared, tiny_bert, tmp_path, capsys):
    """train.seeds=[1,2]: each fold trained once per seed, probabilities averaged; killed in a
    fold's second seed, a rerun keeps the first and gives the same OOF; the bundle ships every
    (fold, seed) model and reproduces the submission."""
    data, work = prepared
    train = ("train.run=ms", f"train.backbone={tiny_bert}", "train.max_len=32", "train.epochs=1",
             "train.batch_size=16", "train.seeds=[1,2]")
    sets = (*train, "submit.source=run:ms", "package.name=ms")
    assert run_stage("train", work, data, *train) == 0
    for k in (0, 1):
        seeds = [np.load(work / f"models/ms/fold{k}/seed{s}/proba.npz")["val"] for s in (1, 2)]
        assert not np.allclose(seeds[0], seeds[1])  # two different models
        oof = pd.read_parquet(work / f"models/ms/fold{k}/oof.parquet")
        assert np.allclose(oof[["p_0", "p_1"]].to_numpy(), (seeds[0] + seeds[1]) / 2)
        assert not (work / f"models/ms/fold{k}/seed1/resume").exists()
    before = pd.read_parquet(work / "models/ms/oof.parquet")
    # as if killed in fold 1 while training seed 2
    for name in ("meta.json", "oof.parquet", "test.parquet"):
        (work / "models/ms/fold1" / name).unlink()
    shutil.rmtree(work / "models/ms/fold1/seed2")
    from pipeline.__main__ import main

    capsys.readouterr()
    assert main(["train", "--workdir", str(work), "--data", str(data), "--set", *train]) == 0  # not quiet
    said = capsys.readouterr().err
    assert "fold 0: done already" in said and "fold 1 seed 1: done already: kept" in said
    assert "fold 1 seed 2: f1" in said
    pd.testing.assert_frame_equal(pd.read_parquet(work / "models/ms/oof.parquet"), before)
    assert run_stage("submit", work, data, *sets) == 0
    assert run_stage("package", work, data, *sets) == 0
    bundle = work / "dist/ms"
    member = json.loads((bundle / "manifest.json").read_text())["predict"]["members"][0]
    assert member["folds"] == [f"models/ms/fold{k}/seed{s}" for k in (0, 1) for s in (1, 2)]
    assert json.loads((bundle / "manifest.json").read_text())["verification"]["labels_differing"] == 0
