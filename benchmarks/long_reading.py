"""How each family reads a long document: head, head + tail, or every window pooled, on the
long-document shape (benchmarks/shapes.py: 30 tweets a document, the label in the whole text),
each member on the same folds, its fold-to-fold noise beside it.

    python benchmarks/long_reading.py --family embedding --docs 600           # frozen MiniLM + LR, 5 folds
    python benchmarks/long_reading.py --family transformer --docs 300 --max-len 128 --epochs 2
    python benchmarks/long_reading.py --family share --docs 2000 --max-len 64  # which share of long texts matters

embedding: one encoder pass per reading (head; head_tail; every window, their vectors pooled by
mean or by max), then a logistic regression per fold. transformer: MiniLM fine-tuned per
reading (head, head_tail, chunks trained on every window) on each fold; the chunked model's
validation windows are pooled by mean (its score) and by max from the same logits. share: how much reading only
the head costs as a function of the share of texts longer than max_len (a competition of long
documents and of short ones, their first max_len / 2 tokens), with word TF-IDF + LR on each text cut
to its first max_len tokens against the whole text: the gain of reading whole, beside its fold
noise, is what inspect's threshold rests on. Prints JSON; records nothing.
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


def documents(n: int, folder: Path) -> pd.DataFrame:
    import shapes

    if not (folder / "train.csv").exists():
        shapes.build("long", folder, size=(n, 10))
    return pd.read_csv(folder / "train.csv")


def summary(scores: dict[str, list[float]], base: str) -> dict[str, dict[str, float]]:
    """Each reading's mean fold score and its gain over ``base`` with the SE of the per-fold gains."""
    out = {}
    for name, s in scores.items():
        d = np.array(s) - np.array(scores[base])
        out[name] = {"mean": round(float(np.mean(s)), 4), "folds": [round(x, 4) for x in s],
                     f"gain_vs_{base}": round(float(d.mean()), 4),
                     "se_of_gain": round(float(d.std(ddof=1) / np.sqrt(len(d))), 4) if len(d) > 1 else None}
    return out


def embedding(df: pd.DataFrame, max_len: int, folds: int, stride: int = 32, only: list[str] | None = None) -> dict:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from pipeline.core.config import TrainConfig
    from pipeline.modeling.backbones import resolve_backbone
    from pipeline.modeling.transformer import encoding
    from pipeline.runtime import load_encoder

    torch.manual_seed(0)
    model, tok = load_encoder(Path(resolve_backbone("packaged:minilm")))
    texts, y = df["text"].tolist(), df["label"].to_numpy()
    readings, seconds = {}, {}
    for name, kw in {"head": {}, "head_tail": {"truncation": "head_tail"},
                     "chunks_mean": {"chunks": True}, "chunks_max": {"chunks": True, "chunk_pool": "max"}}.items():
        if only and name not in only:
            continue
        from pipeline.runtime import embed

        tc = TrainConfig(max_len=max_len, stride=stride, **kw)
        t0 = time.perf_counter()
        readings[name] = embed(model, tok, texts, max_len, 64, encoding=encoding(tc, tc.chunks))
        seconds[name] = round(time.perf_counter() - t0, 1)
    scores = {name: [] for name in readings}
    for trn, val in StratifiedKFold(folds, shuffle=True, random_state=0).split(texts, y):
        for name, X in readings.items():
            lr = LogisticRegression(C=4.0, max_iter=3000).fit(X[trn], y[trn])
            scores[name].append(float((lr.predict(X[val]) == y[val]).mean()))
    return {"metric": "accuracy", "encode_s": seconds, "readings": summary(scores, "head")}


