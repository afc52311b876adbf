"""The report's pages: one per run (the tuning doctor's findings and the error analysis) and
the competition page that links them, as Markdown (data escaped) rendered to static HTML."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from pipeline.budget.planfile import load, load_plan
from pipeline.budget.plans import RunRecord
from pipeline.core.config import Config
from pipeline.core.contract import Schema, labels_of, proba_cols
from pipeline.core.files import read_json, save_figure, write_text
from pipeline.core.metrics import metric_of, score, tuned
from pipeline.core.paths import Paths, RunPaths
from pipeline.core.transaction import Transaction
from pipeline.modeling.families import family
from pipeline.reporting.doctor import Finding, diagnose
from pipeline.reporting.markdown import md_escape, md_table, to_html


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _table(df: pd.DataFrame) -> str:
    return md_table(df.itertuples(index=False), list(df.columns))


def _rel(path: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(path, start)).as_posix()


@dataclass
class RunAnalysis:
    run: str
    findings: list[Finding]
    page: Path
    cv: dict[str, Any]


def multilabel_analysis(oof: pd.DataFrame, train: pd.DataFrame, schema: Schema, threshold: list[float] | None,
                        cfg: Config) -> str:
    """A multi-label run's OOF per label: positives, ROC AUC, F1 at its threshold (tuned on the
    OOF, else 0.5), and each label's most confident mistakes."""
    from sklearn.metrics import f1_score, roc_auc_score

    cols = proba_cols(schema.n_outputs)
    df = oof.merge(train.drop(columns=["label", "fold"], errors="ignore"), on="id", how="left")
    y, p = labels_of(df), df[cols].to_numpy()
    thr = np.asarray(threshold if threshold is not None else [0.5] * y.shape[1], dtype=float)
    rows = []
    for j, name in enumerate(schema.classes):
        both = len(np.unique(y[:, j])) == 2
        rows.append({"label": name, "positives": int(y[:, j].sum()), "share": round(float(y[:, j].mean()), 4),
                     "roc_auc": round(float(roc_auc_score(y[:, j], p[:, j])), 4) if both else "-",
                     "f1": round(float(f1_score(y[:, j], p[:, j] >= thr[j], zero_division=0)), 4),
                     "threshold": round(float(thr[j]), 2)})
    md = ["## Per label (out-of-fold)\n\n", _table(pd.DataFrame(rows)), "\n"]
    for j, name in enumerate(schema.classes):
        wrong = np.flatnonzero((p[:, j] >= thr[j]).astype(int) != y[:, j])
        conf = np.abs(p[wrong, j] - thr[j])
        top = wrong[np.argsort(-conf)][: max(1, cfg.report.top_mistakes // 3)]
        if len(top):
            mistakes = pd.DataFrame({"id": df["id"].to_numpy()[top], "true": y[top, j], "p": p[top, j].round(3),
                                     "text": df["text"].fillna("").str.slice(0, 140).to_numpy()[top]})
            md += [f"\n### Most confident mistakes: {md_escape(name)}\n\n", _table(mistakes), "\n"]
    return "".join(md)


def error_analysis(oof: pd.DataFrame, train: pd.DataFrame, schema: Schema, threshold: float | None,
                   cfg: Config, out: Path, run: str) -> str:
    """Markdown (with PNGs beside it) for one run's OOF predictions."""
    if schema.multilabel:
        return multilabel_analysis(oof, train, schema, threshold, cfg)
    plt = _plt()
    cols = proba_cols(schema.n_classes)
    df = oof.merge(train.drop(columns=["label", "fold"], errors="ignore"), on="id", how="left")
    proba = df[cols].to_numpy()
    y = df["label"].to_numpy()
    pred = metric_of(schema.metric).labels(proba, threshold)
    names = [str(c) for c in schema.classes]
    md = []
    # confusion matrix
    cm = pd.crosstab(pd.Categorical(y, categories=range(schema.n_classes)),
                     pd.Categorical(pred, categories=range(schema.n_classes)), dropna=False)
    cm.index, cm.columns = [f"true {n}" for n in names], [f"pred {n}" for n in names]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * schema.n_classes, 1 + 0.8 * schema.n_classes))
    ax.imshow(cm.to_numpy(), cmap="Blues")
    for (i, j), v in np.ndenumerate(cm.to_numpy()):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (OOF)")
    save_figure(out / f"{run}_confusion.png", fig)
    md += ["## Confusion matrix (out-of-fold)\n\n", _table(cm.reset_index(names="")),
           f"\n\n![confusion]({run}_confusion.png)\n"]
    # by length
    length = df["text"].fillna("").str.len()
    buckets = pd.qcut(length, q=min(4, length.nunique()), duplicates="drop")
    rows = []
    for b, idx in df.groupby(buckets, observed=True).groups.items():
        i = df.index.get_indexer(idx)
        rows.append({"chars": str(b), "rows": len(i), schema.metric: _safe_score(schema.metric, y[i], proba[i], threshold),
                     "accuracy": float((pred[i] == y[i]).mean())})
    md += ["\n## Score by text length\n\n", _table(pd.DataFrame(rows)), "\n"]
    # by extra columns
    extra = [c for c in train.columns if c not in ("id", "text", "label", "fold", "input") and train[c].dtype != float]
    for col in extra:
        vals = df[col].fillna("(missing)").astype(str)
        top = vals.value_counts()
        top = top[top >= 10].head(10)
        if top.empty:
            continue
        rows = []
        for v in top.index:
            i = np.flatnonzero((vals == v).to_numpy())
            rows.append({col: v, "rows": len(i), "accuracy": float((pred[i] == y[i]).mean())})
        md += [f"\n## Accuracy by {md_escape(col)} (10 most frequent values with >= 10 rows)\n\n",
               _table(pd.DataFrame(rows)), "\n"]
    # most confident mistakes
    conf = proba[np.arange(len(pred)), pred]
    wrong = np.flatnonzero(pred != y)
    top = wrong[np.argsort(-conf[wrong])][: cfg.report.top_mistakes]
    mistakes = pd.DataFrame({"id": df["id"].to_numpy()[top], "true": [names[i] for i in y[top]],
                             "predicted": [names[i] for i in pred[top]], "confidence": conf[top].round(3),
                             "text": df["text"].fillna("").str.slice(0, 140).to_numpy()[top]})
    md += ["\n## Most confident mistakes\n",
           "Often label noise (the disaster-tweets set has known mislabelled duplicates): read them before tuning.\n\n",
           _table(mistakes), "\n"]
    md.append(calibration(proba, y, pred, conf, schema, out, run))
    return "".join(md)


