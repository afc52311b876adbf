"""Kill the whole flow with SIGKILL at many points, rerun it, and get the uninterrupted run's
submission and OOF; no stage may publish or read a mixed set in between (slow tier).

KILL_POINTS (default 30) sets how many kills, seeded and spread over every stage. Two kinds:
- at the N-th file rename of the flow (the driver kills itself inside ``os.replace``): lands
  exactly between two files of a stage's publish, or between a temp file and its rename;
- after a delay within the stage's share of a reference run's wall time: lands mid-work
  (mid-epoch, mid-translation, mid-search).
A third of the rounds kill a rerun over complete outputs, where old and new files could mix.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_binary_competition

from pipeline.core.paths import Paths
from pipeline.core.transaction import StaleInput, require

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]

DRIVER = r"""
import os, signal, sys, time
from pipeline.__main__ import main
work, data, bert, exp, kill_at = sys.argv[1:6]
renames, _replace = [0], os.replace


def replace(src, dst):  # the N-th rename of the flow never happens: the process dies first
    renames[0] += 1
    if renames[0] == int(kill_at):
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst)


os.replace = replace
common = ["folds.n_splits=2", "augment.methods=[random_swap]", "tune.n_trials=3", "tune.families=[classical]",
          "inspect.adversarial=false",
          f"select.candidates=[{exp}/lr.yaml,{exp}/nbsvm.yaml]", "select.top_k=2", "select.max_train_rows=null"]
tiny = [f"train.backbone={bert}", "train.run=tiny", "train.max_len=32", "train.epochs=1", "train.batch_size=16",
        "train.augment=[random_swap]"]
flow = [("inspect", [], ["train.family=classical"]), ("clean", [], []), ("folds", [], []), ("augment", [], []),
        ("select", [], []), ("tune", [], []), ("train-plan", ["--plan", f"{work}/reports/runs.json"], []),
        ("train-tiny", [], tiny), ("ensemble", [], []), ("submit", [], []), ("report", [], [])]
for name, extra, sets in flow:
    print(f"STAGE {name} {time.monotonic()} {renames[0]}", flush=True)
    code = main([name.split("-")[0], "--workdir", work, "--data", data, "-q", *extra, "--set", *common, *sets])
    if code:
        sys.exit(code)
print(f"DONE {time.monotonic()} {renames[0]}", flush=True)
"""


def _start(work: Path, data: Path, bert: Path, exp: Path, kill_at: int = 0) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(work.parent / "driver.log", "a") as log:  # every run's stderr, for a failure's post-mortem
        return subprocess.Popen([sys.executable, "-c", DRIVER, str(work), str(data), str(bert), str(exp), str(kill_at)],
                                stdout=subprocess.PIPE, stderr=log, text=True, env=env)


def _run_to_end(work: Path, data: Path, bert: Path, exp: Path) -> list[tuple[str, float, int]]:
    """(stage, start in seconds after the process started — CLOCK_MONOTONIC is shared —, renames so far)."""
    t0 = time.monotonic()
    proc = _start(work, data, bert, exp)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + (work.parent / "driver.log").read_text()[-3000:]
    marks = [ln.split() for ln in out.splitlines() if ln.startswith(("STAGE ", "DONE "))]
    return [(m[1], float(m[2]) - t0, int(m[3])) if m[0] == "STAGE" else ("DONE", float(m[1]) - t0, int(m[2]))
            for m in marks]


def _assert_no_mixed_set(work: Path) -> None:
    """Every manifest on disk describes exactly the files beside it, or its readers refuse it."""
    paths = Paths.make(work)
    for m in sorted(paths.manifests.glob("*.json")):
        manifest = json.loads(m.read_text())
        try:
            require(paths, m.stem, check_inputs=False)
        except StaleInput as e:
            raise AssertionError(f"{m.stem}: a manifest whose files were changed without it: {e}") from None
        assert manifest["outputs"], m.stem


def _final(work: Path) -> dict[str, object]:
    return {"submission": (work / "submissions/submission.csv").read_bytes(),
            "oof": {d.name: pd.read_parquet(d / "oof.parquet").sort_values("id").reset_index(drop=True)
                    for d in [*sorted((work / "models").glob("*")), work / "ensembles/blend"]
                    if (d / "oof.parquet").exists()}}


def test_kill_anywhere_then_rerun_gives_the_uninterrupted_result(tmp_path, tiny_bert):
    data = write_binary_competition(tmp_path / "comp", n_train=160, n_test=40)
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "lr.yaml").write_text("train:\n  run: lr\n  family: classical\n  classical_model: lr\n")
    (exp / "nbsvm.yaml").write_text("train:\n  run: nbsvm\n  family: classical\n  classical_model: nbsvm\n")
    ref_work = tmp_path / "reference"
    marks = _run_to_end(ref_work, data, tiny_bert, exp)
    ref = _final(ref_work)
    # kill points: spread over each stage's share of the reference time, seeded; two rounds over
    # every stage start from an empty work folder (the stage is hit as planned), the third kills
    # a rerun over complete outputs (the case where old and new files could mix)
    rng = random.Random(2026)
    n = int(os.environ.get("KILL_POINTS", "30"))
    spans = [(name, t, u, r, q) for (name, t, r), (_, u, q) in zip(marks[:-1], marks[1:])]
    work = tmp_path / "killed"
    table: dict[str, list[str]] = {}
    for i in range(n):
        planned, a, b, r0, r1 = spans[i % len(spans)]
        fresh = (i // len(spans)) % 3 != 2
        if fresh and work.exists():
            shutil.rmtree(work)
        if i % 2 == 0 and r1 > r0:  # at a rename inside this stage (its publish, or an atomic write)
            kill_at = rng.randint(r0 + 1, r1)
            proc = _start(work, data, tiny_bert, exp, kill_at)
            how = f"rename {kill_at - r0}/{r1 - r0}"
        else:  # mid-work, after a delay
            delay = a + rng.random() * (b - a)
            proc = _start(work, data, tiny_bert, exp)
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            how = f"{delay:.1f}s"
        out, _ = proc.communicate()
        hit = [ln.split()[1] for ln in out.splitlines() if ln.startswith("STAGE ")]
        where = "finished" if "\nDONE " in out else (hit[-1] if hit else "start-up")
        _assert_no_mixed_set(work)
        _run_to_end(work, data, tiny_bert, exp)
        _assert_no_mixed_set(work)
        got = _final(work)
        assert got["submission"] == ref["submission"], f"killed in {where}: the submission differs"
        assert set(got["oof"]) == set(ref["oof"])
        for name, oof in got["oof"].items():
            cols = [c for c in oof.columns if c.startswith("p_")]
            assert oof["id"].tolist() == ref["oof"][name]["id"].tolist()
            diff = np.abs(oof[cols].to_numpy() - ref["oof"][name][cols].to_numpy()).max()
            assert diff < 1e-6, f"killed in {where}: OOF of {name} differs by {diff}"
        table.setdefault(where, []).append(f"{'fresh' if fresh else 'rerun'}:{planned}@{how}")
    summary = {k: len(v) for k, v in table.items()}
    sys.stderr.write(f"kills by stage: {summary}\n")
    (ROOT / "benchmarks/results/kill_table.json").write_text(json.dumps(table, indent=1) + "\n")
    if n >= 2 * len(spans):
        assert {name for name, *_ in spans} <= set(table), summary  # every stage was hit
