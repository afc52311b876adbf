"""Issue 46's two levers on one competition, each against what it replaces, on one folds.csv:
the fine-tune from the encoder pretrained on the competition's texts (masked LM, train.pretrain_steps)
against the plain one, and a student distilled from the blend (train.teacher) against the blend and
against the same backbone trained on labels only; then `make package` with the student alone
against the full blend: size, predict.py's time and peak memory, and the held-back score where
the competition has held-back labels.

    python benchmarks/levers.py --data ../shared/data/nlp-getting-started --work W1   # disaster tweets
    python benchmarks/levers.py --embedded --work W2                                  # the embedded default
    python benchmarks/levers.py --shape long --work W3 --set data.metric=accuracy      # benchmarks/shapes.py's
    python benchmarks/levers.py --embedded --work W4 --smoke                           # minutes: proves the script

In the work directory, each step is the pipeline's own stage (`python -m pipeline <stage>`): clean,
folds, the teacher's members (--members, configs/exp/<name>.yaml each; `minilm` is also the plain /
labels-only twin), the blend, `minilm_tapt` (minilm + train.pretrain_steps=--pretrain-steps),
`minilm_student` (minilm + train.teacher=blend: the blend leaves its own student out), submit,
report, and two bundles (the blend; package.members=minilm_student). A rerun resumes: finished
folds, the pretrained encoder and published stages are kept. The comparisons are
pipeline.cv.compare's (what the report shows): CV on the concatenated OOF, the fold-wise gains and
their SE, seconds; then each comparison's two sides on the held-back labels (the embedded
default's, a shape's), from their test predictions, with a paired bootstrap SE: a student's CV
leans its way, the held-back labels do not. Appends one entry to --out (default
benchmarks/results/levers.json; a --smoke run writes beside the work directory unless --out says
otherwise); `--rescore` scores a finished work directory's sides into its entry.
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
RESULTS = ROOT / "benchmarks" / "results" / "levers.json"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
SMOKE = ["data.embedded_train_rows=400", "data.embedded_test_rows=120", "train.epochs=1", "train.max_len=32",
         "train.eval_batch_size=64"]


def stage(work: Path, data: Path | None, name: str, *sets: str, config: str | None = None, log: Path) -> float:
    """One stage in the work directory, its output appended to the log; its wall seconds."""
    cmd = [sys.executable, "-m", "pipeline", name, "--workdir", str(work)]
    if data is not None:
        cmd += ["--data", str(data)]
    if config:
        cmd += ["--config", config]
    if sets:
        cmd += ["--set", *sets]
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, check=True)
    return round(time.perf_counter() - t0, 1)


def bundle_stats(work: Path, name: str, data_dir: Path, labels: Path | None, shape: str | None) -> dict:
    """A bundle's size, predict.py on test.csv in a fresh process (seconds, peak memory), and its
    output's held-back score."""
    from package_bundle import predict

    bundle = work / "dist" / name
    manifest = json.loads((bundle / "manifest.json").read_text())
    out = work / "dist" / f"{name}-predict.csv"
    stats = predict(bundle, data_dir, out)
    return {"bundle": name, "members": [m["run"] for m in manifest["predict"]["members"]],
            "mb": round(manifest["bytes"] / 1e6, 1), "predict_seconds": stats.get("seconds"),
            "process_seconds": stats.get("process_seconds"), "peak_mb": stats.get("peak_mb"),
            "rows": manifest.get("verification", {}).get("rows"), "cv": manifest["cv"]["value"],
            "holdout": held_back(out, labels, shape, manifest)}


def held_back(sub_path: Path, labels: Path | None, shape: str | None, manifest: dict) -> float | None:
    """The bundle's output against held-back labels: a shape's (benchmarks/shapes.py), the
    embedded default's (the manifest holds it), else none (a Kaggle competition's are Kaggle's)."""
    if labels is None or not labels.exists():
        return manifest.get("holdout_score")
    import pandas as pd

    if shape is not None:
        from shapes import score

        return score(shape, pd.read_csv(sub_path), pd.read_csv(labels))
    return manifest.get("holdout_score")


