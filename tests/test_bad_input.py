"""The bad-input corpus: each case is a tiny competition folder built here, and its outcome is
written down: a one-line error naming the file (and line / column where there is one), or a
documented handling that the case checks. README's data-contract section counts them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.core.config import DataConfig
from pipeline.core.contract import Competition, load_competition
from pipeline.core.files import DataError

TRAIN = [["id", "keyword", "text", "target"],
         *[[str(i), kw, f"{word} reported near the river this morning {i}", str(i % 2)]
           for i, (kw, word) in enumerate([("fire", "forest fire"), ("", "nice party"), ("flood", "flash flood"),
                                           ("music", "great song"), ("storm", "big storm"), ("game", "fun game"),
                                           ("crash", "car crash"), ("pizza", "tasty pizza")], start=1)]]
TEST = [["id", "keyword", "text"],
        *[[str(i), "fire", f"something happened downtown today {i}"] for i in range(101, 105)]]
SAMPLE = [["id", "target"], *[[str(i), "0"] for i in range(101, 105)]]


def _csv(rows: list[list[str]], eol: str = "\n") -> str:
    def cell(v: str) -> str:
        return f'"{v.replace(chr(34), chr(34) * 2)}"' if any(c in v for c in ',"\n\r') else v

    return "".join(",".join(cell(v) for v in row) + eol for row in rows)


@dataclass
class Case:
    name: str
    edit: Callable[[dict[str, list[list[str]]], Path], None]  # changes the tables or writes files itself
    error: str | None = None  # expected one-line error (substring, after the folder path)
    check: Callable[[Competition], None] | None = None  # the documented handling
    cfg: dict = field(default_factory=dict)


def col(rows: list[list[str]], name: str) -> int:
    return rows[0].index(name)


def set_cell(rows: list[list[str]], row: int, name: str, value: str) -> None:
    rows[row][col(rows, name)] = value


def drop_col(rows: list[list[str]], name: str) -> None:
    i = col(rows, name)
    for r in rows:
        del r[i]


def add_col(rows: list[list[str]], name: str, values: Callable[[int], str]) -> None:
    rows[0].append(name)
    for k, r in enumerate(rows[1:], start=1):
        r.append(values(k))


def write_raw(name: str, data: bytes) -> Callable[[dict, Path], None]:
    def edit(t: dict, folder: Path) -> None:
        t.pop(name)
        (folder / name).write_bytes(data)
    return edit


def _ids(comp: Competition, split: str) -> list[str]:
    return getattr(comp, split)["id"].tolist()


def _crlf(t: dict, folder: Path) -> None:
    for name, rows in t.items():
        (folder / name).write_text(_csv(rows, "\r\n"), newline="")
    t.clear()


def _cr_only(t: dict, folder: Path) -> None:
    for name, rows in t.items():
        (folder / name).write_text(_csv(rows, "\r"), newline="")
    t.clear()


def _bom(t: dict, folder: Path) -> None:
    (folder / "train.csv").write_bytes(b"\xef\xbb\xbf" + _csv(t.pop("train.csv")).encode())


def _latin1(t: dict, folder: Path) -> None:
    set_cell(t["train.csv"], 4, "text", "café on fire near the river")
    (folder / "train.csv").write_bytes(_csv(t.pop("train.csv")).encode("latin-1"))


def _utf16(t: dict, folder: Path) -> None:
    (folder / "test.csv").write_bytes(_csv(t.pop("test.csv")).encode("utf-16"))


def _delimited(name: str, sep: str) -> Callable[[dict, Path], None]:
    def edit(t: dict, folder: Path) -> None:
        rows = t.pop(name)
        (folder / name).write_text("".join(sep.join(r) + "\n" for r in rows))
    return edit


def _multiline_then_empty_id(t: dict, folder: Path) -> None:
    set_cell(t["train.csv"], 2, "text", 'line one, with a comma\nline two "quoted"\nline three')
    set_cell(t["train.csv"], 5, "id", "")


def _unclosed_quote(t: dict, folder: Path) -> None:
    text = _csv(t.pop("train.csv")).replace("flash flood", '"flash flood', 1)
    (folder / "train.csv").write_text(text)


def _huge(t: dict, folder: Path) -> None:
    set_cell(t["train.csv"], 3, "text", "flood " * 40_000)


def _two_long_texts(t: dict, folder: Path) -> None:
    add_col(t["train.csv"], "title", lambda k: f"a long title about the river this morning {k}")
    add_col(t["test.csv"], "title", lambda k: f"another long title about the city today {k}")


def _three_long_texts(t: dict, folder: Path) -> None:
    _two_long_texts(t, folder)
    add_col(t["train.csv"], "body", lambda k: f"a body of text that goes on about the weather {k}")
    add_col(t["test.csv"], "body", lambda k: f"another body of text about the sea and the sky {k}")


def _zipped(name: str, how: str) -> Callable[[dict, Path], None]:
    """``name`` written zipped (Kaggle's train.csv.zip) or gzipped beside the other files."""
    def edit(t: dict, folder: Path) -> None:
        import gzip
        import zipfile

        data = _csv(t.pop(name)).encode()
        if how == "zip":
            with zipfile.ZipFile(folder / f"{name}.zip", "w") as z:
                z.writestr(name, data)
        else:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
    return edit


def _plain_and_zipped(t: dict, folder: Path) -> None:
    import zipfile

    with zipfile.ZipFile(folder / "test.csv.zip", "w") as z:
        z.writestr("test.csv", _csv(t["test.csv"]))


def _short_text(t: dict, folder: Path) -> None:
    for rows in (t["train.csv"], t["test.csv"]):
        for r in rows[1:]:
            r[col(rows, "text")] = "ok"
        for r in rows[1:]:
            r[col(rows, "keyword")] = "x"


CASES = [
    # encodings
    Case("utf8_bom", _bom, check=lambda c: c.schema.id_col == "id" and _ids(c, "train")[0] == "1"),
    Case("latin1_bytes", _latin1, error="train.csv: line 5: bytes that are not UTF-8"),
    Case("utf16_file", _utf16, error="test.csv: line 1: bytes that are not UTF-8"),
    Case("mixed_encoding_one_bad_byte", write_raw("test.csv", _csv(TEST).replace("today 103", "today 103 caf").encode()
                                                  .replace(b"caf", b"caf\xe9")),
         error="test.csv: line 4: bytes that are not UTF-8"),
    # delimiters and line endings
    Case("semicolon_separated", _delimited("train.csv", ";"), error="train.csv: line 1: the header is one field "
         "holding semicolons"),
    Case("tab_separated", _delimited("test.csv", "\t"), error="test.csv: line 1: the header is one field holding tabs"),
    Case("crlf_line_endings", _crlf, check=lambda c: len(c.train) == 8 and not c.train["text"].str.contains("\r").any()),
    Case("cr_only_line_endings", _cr_only, check=lambda c: len(c.train) == 8 and len(c.test) == 4),
    # quoting
    Case("embedded_newline_then_bad_row", _multiline_then_empty_id,
         error="train.csv: line 8, column 'id': empty id"),  # row 5 starts on line 8: row 2 spans 3 lines
    Case("unclosed_quote", _unclosed_quote, error="train.csv: line 4: cannot parse CSV: unexpected end of data"),
    Case("ragged_row", lambda t, f: t["train.csv"][6].append("extra"),
         error="train.csv: line 7: 5 fields where the header has 4"),
    # headers
    Case("duplicate_column_name", lambda t, f: t["train.csv"][0].__setitem__(1, "text"),
         error="train.csv: line 1, column 3: column 'text' appears twice in the header"),
    Case("empty_column_name", lambda t, f: t["test.csv"][0].__setitem__(1, ""),
         error="test.csv: line 1, column 2: empty column name"),
    Case("header_spaces_stripped", lambda t, f: t["train.csv"][0].__setitem__(2, " text "),
         check=lambda c: c.schema.text_col == "text"),
    Case("header_only", lambda t, f: t.__setitem__("train.csv", t["train.csv"][:1]),
         error="train.csv: file has a header but no rows"),
    Case("empty_file", write_raw("sample_submission.csv", b"  \n"), error="sample_submission.csv: file is empty"),
    Case("missing_file", lambda t, f: t.pop("test.csv"), error="test.csv: file not found (also looked for test.csv.zip"),
    # columns
    Case("train_lacks_text_test_has_it", lambda t, f: drop_col(t["train.csv"], "text"),
         error="test.csv: column 'text' is not in train.csv"),
    Case("column_only_in_test", lambda t, f: add_col(t["test.csv"], "location", lambda k: "NYC"),
         error="test.csv: column 'location' is not in train.csv"),
    Case("column_only_in_test_ignored", lambda t, f: add_col(t["test.csv"], "location", lambda k: "NYC"),
         cfg={"ignore_cols": ["location"]}, check=lambda c: "location" not in c.test.columns),
    Case("renamed_id_in_test", lambda t, f: t["test.csv"][0].__setitem__(0, "ID"), error="test.csv: no column 'id'"),
    Case("sample_without_prediction_column", lambda t, f: [r.pop() for r in t["sample_submission.csv"]],
         error="sample_submission.csv: needs at least one prediction column"),
    Case("label_column_in_test", lambda t, f: add_col(t["test.csv"], "target", lambda k: "0"),
         error="test.csv: column 'target': the label column must not be in test.csv"),
    Case("two_train_only_columns", lambda t, f: add_col(t["train.csv"], "score", lambda k: str(k)),
         error="train.csv: column 'score' is not in test.csv"),
    Case("two_train_only_columns_none_in_sample", lambda t, f: (
        add_col(t["train.csv"], "score", lambda k: str(k)), t["sample_submission.csv"][0].__setitem__(1, "label")),
        error="several columns are missing from test.csv (target, score); set data.label_col"),
    Case("two_long_text_columns_are_a_pair", _two_long_texts, check=lambda c: c.schema.texts == ["text", "title"]
         and any("a text pair" in n for n in c.schema.notes)),
    Case("three_long_text_columns", _three_long_texts, error="columns text, body, title are all free text"),
    Case("one_text_column_set", _two_long_texts, cfg={"text_col": "text"}, check=lambda c: c.schema.texts == ["text"]),
    Case("zipped_train_csv", _zipped("train.csv", "zip"), check=lambda c: len(c.train) == 8),
    Case("gzipped_test_csv", _zipped("test.csv", "gz"), check=lambda c: len(c.test) == 4),
    Case("plain_and_zipped_test", _plain_and_zipped, error="both test.csv and test.csv.zip; keep one of them"),
    Case("corrupt_zipped_sample", lambda t, f: (t.pop("sample_submission.csv"),
                                                 (f / "sample_submission.csv.zip").write_bytes(b"PK not a zip")),
         error="sample_submission.csv.zip: not a readable zip"),
    Case("text_column_too_short", _short_text, error="column 'text', the longest text column, is not free text"),
    Case("configured_text_column_missing", lambda t, f: None, cfg={"text_col": "tweet"},
         error="train.csv: no column 'tweet' (data.text_col)"),
    # ids
    Case("duplicate_id_in_test", lambda t, f: set_cell(t["test.csv"], 3, "id", "101"),
         error="test.csv: line 4, column 'id': duplicate id '101' (first at line 2"),
    Case("zero_padded_ids_kept", lambda t, f: [set_cell(t[n], k, "id", "000" + t[n][k][0])
                                               for n in ("test.csv", "sample_submission.csv") for k in range(1, 5)],
         check=lambda c: _ids(c, "test")[0] == "000101" and _ids(c, "sample")[0] == "000101"),
    Case("float_looking_ids_differ", lambda t, f: set_cell(t["sample_submission.csv"], 2, "id", "102.0"),
         error="sample_submission.csv: line 3, column 'id': id '102.0' is not in test.csv (ids are compared as written)"),
    Case("sample_order_differs", lambda t, f: t["sample_submission.csv"].__setitem__(
        slice(1, None), t["sample_submission.csv"][:0:-1]), check=lambda c: _ids(c, "sample")[0] == "104"),
    Case("empty_id", lambda t, f: set_cell(t["train.csv"], 3, "id", ""), error="train.csv: line 4, column 'id': empty id"),
    Case("test_id_not_in_sample", lambda t, f: t["sample_submission.csv"].pop(),
         error="test.csv: line 5, column 'id': id '104' is not in sample_submission.csv"),
    # labels
    Case("empty_label", lambda t, f: set_cell(t["train.csv"], 6, "target", ""),
         error="train.csv: line 7, column 'target': empty label"),
    Case("empty_label_dropped", lambda t, f: set_cell(t["train.csv"], 6, "target", ""), cfg={"nan_label": "drop"},
         check=lambda c: len(c.train) == 7 and c.train["target"].tolist()[:2] == ["1", "0"]),
    Case("single_class", lambda t, f: [set_cell(t["train.csv"], k, "target", "1") for k in range(1, 9)],
         error="column 'target': needs at least 2 classes"),
    Case("same_number_two_spellings", lambda t, f: set_cell(t["train.csv"], 5, "target", "1.0"),
         error="train.csv: line 6, column 'target': label '1.0' is the number '1' spelled differently"),
    Case("label_codes_keep_their_zeros", lambda t, f: [set_cell(t["train.csv"], k, "target", f"0{k % 2}")
                                                       for k in range(1, 9)],
         check=lambda c: c.schema.classes == ["00", "01"]),
    Case("label_without_sample_column", lambda t, f: (
        t.__setitem__("sample_submission.csv", [["id", "0", "1"], *[[str(i), "0.5", "0.5"] for i in range(101, 105)]]),
        set_cell(t["train.csv"], 3, "target", "2")),
        error="train.csv: line 4, column 'target': label '2' has no column in sample_submission.csv"),
    Case("sample_column_without_label", lambda t, f: t.__setitem__(
        "sample_submission.csv", [["id", "0", "1", "2"], *[[str(i), "0.3", "0.3", "0.4"] for i in range(101, 105)]]),
        error="sample_submission.csv: column '2' is not a class of 'target'"),
    Case("id_like_label_refused", lambda t, f: [set_cell(t["train.csv"], k, "target", f"x{k}") for k in range(1, 9)],
         error="column 'target': 8 of its 8 values occur once, so it looks like an id"),
    # texts
    Case("empty_texts_kept", lambda t, f: (set_cell(t["train.csv"], 2, "text", ""), set_cell(t["test.csv"], 1, "text", "")),
         check=lambda c: len(c.train) == 8 and len(c.test) == 4 and any("empty text" in n for n in c.schema.notes)),
    Case("na_words_are_text", lambda t, f: (set_cell(t["train.csv"], 2, "text", "NA"), set_cell(t["train.csv"], 3, "text", "null")),
         check=lambda c: c.train["text"].tolist()[1:3] == ["NA", "null"]),
    Case("huge_text_kept_and_noted", _huge, check=lambda c: len(c.train) == 8 and any("longer than" in n for n in c.schema.notes)),
    # sizes
    Case("one_row_train", lambda t, f: t.__setitem__("train.csv", t["train.csv"][:2]),
         error="needs at least 2 classes"),
    Case("one_row_test", lambda t, f: (t.__setitem__("test.csv", t["test.csv"][:2]),
                                      t.__setitem__("sample_submission.csv", t["sample_submission.csv"][:2])),
         check=lambda c: len(c.test) == 1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_corpus(case: Case, tmp_path: Path) -> None:
    folder = tmp_path / "comp"
    folder.mkdir()
    tables = {"train.csv": [list(r) for r in TRAIN], "test.csv": [list(r) for r in TEST],
              "sample_submission.csv": [list(r) for r in SAMPLE]}
    case.edit(tables, folder)
    for name, rows in tables.items():
        (folder / name).write_text(_csv(rows))
    cfg = DataConfig(**case.cfg)
    if case.error is not None:
        with pytest.raises(DataError) as e:
            load_competition(folder, cfg)
        msg = str(e.value)
        assert "\n" not in msg, msg
        assert case.error in msg, msg
        return
    comp = load_competition(folder, cfg)
    assert case.check(comp) is not False


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 25 and len({c.name for c in CASES}) == len(CASES)


def test_cli_exits_nonzero_with_one_line(binary_comp, workdir, capsys):
    from conftest import run_stage

    (binary_comp / "sample_submission.csv").unlink()
    assert run_stage("clean", workdir, binary_comp) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "sample_submission.csv: file not found" in err[0]
    assert not (workdir / "data" / "interim" / "train_clean.parquet").exists()
