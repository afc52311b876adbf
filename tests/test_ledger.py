"""The submissions ledger: nothing overwritten, one row per submission, a record that never
costs the submission."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import run_stage, write_multiclass_competition

from pipeline.core import ledger
from pipeline.core.paths import Paths
from pipeline.core.transaction import file_digest

ROOT = Path(__file__).resolve().parents[1]
TFIDF = ["train.run=tfidf", "train.family=classical", "train.classical_model=lr"]


def test_every_submission_is_archived_with_its_ledger_row_and_a_rerun_adds_none(prepared, caplog):
    data, workdir = prepared
    assert run_stage("train", workdir, data, *TFIDF) == 0
    assert run_stage("train", workdir, data, "train.run=nbsvm", "train.family=classical", "train.classical_model=nbsvm") == 0
    assert run_stage("submit", workdir, data, "submit.source=run:tfidf") == 0
    paths = Paths.make(workdir)
    first = ledger.rows(paths)
    assert len(first) == 1 and first[0]["source"] == "run tfidf" and first[0]["metric"] == "f1"
    archived = workdir / first[0]["file"]
    assert archived.read_bytes() == paths.submission.read_bytes()
    assert file_digest(archived) == first[0]["sha256"] and first[0]["cv"] is not None

    assert run_stage("submit", workdir, data, "submit.source=run:nbsvm") == 0
    rows = ledger.rows(paths)
    assert len(rows) == 2 and rows[1]["source"] == "run nbsvm" and rows[1]["config"] != rows[0]["config"]
    assert file_digest(archived) == first[0]["sha256"]  # the first archive is untouched
    assert run_stage("submit", workdir, data, "submit.source=run:nbsvm", "--force") == 0
    assert len(ledger.rows(paths)) == 2  # the same submission from the same settings: no new row
    assert sorted(p.name for p in (workdir / "submissions/archive").iterdir()) == \
        sorted(r["file"].split("/")[-1] for r in rows)

    table = ledger.table(rows).splitlines()
    assert table[2].split()[1] == rows[1]["sha8"] and table[3].split()[1] == rows[0]["sha8"]  # newest first
    assert len(ledger.table(rows, "tfidf").splitlines()) == 3

    ledger.set_message(paths, "nbsvm alone (CV 0.7)")
    assert ledger.rows(paths)[1]["message"] == "nbsvm alone (CV 0.7)" and ledger.rows(paths)[0]["message"] is None


def test_a_ledger_that_cannot_be_written_costs_one_warning_not_the_submission(prepared, capfd):
    data, workdir = prepared
    assert run_stage("train", workdir, data, *TFIDF) == 0
    (workdir / "submissions").mkdir(exist_ok=True)
    (workdir / "submissions" / "ledger.jsonl").mkdir()  # a directory where the file should be
    assert run_stage("submit", workdir, data, "submit.source=run:tfidf") == 0
    assert (workdir / "submissions/submission.csv").exists()
    assert json.loads((workdir / "submissions/submission.json").read_text())["valid"] is True
    assert capfd.readouterr().err.count("ledger: not recorded") == 1


def _make_runs(workdir: Path, **variables: str) -> subprocess.CompletedProcess:
    """`make runs` as a user types it, from the project root, on ``workdir``."""
    stamp = workdir.parent / "installed"
    stamp.touch()
    args = ["make", "-s", "runs", f"PYTHON={sys.executable}", f"STAMP={stamp}", f"WORKDIR={workdir}",
            *[f"{k}={v}" for k, v in variables.items()]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEXTCOMP_")}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)


def test_make_runs_lists_the_archived_submissions_newest_first_and_filter_keeps_the_ones_named(tmp_path):
    """Probabilities (log loss): two runs, two different files, two archived submissions."""
    data, workdir = write_multiclass_competition(tmp_path / "comp"), tmp_path / "work"
    assert run_stage("clean", workdir, data) == 0
    assert run_stage("folds", workdir, data, "folds.n_splits=2") == 0
    assert run_stage("train", workdir, data, *TFIDF) == 0
    assert run_stage("train", workdir, data, "train.run=nbsvm", "train.family=classical", "train.classical_model=nbsvm") == 0
    for source in ("run:tfidf", "run:nbsvm"):
        assert run_stage("submit", workdir, data, f"submit.source={source}") == 0
    first, second = ledger.rows(Paths.make(workdir))
    assert first["sha8"] != second["sha8"] and (workdir / first["file"]).exists() and (workdir / second["file"]).exists()

    out = _make_runs(workdir)
    assert out.returncode == 0 and not out.stderr, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:6] == ["time", "sha8", "competition", "source", "metric", "cv"]
    assert set(lines[1]) <= {"-", " "}
    rows = [ln.split() for ln in lines[2:4]]
    assert [r[1] for r in rows] == [second["sha8"], first["sha8"]]  # newest first
    assert [" ".join(r[3:5]) for r in rows] == ["run nbsvm", "run tfidf"] and [r[5] for r in rows] == ["logloss"] * 2
    assert [r[6] for r in rows] == [f"{second['cv']:.4f}", f"{first['cv']:.4f}"]
    assert lines[4] == "CV vs public LB: 0 submission(s) with a public score; the correlation needs 3 (`make lb` fills them)"
    assert len(lines) == 5

    kept = _make_runs(workdir, FILTER="tfidf").stdout.splitlines()
    assert len(kept) == 4 and kept[2].split()[1] == first["sha8"]  # header, rule, the one row, the correlation
    empty = tempfile.mkdtemp(dir=workdir.parent)
    said = _make_runs(Path(empty)).stdout
    assert said.startswith("no submissions recorded yet (") and said.count("\n") == 1
