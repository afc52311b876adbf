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
    """Token ids per text (no padding) and optional integer labels."""

    def __init__(self, input_ids: list[list[int]], labels: np.ndarray | None = None) -> None:
        self.input_ids = input_ids
        self.labels = labels

    @classmethod
    def from_texts(cls, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_len: int,
                   labels: np.ndarray | None = None) -> Encoded:
        ids = tokenizer(list(texts), truncation=True, max_length=max_len, padding=False)["input_ids"]
        return cls(ids, labels)

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {"input_ids": self.input_ids[i]}
        if self.labels is not None:
            item["labels"] = int(self.labels[i])
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
        for i, it in enumerate(items):
            n = len(it["input_ids"])
            ids[i, :n] = torch.tensor(it["input_ids"], dtype=torch.long)
            mask[i, :n] = 1
        out = {"input_ids": ids, "attention_mask": mask}
        if "labels" in items[0]:
            out["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
        return out


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[list[int]]:
    """Batches of similar length (longest first) for prediction; the caller restores order."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