def calibration(proba: np.ndarray, y: np.ndarray, pred: np.ndarray, conf: np.ndarray, schema: Schema, out: Path,
                run: str) -> str:
    """The reliability curve (10 bins) and its expected calibration error, as Markdown + a PNG."""
    plt = _plt()
    bins = np.linspace(0, 1, 11)
    p_pos = proba[:, 1] if schema.binary else conf
    hit = (y == 1) if schema.binary else (pred == y)
    which = np.clip(np.digitize(p_pos, bins) - 1, 0, 9)
    xs, ys, ns = [], [], []
    for b in range(10):
        m = which == b
        if m.any():
            xs.append(float(p_pos[m].mean()))
            ys.append(float(hit[m].mean()))
            ns.append(int(m.sum()))
    ece = float(sum(n * abs(x - t) for x, t, n in zip(xs, ys, ns)) / max(sum(ns), 1))
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    ax.plot(xs, ys, "o-", label=f"{run} (ECE {ece:.3f})")
    ax.set(xlabel="predicted probability" + (" of class 1" if schema.binary else " of predicted class"),
           ylabel="observed frequency", title="reliability curve (OOF)")
    ax.legend()
    save_figure(out / f"{run}_calibration.png", fig)
    return (f"\n## Calibration\n\nExpected calibration error {ece:.4f}.\n\n![calibration]({run}_calibration.png)\n")


def _safe_score(metric: str, y: np.ndarray, proba: np.ndarray, thr: float | None) -> float:
    try:
        return score(metric, y, proba, thr)
    except ValueError:
        return float("nan")


