"""Run the whole flow stage by stage and record each stage's wall time.

Usage: python benchmarks/stage_times.py [--data DIR] [--config configs/gpu.yaml] [--out NAME]
Writes benchmarks/results/<NAME>.json ({device, stages: {stage: seconds}, total}) and a
table in BENCHMARKS.md. The same stages as `make all`, in the same order.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["inspect", "clean", "folds", "augment", "select", "tune", "train", "ensemble", "submit", "report"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None)
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--set", nargs="*", default=[])
    p.add_argument("--out", default="stage_times")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from run import device_name  # benchmarks/run.py beside this file

    common = (["--data", args.data] if args.data else []) + [x for c in args.config for x in ("--config", c)]
    common += ["--set", *args.set] if args.set else []
    times = {}
    for stage in STAGES:
        extra = ["--plan", "reports/runs.json"] if stage == "train" else []
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pipeline", stage, *extra, *common], cwd=ROOT, check=True)
        times[stage] = round(time.perf_counter() - t0, 1)
    res = {"device": device_name("cuda" if torch.cuda.is_available() else "cpu"), "date": time.strftime("%Y-%m-%d"),
           "data": args.data or "embedded default", "config": args.config, "stages": times,
           "total": round(sum(times.values()), 1)}
    out = ROOT / "benchmarks" / "results" / f"{args.out}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    sys.stdout.write(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
