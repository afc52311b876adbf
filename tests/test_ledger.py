"""The submissions ledger: nothing overwritten, one row per submission, a record that never
costs the submission."""

import json

from conftest import run_stage

from pipeline.core import ledger
from pipeline.core.paths import Paths
from pipeline.core.transaction import file_digest

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
