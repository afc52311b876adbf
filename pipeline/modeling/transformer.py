"""Fine-tuning a Hugging Face encoder on one fold: a legible loop, every trick a config field.

AdamW without decay on biases/norms, layer-wise LR decay, warmup + cosine in optimizer
steps, label smoothing, accumulation, mixed precision, clipping, length-grouped batches,
EMA, early stopping, and a per-epoch checkpoint that a killed run resumes from.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.config import TrainConfig
from pipeline.metrics import better, score
from pipeline.modeling import distributed as dist_
from pipeline.modeling.backbones import resolve_backbone
from pipeline.modeling.data import Encoded, LengthGroupedBatches, PadCollator, eval_batches
from pipeline.modeling.schedule import lr_factor, warmup_steps

log = logging.getLogger(__name__)
_LAYER = re.compile(r"\.layers?\.(\d+)\.")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad checkpoint)."""


@dataclass
class FoldData:
    train_texts: list[str]
    train_labels: np.ndarray
    val_texts: list[str]
    val_labels: np.ndarray
    test_texts: list[str]


@dataclass
class FoldOutput:
    val_proba: np.ndarray
    test_proba: np.ndarray
    history: list[dict[str, Any]]
    best_epoch: float
    best_score: float
    optimizer_steps: int
    seconds: float
    train_samples_per_s: float
    batch_size: int
    grad_accum: int
    extra: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def pick_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", dist_.local_rank())
    return torch.device("cpu")


def cpu_has_bf16_tiles() -> bool:
    """Intel AMX bf16 tiles (Sapphire Rapids and later). There bf16 autocast made a training
    step 1.5-1.6x (MiniLM) and 1.8-2.0x (mpnet) faster than float32 on 2 cores, at the same CV
    (BENCHMARKS.md); on CPUs without them bf16 matmuls are emulated, so auto keeps float32."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe and probe())
    except RuntimeError:
        return False


def pick_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    """The autocast dtype; float32 means autocast is off. On CPU: bf16 when asked for, or under
    precision=auto where the CPU has AMX bf16 tiles; fp16 on CPU runs float32 (said in a warning)."""
    if cfg.precision == "fp32":
        return torch.float32
    if device.type != "cuda":
        if cfg.precision == "bf16" or (cfg.precision == "auto" and cpu_has_bf16_tiles()):
            return torch.bfloat16
        if cfg.precision == "fp16":
            log.warning("train.precision=fp16 has no fast path on CPU: training runs in float32 "
                        "(train.precision=bf16 autocasts on CPU)")
        return torch.float32
    if cfg.precision == "fp16":
        return torch.float16
    if cfg.precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype) -> Any:
    """The forward passes' autocast context (off for float32)."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def submission_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype of the submitted test prediction: float32 on CPU even where training
    autocasts, so the offline bundle (float32) and a CPU without bf16 tiles reproduce it."""
    return torch.float32 if device.type == "cpu" else dtype


def load_tokenizer(cfg: TrainConfig) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_backbone(cfg.backbone))


def rng_state() -> dict[str, Any]:
    """Every random state a fold draws from, as tensors and numbers (loadable with weights_only)."""
    import random

    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {"rng": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "rng_numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                          "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
            "rng_python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                           "gauss": py_gauss}}


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(state["rng"])
    if state.get("rng_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    if state.get("rng_numpy"):
        n = state["rng_numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if state.get("rng_python"):
        p = state["rng_python"]
        random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))


def load_model(cfg: TrainConfig, n_classes: int) -> nn.Module:
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve_backbone(cfg.backbone)
    config = AutoConfig.from_pretrained(path, num_labels=n_classes)
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
        return AutoModelForSequenceClassification.from_pretrained(path, config=config)
    finally:
        hf_logging.set_verbosity(verbosity)


def layer_depth(name: str, n_layers: int) -> int:
    """0 = embeddings, 1..n = encoder layers, n + 1 = head (pooler, classifier)."""
    if "embeddings" in name:
        return 0
    m = _LAYER.search(name)
    if m:
        return int(m.group(1)) + 1
    if ".encoder." in f".{name}":  # shared by every layer (MPNet's relative_attention_bias): the lowest layer's LR
        return 1
    return n_layers + 1


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: layer-wise LR decay from the top layer down, a head LR, and no weight
    decay on biases and norm weights (1-d tensors), where decay only shrinks the scale."""
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        depth = layer_depth(name, n_layers)
        if depth > n_layers:
            lr = cfg.head_lr if cfg.head_lr is not None else cfg.lr
        else:
            lr = cfg.lr * cfg.llrd ** (n_layers - depth)
        wd = 0.0 if p.ndim == 1 else cfg.weight_decay
        part = "embeddings" if depth == 0 else ("head" if depth > n_layers else f"layer{depth - 1}")
        groups.setdefault((lr, wd), {"names": set(), "params": []})
        groups[(lr, wd)]["names"].add(part)
        groups[(lr, wd)]["params"].append(p)
    return [{"params": g["params"], "lr": lr, "weight_decay": wd,
             "name": "+".join(sorted(g["names"])) + ("" if wd else " (no decay)")}
            for (lr, wd), g in groups.items()]


