"""The submissions ledger: every submission kept, and one row per submission to query later.

submit publishes `submissions/submission.csv` (overwritten by the next one); after it has, the
same file is archived as `submissions/archive/<UTC time>-<sha8>.csv` and a row is appended to
`submissions/ledger.jsonl`: when, the code's commit and whether its tree was dirty, the config's
fingerprint, the competition, what was submitted (run or ensemble, members and weights), the
metric, CV and the CV over untouched folds, the file's sha256; `make kaggle-submit` adds the
Kaggle message to the row of the file it sent. Appending one JSON line is all-or-nothing for a
reader (a line cut by a crash is skipped with a warning), and the archive file is written
before its row, so a row always points at a file.

    python -m pipeline.core.ledger [--filter TEXT]     # `make runs`: the ledger, newest first
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.core.environment import git_state
from pipeline.core.files import atomic_path, write_text
from pipeline.core.paths import Paths
from pipeline.core.transaction import file_digest

log = logging.getLogger(__name__)


def ledger_path(paths: Paths) -> Path:
    return paths.submission.parent / "ledger.jsonl"


def rows(paths: Paths) -> list[dict[str, Any]]:
    path = ledger_path(paths)
    if not path.exists():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d: not a complete ledger row (a write cut short?): skipped", path, i)
    return out


def record(paths: Paths, row: dict[str, Any]) -> dict[str, Any]:
    """Archive the published submission and append its ledger row (not again when the file and
    every field of ``row`` are the newest row's: a forced rerun of the same submission)."""
    sub = paths.submission
    digest = file_digest(sub)
    old = rows(paths)
    if old and old[-1].get("sha256") == digest and all(old[-1].get(k) == v for k, v in row.items()):
        log.info("ledger: the submission and its settings are the newest row's (%s): not archived again",
                 old[-1]["file"])
        return old[-1]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    archive = sub.parent / "archive" / f"{stamp}-{digest[:8]}.csv"
    n = 1
    while archive.exists():  # the same bytes twice in one second, from other settings
        n += 1
        archive = archive.with_name(f"{stamp}-{digest[:8]}-{n}.csv")
    with atomic_path(archive) as tmp:
        tmp.write_bytes(sub.read_bytes())
    commit, dirty = git_state()
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "file": str(archive.relative_to(paths.root)),
             "sha256": digest, "sha8": digest[:8], "commit": commit, "dirty": dirty, **row, "message": None,
             "public_score": None}
    with open(ledger_path(paths), "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
    log.info("ledger: %s archived, row %d of %s", archive.name, len(old) + 1, ledger_path(paths))
    return entry


def set_message(paths: Paths, message: str) -> None:
    """The Kaggle message of the ledger row whose file is today's submission.csv."""
    digest = file_digest(paths.submission)
    all_rows = rows(paths)
    for r in reversed(all_rows):
        if r.get("sha256") == digest:
            r["message"] = message
            break
    else:
        return
    write_text(ledger_path(paths), "".join(json.dumps(r, sort_keys=True) + "\n" for r in all_rows))


def table(all_rows: list[dict[str, Any]], needle: str | None = None) -> str:
    cols = ("time", "sha8", "competition", "source", "metric", "cv", "cv_untouched", "public_score", "commit",
            "message")
    picked = [r for r in reversed(all_rows)
              if not needle or needle.lower() in json.dumps(r, sort_keys=True).lower()]

    def cell(r: dict[str, Any], c: str) -> str:
        v = r.get(c)
        if c == "commit" and v:
            return v[:8] + ("+dirty" if r.get("dirty") else "")
        if isinstance(v, float):
            return f"{v:.4f}"
        return "-" if v is None else str(v)

    cells = [[cell(r, c) for c in cols] for r in picked]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*cols), fmt.format(*("-" * w for w in widths)), *(fmt.format(*row) for row in cells)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--filter", default=os.environ.get("TEXTCOMP_FILTER") or None,
                    help="rows whose any field contains this text (a run name, a competition)")
    args = ap.parse_args(argv)
    paths = Paths.make(os.environ.get("TEXTCOMP_WORKDIR") or ".")
    all_rows = rows(paths)
    if not all_rows:
        sys.stdout.write(f"no submissions recorded yet ({ledger_path(paths)})\n")
        return 0
    sys.stdout.write(table(all_rows, args.filter) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
