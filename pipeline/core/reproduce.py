"""`make reproduce SUB=<sha8>`: a past submission rebuilt from its ledger row, and what differs.

The row says which commit made the file (and the digest of the uncommitted diff, if any), the
make variables of its flow (DATA, CONFIG and the config file's text, PROFILE, SET, TIME, PRESET,
FOLDS), the digest of the competition files and the resolved settings. The rebuild:

1. the code: this checkout when it is at that commit with the same diff; else the commit's
   files from git (``git archive``) in ``reproduce/<sha8>/code`` (a dirty tree's diff cannot be
   recovered: said so);
2. ``make all`` of that code in a fresh work directory, ``reproduce/<sha8>/work``, with the
   row's variables (CONFIG from its recorded text when the file has changed since);
3. the new submission beside the archived one: the same bytes (exit 0), or what moved (exit 1):
   the code, the data, the config, the CV.

A ``TIME=`` flow plans from measured speeds, so on a busier or faster machine it may choose
otherwise; the row's settings are compared so that such a difference is named.

    python -m pipeline.core.reproduce SUB [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from pipeline.core import ledger
from pipeline.core.environment import PROJECT, git_diff_digest, git_state
from pipeline.core.files import read_json
from pipeline.core.paths import Paths
from pipeline.core.transaction import file_digest


def code_for(row: dict[str, Any], out: Path) -> tuple[Path, list[str]]:
    """Where the row's code is, and what differs from it."""
    commit, _ = git_state()
    notes = []
    if commit and commit == row.get("commit") and git_diff_digest() == row.get("diff_digest"):
        return PROJECT, notes
    if not row.get("commit"):
        return PROJECT, ["the row has no commit (made outside git): today's code rebuilds it"]
    code = out / "code"
    if not (code / "Makefile").exists():
        code.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile() as tar:
            r = subprocess.run(["git", "-C", str(PROJECT), "archive", row["commit"]], stdout=tar,
                               stderr=subprocess.PIPE)
            if r.returncode != 0:
                raise RuntimeError(f"git archive {row['commit'][:8]}: {r.stderr.decode().strip() or 'failed'} "
                                   "(is the commit in this clone? git fetch)")
            tar.seek(0)
            with tarfile.open(fileobj=tar) as t:
                t.extractall(code, filter="data")
    notes.append(f"code: today's checkout is {(commit or '?')[:8]}, the submission was made at "
                 f"{row['commit'][:8]}: rebuilt from that commit's files in {code}")
    if row.get("diff_digest"):
        notes.append("code: the submission came from a dirty tree (uncommitted changes); they are not in git, "
                     "so the rebuild runs the commit without them")
    return code, notes


def make_args(row: dict[str, Any], paths: Paths, out: Path) -> tuple[list[str], list[str]]:
    """The row's make variables as make arguments (each one argv item), and notes."""
    inv = dict(row.get("invocation") or {})
    notes = []
    if inv.get("CONFIG"):
        cfg = Path(inv["CONFIG"])
        text = inv.get("config_text")
        if text is not None and (not cfg.is_file() or cfg.read_text() != text):
            kept = out / "config.yaml"
            kept.write_text(text)
            notes.append(f"config: {cfg} has changed (or gone) since; its recorded text is used ({kept})")
            inv["CONFIG"] = str(kept)
    if not inv.get("DATA") and row.get("competition") != "embedded":
        inv["DATA"] = str(paths.root / "data" / "raw")  # the original work directory's data/raw
    return [f"{k}={inv[k]}" for k in ledger.INVOCATION if inv.get(k)], notes


def compare(row: dict[str, Any], paths: Paths, work: Path) -> list[str]:
    """What differs between the archived submission and the rebuilt one (empty: the same)."""
    new_paths = Paths.make(work)
    if not new_paths.submission.exists():
        return ["the rebuild wrote no submission"]
    diffs = []
    new = ledger.rows(new_paths)
    last = new[-1] if new else {}
    if file_digest(new_paths.submission) != row["sha256"]:
        diffs.append(f"submission: sha256 {file_digest(new_paths.submission)[:8]}, the archived one {row['sha8']}")
    if last.get("data_digest") and row.get("data_digest") and last["data_digest"] != row["data_digest"]:
        diffs.append("data: the competition files have changed since (digest "
                     f"{row['data_digest'][:8]} then, {last['data_digest'][:8]} now)")
    if last.get("settings") is not None and row.get("settings") is not None and last["settings"] != row["settings"]:
        keys = sorted({f"{s}.{k}" for d in (last["settings"], row["settings"]) for s in d
                       for k in set(d.get(s, {})) if last["settings"].get(s, {}).get(k) != row["settings"].get(s, {})
                       .get(k)})
        diffs.append(f"settings: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''} differ")
    if isinstance(row.get("cv"), float) and isinstance(last.get("cv"), float) and row["cv"] != last["cv"]:
        diffs.append(f"CV: {last['cv']:.4f} now, {row['cv']:.4f} then")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sub", nargs="?", default=os.environ.get("TEXTCOMP_SUB") or None, help="the submission's sha8")
    ap.add_argument("--workdir", default=os.environ.get("TEXTCOMP_WORKDIR") or ".")
    args = ap.parse_args(argv)
    paths = Paths.make(args.workdir)
    try:
        row = ledger.find(paths, args.sub or "")
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    out = paths.root / "reproduce" / row["sha8"]
    work = out / "work"
    if work.exists():
        import shutil

        shutil.rmtree(work)  # a fresh work directory every time
    work.mkdir(parents=True)
    try:
        code, notes = code_for(row, out)
    except RuntimeError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    variables, more = make_args(row, paths, out)
    notes += more
    stamp = out / "installed"
    stamp.write_text(sys.executable)  # this environment's packages; newer than the code's pyproject.toml
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TEXTCOMP_") and k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    cmd = ["make", "-C", str(code), "all", f"PYTHON={sys.executable}", f"STAMP={stamp}", f"WORKDIR={work}",
           *variables]
    for n in notes:
        sys.stdout.write(f"reproduce {row['sha8']}: {n}\n")
    sys.stdout.write(f"reproduce {row['sha8']}: make all {' '.join(variables) or '(defaults)'} in {work}\n")
    sys.stdout.flush()
    with open(out / "make.log", "w") as log:
        rc = subprocess.call(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    if rc != 0:
        sys.stderr.write(f"error: the rebuild's make all failed (exit {rc}); its log: {out / 'make.log'}\n")
        return 2
    diffs = compare(row, paths, work)
    if not diffs:
        cv = read_json(Paths.make(work).submission_json).get("cv")
        sys.stdout.write(f"reproduce {row['sha8']}: the same submission, byte for byte (sha256 {row['sha256'][:16]}…, "
                         f"CV {cv:.4f}) -> {Paths.make(work).submission}\n")
        return 0
    for d in diffs:
        sys.stdout.write(f"reproduce {row['sha8']}: differs: {d}\n")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
