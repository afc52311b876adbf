"""The embedding family: a frozen sentence encoder (MiniLM or mpnet, mean-pooled and
normalised like sentence-transformers) + a logistic regression per fold. A text longer than
max_len is read whole under train.chunks: every window embedded, the windows pooled.

One forward pass over train and test serves every fold (and every rerun: embeddings are
cached on disk by encoder, max_len and text hash), so it costs a fraction of fine-tuning on
CPU, and its errors differ from a fine-tuned model's: a cheap, diverse ensemble member.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from pipeline.core.config import TrainConfig
from pipeline.core.files import atomic_path
from pipeline.core.progress import progress
from pipeline.modeling.backbones import resolve_backbone
from pipeline.modeling.base import FoldData, FoldOutput
from pipeline.modeling.classical import one_pass_output, save_model_files
from pipeline.runtime import EmbeddingHead, embed, load_encoder

log = logging.getLogger(__name__)
_MEMO: dict[str, dict[str, np.ndarray]] = {}  # cache file -> {text sha1: vector}, for the folds of one process


def _key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def text_encoding(cfg: TrainConfig) -> dict | None:
    """How the encoder reads a text longer than max_len (runtime.embed): None for the head
    (the tokenizer's cut), else the run's cut or its windows and their pooling."""
    if cfg.truncation == "head" and not cfg.chunks:
        return None
    from pipeline.modeling.transformer import encoding

    return encoding(cfg, cfg.chunks)


def cache_file(cache_dir: Path, cfg: TrainConfig) -> Path:
    source = resolve_backbone(cfg.backbone)
    enc = text_encoding(cfg)
    tag = hashlib.sha256(json.dumps([source, cfg.max_len, *([enc] if enc else [])], sort_keys=True).encode())
    return cache_dir / f"{Path(source).name}-{cfg.max_len}-{tag.hexdigest()[:16]}.npz"


def embeddings(cfg: TrainConfig, texts: list[str], cache_dir: Path | None) -> np.ndarray:
    """Vectors for ``texts``: from the cache where there, the encoder for the rest (then saved)."""
    path = cache_file(cache_dir, cfg) if cache_dir else None
    memo = _MEMO.setdefault(str(path), {})
    if path is not None and not memo and path.exists():
        with np.load(path, allow_pickle=False) as z:
            memo.update(zip(z["keys"].tolist(), z["vectors"]))
    keys = [_key(t) for t in texts]
    todo = sorted({k: t for k, t in zip(keys, texts) if k not in memo}.items())
    if todo:
        t0 = time.perf_counter()
        model, tokenizer = load_encoder(Path(resolve_backbone(cfg.backbone)))
        step = max(cfg.eval_batch_size * 16, 1)  # in slices, so a long encoding says how far it is
        slices = range(0, len(todo), step)
        for s in progress(slices, len(slices), f"embedding {len(todo)} texts with {cfg.backbone}", "slices"):
            part = todo[s:s + step]
            memo.update(zip([k for k, _ in part], embed(model, tokenizer, [t for _, t in part], cfg.max_len,
                                                        cfg.eval_batch_size, encoding=text_encoding(cfg))))
        log.info("embedding: %d new texts encoded with %s in %.1fs (%.0f texts/s); %d from the cache", len(todo),
                 cfg.backbone, time.perf_counter() - t0, len(todo) / max(time.perf_counter() - t0, 1e-9),
                 len(keys) - len(todo))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.savez(f, keys=np.array(list(memo)), vectors=np.stack(list(memo.values())))
    return np.stack([memo[k] for k in keys])


def _vectors(cfg: TrainConfig, texts: list[str], pairs: list[list[str]] | None,
             cache_dir: Path | None) -> list[np.ndarray]:
    """Every text column's vectors (a pair: u and v)."""
    return [embeddings(cfg, col, cache_dir) for col in [texts, *(pairs or [])]]


def fit_embedding_fold(cfg: TrainConfig, data: FoldData, metric: str, fold: int,
                       cache_dir: Path | None) -> FoldOutput:
    """A logistic regression on ``runtime.embedding_features``; a pair's relation (the products
    of its texts' principal components, train.pair_rank; u and v with train.pair_sides) fitted
    on this fold's training rows."""
    from sklearn.linear_model import LogisticRegression

    from pipeline.modeling.classical import _binary_lr, _coef
    from pipeline.runtime import fit_pair_relation

    t0 = time.perf_counter()
    vtr = _vectors(cfg, data.train_texts, data.train_pairs, cache_dir)
    relation = fit_pair_relation(*vtr, cfg.pair_rank, cfg.pair_sides) if len(vtr) == 2 else None
    head = EmbeddingHead(np.zeros((1, 1)), np.zeros(1), data.multilabel, relation)
    Xtr = head.features(vtr)
    Xva = head.features(_vectors(cfg, data.val_texts, data.val_pairs, cache_dir))
    Xte = head.features(_vectors(cfg, data.test_texts, data.test_pairs, cache_dir))
    if data.multilabel:  # one binary regression per label
        fits = [_coef(_binary_lr(Xtr, data.train_labels[:, j], cfg.C, cfg.seed + fold, 3000), Xtr.shape[1])
                for j in range(data.train_labels.shape[1])]
        head.coef, head.intercept = np.stack([c for c, _ in fits]), np.array([b for _, b in fits])
    else:
        lr = LogisticRegression(C=cfg.C, max_iter=3000, random_state=cfg.seed + fold).fit(Xtr, data.train_labels)
        if len(lr.classes_) != len(np.unique(np.concatenate([data.train_labels, data.val_labels]))):
            log.warning("fold %d: the training rows lack a class; its probability is 0", fold)
        head.coef, head.intercept = lr.coef_, lr.intercept_
    return one_pass_output(fold, metric, data, head.predict_proba(Xva), head.predict_proba(Xte),
                           head.predict_proba(Xtr), time.perf_counter() - t0, head)


def save_head(head: EmbeddingHead, cfg: TrainConfig, folder: Path) -> None:
    pooling = "mean, L2-normalised" + (f"; windows pooled by {cfg.chunk_pool}, L2-normalised" if cfg.chunks else "")
    spec, arrays = head.to_arrays()
    save_model_files(folder, {"format": "textcomp-embedding-head/1", "backbone": cfg.backbone,
                              "max_len": cfg.max_len, "pooling": pooling, "encoding": text_encoding(cfg), **spec},
                     arrays)
