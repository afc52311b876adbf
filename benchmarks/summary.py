"""BENCHMARKS.md's summary table, regenerated from benchmarks/results/*.json (`make bench-summary`).

    python benchmarks/summary.py            # rewrite the table between the markers in BENCHMARKS.md
    python benchmarks/summary.py --print    # print it only

One row per current figure: what was measured, against what, the ratio or score, the command
that wrote it, its date and machine, and the JSON it comes from. Each results file has one
reader below; a file without a reader is listed as such, so a new benchmark cannot hide.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "BENCHMARKS.md"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
CPU = "2 cores, no GPU"
Row = tuple[str, str, str, str, str, str]  # figure, peer, result, command, date, machine


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def latest(d: dict) -> Iterator[Row]:
    cmd, date, dev = "`make bench`", d.get("date", "-"), d.get("device", CPU)
    if d.get("train_samples_per_s"):
        r = d.get("train_speedup_vs_hf")
        yield ("trainer samples/s, " + d["trainer"]["model"], "HF Trainer (padding to max_length)",
               f"{r:.2f}x" if r else "not comparable", cmd, date, dev)
        r = d.get("train_speedup_vs_hf_grouped")
        yield ("trainer samples/s, " + d["trainer"]["model"], "HF Trainer (group_by_length)",
               f"{r:.2f}x" if r else "not comparable", cmd, date, dev)
    if d.get("bt_sentences_per_s"):
        yield ("back-translation sentences/s", "nlpaug BackTranslationAug (defaults)",
               f"{d['bt_speedup_vs_nlpaug']:.2f}x", cmd, date, dev)
        yield ("back-translation sentences/s", "nlpaug, output capped like ours",
               f"{d['bt_speedup_vs_nlpaug_matched_cap']:.2f}x", cmd, date, dev)


def budget(entries: list[dict]) -> Iterator[Row]:
    """The newest commit's run per data x TIME x preset x hog (older commits are history)."""
    newest: dict[tuple, dict] = {}
    for r in entries:
        newest[(r["data"], r["time"], r["preset"], r.get("hog_s") or 0)] = r  # the file is in run order
    for (data, time, preset, hog), r in newest.items():
        what = f"`make all TIME={time}` ({preset}) on {data}" + (f", CPU hog {hog:.0f}s" if hog else "") + \
            (", fresh clone" if r.get("fresh_clone") else "")
        cv = r.get("ensemble_nested") if r.get("ensemble_nested") is not None else r.get("ensemble_cv")
        used = r.get("used") or r.get("wall_over_budget")
        yield (what, "its budget", f"used {_f(used * 100 if used else None, 0)}%, {r.get('metric')} {_f(cv)}",
               f"`python benchmarks/budget_runs.py --data {data} --time {time}`", r.get("date", "-")[:10],
               r.get("machine", CPU))


def paired(entries: list[dict]) -> Iterator[Row]:
    for r in entries:
        if r.get("gain") is None:
            continue
        yield (f"CV gain of {' '.join(r['change'])}", f"the same run without it ({r['reference']['run']})",
               f"{r['gain']:+.4f} (SE {_f(r['se'])}), time x{r['time_ratio']}", "`python benchmarks/paired_runs.py`",
               "-", CPU)


def package(d: dict) -> Iterator[Row]:
    yield ("offline bundle: int8 ONNX end to end", "the bundle in torch", f"{d['onnx_speedup_end_to_end']:.2f}x",
           "`python benchmarks/package_bundle.py`", "-", CPU)


def bt_throughput(d: dict) -> Iterator[Row]:
    yield ("bergamot back-translation, 2 threads", "1 thread", f"{d['speedup_2_threads']:.2f}x",
           "`python benchmarks/bt_throughput.py`", "-", CPU)


def cpu_precision(d: dict) -> Iterator[Row]:
    for name, b in d["backbones"].items():
        yield (f"bf16 autocast training step, {name}", "float32", f"{b['train_speedup_bf16']:.2f}x",
               "`python benchmarks/cpu_precision.py`", "-", f"{d.get('threads', 2)} threads, AMX bf16 tiles")


def seed_average(entries: list[dict]) -> Iterator[Row]:
    for e in entries:
        for a in e["averages"][1:]:
            yield (f"{a['seeds']} seeds averaged ({e['reference']['run']})", "1 seed",
                   f"{e['metric']} {a['gain']:+.4f} (SE {_f(a['se'])}), log loss {_f(a.get('logloss'))}",
                   "`python benchmarks/seed_average.py`", "-", CPU)


