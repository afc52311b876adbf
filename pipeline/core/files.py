"""Reading user files with errors that name file, row and column; atomic writes."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure


class DataError(ValueError):
    """Bad input data: the message is one line naming the file, and row/column where known."""


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash (or kill) inside the block leaves the previous artifact untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: Path, obj: object) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_parquet(path: Path, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_csv(path: Path, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n")
    return Path(path)


def save_figure(path: Path, fig: Figure) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def read_competition_csv(path: Path) -> pd.DataFrame:
    """Read a user CSV with every cell as the text it holds, failing with one clear line on bad input.

    Cells stay strings (``"000123"`` keeps its zeros, ``1`` never becomes ``1.0``); only an
    empty cell is missing (``"NA"``, ``"null"`` and ``"None"`` are text, as a tweet may say).
    ``df.attrs["lines"]`` holds each row's first physical line (line 1 is the header), so
    errors point at the right line even after quoted fields with line breaks.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    raw = read_maybe_compressed(path)
    if not raw.strip():
        raise DataError(f"{path}: file is empty")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}: line {line}: bytes that are not UTF-8 ({raw[e.start:e.start + 4]!r}); "
            "re-save the file as UTF-8"
        ) from None
    header, rows, lines = _parse_csv(path, text)
    if not rows:
        raise DataError(f"{path}: file has a header but no rows")
    df = pd.DataFrame(rows, columns=header, dtype=object).replace("", np.nan)
    df.attrs["lines"] = lines
    return df


MAX_CSV_BYTES = 8 * 2**30  # a compressed CSV larger than this unpacked is refused (a zip bomb stops here)


def read_maybe_compressed(path: Path) -> bytes:
    """A file's bytes; ``.zip`` (one CSV inside, as Kaggle zips ``train.csv.zip``) and ``.gz``
    unpacked in memory, up to MAX_CSV_BYTES."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        import gzip

        try:
            with gzip.open(path, "rb") as f:
                data = f.read(MAX_CSV_BYTES + 1)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: not a readable gzip file ({e})") from None
    elif suffix == ".zip":
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                csvs = [m for m in z.infolist() if not m.is_dir() and m.filename.lower().endswith(".csv")]
                if len(csvs) != 1:
                    raise DataError(f"{path}: holds {len(csvs)} CSV files ({', '.join(m.filename for m in csvs[:4])}); "
                                    "expected exactly one")
                with z.open(csvs[0]) as f:
                    data = f.read(MAX_CSV_BYTES + 1)
        except zipfile.BadZipFile as e:
            raise DataError(f"{path}: not a readable zip ({e})") from None
    else:
        return path.read_bytes()
    if len(data) > MAX_CSV_BYTES:
        raise DataError(f"{path}: unpacks to more than {MAX_CSV_BYTES >> 30} GiB; refused")
    return data


def _parse_csv(path: Path, text: str) -> tuple[list[str], list[list[str]], list[int]]:
    csv.field_size_limit(2**31 - 1)  # a long text is data, not an error (pandas has no limit either)
    # strict: a stray quote is an error, not a field that silently swallows the following rows
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    rows: list[list[str]] = []
    lines: list[int] = []
    start = 1
    try:
        for row in reader:
            if header is None:
                header = _check_header(path, row)
                start = reader.line_num + 1
                continue
            if not row or row == [""]:
                start = reader.line_num + 1
                continue  # blank line
            if len(row) != len(header):
                raise DataError(f"{path}: line {start}: {len(row)} fields where the header has {len(header)}")
            rows.append(row)
            lines.append(start)
            start = reader.line_num + 1
    except csv.Error as e:
        hint = " (a quote opened in this row is never closed)" if "end of data" in str(e) else ""
        raise DataError(f"{path}: line {start}: cannot parse CSV: {e}{hint}") from None
    if header is None:
        raise DataError(f"{path}: file has no header row")
    return header, rows, lines


def _check_header(path: Path, row: list[str]) -> list[str]:
    names = [c.strip() for c in row]
    if len(names) == 1:
        for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sep in names[0]:
                raise DataError(f"{path}: line 1: the header is one field holding {name}s; the file looks "
                                f"{name}-separated, and competition files are comma-separated: re-save it as CSV")
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"{path}: line 1, column {i + 1}: empty column name (a saved index column?); "
                            "name it or remove it")
        if name in names[:i]:
            raise DataError(f"{path}: line 1, column {i + 1}: column {name!r} appears twice in the header")
    return names


def row_line(df: pd.DataFrame, i: int) -> int:
    """Physical line of the row at position ``i`` of a frame read by ``read_competition_csv``
    (rows may have been dropped since: the line follows the row's original index label)."""
    label = df.index[i]
    lines = df.attrs.get("lines")
    if lines is not None and isinstance(label, (int, np.integer)) and 0 <= label < len(lines):
        return int(lines[label])
    return int(label) + 2
