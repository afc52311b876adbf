"""Continued masked-LM pretraining on the competition's own texts: the encoder a fine-tune starts
from when ``train.pretrain_steps`` > 0.

Task-adaptive pretraining (Gururangan et al. 2020, "Don't Stop Pretraining"): masked-LM steps on
the task's own unlabelled text before fine-tuning. Here the texts are every model input of the
cleaned train and test (each text column, each distinct text once; no labels: the test texts are
given, and a validation fold's texts are seen exactly as the test's are, so CV stays honest).
Long texts are cut into consecutive windows of ``train.max_len`` tokens, so every token is read.

The result is cached in ``data/interim/pretrained/<backbone>-<steps>steps-<tag>/`` by (backbone,
texts digest, steps, the masked-LM settings): every run and fold that asks for the same shares one
copy. It is built in ``<name>.partial/`` with a checkpoint every tenth of the steps (model,
optimizer, schedule, every random state: a killed build resumes where it stopped, bit-identical
on CPU) and renamed into place whole. The folder is an encoder like the backbone's own (config,
weights with the backbone's pooler, tokenizer), plus ``mlm_head.safetensors`` and
``pretrain.json`` (steps, seconds, loss curve).

The sentence-transformers checkpoints (MiniLM, mpnet) ship without a masked-LM head:
``AutoModelForMaskedLM`` gives them a fresh one whose decoder is tied to the word embeddings
(only the small transform, dense + LayerNorm, and a bias are new); it trains at
``HEAD_LR_SCALE`` x the LR (docs/training.md says what that costs in steps).

The loop is the fine-tune's: ``step.train_step`` and ``step.optimizer_step``, with a ``Meter``
read every ``train.log_every`` steps. Masking happens on the device (BERT's 80/10/10: [MASK], a
random token, unchanged), and the number of masked tokens per batch is counted on the host from
the windows' lengths, so the LM head runs on the masked positions only (a fixed count: no
boolean indexing, which would read the device) and nothing in the loop waits for the device.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pipeline.core.config import TrainConfig
from pipeline.core.files import write_json, write_text
from pipeline.core.progress import progress
from pipeline.modeling import distributed as dist_
from pipeline.modeling import step as step_
from pipeline.modeling.backbones import resolve_backbone
from pipeline.modeling.data import Batch, DeviceData, Encoded, LengthGroupedBatches, eval_batches
from pipeline.modeling.device import autocast, pick_device, pick_dtype
from pipeline.modeling.schedule import lr_factor, warmup_steps
from pipeline.modeling.step import TrainingError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)
VERSION = 1  # part of the cache key: a changed recipe builds again
SEED = 1234  # one seed for every run: runs with other train.seed share the copy
HEAD_LR_SCALE = 10.0  # the fresh MLM head's LR, as a multiple of train.pretrain_lr
WARMUP_RATIO = 0.06  # RoBERTa's (Liu et al. 2019) and Gururangan et al.'s warmup; linear decay after
CHECKPOINTS = 10  # resume points over a build
META = "pretrain.json"
_SAID: set[Path] = set()  # copies whose reuse was logged
HEAD = "mlm_head.safetensors"


@dataclass(frozen=True)
class Settings:
    """What a pretrained copy depends on (besides its texts): the cache key."""

    backbone: str
    steps: int
    lr: float
    batch_size: int
    mask: float
    max_len: int

    @classmethod
    def of(cls, tc: TrainConfig) -> Settings:
        return cls(tc.backbone, tc.pretrain_steps, tc.pretrain_lr, tc.pretrain_batch_size, tc.pretrain_mask,
                   tc.max_len)

    def folder(self, cache: Path, texts_digest: str) -> Path:
        source = resolve_backbone(self.backbone)
        tag = hashlib.sha256(json.dumps([source, texts_digest, dataclasses.asdict(self), VERSION, SEED],
                                        sort_keys=True).encode()).hexdigest()[:16]
        name = self.backbone.split(":", 1)[1] if self.backbone.startswith("packaged:") else Path(source).name
        return Path(cache) / f"{name}-{self.steps}steps-{tag}"


def digest(texts: list[str]) -> str:
    """The texts' digest (their order counts: it sets the batches)."""
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()


