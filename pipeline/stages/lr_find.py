"""lr-find: the learning-rate range test (Smith 2015) for the configured transformer.

Usage: python -m pipeline lr-find [--config configs/exp/minilm.yaml] [--steps 100 --start-lr 1e-7 --end-lr 1]
Reads:  clean data, folds.csv (fold 0's training rows)
Writes: reports/lr_find.png (loss vs LR, suggestion marked), reports/lr_find.json

The LR grows exponentially every optimizer step from --start-lr to --end-lr while the loss
is recorded (smoothed); the sweep stops once the loss has blown up. The suggestion is the
LR where the smoothed loss falls fastest, a point well below the divergence cliff.
"""

from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.config import Config
from pipeline.core.files import DataError, save_figure, write_json
from pipeline.core.paths import Paths

log = logging.getLogger(__name__)


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]
    suggested_lr: float
    min_loss_lr: float


def suggest_lr(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[float, float]:
    """(steepest-descent LR, LR at the minimum loss) of a smoothed loss curve."""
    lrs, smoothed = np.asarray(lrs), np.asarray(smoothed)
    i_min = int(np.argmin(smoothed))
    head = slice(0, max(i_min, 2))
    grads = np.gradient(smoothed[head], np.log10(lrs[head]))
    return float(lrs[head][int(np.argmin(grads))]), float(lrs[i_min])


def sweep(cfg: Config, texts: list[str], labels: np.ndarray, n_classes: int, steps: int, start_lr: float,
          end_lr: float, beta: float = 0.9) -> LRFindResult:
    """The range test with training's own step (pipeline.modeling.step): its optimizer, its
    parameter groups, autocast, clipping."""
    from pipeline.modeling import step as step_
    from pipeline.modeling.data import DeviceData, Encoded, LengthGroupedBatches
    from pipeline.modeling.device import autocast, pick_device, pick_dtype, seed_everything
    from pipeline.modeling.transformer import load_model, load_tokenizer

    tc = cfg.train
    seed_everything(tc.seed)
    device = pick_device(tc)
    dtype = pick_dtype(tc, device)
    tokenizer = load_tokenizer(tc)
    model = load_model(tc, n_classes, np.ndim(labels) == 2).to(device).train()
    optimizer = step_.make_optimizer(model, tc)
    ratios = [g["lr"] / tc.lr for g in optimizer.param_groups]  # keep the layer-wise shape of the LRs
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    criterion = step_.make_criterion(tc, labels)
    ds = Encoded.from_texts(tokenizer, texts, tc.max_len, labels)
    sampler = LengthGroupedBatches(ds.lengths, tc.batch_size, seed=tc.seed, group=tc.group_by_length,
                                   max_tokens=tc.token_budget(), multiple=tc.pad_to_multiple_of,
                                   max_rows=tc.token_batch_max_rows())
    data = DeviceData(ds, tokenizer.pad_token_id or 0, device, tc.pad_to_multiple_of)
    mask = step_.mask_style(model)
    mult = (end_lr / start_lr) ** (1 / max(1, steps - 1))
    lrs, losses, avg, best = [], [], 0.0, math.inf
    epoch, it = 0, data.iterate(sampler.batches())
    for step in range(steps):
        try:
            batch = next(it)
        except StopIteration:
            epoch += 1
            sampler.set_epoch(epoch)
            it = data.iterate(sampler.batches())
            batch = next(it)
        lr = start_lr * mult ** step
        for g, r in zip(optimizer.param_groups, ratios):
            g["lr"] = lr * r
        # the range test reads each step's loss (it stops on divergence): a sync per step is its job
        value = step_.train_step(model, batch, criterion, autocast(device, dtype), scaler, 1, mask).item()
        step_.optimizer_step(model, optimizer, scaler, tc.clip_norm)
        avg = beta * avg + (1 - beta) * value
        smooth = avg / (1 - beta ** (step + 1))  # bias-corrected EMA
        if not math.isfinite(smooth) or (step > 10 and smooth > 4 * best):
            break  # diverged: the rest of the curve says nothing
        best = min(best, smooth)
        lrs.append(lr)
        losses.append(smooth)
    if len(lrs) < 5:
        raise DataError("lr-find: the loss diverged within 5 steps; lower --start-lr")
    suggested, at_min = suggest_lr(np.array(lrs), np.array(losses))
    return LRFindResult(lrs=lrs, losses=losses, suggested_lr=suggested, min_loss_lr=at_min)


def run(cfg: Config, paths: Paths, force: bool = False, steps: int = 100, start_lr: float = 1e-7,
        end_lr: float = 1.0) -> LRFindResult:
    from pipeline.core.contract import labels_of
    from pipeline.cv.data import fold_rows, load_training_data
    from pipeline.modeling.families import family

    if not family(cfg.train.family).epoch_trained:
        raise DataError(f"lr-find needs a family trained with a learning rate (train.family=transformer), "
                        f"not {cfg.train.family!r}")
    td = load_training_data(cfg, paths)
    rows, _ = fold_rows(td, 0, cfg.train.max_train_rows, cfg.train.seed)
    res = sweep(cfg, rows["input"].tolist(), labels_of(rows), td.schema.n_classes, steps, start_lr, end_lr)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(res.lrs, res.losses)
    ax.axvline(res.suggested_lr, color="r", ls="--", label=f"suggested {res.suggested_lr:.2e}")
    ax.axvline(res.min_loss_lr, color="gray", ls=":", label=f"min loss {res.min_loss_lr:.2e}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed training loss",
           title=f"LR range test: {cfg.train.run}")
    ax.legend()
    save_figure(paths.lr_find_png, fig)
    write_json(paths.lr_find_json, {"run": cfg.train.run, "suggested_lr": res.suggested_lr,
                                                 "min_loss_lr": res.min_loss_lr, "lrs": res.lrs,
                                                 "losses": res.losses})
    log.info("lr-find %s: suggested lr %.2e (steepest descent); min loss at %.2e -> %s", cfg.train.run,
             res.suggested_lr, res.min_loss_lr, paths.lr_find_png)
    return res


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps in the sweep")
    parser.add_argument("--start-lr", type=float, default=1e-7)
    parser.add_argument("--end-lr", type=float, default=1.0)


def main(argv: list[str] | None = None) -> int:
    from pipeline.cli import stage_main

    return stage_main("lr-find", __doc__, run, argv, _args)


if __name__ == "__main__":
    raise SystemExit(main())
