"""Tokenised datasets, length-grouped batches sized in rows or in tokens, and batches served
from tensors that live on the training device.

A GPU on short texts is bound by kernel launches and host synchronisation, not by arithmetic
(a batch of 32 tweets is about 1,000 real tokens): so batches are sized in tokens where the
profile says so (short texts make large batches, long ones small), and a batch is an index
into tensors packed once on the device, its width and real-token count read from the
lengths on the host. Nothing per step reads the device or copies rows across.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Encoded(torch.utils.data.Dataset):
    """Token ids per model input (no padding), token type ids for a pair, optional labels:
    class indices (n,) or a multi-label 0/1 matrix (n, L). With long texts cut into windows
    (``owner``: the row of each window) an item is a window; ``n_rows`` counts the rows, and
    ``pool`` says how a row's windows are pooled at prediction (runtime.per_row). ``soft``: a
    teacher's probabilities per row (n, classes or labels), for distillation."""

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray | None = None,
                 token_type_ids: list[list[int]] | None = None, owner: np.ndarray | None = None,
                 n_rows: int | None = None, pool: str = "mean", soft: np.ndarray | None = None) -> None:
        self.input_ids = input_ids
        self.labels = labels
        self.token_type_ids = token_type_ids
        self.owner = owner
        self.n_rows = len(input_ids) if n_rows is None else n_rows
        self.pool = pool
        self.soft = soft

    @classmethod
    def from_texts(cls, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_len: int,
                   labels: np.ndarray | None = None, pairs: list[list[str]] | None = None,
                   encoding: dict[str, Any] | None = None, soft: np.ndarray | None = None) -> Encoded:
        """``encoding``: truncation, head_tokens, chunks, stride, max_chunks, pool (runtime.encode_texts,
        runtime.per_row). A cut the tokenizer cannot make is a one-line ConfigError."""
        from pipeline.core.config import ConfigError
        from pipeline.runtime import encode_texts, split_encoding

        enc, pool = split_encoding(encoding)
        try:
            ids, types, owner = encode_texts(tokenizer, texts, max_len, pairs, **enc)
        except ValueError as e:  # runtime.py imports nothing of the pipeline: its errors become the contract's
            raise ConfigError(str(e)) from None
        if owner is not None and labels is not None:
            labels = np.asarray(labels)[owner]  # every window carries its text's label
        if owner is not None and soft is not None:
            soft = np.asarray(soft)[owner]  # ... and its text's soft target
        return cls(ids, labels, types, owner, len(texts), pool, soft)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": self.input_ids[i]}
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[i]
        if self.labels is not None:
            y = self.labels[i]
            item["labels"] = [float(v) for v in y] if np.ndim(y) else int(y)
        return item

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(x) for x in self.input_ids], dtype=np.int64)


def padded_width(length: int, multiple: int | None) -> int:
    """A batch's width: its longest input, rounded up to ``multiple`` (tensor cores like 8)."""
    return int(math.ceil(length / multiple) * multiple) if multiple else int(length)


def _fill(order: np.ndarray, lengths: np.ndarray, batch_size: int, max_tokens: int | None,
          multiple: int | None, max_rows: int | None = None) -> list[list[int]]:
    """Cut ``order`` (longest first within each group) into batches: ``batch_size`` rows each,
    or, with ``max_tokens``, as many rows as fit in that many padded tokens (at least one, at
    most ``max_rows``)."""
    if not max_tokens:
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    batches, i = [], 0
    while i < len(order):
        # sorted longest first, so the first row sets the width of the whole batch
        rows = max(1, max_tokens // padded_width(int(lengths[order[i]]), multiple))
        rows = min(rows, max_rows) if max_rows else rows
        batches.append(order[i:i + rows].tolist())
        i += rows
    return batches


class LengthGroupedBatches(torch.utils.data.Sampler[list[int]]):
    """Shuffle, cut into mega-batches, sort each by length, slice into batches, shuffle the
    batches: short texts stop paying for the longest one while the order stays random. A batch
    holds ``batch_size`` rows, or with ``max_tokens`` as many as fit in that many padded tokens
    (short texts make large batches, long ones small). Seeded per epoch (``set_epoch``) so a
    resumed run replays it; several processes take every world-th batch of the same order."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, group: bool = True,
                 mega: int = 50, drop_last: bool = False, rank: int = 0, world: int = 1,
                 max_tokens: int | None = None, multiple: int | None = None, max_rows: int | None = None) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = group or bool(max_tokens)  # a token budget only pays on length-sorted rows
        self.mega = mega
        self.drop_last = drop_last
        self.rank = rank
        self.world = world
        self.max_tokens = max_tokens
        self.multiple = multiple
        self.max_rows = max_rows
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """Every process's batches of this epoch, in step order (rank r takes r, r + world, ...)."""
        rng = np.random.default_rng(self.seed + 1000 * self.epoch)
        order = rng.permutation(len(self.lengths))
        if not self.group:
            batches = _fill(order, self.lengths, self.batch_size, None, None)
        else:
            # mega-batches of about `mega` batches' worth of rows (or tokens)
            size = self.batch_size * self.mega if not self.max_tokens else \
                max(1, int(self.mega * min(self.max_tokens / max(1.0, float(self.lengths.mean())),
                                           self.max_rows or np.inf)))
            batches = []
            for i in range(0, len(order), size):
                chunk = order[i:i + size]
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                batches += _fill(chunk, self.lengths, self.batch_size, self.max_tokens, self.multiple, self.max_rows)
        if self.drop_last and not self.max_tokens and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.group:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        if self.world > 1:  # every process must run the same number of steps (DDP all-reduces each)
            batches = batches[: len(batches) - len(batches) % self.world]
        return batches

    def batches(self) -> list[list[int]]:
        every = self.global_batches()
        return every[self.rank::self.world] if self.world > 1 else every

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        if self.max_tokens:
            return len(self.batches())
        n = len(self.lengths) / self.batch_size
        n = math.floor(n) if self.drop_last else math.ceil(n)
        return n // self.world if self.world > 1 else n


def eval_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None,
                 multiple: int | None = None) -> list[list[int]]:
    """Batches of similar length (longest first) for prediction, ``batch_size`` rows each or
    filled to ``max_tokens`` padded tokens; the caller restores the order."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return _fill(order, np.asarray(lengths), batch_size, max_tokens, multiple)


@dataclass
class Batch:
    """One batch as the step takes it: model inputs and labels on the device; its rows and real
    (unpadded) tokens counted on the host."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor | None
    index: torch.Tensor  # the rows' indices in the dataset, on the device
    rows: int
    tokens: int
    padded: bool  # whether any row is shorter than the batch (a model may then need no mask)
    soft: torch.Tensor | None = None  # a teacher's probabilities (distillation), on the device


