"""Seed averaging measured from finished runs: what `train.seeds=[...]` would have scored.

    python benchmarks/seed_average.py WORK --runs mpnet2 mpnet2_s43 mpnet2_s44 --reference mpnet2

Each run in --runs is the same configuration trained with a different `train.seed` on the same
folds.csv (`python -m pipeline train --set train.run=mpnet2_s43 train.seed=43`). The script
averages their OOF probabilities row by row, as `train.seeds` does within a fold, for the first
1, 2, ... n runs, and scores each average: CV on the concatenated OOF (and its log loss when
the metric is another), the per-fold scores, and the fold-wise difference from the reference
run with its standard error (the noise a gain must beat). Seconds add up over the runs
averaged. Prints a JSON document and appends it to benchmarks/results/seed_average.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.core.metrics import metric_of, paired_se, score  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "seed_average.json"


def load(work: Path, run: str) -> tuple[pd.DataFrame, dict]:
    oof = pd.read_parquet(work / "models" / run / "oof.parquet").sort_values("id").reset_index(drop=True)
    return oof, json.loads((work / "models" / run / "cv.json").read_text())


def scored(metric: str, oof: pd.DataFrame, proba: np.ndarray) -> dict:
    y = oof["label"].to_numpy()
    folds = sorted(oof["fold"].unique())
    per_fold = [score(metric, y[oof["fold"].to_numpy() == k], proba[oof["fold"].to_numpy() == k]) for k in folds]
    out = {"cv": score(metric, y, proba), "folds": per_fold}
    if not metric_of(metric).calibrated:  # averaging shows in the probabilities before it shows in a label metric
        out["logloss"] = score("logloss", y, proba)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path)
    ap.add_argument("--runs", nargs="+", required=True, help="one configuration, one seed per run")
    ap.add_argument("--reference", required=True, help="the run the averages are compared with")
    args = ap.parse_args()
    work = args.work.resolve()
    ref_oof, ref_cv = load(work, args.reference)
    metric = ref_cv["metric"]
    ref = scored(metric, ref_oof, ref_oof.filter(like="p_").to_numpy())
    sign = float(metric_of(metric).sign)  # a gain is positive when better
    rows, probas, seconds = [], [], 0.0
    for run in args.runs:
        oof, cv = load(work, run)
        if not (oof["id"].equals(ref_oof["id"]) and oof["fold"].equals(ref_oof["fold"])):
            raise SystemExit(f"{run}: its OOF rows or folds differ from {args.reference}'s (another folds.csv?)")
        probas.append(oof.filter(like="p_").to_numpy())
        seconds += sum(f["seconds"] for f in cv["folds"])
        s = scored(metric, ref_oof, np.mean(probas, axis=0))
        d = sign * (np.array(s["folds"]) - np.array(ref["folds"]))
        rows.append({"seeds": len(probas), "runs": args.runs[:len(probas)], "cv": round(s["cv"], 4),
                     "folds": np.round(s["folds"], 4).tolist(), "gain": round(sign * (s["cv"] - ref["cv"]), 4),
                     **({"logloss": round(s["logloss"], 4)} if "logloss" in s else {}),
                     "fold_gains": d.round(4).tolist(), "se": round(paired_se(d), 4),
                     "seconds": round(seconds)})
    doc = {"work": str(work), "metric": metric,
           "reference": {"run": args.reference, "cv": round(ref["cv"], 4), "folds": np.round(ref["folds"], 4).tolist(),
                         **({"logloss": round(ref["logloss"], 4)} if "logloss" in ref else {}),
                         "seconds": round(sum(f["seconds"] for f in ref_cv["folds"]))},
           "averages": rows}
    print(json.dumps(doc, indent=1))
    history = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*history, doc], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