def analyse_run(run_dir: Path, cfg: Config, paths: Paths, schema: Schema, train: pd.DataFrame,
                inspect: dict[str, Any] | None, tx: Transaction) -> RunAnalysis:
    run = run_dir.name
    r = RunPaths(run_dir)
    cv = read_json(r.cv)
    history = pd.read_csv(r.history)
    run_cfg = yaml.safe_load(r.config.read_text())
    # the doctor reads the LR of a family trained with one
    lr = run_cfg["train"]["lr"] if family(run_cfg["train"]["family"]).epoch_trained else None
    suggestion = read_json(paths.lr_find_json)["suggested_lr"] if paths.lr_find_json.exists() else None
    chance_classes = 2 if schema.multilabel else schema.n_classes  # multi-label confidence: max(p, 1 - p)
    findings = diagnose(history, cv, cfg.report, chance_classes, lr, suggestion, inspect)
    out = paths.run_pages
    thr = cv.get("threshold", {}).get("value")
    md = [f"# Run `{run}` ({cv['family']})\n\n",
          f"CV {cv['metric']} on the concatenated OOF: **{cv['cv']:.4f}**"
          + (" ({} {:.4f} at the OOF-tuned {})".format(cv["metric"], *tuned(cv["threshold"])) if thr else "")
          + f"; log loss {cv['logloss']:.4f}; {cv['seconds']:.0f}s of training.\n\n"
          + (f"Folds select/tune never validated on ({cv['untouched_folds']}): **{cv['cv_untouched']:.4f}**; the "
             f"folds they chose on ({cv['searched_folds']}): {cv['cv_searched']:.4f} (optimistic).\n\n"
             if "cv_untouched" in cv else "")
          + (f"Each fold keeps its best evaluation, chosen by its own validation labels: mean fold "
             f"{cv['metric']} {cv['epoch_choice']['own_best']:.4f} there, "
             f"{cv['epoch_choice']['chosen_on_other_folds']:.4f} at the evaluation the other folds' mean curve "
             f"picks (early-stopping optimism {cv['epoch_choice']['optimism']:+.4f}).\n\n"
             if "epoch_choice" in cv else ""),
          _table(pd.DataFrame(cv["folds"])), "\n\n",
          f"![curves]({_rel(r.curves, out)})\n\n", "## Tuning doctor\n\n"]
    if findings:
        md += [f"- **{f.rule}**: {f.message}. *Change:* {f.advice}.\n" for f in findings]
    else:
        md += ["No rule fired: no overfitting, underfitting, LR trouble, confidence stuck at chance or unstable fold "
               "by the thresholds in `report.*`.\n"]
    staged = tx.path(out)  # links are computed from `out`, files are written to its staging twin
    md += ["\n", error_analysis(pd.read_parquet(r.oof), train, schema, thr, cfg, staged, run)]
    page = out / f"{run}.md"
    write_text(staged / f"{run}.md", "".join(md))
    write_text(staged / f"{run}.html", to_html("".join(md), f"run {run}"))
    return RunAnalysis(run=run, findings=findings, page=page, cv=cv)


def budget_section(paths: Paths) -> list[str]:
    """The time budget: per stage and run, planned vs actual seconds; what was cut and re-planned."""
    got = load(paths)
    if got is None:
        return []
    plan, ledger = got
    rows = [{"stage": s, "estimate_s": v, "actual_s": ledger.stages.get(s)} for s, v in plan.stages.items()]
    ran = {r.run_name: ledger.runs.get(r.run_name, RunRecord()) for r in plan.runs}
    runs = pd.DataFrame([{"run": r.name, "family": r.family, "epochs": r.epochs if r.epoch_trained else "",
                          "estimate_s": r.estimate_s, "actual_s": ran[r.run_name].actual_s,
                          "folds": f"{len(ran[r.run_name].folds_done or [])}/{plan.n_splits}"
                          if ran[r.run_name].folds_done is not None else "",
                          "blended": "yes" if ran[r.run_name].complete else
                          ("no (stopped)" if ran[r.run_name].complete is not None else "")}
                         for r in plan.runs])
    md = ["## 0. Time budget\n\n",
          f"Budget **{plan.budget}** ({plan.budget_s:.0f}s, preset {plan.preset}, {plan.device}); "
          f"estimated {plan.estimate_s:.0f}s"
          + (f", elapsed {ledger.elapsed_s:.0f}s when the last stage before this page finished" if ledger.elapsed_s
             else "") + ".\n\n", _table(pd.DataFrame(rows)), "\n\n", _table(runs), "\n\n"]
    md += [f"- {md_escape(c)}\n" for c in plan.steps] or ["- nothing was cut\n"]
    md += [f"- while running: {md_escape(c)}\n" for c in ledger.replans]
    return [*md, "\n"]


