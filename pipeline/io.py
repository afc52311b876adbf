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
from typing import Any

import pandas as pd


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


def write_json(path: Path, obj: Any) -> Path:
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


def save_figure(path: Path, fig: Any) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def read_competition_csv(path: Path) -> pd.DataFrame:
    """Read a user CSV as strings-where-text, failing with one clear line on bad input."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
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
    _check_ragged(path, text)
    try:
        df = pd.read_csv(path, encoding="utf-8-sig", keep_default_na=True, low_memory=False)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file has no header row") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{path}: cannot parse CSV: {str(e).strip()}") from None
    if df.empty:
        raise DataError(f"{path}: file has a header but no rows")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _check_ragged(path: Path, text: str) -> None:
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    for row in reader:
        if header is None:
            header = row
            continue
        if not row or row == [""]:
            continue
        if len(row) != len(header):
            # csv's line_num counts physical lines, which is what an editor shows.
            raise DataError(
                f"{path}: line {reader.line_num}: {len(row)} fields where the header has {len(header)}"
            )
