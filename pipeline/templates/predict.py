"""Offline inference for a textcomp bundle: test.csv in, submission.csv out.

    python predict.py --test /kaggle/input/<competition>/test.csv --out submission.csv

Needs torch, transformers, scikit-learn, pandas (all on Kaggle's images) and nothing from
the network: every model, tokenizer and setting is in this folder (manifest.json). The
cleaning, the blend and the submission's shape come from textcomp_runtime.py, the same file
the training pipeline ran. ftfy (the cleaner's mojibake repair) is used from the installed
package if there is one, else from vendor/ (pure Python, its licence beside it).

Options: --onnx (transformer members on onnxruntime, int8; when the bundle has the export),
--sample FILE (the submission's id order and columns; default: sample_submission.csv
next to --test, else test.csv's order), --batch-size N, --device auto|cpu|cuda,
--max-minutes M (add ensemble members, heaviest weight first, only while their measured
time fits; at least one always runs), --no-hash-check.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: everything is here
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(HERE))


class BundleError(RuntimeError):
    """Bad input or a damaged bundle: one line naming the file (and row/column)."""


def say(msg: str) -> None:
    sys.stderr.write(f"predict: {msg}\n")
    sys.stderr.flush()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_files(manifest: dict) -> None:
    for rel, meta in manifest["files"].items():
        path = HERE / rel
        if not path.is_file():
            raise BundleError(f"{path}: missing from the bundle (upload the whole folder)")
        if path.stat().st_size != meta["bytes"] or sha256(path) != meta["sha256"]:
            raise BundleError(f"{path}: differs from manifest.json (damaged or edited upload)")


def import_vendored(names: list[str]) -> None:
    """Pure-Python dependencies shipped as zips in vendor/, used when not installed."""
    import importlib

    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            sys.path.append(str(HERE / "vendor" / f"{name}.zip"))
    for name in names:
        importlib.import_module(name)  # a clear ImportError here if neither is there


def read_input(path: Path, columns: list[str]):
    import textcomp_runtime as rt

    if not path.is_file():
        raise BundleError(f"{path}: file not found")
    import pandas as pd

    try:
        df = rt.read_csv_strings(path)
    except UnicodeDecodeError as e:
        raise BundleError(f"{path}: bytes that are not UTF-8 at byte {e.start}; re-save the file as UTF-8") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise BundleError(f"{path}: cannot parse CSV: {str(e).strip().splitlines()[-1]}") from None
    for col in columns:
        if col not in df.columns:
            raise BundleError(f"{path}: no column {col!r} (the bundle was trained with it; columns: "
                              f"{', '.join(df.columns)})")
    missing = df[columns[0]].isna().to_numpy()
    if missing.any():
        raise BundleError(f"{path}: row {int(missing.argmax()) + 2}, column {columns[0]!r}: empty id")
    twice = df[columns[0]].duplicated().to_numpy()
    if twice.any():
        i = int(twice.argmax())
        raise BundleError(f"{path}: row {i + 2}, column {columns[0]!r}: id {df[columns[0]].iloc[i]!r} appears twice")
    return df


def peak_memory_mb() -> float:
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def pick_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise BundleError("--device cuda: no CUDA device here")
    return name


def predict_member(member: dict, frame, device: str, batch_size: int | None, onnx: bool = False,
                   text_cols: list | None = None) -> object:
    """The member's test probabilities: the mean over its fold models, as the pipeline averages."""
    import textcomp_runtime as rt

    texts = rt.model_inputs(frame, member["extra_cols"], member["extra_template"], member["sep"], text_cols)
    try:
        return rt.member_proba(HERE, member, texts, device, batch_size, onnx, pairs=rt.other_texts(frame, text_cols))
    except FileNotFoundError as e:
        raise BundleError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", required=True, type=Path, help="the competition's test.csv")
    parser.add_argument("--out", default=Path("submission.csv"), type=Path, help="where to write the submission")
    parser.add_argument("--sample", default=None, type=Path,
                        help="sample_submission.csv (default: the one next to --test, if any)")
    parser.add_argument("--batch-size", type=int, default=None, help="transformer batch size (default: training's)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop adding ensemble members when the next would not fit in this time")
    parser.add_argument("--onnx", action="store_true",
                        help="transformer members on onnxruntime with the int8 export (package.onnx=true): "
                             "faster on CPU, probabilities slightly different (manifest.json: onnx)")
    parser.add_argument("--no-hash-check", action="store_true", help="skip the sha256 check of the bundle's files")
    parser.add_argument("--stats", type=Path, default=None,
                        help="also write wall time, peak memory and the members used to this JSON file")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    try:
        return run(args, t0)
    except BundleError as e:
        say(f"error: {e}")
        return 2