def competition_page(paths: Paths, analyses: list[RunAnalysis], schema: Schema, levers: list[Any] | None = None) -> str:
    r = paths.reports
    md = ["# Competition report\n\n",
          f"Metric **{schema.metric}** · {schema.n_train} train rows · {schema.n_test} test rows · classes "
          f"{md_escape(', '.join(map(str, schema.classes)))} · submission: {schema.submission}\n\n"]
    sub = read_json(paths.submission_json) if paths.submission_json.exists() else None
    if sub and sub.get("holdout_score") is not None:
        md.append(f"**Submission scored on the held-back test labels: {schema.metric} {sub['holdout_score']:.4f}** "
                  f"(CV {sub['cv']:.4f}).\n\n")
    md += budget_section(paths)
    md += ["## 1. Data\n\n", f"- [data report]({_rel(paths.inspect_md, r)})\n" if paths.inspect_md.exists() else ""]
    if paths.inspect_json.exists():
        ins = read_json(paths.inspect_json)
        d = ins["duplicates"]
        md.append(f"- {d['exact_duplicate_rows']} duplicate rows, {d['conflicting_groups']} groups with conflicting "
                  f"labels; suggested max_len {ins['suggested_max_len']}; adversarial AUC "
                  f"{ins['shift'].get('adversarial_auc')}\n")
    if paths.clean_json.exists():
        c = read_json(paths.clean_json)
        md += ["\n## 2. Cleaning\n\n",
               f"- rows changed per step (train): "
               f"{', '.join(f'{k} {v}' for k, v in c['rows_changed']['train'].items())}\n",
               f"- duplicates: {c['relabelled']} relabelled, {c['dropped']} dropped "
               f"([log]({_rel(paths.clean_log, r)}))\n"]
    if paths.selection_csv.exists():
        sel = pd.read_csv(paths.selection_csv)
        keep = [c for c in ("rank", "candidate", "family", "model", "score", "seconds", "selected") if c in sel]
        sel["candidate"] = sel["candidate"].map(lambda s: Path(str(s)).stem)
        md += ["\n## 3. Model selection\n\n", _table(sel[keep]),
               f"\n\n![selection]({_rel(paths.figure('model_selection'), r)})\n"]
    studies = paths.tune_studies()
    if studies:
        md.append("\n## 4. Tuning\n\n")
        for d in studies:
            best = read_json(d.best)
            params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items())
            md.append(f"- `{best['run']}`: best {best['metric']} {best['value']:.4f} over {best['trials']} trials: "
                      f"{params} ([trials]({_rel(d.trials, r)}))\n")
            for png in (d.history_png, d.importance_png):
                if png.exists():
                    md.append(f"\n![{d.dir.name} {png.name}]({_rel(png, r)})\n")
    md.append("\n## 5. Runs and the tuning doctor\n\n")
    for a in analyses:
        md.append(f"- [`{a.run}`]({_rel(a.page, r)}): CV {a.cv['metric']} {a.cv['cv']:.4f}; "
                  f"{len(a.findings)} finding(s)\n")
        md += [f"    - {f.rule}: {f.message}\n" for f in a.findings[:6]]
    md += levers_section(levers or [], schema)
    md += ensemble_section(paths)
    if sub:
        md += ["\n## 7. Submission\n\n",
               f"`{_rel(paths.submission, r)}` from {sub['source']}: {sub['rows']} rows, columns "
               f"{', '.join(sub['columns'])}, validated against sample_submission.csv.\n\n",
               "## 8. Final CV table\n\n", "```\n", sub["table"], "\n```\n"]
    md += ledger_section(paths)
    return "".join(md)


def ledger_section(paths: Paths, limit: int = 20) -> list[str]:
    """Every archived submission, newest first: CV beside the public LB (`make lb` fills it),
    and their correlation once three have both."""
    from pipeline.core import ledger

    all_rows = ledger.rows(paths)
    if not all_rows:
        return []
    shown = list(reversed(all_rows))[:limit]
    table = md_table([(r.get("time"), r.get("sha8"), r.get("source"), r.get("cv"), r.get("cv_untouched"),
                       r.get("public_score"), r.get("private_score"), r.get("message") or "-") for r in shown],
                     ["time", "sha8", "source", "CV", "CV (untouched folds)", "public LB", "private LB", "message"])
    more = f" (the newest {limit} of {len(all_rows)}; `make runs` lists all)" if len(all_rows) > limit else ""
    return ["\n## 9. Submissions ledger\n\n", f"`submissions/ledger.jsonl`{more}: every file is kept in "
            "`submissions/archive/`; `make reproduce SUB=<sha8>` rebuilds one.\n\n", table, "\n\n",
            ledger.correlation_line(all_rows), "\n"]  # our own words and numbers, no data


