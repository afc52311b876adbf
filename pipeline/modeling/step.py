"""One training step, evaluation and checkpoints, as functions of their own.

``FoldTrainer.fit`` (training), ``probe.probe_transformer`` (the planner's throughput probe)
and the LR range test all call ``train_step`` and ``optimizer_step``, so what the planner
times is the step training takes: the same optimizer (fused AdamW over the same parameter
groups), criterion, autocast, loss scaling and clipping.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.core.config import TrainConfig
from pipeline.core.metrics import confidence, confidence_histogram, score
from pipeline.core.progress import progress
from pipeline.modeling import distributed as dist_
from pipeline.modeling.data import Batch, DeviceData

_LAYER = re.compile(r"\.layers?\.(\d+)\.")


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad checkpoint)."""


# -- the step ---------------------------------------------------------------------------------
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
    groups: dict[tuple[float, float], dict[str, Any]] = {}
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


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over ``param_groups`` (layer-wise LRs, no decay on biases and norms); fused: one
    kernel over all tensors (11 ms vs 132 ms a step for MiniLM on 2 CPU cores)."""
    device = next(model.parameters()).device
    return torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, fused=device.type in ("cuda", "cpu"))


class SmoothedBCE(nn.Module):
    """Multi-label loss: binary cross-entropy per label on the logits, label smoothing as
    y (1 - eps) + eps / 2, an optional ``pos_weight`` per label (rare labels)."""

    def __init__(self, eps: float = 0.0, pos_weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target * (1 - self.eps) + self.eps / 2
        return nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)


def pos_weights(labels: np.ndarray) -> torch.Tensor:
    """negatives / positives per label (a label without positives: 1)."""
    y = np.asarray(labels, dtype=np.float64)
    pos = y.sum(0)
    return torch.tensor(np.where(pos > 0, (len(y) - pos) / np.maximum(pos, 1), 1.0), dtype=torch.float32)


class DistillLoss(nn.Module):
    """Distillation (Hinton et al. 2015): ``(1 - alpha)`` x the labels' loss + ``alpha`` x T^2 x
    the KL divergence from the teacher's probabilities softened by the temperature T to the
    student's (T^2 keeps the soft gradients' scale as T changes). One label column: a softmax
    over the classes, the teacher's softened as softmax(log p / T); multi-label: a Bernoulli per
    label, sigmoid(logit(p) / T). Computed on the device, read by nobody per step."""

    EPS = 1e-6

    def __init__(self, hard: nn.Module, temperature: float, alpha: float, multilabel: bool) -> None:
        super().__init__()
        self.hard = hard
        self.temperature = temperature
        self.alpha = alpha
        self.multilabel = multilabel

    def soft_loss(self, logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        p = teacher.clamp(self.EPS, 1 - self.EPS)
        if self.multilabel:
            q = torch.sigmoid(torch.logit(p) / t)
            z = logits / t
            # KL of Bernoulli(q) from Bernoulli(sigmoid(z)), per label, averaged
            kl = q * (torch.log(q) - nn.functional.logsigmoid(z)) + (1 - q) * (torch.log1p(-q) - nn.functional.logsigmoid(-z))
            return kl.mean()
        q = torch.softmax(torch.log(p) / t, dim=-1)
        return nn.functional.kl_div(nn.functional.log_softmax(logits / t, dim=-1), q, reduction="batchmean")

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        t2 = self.temperature ** 2
        return (1 - self.alpha) * self.hard(logits, labels) + self.alpha * t2 * self.soft_loss(logits, teacher)


def make_criterion(cfg: TrainConfig, labels: np.ndarray | None = None, soft: bool = False) -> nn.Module:
    """Cross-entropy with label smoothing; for multi-label targets (``labels`` (n, L)) the
    smoothed BCE, weighted by ``pos_weights`` under train.pos_weight; with ``soft`` (a teacher's
    probabilities beside the labels) either one inside ``DistillLoss``."""
    multilabel = labels is not None and np.ndim(labels) == 2
    if multilabel:
        hard: nn.Module = SmoothedBCE(cfg.label_smoothing, pos_weights(labels) if cfg.pos_weight else None)
    else:
        hard = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    return DistillLoss(hard, cfg.distill_temperature, cfg.distill_alpha, multilabel) if soft else hard


def mask_style(model: nn.Module) -> str | None:
    """How the model takes its padding mask: None (the 2-d mask), or prepared in 4-d, "bool"
    (SDPA models) or "additive" (eager ones: 0 to attend, float32's minimum to ignore).

    transformers builds these models' masks in ``masking_utils.create_bidirectional_mask``,
    which first asks ``padding_mask.all()`` to drop a mask that masks nothing: a read of the
    device on every forward pass, which a GPU pays by waiting for the host. A prepared 4-d mask
    is taken as it is, and the batch already knows on the host whether it is padded: an SDPA
    model gets no mask at all where it is not (the kernels that take no mask are the fastest).
    Models whose modelling module builds its mask some other way take the 2-d mask, always
    (some read ``input_ids`` for padding when they get none: DeBERTa's
    ``warn_if_padding_and_no_attention_mask``)."""
    import sys

    base = getattr(model, "base_model", model)
    module = sys.modules.get(type(base).__module__)
    if module is None or not hasattr(module, "create_bidirectional_mask"):
        return None
    return "bool" if getattr(model.config, "_attn_implementation", None) == "sdpa" else "additive"


def model_inputs(batch: Batch, style: str | None = None) -> dict[str, torch.Tensor]:
    """What the model's forward takes from a batch: the padding mask as the model wants it."""
    inputs = dict(batch.inputs)
    mask = inputs.get("attention_mask")
    if style == "bool" and not batch.padded:
        inputs.pop("attention_mask", None)
    elif mask is not None and style == "bool":
        inputs["attention_mask"] = mask[:, None, None, :].bool()
    elif mask is not None and style == "additive":
        inputs["attention_mask"] = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
    return inputs


def train_step(forward: nn.Module, batch: Batch, criterion: nn.Module, cast: AbstractContextManager[None],
               scaler: torch.amp.GradScaler, n_in_group: int, mask: str | None = None) -> torch.Tensor:
    """Forward and backward of one micro-batch; returns its (detached) loss, on the device: the
    caller never reads it here (``Meter`` does, every few steps)."""
    with cast:
        logits = forward(**model_inputs(batch, mask)).logits
    if batch.soft is None:
        loss = criterion(logits.float(), batch.labels)
    else:  # distillation: the labels and the teacher's probabilities
        loss = criterion(logits.float(), batch.labels, batch.soft)
    # Divide by the micro-batches in this optimizer step, so the summed gradient is the mean
    # over all of them: the same gradient as one big batch.
    scaler.scale(loss / n_in_group).backward()
    return loss.detach()


@dataclass
class StepStats:
    grad_norm: torch.Tensor  # on the device
    update_ratios: dict[str, torch.Tensor] | None  # per parameter group, on the device, when measured


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   clip_norm: float | None, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
                   before_step: Callable[[], None] | None = None, measure: bool = False) -> StepStats:
    """Unscale, clip by global norm, step (and the schedule), zero the gradients; with
    ``measure``, also each group's ||update|| / ||weights|| (the notes' health check, ~1e-3).
    Nothing here reads the device: the norm and ratios stay tensors (fused AdamW takes
    GradScaler's inf check as a tensor too, so fp16 steps do not wait either)."""
    scaler.unscale_(optimizer)
    params = [p for p in model.parameters() if p.grad is not None]
    grad_norm = nn.utils.get_total_norm([p.grad for p in params], foreach=True)
    if clip_norm:
        nn.utils.clip_grads_with_norm_(params, clip_norm, grad_norm, foreach=True)
    if before_step is not None:
        before_step()
    if measure:
        probes = ratio_probes(optimizer.param_groups)
        before = [p.detach().float().clone() if p is not None else None for p in probes]
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return StepStats(grad_norm, update_ratios(optimizer.param_groups, probes, before) if measure else None)


