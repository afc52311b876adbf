"""Tokenised datasets, length-grouped batches and dynamic padding."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Encoded(torch.utils.data.Dataset):
    """Token ids per model input (no padding), token type ids for a pair, optional labels:
    class indices (n,) or a multi-label 0/1 matrix (n, L). With long texts cut into windows
    (``owner``: the row of each window) an item is a window; ``n_rows`` counts the rows."""

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray | None = None,
                 token_type_ids: list[list[int]] | None = None, owner: np.ndarray | None = None,
                 n_rows: int | None = None) -> None:
        self.input_ids = input_ids
        self.labels = labels
        self.token_type_ids = token_type_ids
        self.owner = owner
        self.n_rows = len(input_ids) if n_rows is None else n_rows

    @classmethod
    def from_texts(cls, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_len: int,
                   labels: np.ndarray | None = None, pairs: list[list[str]] | None = None,
                   encoding: dict[str, Any] | None = None) -> Encoded:
        """``encoding``: truncation, head_tokens, chunks, stride, max_chunks (runtime.encode_texts)."""
        from pipeline.runtime import encode_texts

        ids, types, owner = encode_texts(tokenizer, texts, max_len, pairs, **(encoding or {}))
        if owner is not None and labels is not None:
            labels = np.asarray(labels)[owner]  # every window carries its text's label
        return cls(ids, labels, types, owner, len(texts))

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
        return np.array([len(x) for x in self.input_ids])


class LengthGroupedBatches(torch.utils.data.Sampler[list[int]]):
    """Shuffle, cut into mega-batches of ``mega * batch_size``, sort each by length, slice
    into batches, shuffle the batches: short texts stop paying for the longest one while
    the order stays random. Seeded per epoch (``set_epoch``) so a resumed run replays it."""

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, group: bool = True,
                 mega: int = 50, drop_last: bool = False, rank: int = 0, world: int = 1) -> None:
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group = group
        self.mega = mega
        self.drop_last = drop_last
        self.rank = rank  # several processes: each takes every world-th batch of the same order
        self.world = world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = np.random.default_rng(self.seed + 1000 * self.epoch)
        order = rng.permutation(len(self.lengths))
        if self.group:
            size = self.batch_size * self.mega
            chunks = [order[i:i + size] for i in range(0, len(order), size)]
            order = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")] for c in chunks])
        batches = [order[i:i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.group:
            perm = rng.permutation(len(batches))
            batches = [batches[i] for i in perm]
        if self.world > 1:  # every process must run the same number of steps (DDP all-reduces each)
            batches = batches[: len(batches) - len(batches) % self.world][self.rank::self.world]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        n = len(self.lengths) / self.batch_size
        n = math.floor(n) if self.drop_last else math.ceil(n)
        return n // self.world if self.world > 1 else n


class PadCollator:
    """Pad a batch to its own longest text (rounded up to ``multiple``)."""

    def __init__(self, pad_id: int, multiple: int | None = None) -> None:
        self.pad_id = pad_id
        self.multiple = multiple

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(it["input_ids"]) for it in items)
        if self.multiple:
            width = int(math.ceil(width / self.multiple) * self.multiple)
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        types = torch.zeros((len(items), width), dtype=torch.long) if "token_type_ids" in items[0] else None
        for i, it in enumerate(items):
            n = len(it["input_ids"])
            ids[i, :n] = torch.tensor(it["input_ids"], dtype=torch.long)
            mask[i, :n] = 1
            if types is not None:
                types[i, :n] = torch.tensor(it["token_type_ids"], dtype=torch.long)
        out = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            out["token_type_ids"] = types
        if "labels" in items[0]:
            multi = isinstance(items[0]["labels"], list)  # multi-label: float targets for BCE
            out["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.float32 if multi else torch.long)
        return out


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Batches of similar length (longest first) for prediction; the caller restores order."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