class DeviceData:
    """An ``Encoded`` dataset packed once into padded tensors on the device the model runs on.

    A batch is then an index and a slice: no per-row Python, no host-to-device copy per step
    (an epoch's row order crosses once), and its width, whether it needs a mask at all, and its
    real-token count come from the lengths on the host. The attention mask is made on the
    device from the lengths; ``Batch.padded`` says on the host whether it masks anything."""

    def __init__(self, ds: Encoded, pad_id: int, device: torch.device, multiple: int | None = None) -> None:
        self.device = device
        self.multiple = multiple
        self.lengths = ds.lengths
        # packed as wide as the widest batch can be: the longest input, rounded up to the multiple
        n, width = len(ds), padded_width(max(1, int(self.lengths.max()) if len(ds) else 1), multiple)
        self.ids = torch.from_numpy(_pack(ds.input_ids, self.lengths, width, pad_id)).to(device)
        self.types = (torch.from_numpy(_pack(ds.token_type_ids, self.lengths, width, 0)).to(device)
                      if ds.token_type_ids is not None else None)
        self.len_dev = torch.from_numpy(self.lengths).to(device)
        self.positions = torch.arange(width, device=device)
        self.labels = None
        if ds.labels is not None:
            y = np.asarray(ds.labels)
            self.labels = torch.from_numpy(y.astype(np.float32) if y.ndim == 2 else y.astype(np.int64)).to(device)
        self.soft = torch.from_numpy(np.asarray(ds.soft, dtype=np.float32)).to(device) if ds.soft is not None else None
        self.n = n

    def width(self, rows: list[int]) -> int:
        return padded_width(int(self.lengths[rows].max()), self.multiple)

    def iterate(self, batches: list[list[int]]) -> Iterator[Batch]:
        """The batches in order; their row indices cross to the device in one copy."""
        if not batches:
            return
        flat = torch.from_numpy(np.concatenate([np.asarray(b, dtype=np.int64) for b in batches]))
        if self.device.type == "cuda":
            flat = flat.pin_memory()
        index = flat.to(self.device, non_blocking=True)
        start = 0
        for rows in batches:
            sel = index[start:start + len(rows)]
            start += len(rows)
            yield self.take(sel, rows)

    def take(self, sel: torch.Tensor, rows: list[int]) -> Batch:
        """The batch of ``rows`` (``sel``: the same indices, on the device)."""
        w = self.width(rows)
        lengths = self.lengths[rows]
        inputs = {"input_ids": self.ids[:, :w].index_select(0, sel)}
        inputs["attention_mask"] = (self.positions[:w][None, :] < self.len_dev.index_select(0, sel)[:, None]).long()
        if self.types is not None:
            inputs["token_type_ids"] = self.types[:, :w].index_select(0, sel)
        labels = self.labels.index_select(0, sel) if self.labels is not None else None
        soft = self.soft.index_select(0, sel) if self.soft is not None else None
        return Batch(inputs, labels, sel, len(rows), int(lengths.sum()), int(lengths.min()) < w, soft)


def _pack(seqs: list[list[int]], lengths: np.ndarray, width: int, pad: int) -> np.ndarray:
    """Ragged id lists as one (n, width) int64 array padded with ``pad`` (vectorised)."""
    out = np.full((len(seqs), width), pad, dtype=np.int64)
    if len(seqs) and lengths.sum():
        flat = np.fromiter((t for s in seqs for t in s), dtype=np.int64, count=int(lengths.sum()))
        rows = np.repeat(np.arange(len(seqs)), lengths)
        starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[rows, np.arange(len(flat)) - starts] = flat
    return out