def ratio_probes(groups: list[dict[str, Any]]) -> list[torch.Tensor | None]:
    """Per parameter group, its largest trainable tensor: the update ratio is measured on it, so
    the snapshot costs a few MB per logged step instead of a copy of the whole model."""
    probes = []
    for g in groups:
        live = [p for p in g["params"] if p.requires_grad]
        probes.append(max(live, key=lambda p: p.numel()) if live else None)
    return probes


def update_ratios(groups: list[dict[str, Any]], probes: list[torch.Tensor | None],
                  before: list[torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """||update|| / ||weights|| per parameter group (on its probe tensor), as device tensors."""
    out = {}
    for i, (g, p, old) in enumerate(zip(groups, probes, before)):
        if p is None or old is None:
            continue
        new = p.detach().float()
        out[g.get("name", str(i))] = (new - old).norm() / new.norm().clamp_min(1e-12)
    return out


class Meter:
    """The tuning doctor's training statistics, summed on the device between reads.

    Per micro-batch the loss, per optimizer step the gradient norm, and the first optimizer step
    whose loss was not finite; ``read`` brings them to the host in one transfer, every
    ``train.log_every`` optimizer steps and before each evaluation: the only host
    synchronisation of the training loop, so a non-finite loss stops a run within that many
    steps."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        zero = torch.zeros((), device=self.device)
        self.loss, self.grad, self.grad_max, self.grad_n = zero.clone(), zero.clone(), zero.clone(), zero.clone()
        self.bad_step = torch.full((), -1.0, device=self.device)
        self.bad_loss = zero.clone()
        self.micro = 0
        self.ratios: dict[str, torch.Tensor] = {}

    def add_loss(self, loss: torch.Tensor, step: int) -> None:
        first = ~torch.isfinite(loss) & (self.bad_step < 0)
        self.bad_step = torch.where(first, float(step), self.bad_step)
        self.bad_loss = torch.where(first, loss, self.bad_loss)
        self.loss += torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0)
        self.micro += 1

    def add_step(self, stats: StepStats) -> None:
        finite = torch.isfinite(stats.grad_norm)  # fp16: a step GradScaler skips has an inf norm
        self.grad += torch.where(finite, stats.grad_norm, 0.0)
        self.grad_n += finite
        self.grad_max = torch.maximum(self.grad_max, torch.where(finite, stats.grad_norm, 0.0))
        if stats.update_ratios:
            self.ratios = stats.update_ratios

    def read(self) -> dict[str, Any]:
        """Means since the last read (one device-to-host transfer), then reset."""
        names = list(self.ratios)
        values = torch.stack([self.loss, self.grad, self.grad_n, self.grad_max, self.bad_step, self.bad_loss,
                              *[self.ratios[n].float() for n in names]]).tolist()
        loss, grad, grad_n, grad_max, bad_step, bad_loss = values[:6]
        out = {"train_loss": loss / max(self.micro, 1), "grad_norm": grad / max(grad_n, 1.0),
               "grad_norm_max": grad_max, "bad_step": int(bad_step) if bad_step >= 0 else None,
               "bad_loss": bad_loss, "update_ratios": dict(zip(names, values[6:]))}
        self.reset()
        return out


class EMA:
    """An exponential moving average of the weights for evaluation, one fused lerp per step
    over every tensor (``AveragedModel.update_parameters`` tests a tensor each step: a host
    read). The first update copies the weights, as ``AveragedModel`` does."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        import copy

        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.decay = decay
        self.n_averaged = 0

    def update_parameters(self, model: nn.Module) -> None:
        mine = list(self.module.parameters())
        theirs = [p.detach() for p in model.parameters()]
        if self.n_averaged == 0:
            torch._foreach_copy_(mine, theirs)
        else:
            torch._foreach_lerp_(mine, theirs, 1.0 - self.decay)
        self.n_averaged += 1


# -- prediction and evaluation ----------------------------------------------------------------
@torch.inference_mode()
def predict(model: nn.Module, data: DeviceData, batches: list[list[int]], cast: AbstractContextManager[None],
            n_out: int, owner: np.ndarray | None = None, n_rows: int | None = None, multilabel: bool = False,
            mask: str | None = None, desc: str | None = None, pool: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (softmax; multi-label: a sigmoid per label) and logits per row in the
    dataset's order (``batches``: length-sorted; a long text's windows pooled in logits by ``pool``);
    the logits stay on the device until the last batch. Under several processes each
    predicts a share and all of them see the whole prediction."""
    from pipeline.runtime import activate, per_row

    model.eval()
    rank, size = dist_.world()
    mine = batches[rank::size]
    logits = torch.zeros((data.n, n_out), dtype=torch.float32, device=data.device)
    desc = desc or f"predicting {n_rows if n_rows is not None else data.n} rows"
    for batch in progress(data.iterate(mine), len(mine), desc, "batches"):
        with cast:
            out = model(**model_inputs(batch, mask)).logits
        logits.index_copy_(0, batch.index, out.float())
    host = logits.cpu()
    if size > 1:
        done = [i for b in mine for i in b]
        for part_rows, part in dist_.gather_objects((done, host[done])):
            host[part_rows] = part
    rows = torch.from_numpy(per_row(host.numpy(), owner, data.n if n_rows is None else n_rows, pool))
    return activate(rows, multilabel).numpy(), rows.numpy()


@dataclass
class Evaluation:
    proba: np.ndarray
    val_loss: float
    score: float

    def history_row(self, fold: int, epoch: float, step: int, multilabel: bool = False) -> dict[str, Any]:
        return {"fold": fold, "kind": "eval", "epoch": epoch, "step": step, "val_loss": self.val_loss,
                "metric": self.score, "confidence": float(confidence(self.proba, multilabel).mean()),
                "conf_hist": json.dumps(confidence_histogram(self.proba, multilabel=multilabel))}


def evaluate(proba: np.ndarray, labels: np.ndarray, metric: str) -> Evaluation:
    """A validation pass's probabilities scored: the loss and the competition metric."""
    return Evaluation(proba, score("logloss", labels, proba), score(metric, labels, proba))


# -- checkpoints ------------------------------------------------------------------------------
WEIGHTS = ("model", "best", "ema")  # state entries stored as safetensors; the rest in state.pt


def save_checkpoint(folder: Path, epoch: int, state: dict[str, Any]) -> None:
    """Weights as safetensors, then ``state.pt`` (optimizer, schedule, RNG, history) last: it
    marks the epoch as complete. One process writes; the others wait at the caller's barrier."""
    from safetensors.torch import save_file

    from pipeline.core.files import atomic_path

    if not dist_.is_main():
        return
    folder.mkdir(parents=True, exist_ok=True)
    for key in WEIGHTS:
        if state.get(key) is not None:
            with atomic_path(folder / f"{key}.safetensors") as tmp:
                save_file({k: v.contiguous() for k, v in state[key].items()}, str(tmp))
    rest = {k: v for k, v in state.items() if k not in WEIGHTS}
    rest["epoch"] = epoch
    with atomic_path(folder / "state.pt") as tmp:
        torch.save(rest, tmp)


def load_checkpoint(folder: Path | None) -> dict[str, Any] | None:
    """The last complete epoch's state, or None; a checkpoint that does not load is an error,
    never a silent start from random weights."""
    from safetensors.torch import load_file

    if folder is None or not (folder / "state.pt").exists():
        return None
    try:
        state = torch.load(folder / "state.pt", weights_only=True)  # never unpickle arbitrary objects
        for key in WEIGHTS:
            f = folder / f"{key}.safetensors"
            state[key] = load_file(str(f)) if f.exists() else None
    except Exception as e:
        raise TrainingError(f"{folder}: checkpoint does not load ({e}); delete it to start the fold over") from e
    return state


def rng_state() -> dict[str, Any]:
    """Every random state a fold draws from, as tensors and numbers (loadable with weights_only)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {"rng": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "rng_numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                          "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
            "rng_python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                           "gauss": py_gauss}}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["rng"])
    if state.get("rng_cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    if state.get("rng_numpy"):
        n = state["rng_numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    if state.get("rng_python"):
        p = state["rng_python"]
        random.setstate((p["version"], tuple(int(x) for x in p["state"].tolist()), p["gauss"]))