def find(tc: TrainConfig, texts: list[str], cache: Path) -> Path | None:
    """The finished copy for ``tc`` and these texts, or None."""
    folder = Settings.of(tc).folder(cache, digest(texts))
    return folder if (folder / META).exists() else None


def ensure(tc: TrainConfig, texts: list[str], cache: Path) -> Path:
    """The encoder pretrained on ``texts`` for ``tc.pretrain_steps`` steps: from the cache, else
    built (resumed where a killed build stopped). Under several processes the first builds it and
    the others wait."""
    settings = Settings.of(tc)
    folder = settings.folder(cache, digest(texts))
    if (folder / META).exists():
        if folder not in _SAID:  # once per process, not once per fold
            _SAID.add(folder)
            log.info("pretrain: %s from the cache (%d masked-LM steps on %d texts)", folder.name, settings.steps,
                     len(texts))
        return folder
    if dist_.is_main():
        Pretrainer(tc, texts, folder).run()
    dist_.barrier()
    return folder


# -- the model --------------------------------------------------------------------------------
def _quiet_load(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A ``from_pretrained`` without its load report: the missing MLM head is what we train."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        return fn(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def load_masked_lm(path: str | Path) -> nn.Module:
    """The encoder with its masked-LM head: the checkpoint's own, a pretrained copy's
    (``mlm_head.safetensors``), or a fresh one (seeded) whose decoder is the word embeddings."""
    from transformers import AutoModelForMaskedLM

    torch.manual_seed(SEED)  # the fresh head's initial weights
    model = _quiet_load(AutoModelForMaskedLM.from_pretrained, str(path), dtype=torch.float32)
    head = Path(path) / HEAD
    if head.exists():
        from safetensors.torch import load_file

        missing = set(load_file(str(head))) - set(model.state_dict())
        if missing:
            raise TrainingError(f"{head}: tensors {sorted(missing)[:3]} are not this model's MLM head")
        model.load_state_dict(load_file(str(head)), strict=False)
    if model.get_output_embeddings() is not None and \
            model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        log.warning("pretrain: %s's MLM decoder is not tied to its word embeddings", path)
    return model


class MaskedLM(nn.Module):
    """The forward of a masked-LM step: the encoder over the batch, the LM head on the masked
    positions only (``mlm_positions``, flat indices into batch x length): 15% of the tokens,
    so the vocabulary-sized projection costs a seventh of a full one. Models whose head is not a
    module of hidden states (``cls`` or ``lm_head``) run whole and are gathered after."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.head = next((getattr(model, n) for n in ("cls", "lm_head") if isinstance(getattr(model, n, None),
                                                                                   nn.Module)), None)

    def forward(self, mlm_positions: torch.Tensor, **inputs: torch.Tensor) -> types.SimpleNamespace:
        if self.head is None:
            logits = self.model(**inputs).logits
            return types.SimpleNamespace(logits=logits.flatten(0, 1).index_select(0, mlm_positions))
        hidden = self.model.base_model(**inputs).last_hidden_state
        return types.SimpleNamespace(logits=self.head(hidden.flatten(0, 1).index_select(0, mlm_positions)))


class MaskedLMLoss(nn.Module):
    """Cross-entropy over the masked positions that hold a real token (targets of -100 do not
    count): summed and divided on the device, never read."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = nn.functional.cross_entropy(logits, targets, ignore_index=-100, reduction="sum")
        return total / (targets >= 0).sum().clamp_min(1)


@dataclass
class Masking:
    """What masking a batch needs: the special tokens never masked, [MASK]'s id, the vocabulary
    size (random replacements) and the share of tokens masked."""

    special: torch.Tensor
    mask_id: int
    vocab: int
    share: float

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, vocab: int, share: float, device: torch.device) -> Masking:
        if tokenizer.mask_token_id is None:
            raise TrainingError("train.pretrain_steps: the backbone's tokenizer has no mask token")
        return cls(torch.tensor(sorted(set(tokenizer.all_special_ids)), device=device), int(tokenizer.mask_token_id),
                   int(vocab), share)

    def apply(self, batch: Batch, k: int) -> Batch:
        """The batch with ``k`` of its real tokens chosen at random (uniform scores, top k):
        80% replaced by [MASK], 10% by a random token, 10% left; their originals are the labels
        (-100 where fewer than k real tokens were there to pick)."""
        ids = batch.inputs["input_ids"]
        real = batch.inputs["attention_mask"].bool() & ~torch.isin(ids, self.special)
        scores = torch.rand(ids.shape, device=ids.device).masked_fill(~real, -1.0).flatten()
        picked = scores.topk(k).indices
        valid = scores.index_select(0, picked) >= 0
        flat = ids.flatten()
        original = flat.index_select(0, picked)
        r = torch.rand(k, device=ids.device)
        noise = torch.randint(self.vocab, (k,), device=ids.device)
        new = torch.where(r < 0.8, torch.full_like(original, self.mask_id), torch.where(r < 0.9, noise, original))
        new = torch.where(valid, new, original)
        inputs = {**batch.inputs, "input_ids": flat.index_copy(0, picked, new).view_as(ids), "mlm_positions": picked}
        return dataclasses.replace(batch, inputs=inputs, labels=torch.where(valid, original, -100), padded=True)


