"""Throughput probes: what one candidate costs on this machine, at this data's token lengths.

A transformer probe builds the model, times one checkpoint save, then ``steps`` optimizer
steps (after one warm-up step) on real training texts batched the way training batches them
(length-grouped), and two prediction batches. A classical probe fits the model on a
subsample of real rows. An embedding probe times the frozen encoder's forward pass. The
planner (pipeline.budget) extrapolates these to rows x epochs x folds.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.core.config import TrainConfig

if TYPE_CHECKING:
    import torch

    from pipeline.modeling.data import DeviceData

log = logging.getLogger(__name__)
PROBE_ROWS = 2000  # texts a transformer or encoder probe batches (the classical probe fits on all it is given)
# The classical probe fits on as many rows as make this many characters (at least CLASSICAL_MIN_ROWS):
# 4,000 tweets are 0.4M characters, 4,000 essays 14M, and four fits on those took 114 s of a
# 30-minute budget. The rows are a random sample, so a per-row rate read off fewer of them holds.
CLASSICAL_CHARS = 600_000
CLASSICAL_MIN_ROWS = 250


def probe_transformer(tc: TrainConfig, texts: list[str], labels: np.ndarray, n_classes: int, steps: int,
                      max_lens: list[int]) -> dict[str, Any]:
    from safetensors.torch import save_file

    from pipeline.modeling.attention import use_sdpa
    from pipeline.modeling.data import DeviceData, Encoded, LengthGroupedBatches
    from pipeline.modeling.device import autocast, pick_device, pick_dtype, submission_dtype
    from pipeline.modeling.step import mask_style
    from pipeline.modeling.transformer import load_model, load_tokenizer
    from pipeline.runtime import untruncated

    device = pick_device(tc)
    dtype = pick_dtype(tc, device)
    tokenizer = load_tokenizer(tc)
    t0 = time.perf_counter()
    model = load_model(tc, n_classes, np.ndim(labels) == 2).to(device)
    use_sdpa(model)
    with tempfile.TemporaryDirectory() as d:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(Path(d) / "m.st"))
    load_s = time.perf_counter() - t0
    ds = Encoded.from_texts(tokenizer, texts, tc.max_len, labels)
    data = DeviceData(ds, tokenizer.pad_token_id or 0, device, tc.pad_to_multiple_of)
    mask = mask_style(model)
    # An epoch's batches, as training forms them (rows, or filled to train.token_budget()); their
    # padded sizes vary a lot (length-grouped batches of short and long texts), and step time
    # follows the padded tokens. So: time steps at spread quantiles of that size, fit time =
    # a + b * padded tokens, and average the fit over every batch of the epoch (a median of a few
    # random steps underestimates a right-skewed mean).
    every = LengthGroupedBatches(ds.lengths, tc.batch_size, seed=0, group=tc.group_by_length,
                                 max_tokens=tc.token_budget(), multiple=tc.pad_to_multiple_of,
                                 max_rows=tc.token_batch_max_rows()).batches()
    batches = [b for b in every if tc.token_budget() or len(b) == tc.batch_size] or \
        [list(range(min(len(ds), tc.batch_size)))]
    padded = np.array([len(b) * data.width(b) for b in batches])
    order = np.argsort(padded, kind="stable")
    picks = [int(order[min(len(order) - 1, int(q * len(order)))]) for q in np.linspace(0.05, 0.95, steps)]
    sizes, times = _time_steps(tc, model, data, [batches[i] for i in picks], device, dtype, mask)
    a, b = _linear(np.array(sizes, float), np.array(times))
    step_s = float(np.mean(a + b * padded))
    by_len = {str(m): round(float(np.mean(np.minimum(ds.lengths, m))), 3) for m in {tc.max_len, *max_lens}}
    # the texts' whole lengths: how many windows train.chunks reads, what a longer max_len would feed
    full = np.array([len(x) for x in untruncated(tokenizer, texts)])
    by_len.update({str(m): round(float(np.mean(np.minimum(full, m))), 3) for m in max_lens if m > tc.max_len})
    model.eval()
    cast = autocast(device, dtype)
    out = {"step_s": round(step_s, 5),
           "infer_row_s": round(_infer_row_s(model, data, tc, device, cast, mask=mask), 7),
           "load_s": round(load_s, 3),
           "lengths": by_len, "batch_size": tc.batch_size, "max_len": tc.max_len,
           # rows an optimizer step takes: batch_size, or what the token budget fits of these texts
           "rows_per_step": round(len(ds) / max(1, len(every)), 3) if tc.token_budget() else float(tc.batch_size),
           "device": device.type, "steps_timed": len(times), "fit": [round(a, 6), round(b, 9)],
           "max_positions": max_positions(model.config)}
    # windows per text were every text read whole at each max_len (train.chunks): what chunks cost the plan
    chunked = {str(m): round(float(np.mean([n_windows(n, m, tc.stride, tc.max_chunks) for n in full])), 3)
               for m in {tc.max_len, *max_lens}}
    out["chunk_windows"] = chunked
    if tc.chunks:
        out["windows"] = chunked
    if submission_dtype(device, dtype) != dtype:  # the trainer predicts the test rows in another dtype
        exact = autocast(device, submission_dtype(device, dtype))
        out["test_infer_row_s"] = round(_infer_row_s(model, data, tc, device, exact, mask=mask), 7)
    return out


def n_windows(length: int, max_len: int, stride: int, max_chunks: int | None = None) -> int:
    """Windows of ``max_len`` tokens sharing ``stride`` that cover a text of ``length`` tokens
    (at most ``max_chunks``, where set)."""
    if length <= max_len:
        return 1
    n = 2 + (length - max_len - 1) // max(1, max_len - stride)
    return min(max_chunks, n) if max_chunks else n


def max_positions(config: object) -> int | None:
    """The longest input a backbone's position embeddings take (RoBERTa-like models offset
    their positions by the padding index + 1)."""
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        return None
    offset = (int(getattr(config, "pad_token_id", 0) or 0) + 1
              if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "mpnet", "camembert") else 0)
    return int(n) - offset


def _time_steps(tc: TrainConfig, model: torch.nn.Module, data: DeviceData, batches: list[list[int]],
                device: torch.device, dtype: torch.dtype, mask: str | None) -> tuple[list[int], list[float]]:
    """(padded tokens, seconds) of one training step per batch: training's own step
    (pipeline.modeling.step), its optimizer, criterion, autocast, clipping and on-device
    statistics. A first, untimed pass warms each shape's kernels (a fresh process is slow on
    every new padded length; training sees each length hundreds of times); then two timed
    passes, and each batch keeps the faster: steady-state speed, less of a busy neighbour's noise."""
    import torch

    from pipeline.modeling import step as step_
    from pipeline.modeling.device import autocast

    optimizer = step_.make_optimizer(model, tc)
    criterion = step_.make_criterion(tc, data.labels.cpu().numpy() if data.labels is not None else None)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    cast = autocast(device, dtype)
    meter = step_.Meter(device)
    model.train()

    def one(rows: list[int]) -> None:
        batch = next(data.iterate([rows]))
        meter.add_loss(step_.train_step(model, batch, criterion, cast, scaler, 1, mask), 0)
        meter.add_step(step_.optimizer_step(model, optimizer, scaler, tc.clip_norm))

    return _timed(batches, one, data, device)