def ratio_probes(groups: list[dict[str, Any]]) -> list[torch.Tensor | None]:
    """Per parameter group, its largest trainable tensor: the update ratio is measured on it, so
    the snapshot costs a few MB per logged step instead of a copy of the whole model."""
    probes = []
    for g in groups:
        live = [p for p in g["params"] if p.requires_grad]
        probes.append(max(live, key=lambda p: p.numel()) if live else None)
    return probes


def update_ratios(groups: list[dict[str, Any]], probes: list[torch.Tensor | None],
                  before: list[torch.Tensor | None]) -> dict[str, float]:
    """||update|| / ||weights|| per parameter group (on its probe tensor): the notes' health check (~1e-3)."""
    out = {}
    for i, (g, p, old) in enumerate(zip(groups, probes, before)):
        if p is None or old is None:
            continue
        new = p.detach().float()
        out[g.get("name", str(i))] = float((new - old).norm() / new.norm().clamp_min(1e-12))
    return out


def confidence_histogram(proba: np.ndarray, bins: int = 10) -> list[int]:
    """Counts of the predicted-class probability in equal bins from chance (1/k) to 1."""
    k = proba.shape[1]
    return np.histogram(proba.max(1), bins=bins, range=(1 / k, 1.0))[0].tolist()


def set_trainable(model: nn.Module, cfg: TrainConfig, epoch: int) -> None:
    """Freezing: embeddings, the lowest N layers, or the whole encoder for the first epochs."""
    n_layers = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    head_only = epoch < cfg.freeze_encoder_epochs
    for name, p in model.named_parameters():
        depth = layer_depth(name, n_layers)
        frozen = (head_only and depth <= n_layers) or (cfg.freeze_embeddings and depth == 0) or \
                 (1 <= depth <= cfg.freeze_layers)
        p.requires_grad_(not frozen)


