"""What one cleaning step costs or buys: each member's CV with the step on and off, 5 folds,
paired per fold, every other step of the pipeline's cleaner at its default.

    python benchmarks/clean_steps.py                          # mentions kept vs [USER], TF-IDF + LR everywhere
    python benchmarks/clean_steps.py --members tfidf,emb      # + frozen MiniLM + LR on the single-text sets
    python benchmarks/clean_steps.py --members finetune --data disaster   # MiniLM fine-tuned, 1 epoch

Data: the disaster tweets (../shared, F1), the embedded corpus (sentiment, accuracy) and the
four shapes of benchmarks/shapes.py at their sizes (multi-label mean AUC, pair and relation log
loss negated, long accuracy): higher is better everywhere. Members: tfidf, the reference
model of shapes.py (word 1-2 + char 2-5 TF-IDF, LR C=4; a pair joined by " || "); emb, the
packaged MiniLM frozen, mean-pooled heads of 128 tokens, LR C=4; finetune, MiniLM fine-tuned 1
epoch at 64 tokens (batch 32, lr 5e-5, 10% warm-up, linear decay, one thread pair). Prints one
line per member and data set, then JSON; records nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
DISASTER = ROOT.parent / "shared" / "data" / "nlp-getting-started" / "train.csv"
STEPS = {"mentions": ({"mentions": None}, {"mentions": "[USER]"})}  # (off, on): the second is the step


def datasets(names: list[str], work: Path) -> list[tuple[str, list[np.ndarray], np.ndarray, str]]:
    """(name, text columns, labels, metric) for each requested data set."""
    import shapes

    out = []
    for name in names:
        if name == "disaster":
            df = pd.read_csv(DISASTER)
            out.append((name, [df["text"].fillna("").to_numpy()], df["target"].to_numpy(), "f1"))
        elif name == "embedded":
            tw = shapes.tweets(0)
            out.append((name, [tw["text"].to_numpy()], tw["sentiment"].to_numpy(), "accuracy"))
        else:
            folder, _ = shapes.build(name, work / name / "comp")
            df = pd.read_csv(folder / "train.csv")
            if name == "multilabel":
                out.append((name, [df["comment_text"].to_numpy()], df[["negative", "neutral", "positive"]].to_numpy(),
                            "auc"))
            elif name in ("pair", "relation"):
                a, b = ("question1", "question2") if name == "pair" else ("sentence1", "sentence2")
                out.append((name, [df[a].to_numpy(), df[b].to_numpy()], df[shapes.LABELS[name][0]].to_numpy(),
                            "neg_log_loss"))
            else:
                out.append((name, [df["text"].to_numpy()], df["label"].to_numpy(), "accuracy"))
    return out


def splits(y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    if y.ndim == 2:
        return list(KFold(5, shuffle=True, random_state=42).split(y))
    return list(StratifiedKFold(5, shuffle=True, random_state=42).split(np.zeros(len(y)), y))


def lr_score(X, Xv, y, yv, metric: str) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, log_loss, roc_auc_score

    if metric == "auc":
        return float(np.mean([roc_auc_score(yv[:, j], LogisticRegression(C=4.0, max_iter=3000).fit(X, y[:, j])
                                            .predict_proba(Xv)[:, 1]) for j in range(y.shape[1])]))
    model = LogisticRegression(C=4.0, max_iter=3000).fit(X, y)
    if metric == "neg_log_loss":
        return -float(log_loss(yv, model.predict_proba(Xv)[:, 1], labels=[0, 1]))
    p = model.predict(Xv)
    return float(f1_score(yv, p) if metric == "f1" else accuracy_score(yv, p))


def tfidf_folds(cols: list[np.ndarray], y: np.ndarray, metric: str) -> list[float]:
    from shapes import reference_features

    text = cols[0] if len(cols) == 1 else np.array([a + " || " + b for a, b in zip(*cols)], dtype=object)
    return [lr_score(*reference_features(text[tr], text[va]), y[tr], y[va], metric) for tr, va in splits(y)]


def emb_folds(cols: list[np.ndarray], y: np.ndarray, metric: str) -> list[float]:
    from pipeline.modeling.backbones import resolve_backbone
    from pipeline.runtime import embed, load_encoder

    model, tok = load_encoder(Path(resolve_backbone("packaged:minilm")))
    vectors = embed(model, tok, list(cols[0]), 128, 64)
    return [lr_score(vectors[tr], vectors[va], y[tr], y[va], metric) for tr, va in splits(y)]


def finetune_folds(cols: list[np.ndarray], y: np.ndarray, metric: str) -> list[float]:
    import torch
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.modeling.backbones import resolve_backbone

    torch.set_num_threads(2)
    src = Path(resolve_backbone("packaged:minilm"))
    labels, y_int = np.unique(y, return_inverse=True)
    enc = AutoTokenizer.from_pretrained(src)(list(cols[0]), max_length=64, truncation=True, padding="max_length",
                                             return_tensors="pt")
    out = []
    for k, (tr, va) in enumerate(splits(y)):
        torch.manual_seed(k)
        model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=len(labels))
        opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
        order = torch.from_numpy(tr)[torch.randperm(len(tr), generator=torch.Generator().manual_seed(k))]
        steps = (len(order) + 31) // 32
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s, n=steps: min((s + 1) / (0.1 * n), max(0.0, (n - s) / (0.9 * n))))
        model.train()
        for s in range(steps):
            b = order[s * 32:(s + 1) * 32]
            loss = model(input_ids=enc["input_ids"][b], attention_mask=enc["attention_mask"][b],
                         labels=torch.from_numpy(y_int[b.numpy()])).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
        model.eval()
        with torch.no_grad():
            pred = np.concatenate([model(input_ids=enc["input_ids"][b], attention_mask=enc["attention_mask"][b])
                                   .logits.argmax(-1).numpy() for b in torch.from_numpy(va).split(256)])
        out.append(float(f1_score(y_int[va], pred) if metric == "f1" else accuracy_score(y_int[va], pred)))
    return out


MEMBERS = {"tfidf": tfidf_folds, "emb": emb_folds, "finetune": finetune_folds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", choices=sorted(STEPS), default="mentions")
    ap.add_argument("--members", default="tfidf", help="comma-separated: " + ", ".join(MEMBERS))
    ap.add_argument("--data", default="disaster,embedded,multilabel,pair,relation,long",
                    help="comma-separated: disaster, embedded, multilabel, pair, relation, long")
    args = ap.parse_args()

    from pipeline.runtime import TextCleaner

    off, on = STEPS[args.step]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cols, y, metric in datasets(args.data.split(","), Path(tmp)):
            variants = [[np.array(TextCleaner(**s).fit().transform(pd.Series(c)), dtype=object) for c in cols]
                        for s in (off, on)]
            for member in args.members.split(","):
                if member != "tfidf" and (len(cols) > 1 or y.ndim == 2):
                    continue  # the neural checks read one text and one label
                t0 = time.perf_counter()
                a, b = (np.array(MEMBERS[member](v, y, metric)) for v in variants)
                d = b - a
                row = {"data": name, "metric": metric, "member": member, "off": round(a.mean(), 4),
                       "on": round(b.mean(), 4), "gain": round(d.mean(), 4),
                       "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 4), "s": round(time.perf_counter() - t0)}
                rows.append(row)
                print(f"{name} {member} ({metric}): {args.step} off {row['off']:.4f}, on {row['on']:.4f}, "
                      f"on - off {row['gain']:+.4f} (SE {row['se']:.4f}) [{row['s']}s]", flush=True)
    print(json.dumps({"step": args.step, "off": off, "on": on, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