def ablation(d: dict) -> Iterator[Row]:
    """Each member left out of the blend: the nested score it costs (its SE beside it)."""
    for name, w in d["without"].items():
        yield (f"blend member {name} ({d['work'].split(',')[1].strip() if ',' in d['work'] else d['work']})",
               f"the blend without it ({d['metric']} {_f(w['nested'])})",
               f"{-w['loss']:+.4f} left out (SE {_f(w['se'])}); all: {_f(d['all']['nested'])}",
               "`python benchmarks/ensemble_ablation.py`", "-", CPU)


def gpu(d: dict) -> Iterator[Row]:
    t = d.get("trainer") or {}
    machine = d["device"] + (" (dry run)" if d.get("dry_run") else "")
    cmd = "`bash benchmarks/gpu_check.sh" + (" --dry-run`" if d.get("dry_run") else "`")
    r = t.get("train_speedup_vs_hf")
    yield ("trainer samples/s (GPU check)", "HF Trainer", f"{r:.2f}x" if r else "not comparable", cmd, d["date"],
           machine)
    if t.get("mfu") is not None:
        yield ("trainer MFU", f"the device's {t.get('precision')} peak", f"{t['mfu'] * 100:.1f}%", cmd, d["date"],
               machine)
    f = d.get("flow") or {}
    yield (f"`make all PROFILE=configs/gpu.yaml TIME={f.get('time')}`", "its budget",
           f"{d['seconds']['flow']}s, {f.get('metric')} {_f(f.get('cv'))}, valid: {f.get('submission_valid')}",
           cmd, d["date"], machine)


def paces(d: dict) -> Iterator[Row]:
    """A machine's paces for `make plan PACES=<file>`: its measured figures, and how many are estimates."""
    m, costs = d["machine"], d["costs"]
    steps = ", ".join(f"{n} {c['step_s'] * 1000:.1f} ms" for n, c in costs.items() if c.get("step_s") and c.get("available"))
    estimated = len(d.get("sources", {}).get("estimated", []))
    yield (f"machine profile for `make plan PACES=` ({m.get('name')})", "-",
           f"fine-tune step (batch 32): {steps}; a model stage's start {d['stages']['start_s']}s; "
           f"{estimated} figure group(s) estimated (see its sources)", "built by hand from its GPU record",
           d.get("recorded", "-")[:10], m.get("name", "-"))


def shapes(entries: list[dict]) -> Iterator[Row]:
    for e in entries:
        used = f", used {e['used'] * 100:.0f}%" if e.get("used") else ""
        yield (f"{e['shape']} competition ({e['rows'][0]:,}/{e['rows'][1]:,} rows), `make all TIME={e['time']}`",
               f"TF-IDF + LR ({e['metric']} {_f(e.get('reference_tfidf_lr'))})",
               f"{e['metric']} {_f(e.get('holdout'))} held-out{used}",
               f"`python benchmarks/shapes.py --shape {e['shape']} --time {e['time']}`", e.get("date", "-"),
               e.get("machine", CPU))


READERS: dict[str, Callable[..., Iterator[Row]]] = {
    "latest.json": latest, "budget.json": budget, "paired_runs.json": paired, "package.json": package,
    "bt_throughput.json": bt_throughput, "cpu_precision.json": cpu_precision, "seed_average.json": seed_average,
    "ablation_30m.json": ablation, "ablation_2h_best.json": ablation, "ablation_2h_best_bf16.json": ablation,
    "shapes.json": shapes,
}
NOT_FIGURES = {"kill_table.json"}  # test fixtures of the kill-anywhere test, not a measurement


def reader(path: Path) -> Callable[..., Iterator[Row]] | None:
    if path.name.startswith("paces-"):
        return paces
    return gpu if path.name.startswith("gpu-") else READERS.get(path.name)


def rows() -> list[tuple[Row, str]]:
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        if path.name in NOT_FIGURES:
            continue
        read = reader(path)
        if read is None:
            out.append((("(no reader yet)", "-", "-", "-", "-", "-"), path.name))
            continue
        out += [(r, path.name) for r in read(json.loads(path.read_text()))]
    return out


def table() -> str:
    lines = ["| figure | against | result | command | date | machine | source |", "|---|---|---|---|---|---|---|"]
    for r, src in rows():
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + f" | [{src}](benchmarks/results/{src}) |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--print", action="store_true")
    args = ap.parse_args()
    t = table()
    if args.print:
        print(t)
        return 0
    text = DOC.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{DOC}: the markers {START} / {END} are missing")
    head, rest = text.split(START, 1)
    DOC.write_text(head + START + "\n" + t + "\n" + END + rest.split(END, 1)[1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
