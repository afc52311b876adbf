"""Which members read a pair's relation: on benchmarks/shapes.py's pair shapes (relation: the label
says whether two tweets share a sentiment, each tweet's own sentiment independent of it; pair:
the same over three sentiments), each candidate's 5-fold CV log loss on the same folds beside the
constant's, with the SE of its per-fold difference from the default it would replace.

    python benchmarks/relation_members.py --shape relation --pairs 3000 --members classical
    python benchmarks/relation_members.py --shape relation --pairs 3000 --members embedding
    python benchmarks/relation_members.py --shape relation --pairs 2000 --members cross --epochs 4

classical: word + char TF-IDF per text column + the similarity features (the default), one joint
TF-IDF over both texts + the same features, and the similarity features alone
(train.tfidf_blocks=false). embedding: frozen MiniLM, LR on SBERT's [u, v, |u-v|, u*v] + cosine,
on [|u-v|, u*v, cosine], and either with the products of the texts' principal components
(train.pair_rank). cross: MiniLM fine-tuned on the pair (fold 0), its validation log loss after
each half epoch: how long a cross-encoder takes to learn the relation. Prints JSON; records nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
COLUMNS = {"relation": ("sentence1", "sentence2"), "pair": ("question1", "question2")}


def competition(shape: str, n: int, work: Path) -> tuple[list[str], list[str], np.ndarray]:
    import shapes

    folder = work / f"{shape}{n}" / "comp"
    if not (folder / "train.csv").exists():
        shapes.build(shape, folder, size=(n, 10))
    df = pd.read_csv(folder / "train.csv")
    a, b = COLUMNS[shape]
    return df[a].astype(str).tolist(), df[b].astype(str).tolist(), df[shapes.LABELS[shape][0]].to_numpy()


def folds(y: np.ndarray, k: int = 5) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(k, shuffle=True, random_state=0).split(np.zeros(len(y)), y))


def table(scores: dict[str, list[float]], base: str) -> dict[str, dict]:
    out = {}
    for name, s in scores.items():
        d = np.array(s) - np.array(scores[base])
        out[name] = {"logloss": round(float(np.mean(s)), 4), "vs_" + base: round(float(d.mean()), 4),
                     "se": round(float(d.std(ddof=1) / np.sqrt(len(d))), 4)}
    return out


def pick(xs: list[str], idx: np.ndarray) -> list[str]:
    return [xs[i] for i in idx]


def classical(a: list[str], b: list[str], y: np.ndarray, C: float) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from pipeline.modeling.classical import TfidfClassifier
    from pipeline.runtime import pair_features

    scores: dict[str, list[float]] = {"constant": [], "per_column": [], "joint": [], "similarity_alone": [],
                                      "similarity_v1_alone": []}
    for trn, val in folds(y):
        scores["constant"].append(log_loss(y[val], np.full(len(val), y[trn].mean()), labels=[0, 1]))
        for name, kw in (("per_column", {"joint": False}), ("joint", {"joint": True}),
                         ("similarity_alone", {"blocks": False, "joint": False})):
            clf = TfidfClassifier(C=C, **kw).fit(pick(a, trn), y[trn], [pick(b, trn)])
            scores[name].append(log_loss(y[val], clf.predict_proba(pick(a, val), [pick(b, val)])[:, 1]))
        # the three features that existed before (word Jaccard, length ratio, word TF-IDF cosine)
        old = {part: pair_features(pick(a, idx), pick(b, idx), clf.vectorizers_[0], None, 1)
               for part, idx in (("trn", trn), ("val", val))}
        lr1 = LogisticRegression(C=C, max_iter=3000).fit(old["trn"], y[trn])
        scores["similarity_v1_alone"].append(log_loss(y[val], lr1.predict_proba(old["val"])[:, 1]))
    return table(scores, "per_column")


def embedding(a: list[str], b: list[str], y: np.ndarray, work: Path, C: float) -> dict:
    import hashlib

    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    from pipeline.modeling.backbones import resolve_backbone
    from pipeline.runtime import embed, embedding_features, fit_pair_relation, load_encoder

    cache = work / f"minilm-{hashlib.sha1(json.dumps([a, b]).encode()).hexdigest()[:12]}.npz"
    if cache.exists():
        with np.load(cache) as z:
            U, V = z["U"], z["V"]
    else:
        model, tok = load_encoder(Path(resolve_backbone("packaged:minilm")))
        U, V = embed(model, tok, a, 128, 64), embed(model, tok, b, 128, 64)
        np.savez(cache, U=U, V=V)
    variants = {"sbert": lambda trn: embedding_features([U, V]),
                "relation_dims": lambda trn: embedding_features([U, V], fit_pair_relation(U[trn], V[trn], 0, False)),
                "sbert+rank32": lambda trn: embedding_features([U, V], fit_pair_relation(U[trn], V[trn], 32, True)),
                "rank32": lambda trn: embedding_features([U, V], fit_pair_relation(U[trn], V[trn], 32, False)),
                "rank64": lambda trn: embedding_features([U, V], fit_pair_relation(U[trn], V[trn], 64, False))}
    scores: dict[str, list[float]] = {"constant": [], **{k: [] for k in variants}}
    for trn, val in folds(y):
        scores["constant"].append(log_loss(y[val], np.full(len(val), y[trn].mean()), labels=[0, 1]))
        for name, make in variants.items():
            X = make(trn)
            lr = LogisticRegression(C=C, max_iter=5000).fit(X[trn], y[trn])
            scores[name].append(log_loss(y[val], lr.predict_proba(X[val])[:, 1]))
    return table(scores, "sbert")


def cross(a: list[str], b: list[str], y: np.ndarray, epochs: int, max_len: int) -> dict:
    from pipeline.core.config import TrainConfig
    from pipeline.modeling.base import FoldData
    from pipeline.modeling.transformer import FoldTrainer, load_tokenizer

    trn, val = folds(y, 3)[0]
    data = FoldData(pick(a, trn), y[trn], pick(a, val), y[val], pick(a, val[:2]), train_pairs=[pick(b, trn)],
                    val_pairs=[pick(b, val)], test_pairs=[pick(b, val[:2])])
    cfg = TrainConfig(backbone="packaged:minilm", max_len=max_len, epochs=epochs, batch_size=32, lr=8e-5,
                      head_lr=1e-3, llrd=0.9, warmup_ratio=0.1, evals_per_epoch=2, save_checkpoints=False)
    cfg.validate()
    t0 = time.perf_counter()
    out = FoldTrainer(cfg, 2, "logloss", 0).fit(data, load_tokenizer(cfg))
    evals = [{"epoch": round(h["epoch"], 2), "val_logloss": round(h["val_loss"], 4)} for h in out.history
             if h.get("kind") == "eval"]
    constant = float(np.mean([-np.log(y[trn].mean()) if v else -np.log(1 - y[trn].mean()) for v in y[val]]))
    return {"train_pairs": len(trn), "val_pairs": len(val), "constant": round(constant, 4), "evals": evals,
            "seconds": round(time.perf_counter() - t0, 1), "train_rows_per_s": round(out.train_samples_per_s, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(COLUMNS), default="relation")
    ap.add_argument("--pairs", type=int, default=3000)
    ap.add_argument("--members", choices=["classical", "embedding", "cross"], required=True)
    ap.add_argument("--C", type=float, default=4.0, help="the LRs' C (train.C)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=96)
    ap.add_argument("--work", type=Path, default=Path("/tmp/relation_members"))
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    a, b, y = competition(args.shape, args.pairs, args.work)
    t0 = time.time()
    if args.members == "classical":
        result = classical(a, b, y, args.C)
    elif args.members == "embedding":
        result = embedding(a, b, y, args.work, args.C)
    else:
        result = cross(a, b, y, args.epochs, args.max_len)
    print(json.dumps({"shape": args.shape, "pairs": args.pairs, "members": args.members, "result": result,
                      "wall_s": round(time.time() - t0, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