def transformer(df: pd.DataFrame, max_len: int, epochs: int, folds: int) -> dict:
    from sklearn.model_selection import StratifiedKFold

    from pipeline.core.config import TrainConfig
    from pipeline.modeling.base import FoldData
    from pipeline.modeling.data import DeviceData, Encoded
    from pipeline.modeling.transformer import FoldTrainer, encoding, load_tokenizer
    from pipeline.runtime import per_row

    y = (df["label"] == "positive").to_numpy().astype(int)
    texts = df["text"].tolist()
    base = dict(backbone="packaged:minilm", max_len=max_len, epochs=epochs, batch_size=16, lr=8e-5, head_lr=1e-3,
                llrd=0.9, warmup_ratio=0.1, save_checkpoints=False, eval_batch_size=64)
    readings = {"head": {}, "head_tail": {"truncation": "head_tail"}, "chunks": {"chunks": True}}
    scores: dict[str, list[float]] = {name: [] for name in [*readings, "chunks_max"]}
    seconds: dict[str, float] = {name: 0.0 for name in readings}
    windows = []
    for trn, val in StratifiedKFold(folds, shuffle=True, random_state=0).split(texts, y):
        data = FoldData([texts[i] for i in trn], y[trn], [texts[i] for i in val], y[val], texts[:2])
        for name, kw in readings.items():
            cfg = TrainConfig(**base, **kw)
            cfg.validate()
            trainer = FoldTrainer(cfg, 2, "accuracy", 0)
            t0 = time.perf_counter()
            result = trainer.fit(data, load_tokenizer(cfg))
            seconds[name] += time.perf_counter() - t0
            scores[name].append(float(result.best_score))
            if name == "chunks":  # the same windows' logits pooled by max (the trainer pools by mean)
                tok = load_tokenizer(cfg)
                ds = Encoded.from_texts(tok, data.val_texts, max_len, data.val_labels, encoding=encoding(cfg, True))
                dd = DeviceData(ds, tok.pad_token_id or 0, trainer.device)
                _, logits = trainer.predict(result.extra["model"], Encoded(ds.input_ids, None, None, None, len(ds)),
                                            dd, None)
                z = per_row(logits, ds.owner, ds.n_rows, "max")
                scores["chunks_max"].append(float((z.argmax(1) == data.val_labels).mean()))
                windows.append(len(ds) / ds.n_rows)
    return {"metric": "accuracy", "folds": folds, "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "windows_per_text": round(float(np.mean(windows)), 2), "readings": summary(scores, "head")}


def share(df: pd.DataFrame, max_len: int, folds: int, shares: list[float]) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from transformers import AutoTokenizer

    from pipeline.modeling.backbones import resolve_backbone
    from pipeline.runtime import untruncated

    tok = AutoTokenizer.from_pretrained(resolve_backbone("packaged:minilm"))
    rng = np.random.default_rng(0)
    y = df["label"].to_numpy()
    full = df["text"].tolist()
    # a short text: a document's first max_len / 2 tokens (one or two tweets), read whole by any cut
    short = [tok.decode(x[: max_len // 2]) for x in untruncated(tok, full, add_special_tokens=False)]
    out = {}
    for s in shares:
        long_rows = rng.random(len(full)) < s
        texts = [f if lg else sh for f, sh, lg in zip(full, short, long_rows)]
        ids = untruncated(tok, texts, add_special_tokens=False)
        head = [tok.decode(x[: max_len - 2]) for x in ids]
        over = float(np.mean([len(x) + 2 > max_len for x in ids]))
        scores: dict[str, list[float]] = {"head": [], "whole": []}
        for trn, val in StratifiedKFold(folds, shuffle=True, random_state=0).split(texts, y):
            for name, col in (("head", head), ("whole", texts)):
                vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)  # words: fast on long texts
                X = vec.fit_transform([col[i] for i in trn])
                Xv = vec.transform([col[i] for i in val])
                lr = LogisticRegression(C=4.0, max_iter=3000).fit(X, y[trn])
                scores[name].append(float((lr.predict(Xv) == y[val]).mean()))
        out[f"{s:.2f}"] = {"share_over_max_len": round(over, 3), **summary(scores, "head")["whole"]}
    return {"metric": "accuracy", "whole_vs_head": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["embedding", "transformer", "share"], required=True)
    ap.add_argument("--shares", default="0,0.02,0.05,0.1,0.2,0.5")
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--stride", type=int, default=32, help="embedding: the tokens two windows share")
    ap.add_argument("--readings", default=None,
                    help="embedding: only these readings (comma-separated; head is always read)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/long_reading"))
    args = ap.parse_args(argv)
    df = documents(args.docs, args.work / f"long{args.docs}")
    t0 = time.time()
    if args.family == "embedding":
        only = ["head", *args.readings.split(",")] if args.readings else None
        result = embedding(df, args.max_len, args.folds, args.stride, only)
    elif args.family == "share":
        result = share(df, args.max_len, args.folds, [float(x) for x in args.shares.split(",")])
    else:
        result = transformer(df, args.max_len, args.epochs, args.folds)
    print(json.dumps({"family": args.family, "docs": args.docs, "max_len": args.max_len, **result,
                      "wall_s": round(time.time() - t0, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