def windows(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_len: int) -> tuple[list[list[int]], np.ndarray]:
    """Every text cut into consecutive windows of ``max_len`` tokens (special tokens around each),
    and each window's maskable tokens."""
    from pipeline.runtime import untruncated

    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    body = tokenizer("a", add_special_tokens=False)["input_ids"]
    start = next(i for i in range(len(full)) if full[i:i + len(body)] == body)
    prefix, suffix = full[:start], full[start + len(body):]
    room = max(1, max_len - len(prefix) - len(suffix))
    ids, maskable = [], []
    for tokens in untruncated(tokenizer, texts, add_special_tokens=False):
        for i in range(0, max(1, len(tokens)), room):
            piece = tokens[i:i + room]
            ids.append(prefix + piece + suffix)
            maskable.append(len(piece))
    return ids, np.array(maskable, dtype=np.int64)


def n_masked(maskable: np.ndarray, rows: list[int], share: float) -> int:
    """How many tokens a batch masks: ``share`` of its maskable tokens (at least one), counted
    on the host."""
    return max(1, int(round(share * float(maskable[rows].sum()))))


# -- the build --------------------------------------------------------------------------------
@dataclass
class _Parts:
    model: nn.Module
    forward: MaskedLM
    tokenizer: Any
    data: DeviceData
    maskable: np.ndarray
    masking: Masking
    sampler: LengthGroupedBatches
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    criterion: MaskedLMLoss
    mask: str | None  # how the model takes its padding mask (step.mask_style)


def build(tc: TrainConfig, texts: list[str], steps: int) -> _Parts:
    """The masked-LM model, its windows on the device and everything that steps it (shared by the
    build and the planner's probe)."""
    from transformers import AutoTokenizer

    from pipeline.modeling.attention import use_sdpa

    device = pick_device(tc)
    source = resolve_backbone(tc.backbone)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = load_masked_lm(source).to(device)
    use_sdpa(model)
    ids, maskable = windows(tokenizer, texts, tc.max_len)
    data = DeviceData(Encoded(ids), tokenizer.pad_token_id or 0, device, tc.pad_to_multiple_of)
    opt_cfg = dataclasses.replace(tc, lr=tc.pretrain_lr, head_lr=tc.pretrain_lr * HEAD_LR_SCALE, llrd=1.0)
    optimizer = step_.make_optimizer(model, opt_cfg)
    warm = warmup_steps(steps, WARMUP_RATIO, None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps, warm, "linear"))
    dtype = pick_dtype(tc, device)
    return _Parts(model, MaskedLM(model), tokenizer, data, maskable,
                  Masking.of(tokenizer, model.config.vocab_size, tc.pretrain_mask, device),
                  LengthGroupedBatches(data.lengths, tc.pretrain_batch_size, seed=SEED),
                  optimizer, scheduler, torch.amp.GradScaler(device.type, enabled=dtype == torch.float16),
                  MaskedLMLoss(), step_.mask_style(model))


