"""Experiments across days: train runs, ensembles and submissions in MLflow (queried with its own
search_runs), earlier run versions kept, the public LB in the ledger, a past submission rebuilt."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_stage, write_multiclass_competition

from pipeline.core import ledger, tracking
from pipeline.core.paths import Paths
from pipeline.core.transaction import file_digest

ROOT = Path(__file__).resolve().parents[1]
TFIDF = ["train.run=tfidf", "train.family=classical", "train.classical_model=lr"]
NBSVM = ["train.run=nbsvm", "train.family=classical", "train.classical_model=nbsvm"]


@pytest.fixture
def tracked(monkeypatch):
    monkeypatch.setenv("TEXTCOMP_TRACK", "1")
    monkeypatch.delenv("TEXTCOMP_T0", raising=False)
    monkeypatch.setattr(tracking, "_failed", False)
    yield


def test_runs_ensembles_and_submissions_are_found_with_mlflows_own_search_runs(prepared, tracked):
    data, workdir = prepared
    assert run_stage("train", workdir, data, *TFIDF) == 0
    assert run_stage("train", workdir, data, *NBSVM, "train.C=2.0") == 0
    assert run_stage("ensemble", workdir, data) == 0
    assert run_stage("submit", workdir, data) == 0
    paths = Paths.make(workdir)
    assert (workdir / "mlruns" / "mlflow.db").is_file()  # the local store inside the work directory

    runs = tracking.search(paths, f"textcomp-{data.name}")
    by_name = {r["tags.mlflow.runName"]: r for _, r in runs.iterrows()}
    cv = {r: json.loads(paths.run(r).cv.read_text()) for r in ("tfidf", "nbsvm")}
    for r in ("tfidf", "nbsvm"):
        row = by_name[r]
        assert row["tags.textcomp.kind"] == "train" and row["status"] == "FINISHED"
        assert row["metrics.cv"] == pytest.approx(cv[r]["cv"])
        assert row["params.train.run"] == r and row["tags.textcomp.competition"] == data.name
        assert len(row["tags.textcomp.data_fingerprint"]) == 12 and row["tags.textcomp.dirty"] in ("True", "False")
    assert by_name["nbsvm"]["params.train.C"] == "2.0"  # the config diff, as params
    assert by_name["tfidf"]["params.train.C"] != "2.0"
    ens = json.loads(paths.ensemble("blend").cv.read_text())
    assert by_name["blend"]["metrics.cv_nested"] == pytest.approx(ens["nested"])
    assert by_name["blend"]["tags.textcomp.chosen"] == ens["chosen"]
    row = ledger.rows(paths)[-1]
    sub = by_name[f"submission {row['sha8']}"]
    assert sub["tags.textcomp.sha8"] == row["sha8"] and row["tracker_run"] == sub["run_id"]
    # per-fold scores are steps of one metric; the run's files are artifacts
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri(paths))
    hist = client.get_metric_history(by_name["tfidf"]["run_id"], "fold_score")
    assert sorted((m.step, round(m.value, 6)) for m in hist) == \
        [(f["fold"], round(f["score"], 6)) for f in cv["tfidf"]["folds"]]
    assert {"cv.json", "config.yaml", "curves.png"} <= {a.path for a in client.list_artifacts(by_name["tfidf"]["run_id"])}
    filtered = tracking.search(paths, f"textcomp-{data.name}", "tags.`textcomp.kind` = 'train'")
    assert sorted(filtered["tags.mlflow.runName"]) == ["nbsvm", "tfidf"]


def test_a_tracker_that_cannot_write_costs_one_warning_and_no_failure(prepared, tracked, monkeypatch, capfd, tmp_path):
    data, workdir = prepared
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(ro, os.W_OK):  # root writes into read-only folders: a store below a file cannot be made
        ro.chmod(stat.S_IRWXU)
        ro.rmdir()
        ro.write_text("a file where the store's folder should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{ro / 'mlflow.db'}")
    monkeypatch.setenv("TEXTCOMP_T0", "12345")  # one make invocation
    try:
        assert run_stage("train", workdir, data, *TFIDF) == 0
        monkeypatch.setattr(tracking, "_failed", False)  # a second process of the same invocation
        assert run_stage("train", workdir, data, *NBSVM) == 0
        monkeypatch.setattr(tracking, "_failed", False)
        assert run_stage("submit", workdir, data, "submit.source=run:nbsvm") == 0
    finally:
        ro.chmod(stat.S_IRWXU)
    err = capfd.readouterr().err
    assert err.count("tracker: not logged") == 1, err[-3000:]
    assert Paths.make(workdir).run("nbsvm").cv.exists() and Paths.make(workdir).submission.exists()
    assert "tracker_run" not in ledger.rows(Paths.make(workdir))[-1]


def test_a_run_trained_again_under_other_settings_keeps_its_earlier_version(prepared):
    data, workdir = prepared
    paths = Paths.make(workdir)
    assert run_stage("train", workdir, data, *TFIDF, "train.C=1.0") == 0
    assert run_stage("train", workdir, data, *TFIDF, "train.C=1.0", "--force") == 0  # same settings: no version
    assert not (paths.models / ".archive").exists()
    first = paths.run("tfidf").oof.read_bytes()
    first_cv = json.loads(paths.run("tfidf").cv.read_text())
    assert run_stage("train", workdir, data, *TFIDF, "train.C=0.05") == 0
    (kept,) = (paths.models / ".archive" / "tfidf").iterdir()
    assert (kept / "oof.parquet").read_bytes() == first
    assert json.loads((kept / "cv.json").read_text()) == first_cv
    assert json.loads((kept / "manifest.json").read_text())["stage"] == "train-tfidf"
    assert "C: 1.0" in (kept / "config.yaml").read_text()
    assert paths.run("tfidf").oof.read_bytes() != first  # the name users type is the newest version
    # C=1.0 back keeps the C=0.05 version; C=0.05 again finds its old self kept already (as a
    # resumed, half-replaced run would): no second, half-new copy
    assert run_stage("train", workdir, data, *TFIDF, "train.C=1.0") == 0
    assert run_stage("train", workdir, data, *TFIDF, "train.C=0.05") == 0
    now = json.loads(paths.manifest("train-tfidf").read_text())["inputs"]["config:train"][:12]
    assert sorted(p.name for p in (paths.models / ".archive" / "tfidf").iterdir()) == sorted([kept.name, now])
    assert (kept / "oof.parquet").read_bytes() == first
    assert [r.dir.name for r in paths.runs_with_cv()] == ["tfidf"]  # the archive is not a run


FAKE_KAGGLE = r"""#!{python}
import sys, json, pathlib
log = pathlib.Path({log!r})
args = sys.argv[1:]
with log.open("a") as f:
    f.write(json.dumps(args) + "\n")
