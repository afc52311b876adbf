"""Fine-tuning a Hugging Face encoder on one fold: a legible loop, every trick a config field.

AdamW without decay on biases/norms, layer-wise LR decay, warmup + cosine in optimizer
steps, label smoothing, accumulation, mixed precision, clipping, length-grouped batches,
EMA, early stopping, and a per-epoch checkpoint that a killed run resumes from. The step,
evaluation and checkpoints are pipeline.modeling.step's functions; here is the loop.
"""

from __future__ import annotations

import copy
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pipeline.core.config import TrainConfig
from pipeline.core.metrics import better
from pipeline.core.progress import progress
from pipeline.modeling import distributed as dist_
from pipeline.modeling import step as step_
from pipeline.modeling.attention import use_sdpa
from pipeline.modeling.backbones import resolve_backbone
from pipeline.modeling.base import FoldData, FoldOutput
from pipeline.modeling.data import DeviceData, Encoded, LengthGroupedBatches, eval_batches
from pipeline.modeling.device import autocast, pick_device, pick_dtype, seed_everything, submission_dtype
from pipeline.modeling.probe import max_positions
from pipeline.modeling.schedule import lr_factor, warmup_steps
from pipeline.modeling.step import TrainingError, layer_depth

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def load_tokenizer(cfg: TrainConfig) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_backbone(cfg.backbone))


