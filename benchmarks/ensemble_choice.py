"""The ensemble's one-SE rule on a metric that scores decisions (accuracy, F1): on the metric's
fold-wise differences alone, against the same with a tie also checked on each method's calibrated
log loss (pipeline.cv.blend.one_se_choice: "informed"). Each choice scored on held-back labels,
over replicates (a fresh train / held-back split and fresh folds each).

    python benchmarks/ensemble_choice.py                        # every source, 6 replicates
    python benchmarks/ensemble_choice.py --source long --replicates 3

Sources (metric; train / held-back rows a replicate):
- disaster: the Kaggle nlp-getting-started train set in ../shared/data (F1; 4,000 / 2,000);
- tweets: the embedded tweet corpus, three sentiments (accuracy; 4,000 / 2,000);
- long: benchmarks/shapes.py's long documents, 30 tweets each (accuracy; 2,000 / 800).

Members, as the default flow's (5 stratified folds; a held-back prediction is the mean of the
fold models'): TF-IDF + LR and NB-SVM over word 1-2 + char 2-5 TF-IDF, and the frozen MiniLM's
vectors + LR (long documents: every 128-token window, their mean). The TF-IDF vocabulary and
the vectors are computed once a source, over all its rows (unsupervised, so the held-back rows'
labels never reach a member); the methods, their nested evaluation and the rule are the
pipeline's. Appends to benchmarks/results/ensemble_choice.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "ensemble_choice.json"
sys.path.insert(0, str(ROOT))
SOURCES = {"disaster": ("f1", 4000, 2000), "tweets": ("accuracy", 4000, 2000), "long": ("accuracy", 2000, 800)}


def pool(source: str) -> tuple[list[str], np.ndarray, bool]:
    """(texts, class indices, long documents?)"""
    if source == "disaster":
        df = pd.read_csv(ROOT.parent / "shared" / "data" / "nlp-getting-started" / "train.csv")
        return df["text"].astype(str).tolist(), df["target"].to_numpy(int), False
    from shapes import build, tweets

    if source == "tweets":
        df = tweets(11).iloc[:6000]
        classes = sorted(df["sentiment"].unique())
        return df["text"].tolist(), df["sentiment"].map(classes.index).to_numpy(int), False
    with tempfile.TemporaryDirectory() as tmp:
        folder, labels = build("long", Path(tmp) / "comp", seed=11)
        df = pd.read_csv(folder / "train.csv")
        test = pd.read_csv(folder / "test.csv").merge(pd.read_csv(labels), on="id")
    df = pd.concat([df, test], ignore_index=True)
    return df["text"].tolist(), (df["label"] == "positive").to_numpy(int), True


def features(texts: list[str], long: bool, cache: Path):
    from shapes import reference_features

    from pipeline.core.config import TrainConfig
    from pipeline.modeling.embedding import embeddings

    tfidf, _ = reference_features(pd.Series(texts), pd.Series(texts[:1]))
    cfg = TrainConfig(run="emb_minilm", family="embedding", backbone="packaged:minilm", max_len=128, chunks=long)
    return tfidf, embeddings(cfg, texts, cache)


def _nb_lr(X, y: np.ndarray, Xs: list, C: float) -> list[np.ndarray]:
    """NB-SVM as pipeline.modeling.classical fits it: one-vs-rest LR on NB log-count-ratio scaled features."""
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(y)
    cols = []
    for c in classes if len(classes) > 2 else classes[1:]:
        pos = y == c
        r = np.asarray(np.log(((X[pos].sum(0) + 1) / (pos.sum() + 1)) / ((X[~pos].sum(0) + 1) / ((~pos).sum() + 1)))).ravel()
        lr = LogisticRegression(C=C, max_iter=2000).fit(X.multiply(r).tocsr(), pos.astype(int))
        cols.append([lr.predict_proba(Z.multiply(r).tocsr())[:, 1] for Z in Xs])
    out = []
    for i in range(len(Xs)):
        p = np.column_stack([c[i] for c in cols])
        out.append(np.column_stack([1 - p[:, 0], p[:, 0]]) if len(classes) == 2 else p / p.sum(1, keepdims=True))
    return out


def members(tfidf, vectors: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
            folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(members, train rows, classes) OOF and (members, test rows, classes) held-back probabilities."""
    from sklearn.linear_model import LogisticRegression

    k = len(np.unique(y))
    oof = np.zeros((3, len(train), k))
    held = np.zeros((3, len(test), k))
    Xw, Xe = tfidf[train], vectors[train]
    for f in np.unique(folds):
        tr, va = folds != f, folds == f
        lr = LogisticRegression(C=4.0, max_iter=3000).fit(Xw[tr], y[train][tr])
        oof[0, va], p0 = lr.predict_proba(Xw[va]), lr.predict_proba(tfidf[test])
        oof[1, va], p1 = _nb_lr(Xw[tr], y[train][tr], [Xw[va], tfidf[test]], 4.0)
        lr = LogisticRegression(C=4.0, max_iter=3000).fit(Xe[tr], y[train][tr])
        oof[2, va], p2 = lr.predict_proba(Xe[va]), lr.predict_proba(vectors[test])
        for i, p in enumerate((p0, p1, p2)):
            held[i] += p / len(np.unique(folds))
    return oof, held