def run(args: argparse.Namespace, t0: float) -> int:
    import numpy as np

    manifest = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
    if not args.no_hash_check:
        check_files(manifest)
    spec = manifest["predict"]
    if spec["cleaner"].get("mojibake"):
        import_vendored(["wcwidth", "ftfy"])
    import textcomp_runtime as rt

    s = spec["schema"]
    text_cols = s.get("text_cols") or [s["text_col"]]
    test = read_input(args.test, [s["id_col"], *text_cols, *spec["extra_cols"]])
    cleaner = rt.TextCleaner(**spec["cleaner"]).fit()
    frame = test[[s["id_col"], *spec["extra_cols"]]].rename(columns={s["id_col"]: "id"})
    for i, col in enumerate(text_cols):  # text, text_1 ...: every text column, the same cleaner
        frame[rt.text_column(i)] = cleaner.transform(test[col])
    say(f"{args.test}: {len(frame)} rows, cleaned ({', '.join(f'{k}={v}' for k, v in cleaner.changes_.items())})")
    transformers_used = any(m.get("needs_torch", True) for m in spec["members"])
    device = pick_device(args.device) if transformers_used else "cpu"  # no torch import for classical-only
    members = sorted(spec["members"], key=lambda m: -m["weight"])  # the heaviest first: the most score per second
    probas, used, ratios = [], [], [1.0]  # seconds here / seconds at packaging, per member done
    for m in members:
        planned = m["seconds_per_1k_rows_onnx" if args.onnx and "seconds_per_1k_rows_onnx" in m
                    else "seconds_per_1k_rows"] * len(frame) / 1000
        left = args.max_minutes * 60 - (time.perf_counter() - t0) if args.max_minutes else None
        if used and left is not None and planned * max(ratios) > left:
            say(f"member {m['run']}: skipped (about {planned * max(ratios):.0f}s expected, {left:.0f}s left of "
                "--max-minutes)")
            continue
        t = time.perf_counter()
        probas.append(predict_member(m, frame, device, args.batch_size, args.onnx, text_cols))
        used.append(m)
        took = time.perf_counter() - t
        ratios.append(took / max(planned, 1e-9))
        say(f"member {m['run']} ({m['family']}, {len(m['folds'])} folds, weight {m['weight']:.3f}): {took:.1f}s")
    weights = np.array([m["weight"] for m in used], dtype=np.float64)
    weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(used), 1 / len(used))
    method = spec["method"]
    if method in ("stack", "weighted_per_label") and len(used) < len(members):
        method = "mean"  # the stacking model (or each label's weights) needs every member's input
        say(f"{spec['method']} needs every member: the members that ran are averaged instead")
    elif method == "weighted_per_label":
        weights = np.array([m["label_weights"] for m in used], dtype=np.float64).T  # (labels, members)
    proba = rt.blend(method, weights, np.stack(probas), spec.get("stacker"), bool(s.get("multilabel")))
    sample = args.sample or (args.test.parent / "sample_submission.csv")
    ids = frame["id"]
    if sample.is_file():
        order = read_input(sample, [s["id_col"]])[s["id_col"]]
        index = {k: i for i, k in enumerate(ids)}
        absent = [k for k in order if k not in index]
        if absent:
            raise BundleError(f"{sample}: id {absent[0]!r} is not in {args.test}")
        pick = np.array([index[k] for k in order])
        ids, proba = order.reset_index(drop=True), proba[pick]
        say(f"order and ids from {sample}")
    threshold = spec["threshold"]  # fitted on the whole blend's OOF
    if len(used) == 1 and len(members) > 1:
        threshold = used[0]["threshold"]  # one member left: its own OOF-tuned threshold
    elif len(used) < len(members):
        say("a partial blend: the whole blend's threshold is used (no threshold was fitted for this subset)")
    sub = rt.build_submission(ids, proba, id_col=s["id_col"], pred_cols=s["pred_cols"], classes=s["classes"],
                              kind=s["submission"], threshold=threshold, clip=spec["clip"],
                              multilabel=bool(s.get("multilabel")), label_values=s.get("label_values"),
                              top_k=s.get("top_k"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".partial")
    sub.to_csv(tmp, index=False, lineterminator="\n")
    os.replace(tmp, args.out)
    wall, peak = time.perf_counter() - t0, peak_memory_mb()
    say(f"wrote {args.out}: {len(sub)} rows from {len(used)} of {len(members)} members "
        f"({spec['method']}); wall time {wall:.1f}s, peak memory {peak:.0f} MB")
    if args.stats:
        args.stats.write_text(json.dumps({"seconds": round(wall, 2), "peak_mb": round(peak, 1), "device": device,
                                          "members_used": [m["run"] for m in used]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
