"""package: an offline inference bundle for Kaggle code competitions.

Usage: python -m pipeline package [--set package.name=mybundle package.fp16=true package.verify=false]
       python -m pipeline package --set package.members=student    (one run alone: the distilled
       student, or any run by its name; verified against the submission that run alone makes)
Reads:  submissions/submission.{csv,json} (current: made from today's ensemble and settings),
        what it was made from (ensembles/<name>/weights.json or one run), models/<run>/{config.yaml,
        cv.json, fold<k>/model/}, data/interim/schema.json, reports/clean.json
Writes: dist/<name>/ = predict.py, textcomp_runtime.py, manifest.json, README.md,
        models/<run>/fold<k>/ (safetensors + tokenizer + config, or a TF-IDF model as
        JSON + npz: no pickle), vendor/ (ftfy as a zip when the cleaner repairs mojibake)

The bundle's predict.py imports nothing from this project: textcomp_runtime.py is a copy of
pipeline/runtime.py, the code the pipeline itself cleaned, blended and shaped the submission
with. Before the bundle is published, each member's predictions are recomputed from the
copied files and compared with models/<run>/test.parquet, then predict.py runs in a separate
process (network off, this project not importable) on test.csv, and its output must equal
submissions/submission.csv: ids and order, labels exactly, probabilities within 1e-5.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline import runtime
from pipeline.core.config import Config
from pipeline.core.contract import Schema, labels_of, proba_cols
from pipeline.core.environment import git_commit
from pipeline.core.files import DataError, read_competition_csv, read_json, write_json, write_text
from pipeline.core.metrics import metric_of
from pipeline.core.paths import Paths, check_name
from pipeline.core.sources import competition_files, resolve_raw
from pipeline.core.submission import SubmissionValidator, build_submission, holdout_score, submit_inputs
from pipeline.core.transaction import published, require
from pipeline.cv.distill import teacher_of
from pipeline.cv.splits import n_splits as folds_in_csv
from pipeline.cv.store import fold_models
from pipeline.modeling.backbones import sha256
from pipeline.modeling.families import family

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
TOLERANCE = 1e-5  # probabilities: bundle vs pipeline
VENDORED = ("ftfy", "wcwidth")  # pure Python: importable from a zip on a machine without them


@dataclass
class PackageResult:
    bundle: Path
    manifest: dict[str, Any]


def bundle_name(cfg: Config, paths: Paths, alone: str | None = None) -> str:
    """package.name, else <competition>-<YYYYMMDD> (-<run> for one run alone)."""
    if cfg.package.name:
        return cfg.package.name
    raw = resolve_raw(paths, cfg.data)
    where = paths.raw.stem if paths.raw.is_file() else raw.name  # a competition zip: its slug
    base = "embedded" if raw == paths.embedded else "".join(c if c.isalnum() or c in "._-" else "-" for c in where)
    name = f"{base.strip('.-_') or 'competition'}-{datetime.date.today():%Y%m%d}" + (f"-{alone}" if alone else "")
    return check_name(name, "package.name")


def alone_run(cfg: Config, paths: Paths) -> str | None:
    """The run ``package.members`` names to bundle alone (``student``: the one run distilled
    from a teacher, unless a run has that very name), or None: what submission.csv came from."""
    want = cfg.package.members
    if want is None:
        return None
    runs = published(paths, "train")
    if want in runs:
        return want
    if want == "student":
        students = [r for r in runs if teacher_of(yaml.safe_load(paths.run(r).config.read_text()) or {})]
        if len(students) == 1:
            return students[0]
        raise DataError("package.members=student: " + (f"{len(students)} runs were distilled from a teacher "
                                                        f"({', '.join(students)}); name one" if students else
                                                        "no published run was distilled from a teacher "
                                                        "(train.teacher); train one first"))
    raise DataError(f"package.members={want!r}: no published run of that name (runs: {', '.join(runs) or 'none'})")


def run_submission(cfg: Config, paths: Paths, run: str, schema: Schema) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The submission ``run`` alone makes (as `make submit SET=submit.source=run:<run>` would
    write it), and its description: what a bundle of that run alone must reproduce."""
    require(paths, f"train-{run}")
    sample = read_competition_csv(competition_files(resolve_raw(paths, cfg.data))["sample"])
    cv = read_json(paths.run(run).cv)
    sub = build_submission(sample, schema, pd.read_parquet(paths.run(run).test), cv.get("threshold", {}).get("value"),
                           cfg.submit.clip)
    SubmissionValidator().fit(sample, schema).validate(sub)
    return sub, {"source": f"run {run}", "metric": cv["metric"], "cv": cv["cv"], "table": None}