class Pretrainer:
    """Builds one pretrained copy in ``<folder>.partial/`` and renames it into place."""

    def __init__(self, tc: TrainConfig, texts: list[str], folder: Path) -> None:
        self.tc = tc
        self.texts = texts
        self.folder = Path(folder)
        self.partial = self.folder.with_name(self.folder.name + ".partial")
        self.resume = self.partial / "resume"
        self.device = pick_device(tc)
        self.dtype = pick_dtype(tc, self.device)
        self.steps = tc.pretrain_steps

    def run(self) -> dict[str, Any]:
        from pipeline.modeling.device import seed_everything

        tc = self.tc
        seed_everything(SEED)
        p = build(tc, self.texts, self.steps)
        st = self._resume(p)
        every = max(1, math.ceil(self.steps / CHECKPOINTS))
        log.info("pretrain %s: %d masked-LM steps of %d windows (from %d texts, <= %d tokens) on %s, lr %.1e (head "
                 "x%g), %s of the tokens masked%s", tc.backbone, self.steps, tc.pretrain_batch_size, len(self.texts),
                 tc.max_len, self.device, tc.pretrain_lr, HEAD_LR_SCALE, f"{tc.pretrain_mask:.0%}",
                 f"; resumed at step {st['step']}" if st["step"] else "")
        while st["step"] < self.steps:
            t0 = time.perf_counter()
            self._steps(p, st, min(self.steps, st["step"] + every))
            st["seconds"] += time.perf_counter() - t0
            self._checkpoint(p, st)
        return self._finish(p, st)

    def _steps(self, p: _Parts, st: dict[str, Any], until: int) -> None:
        """Masked-LM steps up to ``until``: nothing here reads the device but the meter, every
        ``train.log_every`` steps."""
        cast = autocast(self.device, self.dtype)
        p.model.train()
        per_epoch = len(p.sampler)
        while st["step"] < until:
            epoch, start = divmod(st["step"], per_epoch)
            p.sampler.set_epoch(epoch)
            batches = p.sampler.batches()[start:start + until - st["step"]]
            desc = f"pretraining: steps {st['step'] + 1}-{st['step'] + len(batches)} of {self.steps}"
            for rows, batch in progress(zip(batches, p.data.iterate(batches)), len(batches), desc, "steps"):
                masked = p.masking.apply(batch, n_masked(p.maskable, rows, p.masking.share))
                loss = step_.train_step(p.forward, masked, p.criterion, cast, p.scaler, 1, p.mask)
                st["meter"].add_loss(loss, st["step"])
                st["meter"].add_step(step_.optimizer_step(p.model, p.optimizer, p.scaler, self.tc.clip_norm,
                                                          p.scheduler))
                st["step"] += 1
                st["tokens"] += batch.tokens
                if st["step"] % self.tc.log_every == 0 or st["step"] == until:
                    self._log(p, st)

    def _log(self, p: _Parts, st: dict[str, Any]) -> None:
        m = st["meter"].read()
        lr = p.scheduler.get_last_lr()[0]
        if m["bad_step"] is not None:
            raise TrainingError(f"pretrain: masked-LM loss is {m['bad_loss']} at step {m['bad_step']} (lr {lr:.3g}); "
                                "lower train.pretrain_lr")
        st["history"].append({"step": st["step"], "lr": lr, "train_loss": m["train_loss"], "grad_norm": m["grad_norm"]})

    def _resume(self, p: _Parts) -> dict[str, Any]:
        st: dict[str, Any] = {"step": 0, "history": [], "seconds": 0.0, "tokens": 0, "meter": step_.Meter(self.device)}
        if not self.partial.exists():
            return st
        state = step_.load_checkpoint(self.resume)
        if state is None:
            return st
        p.model.load_state_dict(state["model"])
        p.optimizer.load_state_dict(state["optimizer"])
        p.scheduler.load_state_dict(state["scheduler"])
        p.scaler.load_state_dict(state["scaler"])
        step_.set_rng_state(state)
        st.update(step=int(state["step"]), history=list(state["history"]), seconds=float(state["seconds"]),
                  tokens=int(state["tokens"]))
        return st

    def _checkpoint(self, p: _Parts, st: dict[str, Any]) -> None:
        # a tied decoder shares the embeddings' storage, which safetensors refuses: each tensor its own copy
        weights = {k: v.detach().to("cpu", copy=True) for k, v in p.model.state_dict().items()}
        step_.save_checkpoint(self.resume, st["step"], {
            "model": weights, "optimizer": p.optimizer.state_dict(), "scheduler": p.scheduler.state_dict(),
            "scaler": p.scaler.state_dict(), **step_.rng_state(), "step": st["step"], "history": st["history"],
            "seconds": st["seconds"], "tokens": st["tokens"]})

    def _finish(self, p: _Parts, st: dict[str, Any]) -> dict[str, Any]:
        """The encoder saved like the backbone (its pooler kept), the head beside it, the
        metadata last; then the folder renamed into place."""
        import pandas as pd
        from safetensors.torch import save_file
        from transformers import AutoModel

        source = resolve_backbone(self.tc.backbone)
        base = _quiet_load(AutoModel.from_pretrained, source, dtype=torch.float32)
        missing, unexpected = base.load_state_dict(p.model.base_model.state_dict(), strict=False)
        if unexpected or any(not k.startswith("pooler.") for k in missing):
            raise TrainingError(f"pretrain: the masked-LM encoder does not fit {source}'s own model "
                                f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        base.save_pretrained(self.partial, safe_serialization=True)
        p.tokenizer.save_pretrained(self.partial)
        tied = p.model.get_input_embeddings().weight
        prefix = p.model.base_model_prefix + "."
        head = {k: v.detach().cpu().contiguous().clone() for k, v in p.model.state_dict().items()
                if not k.startswith(prefix) and v.data_ptr() != tied.data_ptr()}
        save_file(head, str(self.partial / HEAD))
        write_text(self.partial / "history.csv", pd.DataFrame(st["history"]).to_csv(index=False))
        losses = [h["train_loss"] for h in st["history"]]
        meta = {"backbone": self.tc.backbone, "source": source, "settings": dataclasses.asdict(Settings.of(self.tc)),
                "texts": len(self.texts), "texts_digest": digest(self.texts), "windows": p.data.n,
                "steps": st["step"], "seconds": round(st["seconds"], 2),
                "seconds_per_step": round(st["seconds"] / max(st["step"], 1), 4), "tokens": st["tokens"],
                "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                "device": self.device.type, "dtype": str(self.dtype).replace("torch.", ""), "version": VERSION}
        write_json(self.partial / META, meta)
        shutil.rmtree(self.resume, ignore_errors=True)
        if self.folder.exists():  # a copy another process finished meanwhile: the same bytes
            shutil.rmtree(self.partial, ignore_errors=True)
        else:
            os.replace(self.partial, self.folder)
        log.info("pretrain: %d steps in %.0fs (%.3fs a step); masked-LM loss %.3f -> %.3f -> %s", st["step"],
                 st["seconds"], meta["seconds_per_step"], meta["first_loss"] or float("nan"),
                 meta["last_loss"] or float("nan"), self.folder)
        return meta


# -- measuring --------------------------------------------------------------------------------
@torch.inference_mode()
def heldout_loss(model: nn.Module, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_len: int,
                 share: float = 0.15, seed: int = 0, batch_size: int = 64) -> float:
    """The masked-LM loss of ``model`` (an ``AutoModelForMaskedLM``) on ``texts``, each masked
    the same way for every model (``seed``): what pretraining lowers on text it never saw."""
    device = next(model.parameters()).device
    ids, maskable = windows(tokenizer, texts, max_len)
    data = DeviceData(Encoded(ids), tokenizer.pad_token_id or 0, device)
    masking = Masking.of(tokenizer, model.config.vocab_size, share, device)
    forward, style, loss_fn = MaskedLM(model), step_.mask_style(model), MaskedLMLoss()
    model.eval()
    total = torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    batches = eval_batches(data.lengths, batch_size)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for rows, batch in zip(batches, data.iterate(batches)):
            masked = masking.apply(batch, n_masked(maskable, rows, share))
            n = (masked.labels >= 0).sum()
            total += loss_fn(forward(**step_.model_inputs(masked, style)).logits.float(), masked.labels) * n
            count += n
    return float(total / count.clamp_min(1))