def _timed(batches: list[list[int]], one: Callable[[list[int]], None], data: DeviceData,
           device: torch.device) -> tuple[list[int], list[float]]:
    """(padded tokens, seconds) of ``one`` step per batch: an untimed pass over every batch
    first, then two timed ones, each batch keeping its faster time."""
    import torch

    sizes, times = [], []
    for j, rows in enumerate([*batches, *batches, *batches]):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        one(rows)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if j >= len(batches):
            sizes.append(len(rows) * data.width(rows))
            times.append(time.perf_counter() - t)
    half = len(batches)
    return sizes[:half], list(np.minimum(times[:half], times[half:]))


def probe_pretrain(tc: TrainConfig, texts: list[str], steps: int) -> dict[str, Any]:
    """Seconds per masked-LM step (train.pretrain_steps) at these texts' lengths, as the build
    batches them (``pretrain.build``: windows of max_len tokens, pretrain_batch_size a step): a
    linear fit in padded tokens of ``steps`` timed steps at spread sizes, averaged over an epoch's
    batches; ``load_s``: the model built and one checkpoint written. A build of N steps then
    costs about load_s + N x mlm_step_s (+ N / 10 checkpoint writes, counted in load_s)."""
    import tempfile

    from safetensors.torch import save_file

    from pipeline.modeling import pretrain
    from pipeline.modeling import step as step_
    from pipeline.modeling.device import autocast, pick_dtype

    t0 = time.perf_counter()
    p = pretrain.build(tc, texts, max(1, steps))
    with tempfile.TemporaryDirectory() as d:
        save_file({k: v.detach().to("cpu", copy=True) for k, v in p.model.state_dict().items()}, str(Path(d) / "m.st"))
    load_s = time.perf_counter() - t0
    every = p.sampler.batches()
    padded = np.array([len(b) * p.data.width(b) for b in every])
    order = np.argsort(padded, kind="stable")
    picks = [every[int(order[min(len(order) - 1, int(q * len(order)))])] for q in np.linspace(0.05, 0.95, steps)]
    device = p.data.device
    cast = autocast(device, pick_dtype(tc, device))
    meter = step_.Meter(device)
    p.model.train()

    def one(rows: list[int]) -> None:
        masked = p.masking.apply(next(p.data.iterate([rows])), pretrain.n_masked(p.maskable, rows, p.masking.share))
        meter.add_loss(step_.train_step(p.forward, masked, p.criterion, cast, p.scaler, 1, p.mask), 0)
        meter.add_step(step_.optimizer_step(p.model, p.optimizer, p.scaler, tc.clip_norm, p.scheduler))

    sizes, times = _timed(picks, one, p.data, device)
    a, b = _linear(np.array(sizes, float), np.array(times))
    return {"mlm_step_s": round(float(np.mean(a + b * padded)), 5), "load_s": round(load_s, 3),
            "windows": p.data.n, "steps_per_epoch": len(every), "batch_size": tc.pretrain_batch_size,
            "max_len": tc.max_len, "steps_timed": len(times), "fit": [round(a, 6), round(b, 9)],
            "device": device.type}