def replicate(source: str, metric: str, tfidf, vectors, y, seed: int, n_train: int, n_test: int) -> dict:
    from sklearn.model_selection import StratifiedKFold

    from pipeline.core.metrics import metric_of, score
    from pipeline.cv.blend import METHODS, applicable, apply_blend, evaluate, one_se_choice

    order = np.random.default_rng(seed).permutation(len(y))
    train, test = order[:n_train], order[n_train:n_train + n_test]
    folds = np.zeros(n_train, int)
    for f, (_, va) in enumerate(StratifiedKFold(5, shuffle=True, random_state=seed).split(train, y[train])):
        folds[va] = f
    oof, held = members(tfidf, vectors, y, train, test, folds)
    tune_thr = metric_of(metric).tunes(False) is not None
    methods, _ = applicable(list(METHODS), metric)
    results = [evaluate(m, oof, y[train], folds, metric, "metric", tune_thr) for m in methods]
    by_metric = [dataclasses.replace(r, fold_calibrated=None) for r in results]
    old, _, _ = one_se_choice(by_metric, metric)
    new, _, _ = one_se_choice(results, metric)
    old = next(r for r in results if r.method == old.method)
    on_held = {r.method: score(metric, y[test], apply_blend(r.blend, held), r.blend.threshold) for r in results}
    return {"seed": seed, "by_metric": old.method, "informed": new.method,
            "held_by_metric": round(on_held[old.method], 5), "held_informed": round(on_held[new.method], 5),
            "held": {m: round(v, 5) for m, v in on_held.items()},
            "nested": {r.method: round(r.nested, 5) for r in results},
            "calibrated_logloss": {r.method: round(r.calibrated, 5) for r in results}}


def main(sources: list[str], replicates: int) -> list[dict]:
    from pipeline.core.metrics import paired_se

    cache = Path(os.environ.get("TEXTCOMP_BENCH_CACHE", Path(tempfile.gettempdir()) / "ensemble-choice-cache"))
    entries = []
    for source in sources:
        metric, n_train, n_test = SOURCES[source]
        t0 = time.perf_counter()
        texts, y, long = pool(source)
        tfidf, vectors = features(texts, long, cache)
        reps = []
        for seed in range(replicates):
            reps.append(replicate(source, metric, tfidf, vectors, y, seed, n_train, n_test))
            print(json.dumps({"source": source, **reps[-1]}), flush=True)
        d = np.array([r["held_informed"] - r["held_by_metric"] for r in reps])
        s = metric_of_sign(metric)
        entry = {"source": source, "metric": metric, "rows": [n_train, n_test], "replicates": len(reps),
                 "held_by_metric": round(float(np.mean([r["held_by_metric"] for r in reps])), 5),
                 "held_informed": round(float(np.mean([r["held_informed"] for r in reps])), 5),
                 "gain": round(float(s * d.mean()), 5), "gain_se": round(paired_se(d), 5),
                 "choices_by_metric": _counts(r["by_metric"] for r in reps),
                 "choices_informed": _counts(r["informed"] for r in reps),
                 "seconds": round(time.perf_counter() - t0, 1), "date": time.strftime("%Y-%m-%d"),
                 "machine": "2 cores, no GPU", "per_replicate": reps}
        entries.append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k != "per_replicate"}), flush=True)
    return entries


def metric_of_sign(metric: str) -> int:
    from pipeline.core.metrics import metric_of

    return metric_of(metric).sign


def _counts(methods) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in methods:
        out[m] = out.get(m, 0) + 1
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", action="append", choices=sorted(SOURCES), help="default: every source")
    ap.add_argument("--replicates", type=int, default=6)
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "benchmarks"))
    entries = main(args.source or list(SOURCES), args.replicates)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps(old + entries, indent=1) + "\n")