def current_submission(cfg: Config, paths: Paths) -> dict[str, Any]:
    """submission.json, if submission.csv is intact and made from today's ensemble and settings."""
    m = require(paths, "submit")
    if m.inputs != submit_inputs(cfg, paths):
        raise DataError(f"{paths.submission}: made from other settings or models than the current ones; "
                        "run `make submit` (or `make all`) first, or give `make package` the same DATA/SET/CONFIG")
    return read_json(paths.submission_json)


def members_of(cfg: Config, paths: Paths) -> tuple[str, float | None, list[dict[str, Any]], dict | None]:
    """(blend method, threshold, [{run, weight}], stacker) of what submission.csv was made from."""
    if cfg.submit.source.startswith("run:"):
        run = cfg.submit.source.split(":", 1)[1]
        cv = read_json(paths.run(run).cv)
        return "mean", cv.get("threshold", {}).get("value"), [{"run": run, "weight": 1.0}], None
    w = read_json(paths.ensemble(cfg.ensemble.name).weights)
    members = [{"run": r, "weight": float(w["weights"][r])} for r in w["runs"]]
    if "label_weights" in w:  # weighted_per_label: each member's weight for each label
        for i, m in enumerate(members):
            m["label_weights"] = [row[i] for row in w["label_weights"]]
    if w["method"] not in ("rank", "vote", "stack", "weighted_per_label"):  # weight 0 changes nothing: leave out
        members = [m for m in members if m["weight"] > 0]
    return w["method"], w.get("threshold"), members, w.get("stacker")


def describe_member(paths: Paths, member: dict[str, Any], n_splits: int) -> dict[str, Any]:
    """What predict.py needs to rebuild one run's test predictions, checked to be there."""
    run = member["run"]
    r = paths.run(run)
    require(paths, f"train-{run}")
    cfg = yaml.safe_load(r.config.read_text())
    tc, dc = cfg["train"], cfg["data"]
    cv = read_json(r.cv)
    folds = []
    for k in range(n_splits):
        models = fold_models(r.fold(k))  # one per seed when train.seeds has several
        if not models:
            raise DataError(f"{r.fold(k).model}: missing, so the bundle cannot rebuild run {run!r} "
                            "(trained with train.save_checkpoints=false, or before models were kept); rerun "
                            "`make train` for it")
        folds += models
    return {**member, "family": tc["family"], "needs_torch": family(tc["family"]).uses_backbone,
            "backbone": tc["backbone"], "max_len": tc["max_len"],
            "batch_size": tc["eval_batch_size"],
            "pad_to_multiple_of": tc["pad_to_multiple_of"], "extra_cols": list(dc["extra_cols"]),
            "extra_template": dc["extra_template"], "sep": dc["sep"], "cv": cv["cv"],
            "threshold": cv.get("threshold", {}).get("value"), "source_folds": folds,
            **member_shape(tc, cfg)}


