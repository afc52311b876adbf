"""Every bad input gives one line naming the file (and row/column), and a non-zero exit."""

from pathlib import Path

import pandas as pd
import pytest

from pipeline.config import DataConfig
from pipeline.contract import load_competition
from pipeline.io import DataError


def _edit(folder: Path, name: str, fn) -> Path:
    df = pd.read_csv(folder / name)
    fn(df).to_csv(folder / name, index=False)
    return folder / name


def _err(folder: Path, **cfg) -> str:
    with pytest.raises(DataError) as e:
        load_competition(folder, DataConfig(**cfg))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_file(binary_comp):
    (binary_comp / "test.csv").unlink()
    assert _err(binary_comp) == f"{binary_comp / 'test.csv'}: file not found"


def test_empty_file(binary_comp):
    (binary_comp / "train.csv").write_text("")
    assert "train.csv: file is empty" in _err(binary_comp)


def test_header_only(binary_comp):
    (binary_comp / "train.csv").write_text("id,keyword,location,text,target\n")
    assert "train.csv: file has a header but no rows" in _err(binary_comp)


def test_renamed_id_column(binary_comp):
    _edit(binary_comp, "test.csv", lambda d: d.rename(columns={"id": "ID"}))
    msg = _err(binary_comp)
    assert "test.csv: no column 'id'" in msg


def test_missing_configured_text_column(binary_comp):
    assert "train.csv: no column 'tweet' (data.text_col)" in _err(binary_comp, text_col="tweet")


def test_duplicate_ids(binary_comp):
    _edit(binary_comp, "train.csv", lambda d: d.assign(id=d["id"].where(d.index != 5, d["id"].iloc[2])))
    assert _err(binary_comp).endswith("train.csv: line 7, column 'id': duplicate id 3 (first at line 4)")


def test_nan_label_errors_or_drops(binary_comp):
    _edit(binary_comp, "train.csv", lambda d: d.assign(target=d["target"].where(d.index != 4)))
    assert "train.csv: line 6, column 'target': empty label" in _err(binary_comp)
    comp = load_competition(binary_comp, DataConfig(nan_label="drop"))
    assert len(comp.train) == 199 and comp.train["target"].notna().all()


def test_empty_texts_are_kept_or_dropped(binary_comp):
    _edit(binary_comp, "train.csv", lambda d: d.assign(text=d["text"].where(~d.index.isin([7, 8]))))
    _edit(binary_comp, "test.csv", lambda d: d.assign(text=d["text"].where(d.index != 0)))
    comp = load_competition(binary_comp, DataConfig())
    assert len(comp.train) == 200 and len(comp.test) == 60  # kept as "" and noted
    assert any("empty text" in n for n in comp.schema.notes)
    comp = load_competition(binary_comp, DataConfig(empty_text="drop"))
    assert len(comp.train) == 198 and len(comp.test) == 60  # a test row is never dropped


def test_label_column_in_test(binary_comp):
    _edit(binary_comp, "test.csv", lambda d: d.assign(target=0))
    assert "test.csv: column 'target': the label column must not be in test.csv" in _err(binary_comp)


def test_sample_id_not_in_test(binary_comp):
    _edit(binary_comp, "sample_submission.csv", lambda d: d.assign(id=d["id"].where(d.index != 3, 99999)))
    assert "sample_submission.csv: line 5, column 'id': id 99999 is not in test.csv" in _err(binary_comp)


def test_non_utf8_bytes(binary_comp):
    raw = (binary_comp / "train.csv").read_bytes().replace(b"Same text", b"Sam\xe9 text", 1)
    (binary_comp / "train.csv").write_bytes(raw)
    msg = _err(binary_comp)
    assert "train.csv: line" in msg and "not UTF-8" in msg


def test_ragged_row(binary_comp):
    lines = (binary_comp / "train.csv").read_text().splitlines()
    lines[9] = lines[9] + ",extra,fields"
    (binary_comp / "train.csv").write_text("\n".join(lines) + "\n")
    assert "train.csv: line 10: 7 fields where the header has 5" in _err(binary_comp)


def test_cli_exits_nonzero_with_one_line(binary_comp, workdir, capsys):
    from conftest import run_stage

    (binary_comp / "sample_submission.csv").unlink()
    assert run_stage("clean", workdir, binary_comp) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "sample_submission.csv: file not found" in err[0]
    assert not (workdir / "data" / "interim" / "train_clean.parquet").exists()