if {fail}:
    sys.stderr.write("403 - Forbidden: unauthorized\n")
    raise SystemExit(1)
if args[:2] == ["competitions", "submit"]:
    raise SystemExit(0)
if args[:2] == ["competitions", "submissions"]:
    print("Warning: Looks like you're using an outdated API Version")
    print("fileName,date,description,status,publicScore,privateScore,ref")
    for line in pathlib.Path({lb!r}).read_text().splitlines():
        print(line)
"""


def _fake_kaggle(tmp: Path, lb_lines: list[str], fail: bool = False) -> dict[str, str]:
    bin_ = tmp / "bin"
    bin_.mkdir(exist_ok=True)
    (tmp / "lb.csv").write_text("\n".join(lb_lines) + "\n")
    exe = bin_ / "kaggle"
    exe.write_text(FAKE_KAGGLE.format(python=sys.executable, log=str(tmp / "calls.jsonl"), lb=str(tmp / "lb.csv"),
                                      fail=fail))
    exe.chmod(0o755)
    kcfg = tmp / "kaggle"
    kcfg.mkdir(exist_ok=True)
    (kcfg / "kaggle.json").write_text("{}")
    return {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}", "KAGGLE_CONFIG_DIR": str(kcfg)}


def _make(target: str, workdir: Path, env: dict[str, str], **variables: str) -> subprocess.CompletedProcess:
    stamp = workdir.parent / "installed"
    stamp.touch()
    args = ["make", "-s", target, f"PYTHON={sys.executable}", f"STAMP={stamp}", f"WORKDIR={workdir}",
            *[f"{k}={v}" for k, v in variables.items()]]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


def test_make_lb_fills_public_scores_from_the_kaggle_cli_and_the_correlation(tmp_path):
    data, workdir = write_multiclass_competition(tmp_path / "comp"), tmp_path / "work"
    assert run_stage("clean", workdir, data) == 0
    assert run_stage("folds", workdir, data, "folds.n_splits=2") == 0
    assert run_stage("train", workdir, data, *TFIDF) == 0
    assert run_stage("train", workdir, data, *NBSVM) == 0
    paths = Paths.make(workdir)
    for src in ("run:tfidf", "run:nbsvm"):
        assert run_stage("submit", workdir, data, f"submit.source={src}") == 0
    # a third, a different file: the blend of the two
    assert run_stage("ensemble", workdir, data) == 0
    assert run_stage("submit", workdir, data) == 0
    all_rows = ledger.rows(paths)
    assert len({r["sha256"] for r in all_rows}) == 3
    # kaggle-submit writes the sha8 mark into the message; the LB lists it back
    env = _fake_kaggle(tmp_path, [])
    from pipeline.stages.submit import kaggle_submit

    assert kaggle_submit({**env, "TEXTCOMP_WORKDIR": str(workdir), "TEXTCOMP_COMPETITION": "my-comp",
                          "TEXTCOMP_MESSAGE": "blend of two"}) == 0
    newest = ledger.rows(paths)[-1]
    assert newest["message"] == f"blend of two (CV {json.loads(paths.submission_json.read_text())['cv']:.4f}, " \
                                f"sub {newest['sha8']})"
    assert newest["kaggle_competition"] == "my-comp"
    # the board: the three files by their mark / message, with scores that rise with CV
    rows_ = sorted(ledger.rows(paths), key=lambda r: r["cv"])
    lb = [f"s{i}.csv,2026-12-0{i + 1},x (sub {r['sha8']}),complete,{0.5 + 0.1 * i:.3f}," for i, r in
          enumerate(rows_)]
    env = _fake_kaggle(tmp_path, lb)
    out = _make("lb", workdir, env, COMPETITION="my-comp")
    assert out.returncode == 0, out.stdout + out.stderr
    filled = {r["sha8"]: r["public_score"] for r in ledger.rows(paths)}
    assert filled == {r["sha8"]: pytest.approx(0.5 + 0.1 * i) for i, r in enumerate(rows_)}
    assert "public scores for 3 of 3 ledger rows" in out.stdout
    assert "CV vs public LB over 3 submissions: Pearson" in out.stdout
    c = ledger.correlation(ledger.rows(paths))
    assert c["n"] == 3 and c["spearman"] == pytest.approx(1.0)
    # the report shows CV beside the public LB
    assert run_stage("report", workdir, data) == 0
    page = paths.index_md.read_text()
    assert "## 9. Submissions ledger" in page and "Spearman +1.000" in page
    # where the CLI cannot reach Kaggle: one line, exit 2, the ledger untouched
    before = ledger.ledger_path(paths).read_bytes()
    out = _make("lb", workdir, _fake_kaggle(tmp_path, lb, fail=True), COMPETITION="my-comp")
    said = [line for line in out.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]  # make's own
    assert out.returncode == 2 and len(said) == 1, out.stderr
    assert "kaggle competitions submissions -c my-comp failed (exit 1): 403 - Forbidden" in out.stderr
    assert ledger.ledger_path(paths).read_bytes() == before


def test_ledger_rows_are_found_by_sha8_or_refused_in_one_line(prepared):
    data, workdir = prepared
    assert run_stage("train", workdir, data, *TFIDF) == 0
    assert run_stage("submit", workdir, data, "submit.source=run:tfidf") == 0
    paths = Paths.make(workdir)
    row = ledger.rows(paths)[0]
    assert ledger.find(paths, row["sha8"].upper())["sha256"] == file_digest(paths.submission)
    for bad, said in (("", "at least 4 hex digits"), ("zz; rm", "at least 4 hex digits"),
                      ("0000000", "no submission 0000000")):
        with pytest.raises(ValueError, match=said):
            ledger.find(paths, bad)
    out = subprocess.run([sys.executable, "-m", "pipeline.core.reproduce", "ffff0000", "--workdir", str(workdir)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and out.stderr.count("\n") == 1


@pytest.mark.slow
def test_two_make_all_runs_are_tracked_and_archived_and_reproduce_gives_the_first_back(tmp_path):
    comp = write_multiclass_competition(tmp_path / "comp")  # probabilities: two settings, two files
    work = tmp_path / "work"
    base = "select.candidates=[tfidf,nbsvm] select.top_k=2 tune.n_trials=2 folds.n_splits=3 inspect.adversarial=false"
    env = {**os.environ, "TEXTCOMP_TRACK": "1"}
    for pick in ("", "train.C=0.3"):  # a knob typed by hand outranks what tune chose
        out = _make("all", work, env, DATA=str(comp), SET=f"{base} {pick}", PROFILE="configs/cpu.yaml")
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    paths = Paths.make(work)
    all_rows = ledger.rows(paths)
    assert len(all_rows) == 2 and all_rows[0]["settings"] != all_rows[1]["settings"]
    assert all_rows[0]["sha256"] != all_rows[1]["sha256"]
    for r in all_rows:
        assert file_digest(work / r["file"]) == r["sha256"] and r["invocation"]["DATA"] == str(comp)
    runs = tracking.search(paths, "textcomp-comp")
    subs = runs[runs["tags.textcomp.kind"] == "submission"]
    assert sorted(subs["tags.textcomp.sha8"]) == sorted(r["sha8"] for r in all_rows)
    assert (runs["tags.textcomp.kind"] == "train").sum() >= 2
    # the report page of the newest submission is attached to its tracker run
    from mlflow.tracking import MlflowClient

    arts = {a.path for a in MlflowClient(tracking.tracking_uri(paths)).list_artifacts(all_rows[1]["tracker_run"])}
    assert {"index.md", "index.html", "submission.json"} <= arts

    first = all_rows[0]
    out = _make("reproduce", work, env, SUB=first["sha8"])
    assert out.returncode == 0, out.stdout + out.stderr + (work / "reproduce" / first["sha8"] / "make.log").read_text()[-3000:]
    assert "the same submission, byte for byte" in out.stdout
    rebuilt = work / "reproduce" / first["sha8"] / "work" / "submissions" / "submission.csv"
    assert rebuilt.read_bytes() == (work / first["file"]).read_bytes()
    # the data moved on: reproduce says what differs and exits 1 (make reports a failed recipe as 2)
    (comp / "train.csv").write_text((comp / "train.csv").read_text().replace("awful", "dreadful"))
    out = _make("reproduce", work, env, SUB=first["sha8"])
    assert out.returncode == 2 and "Error 1" in out.stderr, out.stdout + out.stderr
    assert "differs: data: the competition files have changed since" in out.stdout
    assert "differs: submission: sha256" in out.stdout


def test_runs_of_one_competition_share_one_experiment_named_as_the_user_gave_it(tmp_path):
    root = tmp_path / "proj"
    (root / "data" / "raw").mkdir(parents=True)
    assert tracking.competition_of(Paths.make(root)) == "embedded"  # an empty data/raw: the embedded default
    (root / "data" / "raw" / "jigsaw-toxic.zip").write_bytes(b"PK")
    assert tracking.competition_of(Paths.make(root)) == "jigsaw-toxic"
    (root / "data" / "raw" / "train.csv").write_text("id\n")
    assert tracking.competition_of(Paths.make(root)) == "proj"
    assert tracking.competition_of(Paths.make(root, tmp_path / "quora-question-pairs.zip")) == "quora-question-pairs"
    assert tracking.competition_of(Paths.make(root, tmp_path / "my comp")) == "my comp"