def member_shape(tc: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """What changes how a member reads its inputs and writes its outputs: several labels, a cut
    of long texts other than the head (runtime.encode_texts takes them as they were trained)."""
    out: dict[str, Any] = {}
    if tc.get("truncation", "head") != "head" or tc.get("chunks"):
        out["encoding"] = {"truncation": tc["truncation"], "head_tokens": tc["head_tokens"], "chunks": tc["chunks"],
                           "stride": tc["stride"], "max_chunks": tc["max_chunks"], "pool": tc.get("chunk_pool", "mean")}
    return out


def onnx_report(paths: Paths, bundle: Path, m: dict[str, Any], schema: Schema, test_frame: pd.DataFrame,
                torch_proba: np.ndarray) -> dict[str, Any]:
    """What the int8 export costs and saves: its time against torch's on test, and the run's
    OOF score with each fold's int8 model on its own validation rows, at the run's threshold."""
    from pipeline.core.metrics import score

    texts = runtime.model_inputs(test_frame, m["extra_cols"], m["extra_template"], m["sep"], schema.texts)
    t0 = time.perf_counter()
    shape = (bool(m.get("multilabel")), m.get("encoding"))
    test = np.mean([runtime.predict_onnx(*runtime.load_onnx(bundle / rel), texts, m["max_len"], m["batch_size"],
                                         m["pad_to_multiple_of"], *shape) for rel in m["folds"]], axis=0)
    seconds = time.perf_counter() - t0
    oof = pd.read_parquet(paths.run(m["run"]).oof)
    train = pd.read_parquet(paths.train_clean).set_index("id").loc[oof["id"]].reset_index()
    inputs = np.array(runtime.model_inputs(train, m["extra_cols"], m["extra_template"], m["sep"], schema.texts),
                      dtype=object)
    p8 = np.zeros((len(oof), schema.n_classes))
    for k, rel in enumerate(m["folds"]):
        rows = (oof["fold"] == k).to_numpy()
        p8[rows] = runtime.predict_onnx(*runtime.load_onnx(bundle / rel), inputs[rows].tolist(), m["max_len"],
                                        m["batch_size"], m["pad_to_multiple_of"], *shape)
    y, p32 = labels_of(oof), oof[proba_cols(schema.n_classes)].to_numpy()
    thr = m["threshold"]  # the run's tuned threshold(s), where its metric tunes one
    s32, s8 = score(schema.metric, y, p32, thr), score(schema.metric, y, p8, thr)
    return {"seconds_per_1k_rows_onnx": round(seconds / len(texts) * 1000, 3),
            "onnx": {"speedup_vs_torch": round(m["seconds_per_1k_rows"] / max(seconds / len(texts) * 1000, 1e-9), 2),
                     "oof_metric": schema.metric, "oof_torch": s32, "oof_int8": s8, "oof_diff": s8 - s32,
                     "threshold": thr, "max_abs_diff_test": float(np.abs(test - torch_proba).max()),
                     "label_flips_test": int((test.argmax(1) != torch_proba.argmax(1)).sum())}}


def vendor(dst: Path) -> list[str]:
    """ftfy and wcwidth as zips (pure Python, importable with zipimport), licences inside."""
    names = []
    for name in VENDORED:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise DataError(f"package: {name} is not installed here, so it cannot be shipped; pip install {name}")
        pkg = Path(spec.submodule_search_locations[0])
        dst.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dst / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(pkg.rglob("*")):
                if p.is_file() and "__pycache__" not in p.parts:
                    z.write(p, Path(name) / p.relative_to(pkg))
            dist = metadata.distribution(name)
            for f in dist.files or []:
                if "licen" in f.name.lower() or "copying" in f.name.lower():
                    z.write(Path(dist.locate_file(f)), Path(name) / f"LICENSE-{f.name}")
        names.append(name)
    return names


def versions() -> dict[str, str | None]:
    out = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "scikit-learn", "pandas", "numpy", "ftfy", "textcomp"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def check_members(paths: Paths, bundle: Path, spec: dict[str, Any], schema: Schema, test_frame: pd.DataFrame) -> None:
    """Each member rebuilt from the bundle's copies gives the run's own test predictions; its
    time per 1,000 rows is recorded for predict.py's --max-minutes."""
    cols = proba_cols(schema.n_classes)
    pairs = runtime.other_texts(test_frame, schema.texts)
    for m in spec["members"]:
        texts = runtime.model_inputs(test_frame, m["extra_cols"], m["extra_template"], m["sep"], schema.texts)
        t0 = time.perf_counter()
        got = runtime.member_proba(bundle, m, texts, pairs=pairs)
        seconds = time.perf_counter() - t0
        want = pd.read_parquet(paths.run(m["run"]).test).set_index("id").loc[test_frame["id"], cols]
        diff = float(np.abs(got - want.to_numpy()).max())
        m["seconds_per_1k_rows"] = round(seconds / len(texts) * 1000, 3)
        m["max_abs_diff_vs_run"] = diff
        log.info("package: member %s (%s, %d folds): %.1fs for %d rows; max |p - models/%s/test.parquet| = %.2e",
                 m["run"], m["family"], len(m["folds"]), seconds, len(texts), m["run"], diff)
        if spec["onnx"] and family(m["family"]).exports_onnx:
            m.update(onnx_report(paths, bundle, m, schema, test_frame, got))
            log.info("package: member %s as int8 ONNX: %.2fx torch's speed; OOF %s %.4f (torch %.4f); test: %d labels "
                     "flip", m["run"], m["onnx"]["speedup_vs_torch"], schema.metric, m["onnx"]["oof_int8"],
                     m["onnx"]["oof_torch"], m["onnx"]["label_flips_test"])
        if diff > TOLERANCE and not spec["fp16"]:
            raise DataError(f"{bundle / m['folds'][0]}: the bundle's copy of run {m['run']!r} predicts test "
                            f"probabilities {diff:.2e} away from models/{m['run']}/test.parquet; not published")


def verify(bundle: Path, test_csv: Path, sample_csv: Path, expected: Path, kind: str, lenient: bool) -> dict[str, Any]:
    """Run predict.py in a fresh process that cannot import this project, with the network
    variables off, and compare its submission with the pipeline's."""
    with tempfile.TemporaryDirectory() as tmp:
        out, stats = Path(tmp) / "submission.csv", Path(tmp) / "stats.json"
        guard = ("import runpy, sys; sys.modules['pipeline'] = None; "  # `import pipeline` raises ImportError
                 f"sys.argv = [{str(bundle / 'predict.py')!r}] + sys.argv[1:]; "
                 f"runpy.run_path({str(bundle / 'predict.py')!r}, run_name='__main__')")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("TEXTCOMP_")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", guard, "--test", str(test_csv), "--sample", str(sample_csv),
                               "--out", str(out), "--stats", str(stats)], cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["(no output)"]
            raise DataError(f"{bundle / 'predict.py'}: failed on {test_csv} (exit {proc.returncode}): {tail[0]}")
        got = runtime.read_csv_strings(out)
        ref = runtime.read_csv_strings(expected)
        run_stats = json.loads(stats.read_text()) if stats.exists() else {}
    if list(got.columns) != list(ref.columns) or len(got) != len(ref):
        raise DataError(f"{bundle}: predict.py wrote columns {list(got.columns)} x {len(got)} rows; "
                        f"{expected} has {list(ref.columns)} x {len(ref)}")
    id_col = ref.columns[0]
    if not got[id_col].equals(ref[id_col]):
        i = int((got[id_col] != ref[id_col]).to_numpy().argmax())
        raise DataError(f"{bundle}: predict.py row {i + 1}: id {got[id_col][i]!r}, {expected} has {ref[id_col][i]!r}")
    result = {"rows": len(got), "wall_seconds": round(wall, 2), **run_stats}
    if kind != "proba":  # labels, or ranked labels: the same text
        differ = int((got.iloc[:, 1:] != ref.iloc[:, 1:]).any(axis=1).sum())
        result["labels_differing"] = differ
        if differ and not lenient:
            raise DataError(f"{bundle}: predict.py's labels differ from {expected} on {differ} rows; not published")
    else:
        diff = float(np.abs(got.iloc[:, 1:].astype(float).to_numpy() - ref.iloc[:, 1:].astype(float).to_numpy()).max())
        result["max_abs_diff"] = diff
        if diff > TOLERANCE and not lenient:
            raise DataError(f"{bundle}: predict.py's probabilities differ from {expected} by {diff:.2e} "
                            f"(> {TOLERANCE}); not published")
    return result