def _infer_row_s(model: torch.nn.Module, data: DeviceData, tc: TrainConfig, device: torch.device,
                 cast: AbstractContextManager[None], warm: bool = True, mask: str | None = None) -> float:
    """Seconds per predicted row, over prediction's length-sorted batches (eval_batch_size rows,
    or filled to eval_batch_tokens): a linear fit in the padded tokens of a few timed batches,
    summed over every batch. ``warm``: each timed shape runs once untimed first (else one small
    batch warms the model up: a base-size encoder's batches of 128 cost seconds each on two cores)."""
    import torch

    from pipeline.modeling.data import eval_batches
    from pipeline.modeling.step import model_inputs

    every = eval_batches(data.lengths, tc.eval_batch_size, tc.eval_batch_tokens, tc.pad_to_multiple_of)
    e_size = np.array([len(b) * data.width(b) for b in every])
    e_order = np.argsort(e_size, kind="stable")
    timed = [int(e_order[int(q * (len(e_order) - 1))]) for q in (0.2, 0.5, 0.8)]
    untimed = [every[int(e_order[int(0.5 * (len(e_order) - 1))])]]
    untimed = [*untimed, *[every[i] for i in timed]] if warm else [untimed[0][:8]]
    rows = sum(len(x) for x in every)
    sizes, secs = [], []
    with torch.inference_mode():
        for j, batch_rows in enumerate([*untimed, *[every[i] for i in timed]]):
            batch = next(data.iterate([batch_rows]))
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            with cast:
                model(**model_inputs(batch, mask))
            if device.type == "cuda":
                torch.cuda.synchronize()
            if j >= len(untimed):
                sizes.append(len(batch_rows) * data.width(batch_rows))
                secs.append(time.perf_counter() - t)
    ea, eb = _linear(np.array(sizes, float), np.array(secs))
    return float(sum(ea + eb * size for size in e_size)) / max(rows, 1)


