"""What the missing masked-LM head of a sentence-transformers checkpoint costs, in steps.

MiniLM and mpnet ship without an MLM head; pretraining (train.pretrain_steps) starts them from a
fresh one whose decoder is tied to the word embeddings (pipeline.modeling.pretrain). This measures
the masked-LM loss on held-out competition texts (test.csv rows, never trained on; each masked the
same way) every --every steps of the build's own step (pretrain.build: windows, masking, AdamW,
linear schedule) for:

- full:      the whole model, the fresh head at HEAD_LR_SCALE x the LR (what pretraining does);
- head_1x:   the same with the head at the encoder's LR (what the 10x buys);
- head_only: the encoder frozen, only the head learns: its plateau is what a head can do on the
             encoder as shipped, and the steps it takes to get within 5% of it are the head's cost
             (steps that adapt the head, not the encoder);
- with --reference-steps N (a checkpoint that has a head: the tiny test BERT, or any model
  pretrained here first): the same encoder with its trained head against a re-drawn one, and the
  steps the re-drawn head takes to reach the trained head's starting loss.

    python benchmarks/mlm_head.py --backbone packaged:minilm --data ../shared/data/nlp-getting-started --steps 300
    python benchmarks/mlm_head.py --tiny --steps 300 --reference-steps 300

Prints a JSON document (the curves and the steps-to-plateau), appended to --out when given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def curve(tc, train: list[str], held: list[str], steps: int, every: int, mode: str, start: Path | None = None) -> dict:

    from pipeline.modeling import pretrain
    from pipeline.modeling import step as step_
    from pipeline.modeling.device import autocast, pick_dtype, seed_everything

    seed_everything(pretrain.SEED)
    scale = 1.0 if mode == "head_1x" else pretrain.HEAD_LR_SCALE
    old = pretrain.HEAD_LR_SCALE
    pretrain.HEAD_LR_SCALE = scale
    try:
        p = pretrain.build(dataclasses.replace(tc, backbone=str(start) if start else tc.backbone), train, steps)
    finally:
        pretrain.HEAD_LR_SCALE = old
    if mode == "head_only":
        prefix = p.model.base_model_prefix + "."
        for name, q in p.model.named_parameters():
            q.requires_grad_(not name.startswith(prefix))
    cast = autocast(p.data.device, pick_dtype(tc, p.data.device))
    meter = step_.Meter(p.data.device)
    points, t0, step = [], time.perf_counter(), 0
    points.append({"step": 0, "heldout": round(pretrain.heldout_loss(p.model, p.tokenizer, held, tc.max_len), 4)})
    per_epoch = len(p.sampler)
    while step < steps:
        p.sampler.set_epoch(step // per_epoch)
        for rows in p.sampler.batches()[step % per_epoch:]:
            p.model.train()
            batch = next(p.data.iterate([rows]))
            masked = p.masking.apply(batch, pretrain.n_masked(p.maskable, rows, p.masking.share))
            meter.add_loss(step_.train_step(p.forward, masked, p.criterion, cast, p.scaler, 1, p.mask), step)
            meter.add_step(step_.optimizer_step(p.model, p.optimizer, p.scaler, tc.clip_norm, p.scheduler))
            step += 1
            if step % every == 0 or step == steps:
                points.append({"step": step, "heldout": round(pretrain.heldout_loss(p.model, p.tokenizer, held,
                                                                                     tc.max_len), 4),
                               "train": round(meter.read()["train_loss"], 4)})
            if step == steps:
                break
    return {"mode": mode, "points": points, "seconds": round(time.perf_counter() - t0, 1), "model": p.model}


def within(points: list[dict], level: float, share: float = 0.05) -> int | None:
    """The first step whose held-out loss is within ``share`` of ``level`` (above it)."""
    return next((q["step"] for q in points if q["heldout"] <= level * (1 + share)), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="packaged:minilm")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny BERT on their synthetic texts")
    ap.add_argument("--data", type=Path, default=None, help="a competition folder: train texts, test texts held out")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=25)
    ap.add_argument("--reference-steps", type=int, default=0)
    ap.add_argument("--held", type=int, default=400, help="held-out texts")
    ap.add_argument("--modes", default="full,head_1x,head_only")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from pipeline.core.config import TrainConfig

    if args.tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import NEG, POS, build_tiny_bert, synthetic_texts

        words = [NEG, POS, ["awful", "hate", "okay", "fine", "love", "great"]]
        backbone = build_tiny_bert(Path(tempfile.mkdtemp()) / "tiny", synthetic_texts(400, words, 3)[0])
        train, held = synthetic_texts(2000, words[:2], 10)[0], synthetic_texts(args.held, words[:2], 11)[0]
        tc = TrainConfig(backbone=str(backbone), max_len=32, pretrain_lr=2e-3, precision="fp32")
    else:
        import pandas as pd

        from pipeline.runtime import TextCleaner

        clean = TextCleaner().fit()
        train = clean.transform(pd.read_csv(args.data / "train.csv")["text"].astype(str).tolist())
        held = clean.transform(pd.read_csv(args.data / "test.csv")["text"].astype(str).tolist())[:args.held]
        tc = TrainConfig(backbone=args.backbone, max_len=64)
    out = {"backbone": "tiny" if args.tiny else args.backbone, "steps": args.steps, "lr": tc.pretrain_lr,
           "batch": tc.pretrain_batch_size, "train_texts": len(train), "held_texts": len(held), "curves": {},
           "machine": f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the start",
           "date": time.strftime("%Y-%m-%d %H:%M")}
    for mode in args.modes.split(","):
        c = curve(tc, train, held, args.steps, args.every, mode)
        c.pop("model")
        out["curves"][mode] = c
        print(json.dumps({mode: c}), flush=True)
    if "head_only" in out["curves"]:
        pts = out["curves"]["head_only"]["points"]
        plateau = min(q["heldout"] for q in pts)
        out["head_only_plateau"] = plateau
        out["head_steps_to_5pct_of_plateau"] = within(pts, plateau)
    if args.reference_steps:
        from safetensors.torch import save_file

        from pipeline.modeling import pretrain

        ref = curve(tc, train, held, args.reference_steps, args.every, "full")  # an encoder with a trained head
        model = ref.pop("model")
        folder = Path(tempfile.mkdtemp()) / "with-head"
        model.save_pretrained(folder)
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(pretrain.resolve_backbone(tc.backbone)).save_pretrained(folder)
        kept = curve(tc, train, held, args.steps, args.every, "full", start=folder)
        kept.pop("model")
        prefix = model.base_model_prefix + "."
        tied = model.get_input_embeddings().weight
        encoder_only = folder.parent / "redrawn"
        base = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
                if k.startswith(prefix) and v.data_ptr() != tied.data_ptr() or k.endswith("word_embeddings.weight")}
        encoder_only.mkdir()
        model.config.save_pretrained(encoder_only)
        save_file(base, str(encoder_only / "model.safetensors"), metadata={"format": "pt"})
        AutoTokenizer.from_pretrained(folder).save_pretrained(encoder_only)
        redrawn = curve(tc, train, held, args.steps, args.every, "full", start=encoder_only)
        redrawn.pop("model")
        start = kept["points"][0]["heldout"]
        out["reference"] = {"pretrained_steps": args.reference_steps, "kept_head": kept, "redrawn_head": redrawn,
                            "redrawn_steps_to_kept_start": within(redrawn["points"], start, 0.0)}
    print(json.dumps({k: v for k, v in out.items() if k != "curves"}, indent=2))
    if args.out:
        results = json.loads(args.out.read_text()) if args.out.exists() else []
        args.out.write_text(json.dumps([*results, out], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
