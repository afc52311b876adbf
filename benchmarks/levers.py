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
their SE, seconds. Appends one entry to --out (default benchmarks/results/levers.json; a
--smoke run writes beside the work directory unless --out says otherwise).
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
        data, labels = shapes.build(args.shape, work / "comp")
        shape = args.shape
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
    entry = {
        "competition": "embedded" if args.embedded else (f"shape:{shape}" if shape else data.name),
        "metric": schema.metric, "folds": folds, "pretrain_steps": steps, "members": members, "smoke": args.smoke,
        "sets": sets, "comparisons": [c.to_dict() for c in found],
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
    for b in entry["bundles"]:
        print(f"bundle {b['bundle']}: {b['mb']} MB, predict.py {b['predict_seconds']}s (peak {b['peak_mb']} MB), "
              f"CV {b['cv']}, held-back {b['holdout']}")
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
