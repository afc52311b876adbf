"""The model-family interface: what one fold hands a family, what the family hands back.

A family (a fine-tuned transformer, TF-IDF + a linear model, a frozen encoder + a logistic
regression) is used the way a scikit-learn estimator is: the cross-validation code gives it
one fold's rows (``FoldData``) and gets back the fold's validation and test predictions
(``FoldOutput``); the planner asks it what a fold costs, from the candidate's measured
``Cost``; tune asks it what to search. Its
name is looked up once, in the registry (``pipeline.modeling.families.family``), and nothing
outside the registry branches on it: callers read the family's traits (``epoch_trained``,
``never_cut`` ...) instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # type names only: importing this module loads neither torch nor optuna
    import optuna

    from pipeline.core.config import Config, TrainConfig


@dataclass
class Cost:
    """One candidate's measured costs on one machine and data: what its family's cost formula
    (``Family.fold_seconds``) reads. The time budget (pipeline.budget) turns them into seconds
    per fold, run and stage; a family's probe measures them (``Family.probe``)."""

    name: str
    family: str  # transformer, classical, embedding
    batch_size: int = 32
    token_batches: bool = False  # train.token_batches: batches filled to batch_size x max_len tokens
    batch_tokens: int | None = None  # train.batch_tokens: batches filled to this many tokens instead
    max_rows: int | None = None  # token batches hold at most this many rows (train.token_batch_max_rows)
    step_s: float = 0.0  # transformer: seconds per optimizer step (batch_size rows at max_len)
    step_fit: list[float] | None = None  # transformer: [a, b]: a step over a batch of T padded tokens takes a + b*T s
    infer_row_s: float = 0.0  # transformer / embedding encoder: seconds per row predicted
    test_infer_row_s: float | None = None  # transformer: per test row (float32 where training is bf16 on CPU)
    load_s: float = 0.0  # transformer: model build + one checkpoint save
    fit_row_s: float = 0.0  # classical (and an embedding head): seconds per training row of one fold's fit
    pred_row_s: float | None = None  # classical: seconds per row predicted (None: as fit_row_s)
    fit_fixed_s: float = 0.0  # classical: seconds a fit costs whatever its size
    max_len: int = 64  # the candidate's max_len when measured
    lengths: dict[str, float] = field(default_factory=dict)  # max_len -> mean padded tokens per text
    suggested_max_len: int | None = None
    epochs: int = 2  # the candidate's own epochs (its config)
    available: bool = True  # the backbone is installed
    why: str = ""  # why not available
    max_positions: int | None = None  # transformer: the longest input its position embeddings allow
    windows: dict[str, float] = field(default_factory=dict)  # max_len -> windows per text read whole (train.chunks)
    chunks: bool = False  # train.chunks: every text read whole in windows (else its head: one input a text)
    chunk_training: bool = False  # train.chunk_training: under chunks, training reads every window too
    device: str = "cpu"  # where it was measured, and runs: cuda or cpu
    pretrain_s: float = 0.0  # train.pretrain_steps: building its pretrained encoder (0: none, or built already)

    def windows_at(self, max_len: int) -> float:
        """Mean windows a text is read in at ``max_len`` (1 without train.chunks)."""
        if not self.chunks or not self.windows:
            return 1.0
        return self.windows.get(str(max_len), self.windows.get(str(self.max_len), 1.0))

    def length_scale(self, max_len: int) -> float:
        """Step time scales with the tokens actually fed (length-grouped batches pad little)."""
        base = self.lengths.get(str(self.max_len))
        new = self.lengths.get(str(max_len))
        return new / base if base and new else max_len / self.max_len

    def token_budget(self, max_len: int) -> int | None:
        """Padded tokens a training batch is filled to at ``max_len`` (None: batches in rows)."""
        return self.batch_tokens or (self.batch_size * max_len if self.token_batches else None)

    def steps(self, rows: float, max_len: int) -> tuple[int, float]:
        """(optimizer steps, seconds per step) of one epoch over ``rows`` rows at ``max_len``:
        batches of batch_size rows at the measured step, or, under token batches, batches filled
        to the token budget (at most max_rows rows) at the step the probe's fit (seconds against
        padded tokens) puts there: on a GPU a small batch costs its kernel launches, not its tokens."""
        tokens = self.lengths.get(str(max_len))
        budget = self.token_budget(max_len)
        if budget and self.step_fit and tokens:
            a, b = self.step_fit
            per_step = min(budget / tokens, self.max_rows or math.inf)
            return math.ceil(rows / per_step), a + b * per_step * tokens
        return math.ceil(rows / self.batch_size), self.step_s * self.length_scale(max_len)

    def row_seconds(self, max_len: int) -> float:
        """Training seconds per row per epoch at ``max_len`` (what a run's measured pace is held against)."""
        n, step = self.steps(1e6, max_len)
        return n * step / 1e6