def _linear(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares time = a + b * x, with b >= 0 (a flat fit when the spread is too small)."""
    if len(x) < 2 or np.ptp(x) == 0:
        return float(np.mean(y)), 0.0
    b, a = np.polyfit(x, y, 1)
    if b < 0:
        return float(np.mean(y)), 0.0
    return float(a), float(b)


def probe_classical(tc: TrainConfig, texts: list[str], labels: np.ndarray, metric: str,
                    columns: list[list[str]] | None = None) -> dict[str, Any]:
    """Seconds per training row, per predicted row, and a fixed cost per fit.

    Three fits on real rows: a small and a large training set with the same rows to predict
    give the training rate (the slope; a rate read off one small fit would carry the fixed
    cost of vectoriser set-up and solver start into every row of a large competition, and two
    sizes close together make a noisy slope: hence the spread), then the small training set
    again with more rows to predict gives the prediction rate, far below the training one
    (a fold predicts its validation rows and the whole test set: 13,000 of 33,000 rows of a
    25k/8k competition). Long documents: the rows are cut to about CLASSICAL_CHARS characters.
    A text pair is fitted on its ``columns`` (the pair features compare them; a similarity-only
    model, train.tfidf_blocks=false, has nothing else to fit)."""
    from pipeline.modeling.base import FoldData
    from pipeline.modeling.classical import fit_classical_fold

    idx = np.random.default_rng(0).permutation(len(texts))
    within = int(np.searchsorted(np.cumsum([len(texts[i]) for i in idx]), CLASSICAL_CHARS, side="right"))
    idx = idx[: max(min(len(idx), CLASSICAL_MIN_ROWS), within)]
    n = len(idx)
    n_pred = min(500, n // 5)
    pred, rest = idx[:n_pred], idx[n_pred:]
    big = len(rest)
    small = max(50, big // 4)

    def fit(size: int, more: int = 0) -> float:
        tr = rest[:size]
        test = np.concatenate([pred, rest[:more]]).astype(int)  # more rows to predict (any will do)
        first, others = (columns[0], columns[1:]) if columns and len(columns) > 1 else (texts, [])
        pairs = {f"{k}_pairs": [[col[i] for i in rows] for col in others] or None
                 for k, rows in (("train", tr), ("val", pred), ("test", test))}
        data = FoldData(train_texts=[first[i] for i in tr], train_labels=labels[tr],
                        val_texts=[first[i] for i in pred], val_labels=labels[pred],
                        test_texts=[first[i] for i in test], **pairs)
        t = time.perf_counter()
        fit_classical_fold(tc, data, metric, 0)
        return time.perf_counter() - t

    fit(min(small, 100))  # warm-up: imports and first-call costs are not the data's
    t_small, t_big = fit(small), fit(big)
    more = big
    t_pred = fit(small, more)
    fit_row = (t_big - t_small) / (big - small) if big > small and t_big > t_small else t_big / max(big, 1)
    pred_row = max(0.0, (t_pred - t_small) / more)
    fixed = max(0.0, t_small - fit_row * small - pred_row * 2 * n_pred)
    return {"fit_row_s": round(fit_row, 8), "pred_row_s": round(pred_row, 8), "fit_fixed_s": round(fixed, 3),
            "points": [[small, round(t_small, 3)], [big, round(t_big, 3)], [small, more, round(t_pred, 3)]]}


def probe_embedding(tc: TrainConfig, texts: list[str]) -> dict[str, Any]:
    """The frozen encoder's seconds per row over every length-sorted batch its pass makes of
    these texts (``_infer_row_s``: a linear fit in the padded tokens of a few timed batches).
    Timing two batches of the first texts read the padding of a broad length range into every
    row: frozen MiniLM was planned at 71 s and ran in 42 s on the disaster tweets."""
    import contextlib

    import torch

    from pipeline.modeling.backbones import resolve_backbone
    from pipeline.modeling.data import DeviceData, Encoded
    from pipeline.modeling.transformer import encoding
    from pipeline.runtime import load_encoder

    t0 = time.perf_counter()
    model, tokenizer = load_encoder(Path(resolve_backbone(tc.backbone)))
    load_s = time.perf_counter() - t0
    ds = Encoded.from_texts(tokenizer, texts, tc.max_len)  # a window costs what a text cut to max_len does
    data = DeviceData(ds, tokenizer.pad_token_id or 0, torch.device("cpu"), None)
    plain = TrainConfig(eval_batch_size=tc.eval_batch_size)  # the encoder's pass batches in rows, unpadded
    infer = _infer_row_s(model, data, plain, torch.device("cpu"), contextlib.nullcontext(), warm=False)
    out = {"infer_row_s": round(infer, 7), "load_s": round(load_s, 3), "max_len": tc.max_len, "fit_row_s": 2e-5}
    # windows per text under train.chunks (each embedded): infer_row_s is then paid per window
    whole = Encoded.from_texts(tokenizer, texts, tc.max_len, encoding=encoding(tc, True)) if texts else ds
    chunked = {str(tc.max_len): round(len(whole) / max(1, whole.n_rows), 3)}
    out["chunk_windows"] = chunked
    if tc.chunks:
        out["windows"] = chunked
    return out


