"""What each member adds to the ensemble, measured on one finished work directory's OOF.

    python benchmarks/ensemble_ablation.py /tmp/textcomp-budget-nlp-getting-started-30m-medium
    python benchmarks/ensemble_ablation.py WORK --subset minilm,tfidf,nbsvm   # also that blend vs all

For the blend over every run, and over every run but one (each in turn), the chosen method's
nested score (fitted on the other folds, thresholds included) on the folds that no run's
select/tune validated on, exactly as `make ensemble` scores it; beside each, the fold-wise
difference from the full blend and its standard error (a member counts as a gain only when
dropping it costs more than that). Then each run alone: F1 at a threshold tuned on the scored
folds themselves (in-sample) against one tuned on the other folds (nested), and each fold's own
best threshold, which shows what a transferred threshold costs.

Prints a JSON document; reads only (the work directory is not changed).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.metrics import metric_of  # noqa: E402
from pipeline.cv.blend import evaluate, one_se_choice  # noqa: E402


def main(work: Path, subsets: list[list[str]]) -> dict:
    cv = json.loads((work / "ensembles" / "blend" / "cv.json").read_text())
    metric = cv["metric"]
    runs = list(cv["runs"])
    oofs = [pd.read_parquet(work / "models" / r / "oof.parquet").set_index("id") for r in runs]
    ids = oofs[0].index
    oofs = [o.loc[ids] for o in oofs]
    cols = [c for c in oofs[0].columns if c.startswith("p_")]
    probas = np.stack([o[cols].to_numpy(np.float64) for o in oofs])
    y, folds = oofs[0]["label"].to_numpy(), oofs[0]["fold"].to_numpy()
    scope = np.isin(folds, cv["scored_on_folds"])
    p, ys, fs = probas[:, scope], y[scope], folds[scope]
    tune_thr = metric_of(metric).tunes(np.ndim(y) == 2) is not None
    sign = metric_of(metric).sign
    methods = [m["method"] for m in cv["methods"]]

    def blend(members: list[int]) -> dict:
        ms = methods if len(members) > 1 else ["best_single"]
        results = [evaluate(m, p[members], ys, fs, metric, "metric", tune_thr) for m in ms]
        chosen, _, best = one_se_choice(results, metric)
        return {"chosen": chosen.method, "nested": chosen.nested, "fold_scores": chosen.fold_scores,
                "best": best.method, "best_nested": best.nested}

    full = blend(list(range(len(runs))))
    out = {"work": str(work), "metric": metric, "scored_on_folds": cv["scored_on_folds"],
           "all": {"chosen": full["chosen"], "nested": round(full["nested"], 5), "best": full["best"],
                   "best_nested": round(full["best_nested"], 5), "runs": runs}, "without": {}, "alone": {}}

    def versus(members: list[int]) -> dict:
        r = blend(members)
        d = sign * (full["fold_scores"] - r["fold_scores"])
        return {"chosen": r["chosen"], "nested": round(r["nested"], 5),
                "loss": round(sign * (full["nested"] - r["nested"]), 5),
                "fold_losses": [round(float(x), 5) for x in d],
                "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 5) if len(d) > 1 else None}

    for i, run in enumerate(runs):
        out["without"][run] = versus([j for j in range(len(runs)) if j != i])
    out["subsets"] = {",".join(sub): versus([runs.index(r) for r in sub]) for sub in subsets}
    for i, run in enumerate(runs):
        alone = evaluate("best_single", p[i:i + 1], ys, fs, metric, "metric", tune_thr)
        row = {"nested": round(alone.nested, 5), "in_sample": round(alone.in_sample, 5)}
        if tune_thr:
            row["fold_thresholds"] = {int(k): metric_of(metric).tune(ys[fs == k], p[i][fs == k])[0]
                                      for k in np.unique(fs)}
        out["alone"][run] = row
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path)
    ap.add_argument("--subset", action="append", default=[], help="comma-separated runs: that blend against all")
    args = ap.parse_args()
    print(json.dumps(main(args.work, [s.split(",") for s in args.subset]), indent=1))