@dataclass
class FoldData:
    """One fold's rows as a family sees them: model inputs and encoded labels.

    The data's shape travels here, so each family handles it once: labels are (n,) class
    indices, or an (n, L) 0/1 matrix for a multi-label competition; ``*_texts`` is the first
    (or only) text column, ``*_pairs`` the other text columns, one list each (a text pair: one).
    """

    train_texts: list[str]
    train_labels: np.ndarray
    val_texts: list[str]
    val_labels: np.ndarray
    test_texts: list[str]
    train_pairs: list[list[str]] | None = None
    val_pairs: list[list[str]] | None = None
    test_pairs: list[list[str]] | None = None
    train_soft: np.ndarray | None = None  # distillation: a teacher's OOF probabilities per training row

    @property
    def multilabel(self) -> bool:
        return np.ndim(self.train_labels) == 2


@dataclass
class FoldOutput:
    """What a family returns for one fold (probabilities in the rows' order)."""

    val_proba: np.ndarray
    test_proba: np.ndarray
    history: list[dict[str, Any]]  # one row per training point / evaluation (history.csv)
    best_epoch: float
    best_score: float
    optimizer_steps: int
    seconds: float
    train_samples_per_s: float
    batch_size: int
    grad_accum: int
    extra: dict[str, Any] = field(default_factory=dict)  # "model": the fitted fold model, until saved


@dataclass
class FoldContext:
    """Where and how one fold runs."""

    fold: int
    n_classes: int
    metric: str
    checkpoint_dir: Path | None = None  # where a fold in progress keeps its resume state; None: not resumable
    cache_dir: Path | None = None  # caches shared by runs (the embedding family's vectors)
    on_eval: Callable[[float, float], None] | None = None  # (epoch, score) after each evaluation: pruning


class Family(Protocol):
    """A model family. Traits first (what the planner and the stages read), then the work."""

    name: str
    epoch_trained: bool  # trains in epochs: epochs, seeds, early stopping, optimizer tuning and re-plans apply
    never_cut: bool  # the planner never cuts or drops it (cheap, and the first valid submission)
    uses_backbone: bool  # needs a backbone (a packaged model, a local directory or a hub name)
    order: int  # where train runs it: cheap families first, so a submission exists early
    tuned_by_default: bool  # the planner budgets tuning trials for it
    exports_onnx: bool  # `make package SET=package.onnx=true` exports its fold models to int8 ONNX
    distills: bool  # learns from a teacher's soft targets beside the labels (train.teacher)
    pretrains: bool  # has an encoder that masked-LM steps on the competition's texts adapt (train.pretrain_steps)

    def describe(self, tc: TrainConfig) -> str:
        """The model in a few words for logs and tables (a backbone, a classifier)."""

    def prepare(self, tc: TrainConfig) -> object | None:
        """What every fold of a run shares and loads once (the tokenizer), or None."""

    def fit(self, tc: TrainConfig, data: FoldData, ctx: FoldContext, shared: object | None) -> FoldOutput:
        """Fit on ``data``'s training rows; predict its validation and test rows."""

    def save(self, model: object, tc: TrainConfig, folder: Path, shared: object | None) -> None:
        """Write the fold model ``fit`` left in ``FoldOutput.extra["model"]`` to ``folder`` (no pickle)."""

    def probe(self, tc: TrainConfig, texts: list[str], labels: np.ndarray, n_classes: int, metric: str,
              steps: int, max_lens: list[int], columns: list[list[str]] | None = None) -> dict[str, Any]:
        """Measured costs on this machine and these texts (the planner's ``Cost`` fields). A text
        pair's ``texts`` are its columns joined (about the tokens a step feeds); ``columns`` are
        the columns themselves, for a family whose features compare them."""

    def fold_seconds(self, cost: Cost, rows: int, epochs: int, max_len: int, n_val: int, n_test: int,
                     evals_per_epoch: int) -> float:
        """One fold: training on ``rows``, predicting validation and test."""

    def probe_pretrain(self, tc: TrainConfig, texts: list[str], steps: int) -> dict[str, Any]:
        """Measured cost of masked-LM pretraining on these texts (``pretrain_seconds`` reads it);
        empty where the family does not pretrain."""

    def pretrain_seconds(self, measured: dict[str, Any], steps: int) -> float:
        """One pretrained encoder of ``steps`` masked-LM steps: paid once per (backbone, texts,
        steps, settings), shared by every run that starts from it."""

    def encode_seconds(self, cost: Cost, rows: int) -> float:
        """Work paid once per run rather than per fold, for ``rows`` rows (a frozen encoder's pass)."""

    def search(self, trial: optuna.Trial, cfg: Config) -> dict[str, Any]:
        """One trial's ``train.*`` values, drawn from the ranges in ``tune.*``."""

    def baseline(self, cfg: Config) -> dict[str, Any]:
        """The config's own values as trial parameters (tune's trial 0)."""

    def copy_model(self, src: Path, dst: Path, fp16: bool, onnx: bool = False) -> None:
        """Copy one saved fold model into an inference bundle (fp16 weights, an int8 ONNX export)."""

    def bundle_shared(self, member: dict[str, Any], staging: Path, rel: str) -> dict[str, str]:
        """Copy what every fold model of a bundle member shares (a frozen encoder) under
        ``staging / rel``; its manifest.json entries."""
