"""One model configuration with and without one change, fold by fold on the same folds.csv.

    python benchmarks/paired_runs.py WORK --config configs/exp/mpnet.yaml --set train.epochs=2 \
        --run mpnet2 --change bt 'train.augment=[backtranslation]'

Trains fold 0 of the reference run, then fold 0 of the changed run (`<run>_<name>`), then
fold 1 of each, and so on: each call is `python -m pipeline train --set train.folds=[k]` in the
work directory WORK, which keeps the finished folds, so a run stopped half way leaves complete
pairs of folds and a rerun resumes at the first missing one. Both runs are then finished
(their OOF concatenated and scored) and compared: CV on the concatenated OOF, the fold-wise
differences and their standard error (the noise a gain must beat), seconds and training
samples per second.

The changed run's upstream artifacts must exist (for back-translation: `python -m pipeline
augment --workdir WORK --set 'augment.methods=[backtranslation]'`). Prints a JSON document and
appends it to benchmarks/results/paired_runs.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.core.metrics import paired_se  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "paired_runs.json"


def train(work: Path, config: str, sets: list[str], folds: str | None) -> None:
    cmd = [sys.executable, "-m", "pipeline", "train", "--workdir", str(work), "--config", config, "--set", *sets]
    if folds is not None:
        cmd.append(f"train.folds=[{folds}]")
    subprocess.run(cmd, cwd=ROOT, check=True)


def summary(cv: dict) -> dict:
    folds = cv["folds"]
    return {"run": cv["run"], "cv": round(cv["cv"], 4), "folds": [round(f["score"], 4) for f in folds],
            "best_epochs": [f.get("best_epoch") for f in folds],
            "seconds": round(sum(f["seconds"] for f in folds)),
            "train_samples_per_s": round(float(np.mean([f["train_samples_per_s"] for f in folds])), 1)}


def compare(ref: dict, new: dict) -> dict:
    d = np.array([b["score"] - a["score"] for a, b in zip(ref["folds"], new["folds"])])
    return {"reference": summary(ref), "changed": summary(new), "gain": round(new["cv"] - ref["cv"], 4),
            "fold_gains": d.round(4).tolist(), "se": round(paired_se(d), 4),
            "time_ratio": round(sum(f["seconds"] for f in new["folds"]) / sum(f["seconds"] for f in ref["folds"]), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path)
    ap.add_argument("--config", required=True)
    ap.add_argument("--set", nargs="*", default=[], help="overrides both runs share")
    ap.add_argument("--run", required=True, help="the reference run's name")
    ap.add_argument("--change", nargs="+", required=True, metavar=("NAME", "KEY=VALUE"),
                    help="the changed run's name suffix, then its overrides")
    args = ap.parse_args()
    work = args.work.resolve()
    name, change = args.change[0], args.change[1:]
    runs = {args.run: [*args.set, f"train.run={args.run}"],
            f"{args.run}_{name}": [*args.set, f"train.run={args.run}_{name}", *change]}
    n_splits = int(pd.read_csv(work / "data" / "processed" / "folds.csv")["fold"].max()) + 1
    t0 = time.time()
    for k in range(n_splits):
        for sets in runs.values():
            train(work, args.config, sets, str(k))
    for sets in runs.values():  # every fold is there: this call only concatenates and scores
        train(work, args.config, sets, None)
    ref, new = (json.loads((work / "models" / run / "cv.json").read_text()) for run in runs)
    doc = {"work": str(work), "config": args.config, "set": args.set, "change": change,
           "wall_seconds": round(time.time() - t0), **compare(ref, new)}
    print(json.dumps(doc, indent=1))
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*history, doc], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
