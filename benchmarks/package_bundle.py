"""The offline bundle on a finished competition: size, predict.py wall time and peak memory
(torch fp32 against ONNX int8, one invocation, each in a fresh process), the int8 export's
OOF score change, and what fp16 weights would cost.

    python benchmarks/package_bundle.py --workdir W --data ../shared/data/nlp-getting-started

W is a work directory on which `make all` finished. Writes benchmarks/results/package.json.
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
RESULTS = ROOT / "benchmarks" / "results"
GUARD = "import runpy, sys; sys.modules['pipeline'] = None; p = sys.argv[1]; sys.argv = sys.argv[1:]; " \
        "runpy.run_path(p, run_name='__main__')"


def package(work: Path, data: Path, *sets: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipeline", "package", "--workdir", str(work), "--data", str(data),
                    "--set", *sets], check=True, cwd=ROOT)
    return time.perf_counter() - t0


def predict(bundle: Path, data: Path, out: Path, *extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("TEXTCOMP_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    stats = out.with_suffix(".json")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", GUARD, str(bundle / "predict.py"), "--test", str(data / "test.csv"),
                    "--out", str(out), "--stats", str(stats), *extra], check=True, env=env, cwd=out.parent)
    return {**json.loads(stats.read_text()), "process_seconds": round(time.perf_counter() - t0, 2)}


def size_mb(folder: Path, pattern: str = "*") -> float:
    return round(sum(p.stat().st_size for p in folder.rglob(pattern) if p.is_file()) / 1e6, 1)


def differing(a: Path, b: Path) -> int:
    import pandas as pd

    x, y = pd.read_csv(a, dtype=str), pd.read_csv(b, dtype=str)
    assert x.iloc[:, 0].equals(y.iloc[:, 0])
    return int((x.iloc[:, 1:] != y.iloc[:, 1:]).any(axis=1).sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    work, data = args.workdir.resolve(), args.data.resolve()
    out_dir = work / "dist" / "bench-runs"
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict = {"data": str(data.name), "machine": os.cpu_count()}
    res["package_seconds"] = round(package(work, data, "package.name=bench", "package.onnx=true"), 1)
    bundle = work / "dist" / "bench"
    manifest = json.loads((bundle / "manifest.json").read_text())
    res["bundle_mb"] = size_mb(bundle)
    res["models_mb"] = {m["run"]: size_mb(bundle / "models" / m["run"]) for m in manifest["predict"]["members"]}
    res["onnx_mb"] = size_mb(bundle, "*.onnx")
    res["members"] = [{k: m.get(k) for k in ("run", "family", "weight", "seconds_per_1k_rows", "max_abs_diff_vs_run",
                                             "seconds_per_1k_rows_onnx", "onnx")} for m in manifest["predict"]["members"]]
    res["verification"] = manifest["verification"]
    sub = work / "submissions" / "submission.csv"
    for mode, extra in (("torch", ()), ("onnx_int8", ("--onnx",))):
        runs = [predict(bundle, data, out_dir / f"{mode}{i}.csv", *extra) for i in range(args.repeats)]
        res[mode] = {"seconds": [r["seconds"] for r in runs], "peak_mb": max(r["peak_mb"] for r in runs),
                     "labels_differing_from_submission": differing(out_dir / f"{mode}0.csv", sub)}
    res["onnx_speedup_end_to_end"] = round(min(res["torch"]["seconds"]) / min(res["onnx_int8"]["seconds"]), 2)
    res["package_fp16_seconds"] = round(package(work, data, "package.name=bench-fp16", "package.fp16=true",
                                                "package.verify=false"), 1)
    fp16 = work / "dist" / "bench-fp16"
    m16 = json.loads((fp16 / "manifest.json").read_text())
    res["fp16"] = {"bundle_mb": size_mb(fp16),
                   "max_abs_diff_vs_run": {m["run"]: m["max_abs_diff_vs_run"] for m in m16["predict"]["members"]}}
    r16 = predict(fp16, data, out_dir / "fp16.csv")
    res["fp16"].update(seconds=r16["seconds"], peak_mb=r16["peak_mb"],
                       labels_differing_from_submission=differing(out_dir / "fp16.csv", sub))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "package.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