def load_model(cfg: TrainConfig, n_classes: int, multilabel: bool = False) -> nn.Module:
    """The backbone with a fresh head of ``n_classes`` outputs (multi-label: one logit per label)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve_backbone(cfg.backbone)
    config = AutoConfig.from_pretrained(path, num_labels=n_classes)
    if multilabel:
        config.problem_type = "multi_label_classification"
    if cfg.dropout is not None:
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
            if hasattr(config, name):
                setattr(config, name, cfg.dropout)
    if cfg.head_dropout is not None:
        for name in ("classifier_dropout", "seq_classif_dropout"):
            if hasattr(config, name):
                setattr(config, name, cfg.head_dropout)
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # "newly initialized classifier" is expected: it is what we train
    try:
        # a backbone saved with another head size (a 2-class checkpoint, 6 labels here) gets a fresh head;
        # float32 master weights whatever the checkpoint stores (transformers 5 loads an fp16/bf16
        # checkpoint in its own dtype, and fp16 weights cannot take GradScaler's unscaled steps)
        return AutoModelForSequenceClassification.from_pretrained(path, config=config, ignore_mismatched_sizes=True,
                                                                  dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)


def set_trainable(model: nn.Module, cfg: TrainConfig, epoch: int) -> None:
    """Freezing: embeddings, the lowest N layers, or the whole encoder for the first epochs."""
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    head_only = epoch < cfg.freeze_encoder_epochs
    for name, p in model.named_parameters():
        depth = layer_depth(name, n_layers)
        frozen = (head_only and depth <= n_layers) or (cfg.freeze_embeddings and depth == 0) or \
                 (1 <= depth <= cfg.freeze_layers)
        p.requires_grad_(not frozen)


def encoding(cfg: TrainConfig, windows: bool) -> dict[str, Any]:
    """How texts are cut (runtime.encode_texts): the run's truncation, and its windows when
    ``windows`` (prediction under train.chunks; training too under train.chunk_training),
    pooled per text by train.chunk_pool."""
    return {"truncation": cfg.truncation, "head_tokens": cfg.head_tokens, "chunks": windows,
            "stride": cfg.stride, "max_chunks": cfg.max_chunks, "pool": cfg.chunk_pool}


@dataclass
class _Parts:
    """What one fold builds once: the model and everything that steps it."""

    model: nn.Module
    ema: step_.EMA | None
    forward: nn.Module  # the model, DDP-wrapped and compiled when asked
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: nn.Module
    sampler: LengthGroupedBatches
    train_data: DeviceData
    val_data: DeviceData
    val_ds: Encoded
    pad_id: int
    mask: str | None  # how the model takes its padding mask (step.mask_style)
    total: int  # optimizer steps of the whole fold
    warm: int
    nominal_rows: int  # rows per optimizer step the LR is set for (batch_size x grad_accum x processes)
    mean_rows: float  # rows per optimizer step the batches make (token budgets: more for short texts)

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model


@dataclass
class _State:
    """What the loop changes from step to step, and a checkpoint keeps."""

    step: int = 0
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float | None = None
    best_proba: np.ndarray | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch: float = 0.0
    bad_evals: int = 0
    seen: int = 0
    eval_seconds: float = 0.0
    stop: bool = False
    tokens: int = 0  # real (unpadded) tokens trained on, counted on the host from the lengths
    meter: step_.Meter | None = None


class FoldTrainer:
    """Trains one fold. ``fit`` returns a FoldOutput; ``checkpoint_dir`` makes it resumable."""

    def __init__(self, cfg: TrainConfig, n_classes: int, metric: str, fold: int,
                 checkpoint_dir: Path | None = None,
                 before_step: Callable[[nn.Module, int], None] | None = None,
                 on_eval: Callable[[float, float], None] | None = None) -> None:
        self.cfg = cfg
        self.n_classes = n_classes
        self.metric = metric
        self.fold = fold
        self.checkpoint_dir = checkpoint_dir
        self.before_step = before_step
        self.on_eval = on_eval  # (epoch, score) after each evaluation; may raise to stop (pruning)
        self.device = pick_device(cfg)
        self.dtype = pick_dtype(cfg, self.device)
        self.multilabel = False  # set by fit from its data's labels
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def _autocast(self, exact: bool = False) -> Any:
        return autocast(self.device, submission_dtype(self.device, self.dtype) if exact else self.dtype)

    def predict(self, model: nn.Module, ds: Encoded, data: DeviceData, mask: str | None,
                exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Softmax probabilities and logits in the dataset's order; ``exact``: in the test
        prediction's dtype (``submission_dtype``). Batches of ``eval_batch_size`` rows, or
        filled to ``eval_batch_tokens`` tokens."""
        cfg = self.cfg
        batches = eval_batches(ds.lengths, cfg.eval_batch_size, cfg.eval_batch_tokens, cfg.pad_to_multiple_of)
        return step_.predict(model, data, batches, self._autocast(exact), self.n_classes, ds.owner, ds.n_rows,
                             self.multilabel, mask, desc=f"predicting {ds.n_rows} rows", pool=ds.pool)

    # -- the loop -----------------------------------------------------------------------
    def fit(self, data: FoldData, tokenizer: PreTrainedTokenizerBase) -> FoldOutput:
        cfg = self.cfg
        seed_everything(cfg.seed + self.fold)
        train_ds = Encoded.from_texts(tokenizer, data.train_texts, cfg.max_len, data.train_labels, data.train_pairs,
                                      encoding(cfg, cfg.chunks and cfg.chunk_training), soft=data.train_soft)
        p = self._build(data, tokenizer, train_ds)
        st = self._resume(p)
        st.meter = step_.Meter(self.device)
        self._log_header(p, tokenizer, train_ds)
        t0 = time.perf_counter()
        for epoch in range(st.start_epoch, cfg.epochs):
            self._epoch(p, st, data, epoch)
            if self.checkpoint_dir is not None:
                dist_.barrier()
                step_.save_checkpoint(self.checkpoint_dir, epoch, self._checkpoint(p, st, epoch))
                dist_.barrier()
            if st.stop:
                break
        seconds = time.perf_counter() - t0
        final = p.eval_model
        if st.best_state is not None:
            final.load_state_dict(st.best_state)
        test_ds = Encoded.from_texts(tokenizer, data.test_texts, cfg.max_len, pairs=data.test_pairs,
                                     encoding=encoding(cfg, cfg.chunks))
        test_data = DeviceData(test_ds, p.pad_id, self.device, cfg.pad_to_multiple_of)
        test_proba, _ = self.predict(final, test_ds, test_data, p.mask, exact=True)
        train_s = max(seconds - st.eval_seconds, 1e-9)  # training throughput: evaluations are not training work
        return FoldOutput(val_proba=st.best_proba, test_proba=test_proba, history=st.history,
                          best_epoch=st.best_epoch, best_score=float(st.best), optimizer_steps=st.step,
                          seconds=seconds, train_samples_per_s=st.seen / train_s, batch_size=cfg.batch_size,
                          grad_accum=cfg.grad_accum,
                          extra={"model": final, "train_tokens_per_s": st.tokens / train_s,
                                 "train_seconds": train_s, "mean_rows_per_step": p.mean_rows,
                                 "parameters": sum(q.numel() for q in final.parameters())})

    def _build(self, data: FoldData, tokenizer: PreTrainedTokenizerBase, train_ds: Encoded) -> _Parts:
        cfg, device = self.cfg, self.device
        self.multilabel = data.multilabel
        model = load_model(cfg, self.n_classes, self.multilabel).to(device)
        positions = max_positions(model.config)
        if positions is not None and cfg.max_len > positions:
            raise TrainingError(f"train.max_len={cfg.max_len} is longer than {cfg.backbone}'s {positions} positions; "
                                f"lower it (train.chunks=true reads longer texts in windows)")
        use_sdpa(model)
        ema = step_.EMA(model, cfg.ema) if cfg.ema else None
        val_ds = Encoded.from_texts(tokenizer, data.val_texts, cfg.max_len, data.val_labels, data.val_pairs,
                                    encoding(cfg, cfg.chunks))
        pad_id = tokenizer.pad_token_id or 0
        train_data = DeviceData(train_ds, pad_id, device, cfg.pad_to_multiple_of)
        val_data = DeviceData(val_ds, pad_id, device, cfg.pad_to_multiple_of)
        rank, size = dist_.world()
        if size > 1 and cfg.freeze_encoder_epochs:
            raise TrainingError("train.freeze_encoder_epochs cannot change trainable weights under DDP "
                                "(several processes); set it to 0 or train in one process")
        sampler = LengthGroupedBatches(train_ds.lengths, cfg.batch_size, seed=cfg.seed + self.fold,
                                       group=cfg.group_by_length, rank=rank, world=size, max_tokens=cfg.token_budget(),
                                       multiple=cfg.pad_to_multiple_of, max_rows=cfg.token_batch_max_rows())
        rows = step_rows(sampler, cfg.epochs, cfg.grad_accum)
        total = sum(len(r) for r in rows)
        warm = warmup_steps(total, cfg.warmup_ratio, cfg.warmup_steps)
        nominal = cfg.batch_size * cfg.grad_accum * size
        scale = [lr_scale(n, nominal) if cfg.token_budget() else 1.0 for r in rows for n in r]
        optimizer = step_.make_optimizer(model, cfg)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, total, warm, cfg.schedule, cfg.min_lr_ratio) * scale[min(s, total - 1)])
        scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        criterion = step_.make_criterion(cfg, data.train_labels, soft=data.train_soft is not None).to(device)
        set_trainable(model, cfg, 0)  # DDP registers the trainable parameters once, at wrapping
        forward = dist_.wrap(model, device)  # DDP under torchrun / accelerate launch
        # dynamic shapes from the first step: lengths (and, under token budgets, rows) vary batch to batch
        forward = torch.compile(forward, dynamic=True) if cfg.compile else forward
        mean_rows = float(np.mean([n for r in rows for n in r])) if total else 0.0
        return _Parts(model, ema, forward, optimizer, scheduler, scaler, criterion, sampler, train_data, val_data,
                      val_ds, pad_id, step_.mask_style(model), total, warm, nominal, mean_rows)

    def _resume(self, p: _Parts) -> _State:
        st = _State()
        resumed = step_.load_checkpoint(self.checkpoint_dir)
        if resumed is None:
            return st
        p.model.load_state_dict(resumed["model"])
        if p.ema is not None and resumed.get("ema") is not None:
            p.ema.module.load_state_dict(resumed["ema"])
            p.ema.n_averaged = int(resumed["ema_n"])
        p.optimizer.load_state_dict(resumed["optimizer"])
        p.scheduler.load_state_dict(resumed["scheduler"])
        p.scaler.load_state_dict(resumed["scaler"])
        step_.set_rng_state(resumed)
        st.step, st.start_epoch = int(resumed["step"]), int(resumed["epoch"]) + 1
        # the sampler is seeded per epoch: resuming at an epoch start replays its order exactly
        if int(resumed.get("sampler_epoch", st.start_epoch)) != st.start_epoch:
            raise TrainingError(f"{self.checkpoint_dir}: checkpoint's sampler position does not match its "
                                "epoch; delete it to start the fold over")
        st.history, st.best, st.bad_evals = list(resumed["history"]), resumed["best_score"], int(resumed["bad_evals"])
        st.best_epoch = float(resumed["best_epoch"])
        st.best_state = resumed["best"]
        st.best_proba = resumed["best_proba"].numpy() if resumed["best_proba"] is not None else None
        log.info("fold %d: resumed after epoch %d (optimizer step %d)", self.fold, st.start_epoch, st.step)
        return st

    def _checkpoint(self, p: _Parts, st: _State, epoch: int) -> dict[str, Any]:
        ema = p.ema
        return {"model": {k: v.detach().cpu() for k, v in p.model.state_dict().items()},
                "ema": {k: v.detach().cpu() for k, v in ema.module.state_dict().items()} if ema is not None else None,
                "ema_n": int(ema.n_averaged) if ema is not None else 0,
                "best": st.best_state, "optimizer": p.optimizer.state_dict(), "scheduler": p.scheduler.state_dict(),
                "scaler": p.scaler.state_dict(), **step_.rng_state(), "sampler_epoch": epoch + 1, "step": st.step,
                "history": st.history, "best_score": st.best, "best_epoch": st.best_epoch, "bad_evals": st.bad_evals,
                "best_proba": torch.from_numpy(st.best_proba) if st.best_proba is not None else None}

    def _epoch(self, p: _Parts, st: _State, data: FoldData, epoch: int) -> None:
        """One epoch. Nothing in it reads the device but ``_log_train`` (every ``log_every``
        optimizer steps, at the epoch's end and before an evaluation): the loss, the gradient
        norm and the non-finite check are summed on the device by ``st.meter``."""
        cfg = self.cfg
        p.sampler.set_epoch(epoch)
        set_trainable(p.model, cfg, epoch)
        p.model.train()
        batches = p.sampler.batches()
        n_batches = len(batches)
        eval_at = {max(0, round(n_batches * (j + 1) / cfg.evals_per_epoch) - 1) for j in range(cfg.evals_per_epoch)}
        cast = self._autocast()
        for i, batch in enumerate(progress(p.train_data.iterate(batches), n_batches,
                                           f"fold {self.fold} epoch {epoch}", "batches")):
            group_start = (i // cfg.grad_accum) * cfg.grad_accum
            loss = step_.train_step(p.forward, batch, p.criterion, cast, p.scaler,
                                    min(cfg.grad_accum, n_batches - group_start), p.mask)
            st.meter.add_loss(loss, st.step)
            st.seen += batch.rows
            st.tokens += batch.tokens
            if (i + 1) % cfg.grad_accum == 0 or i + 1 == n_batches:
                logging_now = (st.step + 1) % cfg.log_every == 0 or i + 1 == n_batches
                hook = (lambda s=st.step: self.before_step(p.model, s)) if self.before_step else None
                stats = step_.optimizer_step(p.model, p.optimizer, p.scaler, cfg.clip_norm, p.scheduler, hook,
                                             measure=logging_now)
                st.meter.add_step(stats)
                st.step += 1
                if p.ema is not None:
                    p.ema.update_parameters(p.model)
                if logging_now:
                    self._log_train(st, p, epoch + (i + 1) / n_batches, epoch)
            if i in eval_at:
                if st.meter.micro:  # a non-finite loss stops the run before it is evaluated
                    self._log_train(st, p, epoch + (i + 1) / n_batches, epoch)
                self._evaluate(p, st, data, epoch + (i + 1) / n_batches)
                if st.stop:
                    break

    def _log_train(self, st: _State, p: _Parts, at: float, epoch: int) -> None:
        """The doctor's read: the meter's sums since the last read, in one transfer."""
        import json

        m = st.meter.read()
        lr = p.scheduler.get_last_lr()[-1]
        if m["bad_step"] is not None:
            raise TrainingError(f"fold {self.fold}: loss is {m['bad_loss']} at optimizer step {m['bad_step']} "
                                f"(epoch {epoch}, lr {lr:.3g}); lower train.lr or set train.clip_norm")
        ratios = m["update_ratios"]
        st.history.append({"fold": self.fold, "kind": "train", "epoch": at, "step": st.step, "lr": lr,
                           "train_loss": m["train_loss"], "grad_norm": m["grad_norm"],
                           "update_ratio": float(np.median(list(ratios.values()))) if ratios else None,
                           "update_ratio_max": max(ratios.values()) if ratios else None,
                           "update_ratios": json.dumps(ratios)})

    def _evaluate(self, p: _Parts, st: _State, data: FoldData, at: float) -> None:
        """A validation pass: history, pruning callback, best checkpoint, early stopping."""
        cfg = self.cfg
        t_eval = time.perf_counter()
        proba, _ = self.predict(p.eval_model, p.val_ds, p.val_data, p.mask)
        p.model.train()
        ev = step_.evaluate(proba, data.val_labels, self.metric)
        st.history.append(ev.history_row(self.fold, at, st.step, self.multilabel))
        st.eval_seconds += time.perf_counter() - t_eval
        if self.on_eval:
            self.on_eval(at, ev.score)
        improved = better(self.metric, ev.score, st.best)
        log.info("fold %d | epoch %5.2f | step %5d | val_loss %.4f | %s %.4f%s", self.fold, at, st.step,
                 ev.val_loss, self.metric, ev.score, " *" if improved else "")
        if improved:
            st.best, st.best_proba, st.best_epoch, st.bad_evals = ev.score, proba, at, 0
            st.best_state = {k: v.detach().to("cpu", copy=True) for k, v in p.eval_model.state_dict().items()}
            return
        st.bad_evals += 1
        if cfg.patience is not None and st.bad_evals >= cfg.patience:
            log.info("fold %d: early stop after %d evaluations without improvement", self.fold, st.bad_evals)
            st.stop = True

    def _log_header(self, p: _Parts, tokenizer: PreTrainedTokenizerBase, ds: Encoded) -> None:
        cfg = self.cfg
        budget = cfg.token_budget()
        batch = f"batch {cfg.batch_size}" if not budget else \
            f"batches of <= {budget} tokens (mean {p.mean_rows:.1f} rows a step, LR x sqrt(rows / {p.nominal_rows}))"
        log.info("fold %d | %d examples | %s x accum %d = effective %d | %d optimizer steps "
                 "(%d warmup) | lr %.2e (head %s, llrd %.2f) | %s | device %s | dtype %s%s", self.fold, len(ds), batch,
                 cfg.grad_accum, p.nominal_rows, p.total, p.warm, cfg.lr,
                 f"{cfg.head_lr:.2e}" if cfg.head_lr else "same", cfg.llrd, cfg.schedule, self.device,
                 str(self.dtype).replace("torch.", ""), " | compiled" if cfg.compile else "")
        for i in range(min(2, len(ds))):
            y = ds.labels[i]
            log.info("fold %d sample %d (label %s): %s", self.fold, i, [int(v) for v in y] if np.ndim(y) else int(y),
                     tokenizer.decode(ds.input_ids[i])[:200])


def step_rows(sampler: LengthGroupedBatches, epochs: int, grad_accum: int) -> list[list[int]]:
    """Rows per optimizer step (over every process), epoch by epoch: the schedule is laid out
    in steps before the first one, and a token budget makes their number and size vary."""
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        every = sampler.global_batches()
        per_step = grad_accum * sampler.world
        out.append([sum(len(b) for b in every[i:i + per_step]) for i in range(0, len(every), per_step)])
    sampler.set_epoch(0)
    return out


def lr_scale(rows: int, nominal: int) -> float:
    """The LR of a step of ``rows`` rows, as a share of the LR set for ``nominal`` rows: Adam's
    square-root rule (Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient
    Algorithms"; Granziol et al. 2022). Token budgets make short-text steps large."""
    return math.sqrt(max(rows, 1) / max(nominal, 1))


def train_fold_with_oom_retry(cfg: TrainConfig, make_trainer: Callable[[TrainConfig], FoldTrainer],
                              data: FoldData, tokenizer: PreTrainedTokenizerBase) -> FoldOutput:
    """Out of GPU memory: halve the micro-batch, double accumulation (same effective batch), retry."""
    cfg = copy.deepcopy(cfg)
    while True:
        trainer = make_trainer(cfg)
        try:
            return trainer.fit(data, tokenizer)
        except torch.OutOfMemoryError:
            if cfg.batch_size == 1 and (cfg.token_budget() or 0) <= cfg.max_len:
                raise
            torch.cuda.empty_cache()
            if trainer.checkpoint_dir is not None:  # its steps were counted for the old batch size
                shutil.rmtree(trainer.checkpoint_dir, ignore_errors=True)
            # half the micro-batch, twice the accumulation: the same rows per optimizer step and LR
            cfg.batch_size = max(1, cfg.batch_size // 2)
            cfg.batch_tokens = cfg.batch_tokens // 2 if cfg.batch_tokens else None
            cfg.grad_accum *= 2
            log.warning("out of GPU memory: retrying with batch %d%s x accum %d", cfg.batch_size,
                        f" (<= {cfg.token_budget()} tokens)" if cfg.token_budget() else "", cfg.grad_accum)
