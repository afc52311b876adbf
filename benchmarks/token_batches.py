"""Does a token budget keep the CV? MiniLM fine-tuned on the same folds with batches of 32 rows
against batches filled to a token budget (the LR scaled by sqrt(rows / 32) per step, or not),
each scored as the pipeline scores F1: on the concatenated OOF at its OOF-tuned threshold, with
the fold-wise differences against batches of 32 and their standard error.

    python benchmarks/token_batches.py --workdir /tmp/tb          # train what is missing, then score
    python benchmarks/token_batches.py --workdir /tmp/tb --score   # score what is there

Each run is `python -m pipeline train` with configs/exp/minilm.yaml on folds 0-2 of one folds.csv
(disaster tweets), 2 epochs; `train.token_batch_rows=100` lifts the row cap so a budget's own
rows per step are measured. Writes benchmarks/results/token_batches.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "nlp-getting-started"
FOLDS = (0, 1, 2)
RUNS = {  # name -> train settings over configs/exp/minilm.yaml
    "r32": "",
    "t2048": "train.batch_tokens=2048 train.token_batch_rows=100",
    "t4096": "train.batch_tokens=4096 train.token_batch_rows=100",
    # batch_size 117 makes the nominal batch about what 4,096 tokens hold (151 rows): LR x sqrt(151/117) = x1.14,
    # against x2.17 under the rule
    "t4096u": "train.batch_tokens=4096 train.token_batch_rows=100 train.batch_size=117",
    "t8192": "train.batch_tokens=8192 train.token_batch_rows=100",
}


def run_stage(stage: str, workdir: Path, sets: str = "") -> None:
    env = {**os.environ, "TEXTCOMP_DATA": str(DATA), "TEXTCOMP_WORKDIR": str(workdir), "TEXTCOMP_TRACK": "0",
           "TEXTCOMP_CONFIG": "configs/exp/minilm.yaml", "TEXTCOMP_FOLDS": ",".join(map(str, FOLDS)),
           "TEXTCOMP_SET": sets, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "pipeline", stage], cwd=ROOT, env=env, check=True)


def score(workdir: Path) -> dict:
    import numpy as np
    import pandas as pd
    from sklearn.metrics import f1_score

    def thr(y, p):
        return max(np.linspace(0.2, 0.8, 61), key=lambda t: f1_score(y, p > t))

    oof = {}
    for name in RUNS:
        parts = [workdir / "models" / name / f"fold{k}" / "oof.parquet" for k in FOLDS]
        if all(p.exists() for p in parts):
            oof[name] = pd.concat([pd.read_parquet(p) for p in parts])
    out = {}
    base = oof.get("r32")
    for name, d in oof.items():
        t = thr(d["label"], d["p_1"])
        folds = {int(k): f1_score(g["label"], g["p_1"] > t) for k, g in d.groupby("fold")}
        log = (workdir / f"{name}.log")
        rows = None
        if log.exists():
            import re

            m = re.findall(r"mean ([0-9.]+) rows a step", log.read_text())
            rows = float(m[0]) if m else None
        out[name] = {"settings": RUNS[name], "cv_f1": round(float(f1_score(d["label"], d["p_1"] > t)), 4),
                     "threshold": round(float(t), 2), "per_fold": {k: round(v, 4) for k, v in folds.items()},
                     "rows_per_step": rows or 32.0}
        if base is not None and name != "r32":
            bt = thr(base["label"], base["p_1"])
            diffs = [folds[k] - f1_score(g["label"], g["p_1"] > bt) for k, g in base.groupby("fold")]
            out[name]["diff_vs_r32"] = round(float(np.mean(diffs)), 4)
            out[name]["se"] = round(float(np.std(diffs, ddof=1) / np.sqrt(len(diffs))), 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--score", action="store_true", help="score the runs there, train nothing")
    args = ap.parse_args()
    if not args.score:
        if not (args.workdir / "data" / "processed" / "folds.csv").exists():
            run_stage("clean", args.workdir)
            run_stage("folds", args.workdir)
        for name, sets in RUNS.items():
            if not (args.workdir / "models" / name / f"fold{FOLDS[-1]}" / "oof.parquet").exists():
                log = args.workdir / f"{name}.log"
                with open(log, "w") as f:  # the run header's "mean N rows a step" is read back from it
                    env_sets = f"train.run={name} train.epochs=2 {sets}".strip()
                    subprocess.run([sys.executable, "-m", "pipeline", "train"], cwd=ROOT, stdout=f,
                                   stderr=subprocess.STDOUT, check=True,
                                   env={**os.environ, "TEXTCOMP_DATA": str(DATA), "TEXTCOMP_WORKDIR": str(args.workdir),
                                        "TEXTCOMP_TRACK": "0", "TEXTCOMP_CONFIG": "configs/exp/minilm.yaml",
                                        "TEXTCOMP_FOLDS": ",".join(map(str, FOLDS)), "TEXTCOMP_SET": env_sets,
                                        "OMP_NUM_THREADS": "1"})
    res = {"date": time.strftime("%Y-%m-%d"), "data": "disaster tweets", "model": "MiniLM (configs/exp/minilm.yaml), "
           "2 epochs, max_len 64", "folds": list(FOLDS), "metric": "f1 at the OOF-tuned threshold",
           "command": "python benchmarks/token_batches.py --workdir <a new folder>", "runs": score(args.workdir)}
    out = ROOT / "benchmarks" / "results" / "token_batches.json"
    out.write_text(json.dumps(res, indent=1) + "\n")
    for name, r in res["runs"].items():
        sys.stdout.write(f"{name:16s} rows/step {r['rows_per_step']:6.1f}  CV F1 {r['cv_f1']:.4f}  "
                         f"{r.get('diff_vs_r32', 0):+.4f} (SE {r.get('se', 0):.4f})\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