def _beyond(c: Any) -> str:
    """A student's CV leans its way (its teacher's fold models saw its validation fold): a gain
    there is not called one until held-back labels confirm it."""
    if not c.beyond_noise:
        return "no (within the noise)"
    return "on CV only: check on held-back labels" if c.lever == "distillation" else "yes"


def levers_section(found: list[Any], schema: Schema) -> list[str]:
    """Pretraining and distillation against what they replace, on the same folds, with the
    fold noise (``pipeline.cv.compare.Comparison``s, where both sides exist)."""
    if not found:
        return []
    rows = [(c.lever, c.new.name, f"{c.against}: {c.reference.name}", round(c.new.cv, 4), round(c.reference.cv, 4),
             f"{c.gain:+.4f}", round(c.se, 4), _beyond(c),
             round(c.new.seconds + c.new.extra_seconds), round(c.reference.seconds + c.reference.extra_seconds))
            for c in found]
    header = ["lever", "run", "against", f"CV {schema.metric}", "CV (against)", "gain", "SE of fold-wise gains",
              "gain > SE", "seconds", "seconds (against)"]
    return ["\n### Pretraining and distillation against what they replace\n\n",
            md_table(rows, header), "\n\nCV on the concatenated OOF at the metric's default decision (as each run's "
            "cv.json), on the same folds; the SE is that of the fold-wise differences, the noise a gain must beat. "
            "Seconds: the folds' training, plus a pretrained encoder's build (paid once by every run that starts "
            "from it); an ensemble teacher: its members' folds. A student's CV can carry a trace of its validation "
            "fold's labels through its teacher's other fold models (docs/training.md): the held-back labels are the "
            "check without it.\n"]


def _weights_line(weights: dict) -> str:
    coefs = weights.get("stack_coefs")  # a logistic regression over the members' logits, not a weighted mean
    what = "Stacker coefficients on each run's logit (a negative one corrects the others)" if coefs else "Weights"
    return f"{what}: {', '.join(f'{k} {v:.3f}' for k, v in (coefs or weights['weights']).items())}."


def ensemble_section(paths: Paths) -> list[str]:
    """The first ensemble's methods table, choice and weights."""
    found = paths.ensembles_with_cv()
    if not found:
        return []
    ens, weights = read_json(found[0].cv), read_json(found[0].weights)
    md = ["\n## 6. Ensemble\n\n", _table(pd.DataFrame(ens["methods"])),
          f"\n\nChosen: **{ens['chosen']}** (nested {ens['nested']:.4f}); "
          f"{'beats' if ens['beats_best_single_nested'] else 'does NOT beat'} the best single run on the "
          f"nested estimate ({ens['best_single_nested']:.4f}). {_weights_line(weights)} "
          f"The rule: {ens.get('choice_rule', 'the one-SE rule')}.\n"]
    if ens.get("runs_nested"):  # each run alone, scored as the blends are
        md.append(f"\nEach run alone on the scored folds {ens.get('scored_on_folds')}, in-sample / nested "
                  "(nested: fitted, and thresholded, on the other folds, like the blends): "
                  + ", ".join(f"{k} {ens['runs'][k]:.4f} / {v:.4f}" for k, v in ens["runs_nested"].items())
                  + ".\n")
    return md


def closing_summary(paths: Paths, schema: Schema) -> str:
    """The last lines of `make all`: the final CV table, the submission and what made it, the
    wall time against the budget, and every choice the contract guessed (to confirm)."""
    import time

    from pipeline.budget.clock import started

    lines = []
    sub = read_json(paths.submission_json) if paths.submission_json.exists() else None
    if sub:
        lines += [f"Final CV table ({schema.metric}):", sub["table"],
                  f"submission: {paths.submission} from {sub['source']} ({schema.metric} {sub['cv']:.4f})"]
        if sub.get("holdout_score") is not None:
            lines.append(f"held-back test labels of the embedded default: {schema.metric} {sub['holdout_score']:.4f}")
    plan, t0 = load_plan(paths), started()
    if plan is not None and t0 is not None and plan.t0 == t0:
        wall = time.time() - t0
        lines.append(f"wall time: {wall:.0f}s of the {plan.budget} budget ({wall / plan.budget_s:.0%})")
    lines += schema.guessed
    return "\n".join(lines)
