"""The submissions ledger: every submission kept, and one row per submission to query later.

submit publishes `submissions/submission.csv` (overwritten by the next one); after it has, the
same file is archived as `submissions/archive/<UTC time>-<sha8>.csv` and a row is appended to
`submissions/ledger.jsonl`: when, the code's commit and whether its tree was dirty, the config's
fingerprint, the competition, what was submitted (run or ensemble, members and weights), the
metric, CV and the CV over untouched folds, the file's sha256; `make kaggle-submit` adds the
Kaggle message to the row of the file it sent. Appending one JSON line is all-or-nothing for a
reader (a line cut by a crash is skipped with a warning), and the archive file is written
before its row, so a row always points at a file.

Each row also holds what `make reproduce SUB=<sha8>` needs: the make variables the flow ran with
(``invocation``: DATA, CONFIG and its text, PROFILE, SET, TIME, PRESET, FOLDS), the digest of the
competition files and of the uncommitted diff, and the resolved config's keys that differ from
the defaults (``settings``). `make lb` fills each row's public score from the Kaggle CLI.

    python -m pipeline.core.ledger [--filter TEXT]     # `make runs`: the ledger, newest first,
                                                       # with the CV / public LB correlation
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
        return {**old[-1], "again": True}
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


def update(paths: Paths, sha256: str, **fields: Any) -> bool:
    """Set fields of the newest row of the file with this sha256; False when no row has it."""
    all_rows = rows(paths)
    for r in reversed(all_rows):
        if r.get("sha256") == sha256:
            r.update(fields)
            break
    else:
        return False
    _rewrite(paths, all_rows)
    return True


def _rewrite(paths: Paths, all_rows: list[dict[str, Any]]) -> None:
    """The ledger rewritten whole, atomically (a reader sees the old one or the new one)."""
    write_text(ledger_path(paths), "".join(json.dumps(r, sort_keys=True) + "\n" for r in all_rows))


def set_message(paths: Paths, message: str) -> None:
    """The Kaggle message of the ledger row whose file is today's submission.csv."""
    update(paths, file_digest(paths.submission), message=message)


def find(paths: Paths, sha8: str) -> dict[str, Any]:
    """The ledger row of a submission by the first characters of its sha256 (a one-line error
    when none or several match)."""
    key = (sha8 or "").strip().lower()
    if len(key) < 4 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"SUB={sha8!r}: give the submission's sha8 (at least 4 hex digits; `make runs` lists them)")
    hits = [r for r in rows(paths) if r.get("sha256", "").startswith(key)]
    if not hits:
        raise ValueError(f"{ledger_path(paths)}: no submission {key} (`make runs` lists them)")
    if len({r["sha256"] for r in hits}) > 1:
        raise ValueError(f"{ledger_path(paths)}: {key} matches {len(hits)} submissions; give more digits")
    return hits[-1]


INVOCATION = ("DATA", "CONFIG", "PROFILE", "SET", "TIME", "PRESET", "FOLDS")


def invocation(env: dict[str, str] | None = None) -> dict[str, str]:
    """The make variables the flow ran with, as make handed them over (TEXTCOMP_*); DATA and
    CONFIG made absolute, and the CONFIG file's text kept (it may be edited later)."""
    env = dict(os.environ if env is None else env)
    out = {k: env.get(f"TEXTCOMP_{k}", "") for k in INVOCATION}
    for k in ("DATA", "CONFIG"):
        if out[k]:
            out[k] = str(Path(out[k]).expanduser().resolve())
    if out["CONFIG"] and Path(out["CONFIG"]).is_file():
        out["config_text"] = Path(out["CONFIG"]).read_text()
    return out


def data_digest(folder: Path) -> str:
    """One digest of the competition's three files (plain or zipped)."""
    from pipeline.core.sources import competition_files
    from pipeline.core.transaction import value_digest

    return value_digest({role: file_digest(p) for role, p in competition_files(folder).items()})[:16]


def correlation(all_rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Pearson and Spearman correlation of CV and public LB over the rows that have both (one
    point per file), None below three points."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    pts = {r["sha256"]: (r["cv"], r["public_score"]) for r in all_rows
           if isinstance(r.get("cv"), (int, float)) and isinstance(r.get("public_score"), (int, float))}
    if len(pts) < 3:
        return None
    cv, lb = np.array(list(pts.values()), dtype=float).T
    if np.ptp(cv) == 0 or np.ptp(lb) == 0:
        return {"n": len(pts), "pearson": None, "spearman": None}
    return {"n": len(pts), "pearson": float(pearsonr(cv, lb)[0]), "spearman": float(spearmanr(cv, lb)[0])}


def correlation_line(all_rows: list[dict[str, Any]]) -> str:
    c = correlation(all_rows)
    n = sum(isinstance(r.get("public_score"), (int, float)) for r in all_rows)
    if c is None:
        return f"CV vs public LB: {n} submission(s) with a public score; the correlation needs 3 (`make lb` fills them)"
    if c["pearson"] is None:
        return f"CV vs public LB over {c['n']} submissions: no spread in one of them, no correlation"
    said = (f"CV vs public LB over {c['n']} submissions: Pearson {c['pearson']:+.3f}, Spearman {c['spearman']:+.3f}")
    if c["spearman"] < 0.5:
        said += " (weak or negative: the public board does not follow the CV; trust the CV, not the board)"
    return said


def fill_public_scores(paths: Paths, slug: str, csv_text: str) -> int:
    """The rows' public (and private, once shown) scores from ``kaggle competitions submissions
    -c <slug> --csv``: a row matches a Kaggle submission by its ``sub <sha8>`` mark in the
    description (kaggle_submit writes it), else by its message. Returns the rows filled."""
    import csv
    import io

    lines = csv_text.splitlines()
    start = next((i for i, line in enumerate(lines) if "publicScore" in line), None)
    if start is None:
        raise ValueError(f"kaggle competitions submissions -c {slug}: no table with a publicScore column in its output")
    subs = list(csv.DictReader(io.StringIO("\n".join(lines[start:]))))
    all_rows = rows(paths)
    filled = 0
    for r in all_rows:
        mark = f"sub {r.get('sha8')}"
        hit = next((s for s in subs if mark in (s.get("description") or "")), None) or \
            next((s for s in subs if r.get("message") and s.get("description") == r["message"]), None)
        if hit is None:
            continue
        r.update(public_score=_number(hit.get("publicScore")), private_score=_number(hit.get("privateScore")),
                 kaggle_status=hit.get("status"), kaggle_date=hit.get("date"), kaggle_ref=hit.get("ref") or
                 r.get("kaggle_ref"), kaggle_competition=slug)
        filled += 1
    _rewrite(paths, all_rows)
    return filled


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "None") else None
    except ValueError:
        return None


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
    sys.stdout.write(table(all_rows, args.filter) + "\n" + correlation_line(all_rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