def run(cfg: Config, paths: Paths, force: bool = False) -> PackageResult:
    schema = Schema.load(paths.schema_json)
    alone = alone_run(cfg, paths)
    if alone is None:
        submission = current_submission(cfg, paths)
        method, threshold, members, stacker = members_of(cfg, paths)
        expected_sub = None
    else:
        expected_sub, submission = run_submission(cfg, paths, alone, schema)
        threshold = read_json(paths.run(alone).cv).get("threshold", {}).get("value")
        method, members, stacker = "mean", [{"run": alone, "weight": 1.0}], None
        log.info("package: run %s alone (package.members=%s), verified against the submission it makes alone",
                 alone, cfg.package.members)
    members = [describe_member(paths, m, folds_in_csv(paths)) for m in members]
    for m in members:
        if schema.multilabel:  # a sigmoid per label instead of a softmax over classes
            m["multilabel"] = True
        if cfg.package.onnx and schema.texts[1:] and family(m["family"]).exports_onnx:
            raise DataError("package.onnx=true: the int8 export takes one text column; this competition's models "
                            f"read a pair ({', '.join(schema.texts)}): package without it")
    cleaner = read_json(paths.clean_json)["steps"]
    cleaner = {k: cleaner[k] for k in runtime.TextCleaner().get_params()}
    if cleaner["spelling"]:
        log.warning("package: clean.spelling=true needs symspellpy (and its compiled editdistpy) on the "
                    "inference machine: it is not shipped in the bundle")
    name = bundle_name(cfg, paths, alone)
    final = paths.bundle_dir(name)
    staging = paths.bundle_dir(f"{name}.partial")
    paths.remove_tree(staging)  # what a killed run left
    staging.mkdir(parents=True)
    try:
        shutil.copy2(Path(runtime.__file__), staging / "textcomp_runtime.py")
        shutil.copy2(TEMPLATES / "predict.py", staging / "predict.py")
        for m in members:
            copy_member(paths, cfg, m, staging)
        vendored = vendor(staging / "vendor") if cleaner["mojibake"] else []
        extra_cols = sorted({c for m in members for c in m["extra_cols"]})
        spec = {"schema": {"id_col": schema.id_col, "text_col": schema.text_col, "pred_cols": schema.pred_cols,
                           "classes": [str(c) for c in schema.classes], "submission": schema.submission,
                           "metric": schema.metric, "text_cols": schema.texts, "multilabel": schema.multilabel,
                           "label_values": schema.label_values, "top_k": metric_of(schema.metric).top_k},
                "cleaner": cleaner, "extra_cols": extra_cols, "method": method, "threshold": threshold, "stacker": stacker,
                "clip": cfg.submit.clip, "members": members, "fp16": cfg.package.fp16, "onnx": cfg.package.onnx, "vendored": vendored}
        test = pd.read_parquet(paths.test_clean)  # the cleaned test the runs predicted
        check_members(paths, staging, spec, schema, test)
        write_text(staging / "README.md", (TEMPLATES / "bundle_README.md").read_text().replace("{{name}}", name))
        files = {p.relative_to(staging).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256(p)}
                 for p in sorted(staging.rglob("*")) if p.is_file()}
        manifest = {"format": "textcomp-bundle/1", "name": name, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "commit": git_commit(), "versions": versions(), "source": submission["source"],
                    "cv": {"metric": submission["metric"], "value": submission["cv"], "table": submission["table"]},
                    "predict": spec, "files": files,
                    "bytes": sum(f["bytes"] for f in files.values())}
        write_json(staging / "manifest.json", manifest)
        raw = resolve_raw(paths, cfg.data)
        with tempfile.TemporaryDirectory() as tmp:
            expected = paths.submission
            if expected_sub is not None:  # one run alone: the submission it makes
                expected = Path(tmp) / "submission.csv"
                expected_sub.to_csv(expected, index=False, lineterminator="\n")
            held = holdout_score(paths, raw, schema, read_competition_csv(expected))
            if held is not None:  # the embedded default's held-back labels: what the bundle's output scores
                manifest["holdout_score"] = held
            if cfg.package.verify:
                files = competition_files(raw)
                manifest["verification"] = verify(staging, files["test"], files["sample"],
                                                  expected, schema.submission, cfg.package.fp16)
            write_json(staging / "manifest.json", manifest)
        _swap(paths, staging, final)
    finally:
        if staging.exists():
            paths.remove_tree(staging)
    v = manifest.get("verification")
    log.info("package: %s (%d members, %.1f MB)%s", final, len(members), manifest["bytes"] / 1e6,
             f"; predict.py reproduced {paths.submission} in {v['wall_seconds']}s "
             f"(peak memory {v.get('peak_mb', 0):.0f} MB)" if v else "; not verified (package.verify=false)")
    return PackageResult(bundle=final, manifest=manifest)


def copy_member(paths: Paths, cfg: Config, m: dict[str, Any], staging: Path) -> None:
    """One member's fold models (and what they share) into the bundle, at models/<run>/..."""
    fam = family(m["family"])
    m.update(fam.bundle_shared(m, staging, f"models/{m['run']}"))  # the frozen encoder, once for all folds
    m["folds"] = []
    for src in m.pop("source_folds"):  # .../fold<k>/model or .../fold<k>/seed<s>/model
        rel = "/".join(["models", m["run"], *src.parent.relative_to(paths.run_dir(m["run"])).parts])
        fam.copy_model(src, staging / rel, cfg.package.fp16, onnx=cfg.package.onnx and fam.exports_onnx)
        m["folds"].append(rel)


def _swap(paths: Paths, staging: Path, final: Path) -> None:
    """Replace dist/<name>/ by the finished bundle; a crash leaves either the old or the new one."""
    old = final.with_name(f"{final.name}.old")
    paths.remove_tree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    paths.remove_tree(old)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("package", __doc__, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