def held_back_sides(work: Path, data: Path | None, labels: Path | None, found: list, resamples: int = 2000) -> list[dict]:
    """Each comparison's two sides on the held-back labels, from their test predictions
    (models/<run>/test.parquet, ensembles/<name>/test.parquet) at the metric's default decision,
    with the SE of the difference from a paired bootstrap over the rows (seed 0): what settles a
    gain that CV cannot (a student's CV leans its way: pipeline/cv/distill.py). One label column
    only; none without held-back labels."""
    import numpy as np
    import pandas as pd

    from pipeline.core.contract import Schema, encode_labels, proba_cols
    from pipeline.core.metrics import score
    from pipeline.core.paths import Paths

    paths = Paths.make(work, data)
    schema = Schema.load(paths.schema_json)
    if labels is None or not labels.exists() or schema.multilabel:
        return []
    held = pd.read_csv(labels)
    held[schema.id_col] = held[schema.id_col].astype(str)
    y = encode_labels(held[schema.label_col], schema.classes)

    def proba(side: str) -> np.ndarray:
        kind, name = side.split(" ", 1)
        f = paths.run(name).test if kind == "run" else paths.ensemble(name).test
        t = pd.read_parquet(f)
        t[schema.id_col if schema.id_col in t.columns else "id"] = t[schema.id_col if schema.id_col in t.columns
                                                                     else "id"].astype(str)
        t = t.set_index(schema.id_col if schema.id_col in t.columns else "id")
        return t.loc[held[schema.id_col], proba_cols(schema.n_outputs)].to_numpy()

    rng = np.random.default_rng(0)
    boots = [rng.integers(0, len(y), len(y)) for _ in range(resamples)]
    out = []
    for c in found:
        a, b = proba(c.new.name), proba(c.reference.name)
        diffs = [score(c.metric, y[i], a[i]) - score(c.metric, y[i], b[i]) for i in boots]
        new, ref = score(c.metric, y, a), score(c.metric, y, b)
        out.append({"lever": c.lever, "new": c.new.name, "reference": c.reference.name, "new_score": round(new, 4),
                    "reference_score": round(ref, 4), "gain": round(new - ref, 4),
                    "se": round(float(np.std(diffs, ddof=1)), 4), "rows": len(y), "cv_gain": round(c.gain, 4)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", type=Path, help="a competition folder (train.csv, test.csv, sample_submission.csv)")
    where.add_argument("--embedded", action="store_true", help="the embedded default (held-back labels)")
    where.add_argument("--shape", choices=["multilabel", "pair", "long"], help="benchmarks/shapes.py's competition")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--members", default="tfidf,nbsvm,minilm,emb_minilm", help="the teacher blend's runs")
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--rows", default=None, help="--shape: train:test rows instead of the shape's")
    ap.add_argument("--set", nargs="*", default=[], help="key=value for every stage (e.g. data.metric=accuracy)")
    ap.add_argument("--smoke", action="store_true", help="the smallest settings: 2 folds, 1 epoch, 20 pretraining "
                                                         "steps, tfidf + minilm, a 400/120-row embedded default")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--rescore", action="store_true", help="run nothing: score a finished work directory's sides on "
                                                           "the held-back labels into its entry in --out")
    args = ap.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "levers.log"
    sets = list(args.set) + (SMOKE if args.smoke else [])
    folds = 2 if args.smoke else args.folds
    steps = 20 if args.smoke else args.pretrain_steps
    members = ["tfidf", "minilm"] if args.smoke else args.members.split(",")
    if "minilm" not in members:
        ap.error("--members must hold minilm: it is the plain and labels-only twin")
    data, labels, shape = None, None, None
    if args.data:
        data = args.data.resolve()
    elif args.shape:
        import shapes

        if args.rows:
            shapes.SIZES[args.shape] = tuple(int(x) for x in args.rows.split(":"))
        if args.rescore:  # the competition built by the run being rescored
            data, labels = work / "comp", work / "test_labels.csv"
        else:
            data, labels = shapes.build(args.shape, work / "comp")
        shape = args.shape
    if args.rescore:
        return rescore(work, data, labels if shape else None, args)
    seconds: dict[str, float] = {}
    seconds["clean"] = stage(work, data, "clean", *sets, log=log)
    seconds["folds"] = stage(work, data, "folds", *sets, f"folds.n_splits={folds}", log=log)
    for m in members:
        seconds[m] = stage(work, data, "train", *sets, config=f"configs/exp/{m}.yaml", log=log)
    seconds["ensemble"] = stage(work, data, "ensemble", *sets, log=log)
    minilm = "configs/exp/minilm.yaml"
    seconds["minilm_tapt"] = stage(work, data, "train", *sets, "train.run=minilm_tapt",
                                   f"train.pretrain_steps={steps}", config=minilm, log=log)
    seconds["minilm_student"] = stage(work, data, "train", *sets, "train.run=minilm_student", "train.teacher=blend",
                                      config=minilm, log=log)
    seconds["submit"] = stage(work, data, "submit", *sets, log=log)
    seconds["report"] = stage(work, data, "report", *sets, log=log)
    seconds["package_blend"] = stage(work, data, "package", *sets, "package.name=levers-blend", log=log)
    seconds["package_student"] = stage(work, data, "package", *sets, "package.name=levers-student",
                                       "package.members=minilm_student", log=log)

    from pipeline.core.contract import Schema
    from pipeline.core.paths import Paths
    from pipeline.cv.compare import comparisons

    paths = Paths.make(work, data)
    schema = Schema.load(paths.schema_json)
    data_dir = data if data is not None else paths.embedded
    if args.embedded:
        labels = paths.holdout_labels
    found = comparisons(paths, schema.metric, schema.n_outputs)
    held = held_back_sides(work, data, labels, found)
    entry = {
        "competition": "embedded" if args.embedded else (f"shape:{shape}" if shape else data.name),
        "metric": schema.metric, "folds": folds, "pretrain_steps": steps, "members": members, "smoke": args.smoke,
        "sets": sets, "comparisons": [c.to_dict() for c in found], "held_back": held,
        "bundles": [bundle_stats(work, n, data_dir, labels, shape) for n in ("levers-blend", "levers-student")],
        "stage_seconds": seconds, "work": str(work), "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end",
        "command": " ".join(["python benchmarks/levers.py", *sys.argv[1:]]),
        "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                 text=True).stdout.strip()}
    out = args.out or (work / "levers.json" if args.smoke else RESULTS)
    results = json.loads(out.read_text()) if out.exists() else []
    out.write_text(json.dumps([*results, entry], indent=2) + "\n")
    for c in found:
        print(f"{c.lever:12s} {c.new.name:22s} vs {c.against} ({c.reference.name}): {c.new.cv:.4f} vs "
              f"{c.reference.cv:.4f}, gain {c.gain:+.4f} (SE {c.se:.4f}{', beyond the noise' if c.beyond_noise else ''}); "
              f"seconds {c.new.seconds + c.new.extra_seconds:.0f} vs {c.reference.seconds + c.reference.extra_seconds:.0f}")
    show_held_back(held)
    for b in entry["bundles"]:
        print(f"bundle {b['bundle']}: {b['mb']} MB, predict.py {b['predict_seconds']}s (peak {b['peak_mb']} MB), "
              f"CV {b['cv']}, held-back {b['holdout']}")
    print(f"-> {out}")
    return 0


def show_held_back(held: list[dict]) -> None:
    for h in held:
        print(f"held-back {h['lever']:12s} {h['new']:22s} vs {h['reference']}: {h['new_score']:.4f} vs "
              f"{h['reference_score']:.4f}, gain {h['gain']:+.4f} (paired bootstrap SE {h['se']:.4f}, {h['rows']} rows; "
              f"CV said {h['cv_gain']:+.4f})")


def rescore(work: Path, data: Path | None, labels: Path | None, args: argparse.Namespace) -> int:
    """--rescore: the held-back sides of a finished work directory, into its newest entry."""
    from pipeline.core.contract import Schema
    from pipeline.core.paths import Paths
    from pipeline.cv.compare import comparisons

    paths = Paths.make(work, data)
    schema = Schema.load(paths.schema_json)
    if args.embedded:
        labels = paths.holdout_labels
    held = held_back_sides(work, data, labels, comparisons(paths, schema.metric, schema.n_outputs))
    out = args.out or RESULTS
    results = json.loads(out.read_text()) if out.exists() else []
    mine = [e for e in results if e.get("work") == str(work)]
    if not mine:
        print(f"{out}: no entry for {work}", file=sys.stderr)
        return 2
    mine[-1]["held_back"] = held
    out.write_text(json.dumps(results, indent=2) + "\n")
    show_held_back(held)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