def _tqdm(iterable: Any, **kw: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, disable=not sys.stderr.isatty(), leave=False, **kw)


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
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    # -- pieces -------------------------------------------------------------------------
    def _autocast(self, exact: bool = False) -> Any:
        return autocast(self.device, submission_dtype(self.device, self.dtype) if exact else self.dtype)

    def _loader(self, ds: Encoded, sampler: Any, collate: PadCollator) -> torch.utils.data.DataLoader:
        cuda = self.device.type == "cuda"
        return torch.utils.data.DataLoader(ds, batch_sampler=sampler, collate_fn=collate,
                                           num_workers=self.cfg.num_workers if cuda else 0, pin_memory=cuda)

    @torch.inference_mode()
    def predict(self, model: nn.Module, ds: Encoded, collate: PadCollator,
                exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Softmax probabilities and logits in the dataset's order (batched by length); ``exact``:
        in the test prediction's dtype (``submission_dtype``)."""
        model.eval()
        rank, size = dist_.world()
        batches = eval_batches(ds.lengths, self.cfg.eval_batch_size)[rank::size]  # each process a share
        loader = self._loader(ds, batches, collate)
        logits = torch.empty((len(ds), self.n_classes), dtype=torch.float32)
        for idx, batch in zip(batches, loader):
            with self._autocast(exact):
                out = model(input_ids=batch["input_ids"].to(self.device, non_blocking=True),
                            attention_mask=batch["attention_mask"].to(self.device, non_blocking=True)).logits
            logits[idx] = out.float().cpu()
        if size > 1:  # gather every process's rows: all of them see the whole prediction
            for part_batches, part in dist_.gather_objects(([i for b in batches for i in b],
                                                            logits[[i for b in batches for i in b]])):
                logits[part_batches] = part
        return torch.softmax(logits, -1).numpy(), logits.numpy()

    def _save_state(self, epoch: int, state: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        from pipeline.io import atomic_path

        if not dist_.is_main():  # one writer; the others wait at the barrier after the save
            return
        d = self.checkpoint_dir
        d.mkdir(parents=True, exist_ok=True)
        for key in ("model", "best", "ema"):
            if state.get(key) is not None:
                with atomic_path(d / f"{key}.safetensors") as tmp:
                    save_file({k: v.contiguous() for k, v in state[key].items()}, str(tmp))
        rest = {k: v for k, v in state.items() if k not in ("model", "best", "ema")}
        rest["epoch"] = epoch
        with atomic_path(d / "state.pt") as tmp:  # written last: it marks the epoch as complete
            torch.save(rest, tmp)

    def _load_state(self) -> dict[str, Any] | None:
        from safetensors.torch import load_file

        d = self.checkpoint_dir
        if d is None or not (d / "state.pt").exists():
            return None
        try:
            state = torch.load(d / "state.pt", weights_only=True)  # never unpickle arbitrary objects
            for key in ("model", "best", "ema"):
                f = d / f"{key}.safetensors"
                state[key] = load_file(str(f)) if f.exists() else None
        except Exception as e:
            raise TrainingError(f"{d}: checkpoint does not load ({e}); delete it to start the fold over") from e
        return state

    # -- the loop -----------------------------------------------------------------------
    def fit(self, data: FoldData, tokenizer: Any) -> FoldOutput:  # noqa: C901 - the one long loop
        cfg, device = self.cfg, self.device
        seed_everything(cfg.seed + self.fold)
        model = load_model(cfg, self.n_classes).to(device)
        ema = None
        if cfg.ema:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))
        train_ds = Encoded.from_texts(tokenizer, data.train_texts, cfg.max_len, data.train_labels)
        val_ds = Encoded.from_texts(tokenizer, data.val_texts, cfg.max_len, data.val_labels)
        collate = PadCollator(tokenizer.pad_token_id or 0, cfg.pad_to_multiple_of)
        rank, size = dist_.world()
        if size > 1 and cfg.freeze_encoder_epochs:
            raise TrainingError("train.freeze_encoder_epochs cannot change trainable weights under DDP "
                                "(several processes); set it to 0 or train in one process")
        sampler = LengthGroupedBatches(train_ds.lengths, cfg.batch_size, seed=cfg.seed + self.fold,
                                       group=cfg.group_by_length, rank=rank, world=size)
        loader = self._loader(train_ds, sampler, collate)
        n_batches = len(sampler)
        steps_per_epoch = math.ceil(n_batches / cfg.grad_accum)
        total = steps_per_epoch * cfg.epochs
        warm = warmup_steps(total, cfg.warmup_ratio, cfg.warmup_steps)
        # fused AdamW: one kernel over all tensors (11 ms vs 132 ms a step for MiniLM on 2 CPU cores)
        optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, fused=device.type in ("cuda", "cpu"))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, total, warm, cfg.schedule, cfg.min_lr_ratio))
        scaler = torch.amp.GradScaler(device.type, enabled=self.dtype == torch.float16)
        criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        set_trainable(model, cfg, 0)  # DDP registers the trainable parameters once, at wrapping
        forward = dist_.wrap(model, device)  # DDP under torchrun / accelerate launch
        forward = torch.compile(forward) if cfg.compile else forward
        eval_at = sorted({max(0, round(n_batches * (j + 1) / cfg.evals_per_epoch) - 1)
                          for j in range(cfg.evals_per_epoch)})

        history: list[dict[str, Any]] = []
        step, start_epoch, best, best_proba, best_state, bad_evals = 0, 0, None, None, None, 0
        best_epoch = 0.0
        resumed = self._load_state()
        if resumed is not None:
            model.load_state_dict(resumed["model"])
            if ema is not None and resumed.get("ema") is not None:
                ema.module.load_state_dict(resumed["ema"])
                ema.n_averaged.fill_(int(resumed["ema_n"]))
            optimizer.load_state_dict(resumed["optimizer"])
            scheduler.load_state_dict(resumed["scheduler"])
            scaler.load_state_dict(resumed["scaler"])
            set_rng_state(resumed)
            step, start_epoch = int(resumed["step"]), int(resumed["epoch"]) + 1
            # the sampler is seeded per epoch: resuming at an epoch start replays its order exactly
            if int(resumed.get("sampler_epoch", start_epoch)) != start_epoch:
                raise TrainingError(f"{self.checkpoint_dir}: checkpoint's sampler position does not match its "
                                    "epoch; delete it to start the fold over")
            history, best, bad_evals = list(resumed["history"]), resumed["best_score"], int(resumed["bad_evals"])
            best_epoch = float(resumed["best_epoch"])
            best_state = resumed["best"]
            best_proba = resumed["best_proba"].numpy() if resumed["best_proba"] is not None else None
            log.info("fold %d: resumed after epoch %d (optimizer step %d)", self.fold, start_epoch, step)

        self._log_header(len(train_ds), n_batches, total, warm, tokenizer, train_ds)
        check_every_step = device.type != "cuda"  # a host sync per step is free on CPU, not on GPU
        t0, seen, stop, eval_seconds = time.perf_counter(), 0, False, 0.0
        tokens = torch.zeros((), dtype=torch.long, device=device)  # real (unpadded) tokens, summed on device
        for epoch in range(start_epoch, cfg.epochs):
            sampler.set_epoch(epoch)
            set_trainable(model, cfg, epoch)
            model.train()
            run_loss, run_n = torch.zeros((), device=device), 0
            for i, batch in enumerate(_tqdm(loader, total=n_batches, desc=f"fold {self.fold} epoch {epoch}")):
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                group_start = (i // cfg.grad_accum) * cfg.grad_accum
                n_in_group = min(cfg.grad_accum, n_batches - group_start)
                with self._autocast():
                    logits = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss = criterion(logits.float(), batch["labels"])
                if check_every_step and not torch.isfinite(loss):
                    self._nonfinite(loss, step, epoch, scheduler)
                # Divide by the micro-batches in this optimizer step, so the summed gradient is the
                # mean over all of them: the same gradient as one big batch.
                scaler.scale(loss / n_in_group).backward()
                run_loss += loss.detach()
                run_n += 1
                seen += len(batch["labels"])
                tokens += batch["attention_mask"].sum()
                if (i + 1) % cfg.grad_accum == 0 or i + 1 == n_batches:
                    scaler.unscale_(optimizer)
                    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm or float("inf"))
                    if self.before_step:
                        self.before_step(model, step)
                    logging_now = (step + 1) % cfg.log_every == 0 or i + 1 == n_batches
                    if logging_now:
                        probes = ratio_probes(optimizer.param_groups)
                        before = [p.detach().float().clone() if p is not None else None for p in probes]
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    step += 1
                    if ema is not None:
                        ema.update_parameters(model)
                    if logging_now:
                        avg = (run_loss / max(run_n, 1)).item()
                        if not math.isfinite(avg):
                            self._nonfinite(avg, step, epoch, scheduler)
                        ratios = update_ratios(optimizer.param_groups, probes, before)
                        history.append({"fold": self.fold, "kind": "train", "epoch": epoch + (i + 1) / n_batches,
                                        "step": step, "lr": scheduler.get_last_lr()[-1], "train_loss": avg,
                                        "grad_norm": float(grad_norm),
                                        "update_ratio": float(np.median(list(ratios.values()))) if ratios else None,
                                        "update_ratio_max": max(ratios.values()) if ratios else None,
                                        "update_ratios": json.dumps(ratios)})
                        run_loss, run_n = torch.zeros((), device=device), 0
                if i in eval_at:
                    t_eval = time.perf_counter()
                    eval_model = ema.module if ema is not None else model
                    proba, _ = self.predict(eval_model, val_ds, collate)
                    model.train()
                    val_loss = score("logloss", data.val_labels, proba)
                    val_score = score(self.metric, data.val_labels, proba)
                    ep = epoch + (i + 1) / n_batches
                    history.append({"fold": self.fold, "kind": "eval", "epoch": ep, "step": step,
                                    "val_loss": val_loss, "metric": val_score,
                                    "confidence": float(proba.max(1).mean()),
                                    "conf_hist": json.dumps(confidence_histogram(proba))})
                    eval_seconds += time.perf_counter() - t_eval
                    if self.on_eval:
                        self.on_eval(ep, val_score)
                    improved = better(self.metric, val_score, best)
                    log.info("fold %d | epoch %5.2f | step %5d | val_loss %.4f | %s %.4f%s", self.fold, ep, step,
                             val_loss, self.metric, val_score, " *" if improved else "")
                    if improved:
                        best, best_proba, best_epoch, bad_evals = val_score, proba, ep, 0
                        best_state = {k: v.detach().to("cpu", copy=True) for k, v in eval_model.state_dict().items()}
                    else:
                        bad_evals += 1
                        if cfg.patience is not None and bad_evals >= cfg.patience:
                            log.info("fold %d: early stop after %d evaluations without improvement", self.fold,
                                     bad_evals)
                            stop = True
                            break
            if self.checkpoint_dir is not None:
                dist_.barrier()
                self._save_state(epoch, {
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "ema": ({k: v.detach().cpu() for k, v in ema.module.state_dict().items()}
                            if ema is not None else None),
                    "ema_n": int(ema.n_averaged) if ema is not None else 0,
                    "best": best_state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(), **rng_state(), "sampler_epoch": epoch + 1, "step": step,
                    "history": history, "best_score": best, "best_epoch": best_epoch, "bad_evals": bad_evals,
                    "best_proba": torch.from_numpy(best_proba) if best_proba is not None else None})
                dist_.barrier()
            if stop:
                break
        seconds = time.perf_counter() - t0
        final = ema.module if ema is not None else model
        if best_state is not None:
            final.load_state_dict(best_state)
        test_ds = Encoded.from_texts(tokenizer, data.test_texts, cfg.max_len)
        test_proba, _ = self.predict(final, test_ds, collate, exact=True)
        return FoldOutput(val_proba=best_proba, test_proba=test_proba, history=history, best_epoch=best_epoch,
                          best_score=float(best), optimizer_steps=step, seconds=seconds,
                          # training throughput: evaluation passes are not training work
                          train_samples_per_s=seen / max(seconds - eval_seconds, 1e-9),
                          batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                          extra={"model": final, "train_tokens_per_s": float(tokens) / max(seconds - eval_seconds, 1e-9),
                                 "parameters": sum(p.numel() for p in final.parameters())})

    def _nonfinite(self, loss: Any, step: int, epoch: int, scheduler: Any) -> None:
        raise TrainingError(f"fold {self.fold}: loss is {float(torch.as_tensor(loss).detach())} at optimizer step {step} (epoch {epoch}, "
                            f"lr {scheduler.get_last_lr()[-1]:.3g}); lower train.lr or set train.clip_norm")

    def _log_header(self, n: int, n_batches: int, total: int, warm: int, tokenizer: Any, ds: Encoded) -> None:
        cfg = self.cfg
        log.info("fold %d | %d examples | batch %d x accum %d = effective %d | %d optimizer steps "
                 "(%d warmup) | lr %.2e (head %s, llrd %.2f) | %s | device %s | dtype %s", self.fold, n,
                 cfg.batch_size, cfg.grad_accum, cfg.batch_size * cfg.grad_accum, total, warm, cfg.lr,
                 f"{cfg.head_lr:.2e}" if cfg.head_lr else "same", cfg.llrd, cfg.schedule, self.device,
                 str(self.dtype).replace("torch.", ""))
        for i in range(min(2, len(ds))):
            log.info("fold %d sample %d (label %d): %s", self.fold, i, int(ds.labels[i]),
                     tokenizer.decode(ds.input_ids[i])[:200])


def train_fold_with_oom_retry(cfg: TrainConfig, make_trainer: Callable[[TrainConfig], FoldTrainer],
                              data: FoldData, tokenizer: Any) -> FoldOutput:
    """Out of GPU memory: halve the micro-batch, double accumulation (same effective batch), retry."""
    cfg = copy.deepcopy(cfg)
    while True:
        trainer = make_trainer(cfg)
        try:
            return trainer.fit(data, tokenizer)
        except torch.OutOfMemoryError:
            if cfg.batch_size == 1:
                raise
            torch.cuda.empty_cache()
            if trainer.checkpoint_dir is not None:  # its steps were counted for the old batch size
                shutil.rmtree(trainer.checkpoint_dir, ignore_errors=True)
            cfg.batch_size //= 2
            cfg.grad_accum *= 2
            log.warning("out of GPU memory: retrying with batch %d x accum %d", cfg.batch_size, cfg.grad_accum)
