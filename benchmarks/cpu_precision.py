"""float32 vs bf16 autocast on this CPU, for each packaged backbone: the planner's own probe
(pipeline.modeling.probe.probe_transformer: optimizer steps of batch 32 x max_len 64 on real,
length-grouped texts; prediction batches of 128), the two precisions alternated twice in one
invocation so a busy neighbour hits both.

    python benchmarks/cpu_precision.py [--n 800] [--backbones packaged:minilm packaged:mpnet]

train.precision=auto picks bf16 on CPUs with AMX bf16 tiles (pipeline.modeling.transformer.
cpu_has_bf16_tiles); this measures what that buys. Texts: the disaster tweets (../shared)
when present, else the embedded corpus. Writes benchmarks/results/cpu_precision.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "nlp-getting-started" / "train.csv"
sys.path.insert(0, str(ROOT))


def main() -> int:
    import numpy as np
    import pandas as pd
    import torch

    from pipeline.core.config import TrainConfig
    from pipeline.modeling.backbones import BackboneError, resolve_backbone
    from pipeline.modeling.device import cpu_has_bf16_tiles
    from pipeline.modeling.probe import probe_transformer
    from pipeline.runtime import TextCleaner

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--backbones", nargs="+", default=["packaged:minilm", "packaged:mpnet"])
    args = ap.parse_args()
    if SHARED.exists():
        df, source = pd.read_csv(SHARED), "disaster tweets"
        labels = df["target"].to_numpy()
    else:
        from pipeline.core.embedded import corpus_path

        df, source = pd.read_csv(corpus_path(), encoding="latin-1"), "embedded corpus"
        labels = pd.factorize(df["sentiment"])[0]
    pick = np.random.default_rng(0).permutation(len(df))[: args.n]
    texts = TextCleaner().fit().transform(df["text"].iloc[pick].tolist())
    labels = labels[pick]
    res = {"source": source, "texts": len(texts), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "amx_bf16_tiles": cpu_has_bf16_tiles(), "backbones": {}}
    for backbone in args.backbones:
        try:
            resolve_backbone(backbone)
        except BackboneError as e:  # mpnet not installed: say so, measure the rest
            print(f"{backbone}: skipped ({e})", file=sys.stderr)
            continue
        runs: dict[str, list] = {"fp32": [], "bf16": []}
        for precision in ("fp32", "bf16", "fp32", "bf16"):
            tc = TrainConfig(backbone=backbone, precision=precision, max_len=64, batch_size=32, eval_batch_size=128)
            r = probe_transformer(tc, texts, labels, int(labels.max()) + 1, 8, [64])
            runs[precision].append({"step_s": r["step_s"], "infer_row_s": r["infer_row_s"]})
            print(backbone, precision, r["step_s"], r["infer_row_s"], flush=True)
        best = {p: {k: min(x[k] for x in v) for k in ("step_s", "infer_row_s")} for p, v in runs.items()}
        res["backbones"][backbone] = {
            "runs": runs, "best": best,
            "train_speedup_bf16": round(best["fp32"]["step_s"] / best["bf16"]["step_s"], 2),
            "infer_speedup_bf16": round(best["fp32"]["infer_row_s"] / best["bf16"]["infer_row_s"], 2)}
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "cpu_precision.json").write_text(json.dumps(res, indent=1))
    print(json.dumps({b: {k: v[k] for k in ("train_speedup_bf16", "infer_speedup_bf16")}
                      for b, v in res["backbones"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
