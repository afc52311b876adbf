"""Long texts in the plan: where inspect found a real share of texts over max_len, every encoder
run reads them whole (train.chunks) as its ceiling, a GPU fine-tune first at the backbone's
limit; the cuts take the windows back before rows or runs; a reading the user set is kept; and
a pair competition costs the member that reads the relation."""

from budget_helpers import medium_config

from pipeline.budget import planfile
from pipeline.budget.planner import ceiling, format_plan, make_plan
from pipeline.budget.plans import Ledger, Work
from pipeline.modeling.base import Cost

READING = {"long": True, "max_len": 64, "share_over": 0.62, "windows": {"64": 9.8, "128": 4.6, "512": 1.3},
           "gpu_max_len": 512}
WORK = Work(n_train=2000, n_test=800)


def _costs(device: str = "cpu") -> dict[str, Cost]:
    fine = dict(family="transformer", step_s=0.5 if device == "cpu" else 0.013, infer_row_s=0.004, load_s=2,
                max_len=64, epochs=2, device=device, max_positions=512, chunk_training=True,
                lengths={"64": 63.0, "512": 480.0})
    return {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
            "nbsvm": Cost("nbsvm", "classical", fit_row_s=1e-3),
            "minilm": Cost("minilm", **fine),
            "emb_minilm": Cost("emb_minilm", "embedding", infer_row_s=0.003, fit_row_s=2e-5, max_len=128, chunks=True,
                               windows={"128": 4.6})}


def _plan(budget: float, device: str = "cpu", reading: dict | None = READING, *sets: str):
    cfg = medium_config("medium", "select.candidates=[tfidf,nbsvm,minilm,emb_minilm]", *sets)
    c = _costs(device)
    top = ceiling(cfg, c, budget, budget, planfile.pinned_keys(cfg), "accuracy", reading=reading)
    return make_plan(top, c, WORK)


def test_long_texts_are_read_whole_where_the_budget_allows_and_the_plan_says_so():
    p = _plan(1e6)
    r = p.named("minilm")
    assert r.chunks and p.named("emb_minilm").chunks
    assert planfile.run_diff(p, "minilm", 42)["train"]["chunks"] is True
    assert planfile.run_diff(p, "emb_minilm", 42) == {"train": {"chunks": True}}
    text = format_plan(p)
    assert "long texts: 62% of the inputs over max_len 64 (inspect): minilm whole (9.8 windows a text" in text
    short = _plan(1e6, reading={**READING, "long": False})
    assert short.named("minilm").chunks is None and "long texts" not in format_plan(short)
    # reading whole costs its windows: the same plan on heads is several times cheaper
    assert p.named("minilm").estimate_s > 5 * short.named("minilm").estimate_s


def test_windows_at_max_len_64_overlap_by_what_the_config_allows():
    """relation 10m at 1ab377b: the plan read minilm's pairs in windows at max_len 64 with the
    default stride 32, which the config refuses (below half of max_len), and select stopped."""
    from pipeline.core.config import load_config, with_diff

    p = _plan(1e6)
    r = p.named("minilm")
    assert r.chunks and r.max_len == 64
    diff = planfile.run_diff(p, "minilm", 42, stride=32)
    assert diff["train"]["stride"] == 16
    c = with_diff(load_config([], []), {"train": diff["train"]})  # validates: no ConfigError
    assert (c.train.chunks, c.train.max_len, c.train.stride) == (True, 64, 16)
    assert "stride" not in planfile.run_diff(p, "minilm", 42, stride=8)["train"]  # a stride that fits is kept
    assert "stride" not in planfile.run_diff(p, "emb_minilm", 42, stride=32)["train"]  # 32 is below 128 / 2


def test_a_tight_budget_takes_the_windows_back_before_the_rows_or_the_run():
    heads = _plan(1e6, "cpu", {**READING, "long": False}).estimate_s
    p = _plan(1.3 * heads)  # room for the heads, not for ~10 windows a text even on 3 folds and 1 epoch
    assert p.fits and "minilm" in {r.name for r in p.runs}
    assert any("minilm: reads the head of long texts only" in c for c in p.cuts)
    assert p.named("minilm").rows is None  # no subsample: the windows went first
    assert planfile.run_diff(p, "minilm", 42)["train"]["chunks"] is False


def test_on_a_gpu_a_fine_tune_reads_at_the_backbones_limit_first():
    p = _plan(1e6, "cuda")
    r = p.named("minilm")
    assert r.max_len == 512 and r.chunks  # 1.3 windows a text even at 512
    assert planfile.run_diff(p, "minilm", 42)["train"]["max_len"] == 512


def test_a_reading_the_user_set_is_never_planned_over():
    p = _plan(1e6, "cpu", READING, "train.chunks=false")
    assert p.named("minilm").chunks is None and "train" not in planfile.run_diff(p, "emb_minilm", 42)


def test_a_pair_competition_costs_the_member_that_reads_the_relation(tmp_path):
    from pathlib import Path

    from pipeline.core.config import load_config
    from pipeline.core.paths import Paths
    from pipeline.stages.plan import candidates

    cfg = load_config([Path(__file__).resolve().parents[1] / "configs" / "base.yaml"])  # candidates not pinned
    paths = Paths(tmp_path, tmp_path / "raw")
    assert "pair_sim" in candidates(cfg, paths, pair=True)[0]
    assert "pair_sim" not in candidates(cfg, paths, pair=False)[0]


def test_a_pair_competitions_plan_runs_the_member_that_reads_the_relation():
    """relation 10m at f582ea1: pair_sim was probed on the pair but never planned (the ceiling took
    the profile's candidates and the preset's extras only), so no member compared the two texts."""
    from pathlib import Path

    from pipeline.core.config import load_config

    cfg = load_config([Path(__file__).resolve().parents[1] / "configs" / "base.yaml"])  # candidates not pinned
    assert cfg.budget.pair_extra == ["pair_sim"]
    c = {**_costs(), "pair_sim": Cost("pair_sim", "classical", fit_row_s=1e-3)}
    top = ceiling(cfg, c, 1e6, 1e6, [], "logloss", reading=None)
    assert "pair_sim" in {r.name for r in top.runs}
    p = make_plan(top, c, WORK)
    assert "pair_sim" in {r.name for r in p.runs}
    alone = {n: v for n, v in c.items() if n != "pair_sim"}  # not a pair: nothing costed, nothing planned
    assert "pair_sim" not in {r.name for r in ceiling(cfg, alone, 1e6, 1e6, [], "logloss").runs}
    pinned = ceiling(cfg, c, 1e6, 1e6, ["select.candidates"], "logloss")  # the user's candidates stand
    assert "pair_sim" not in {r.name for r in pinned.runs}


def test_the_plan_measures_the_pair_member_on_the_pairs_columns(tmp_path, monkeypatch):
    """pair_sim has nothing but the features that compare a pair's texts (train.tfidf_blocks=false):
    its probe fits it on the columns, not on the texts joined into one (which stopped the plan
    stage with "this competition has one text column" on benchmarks/shapes.py's relation shape)."""
    import json

    from conftest import run_stage, write_pair_competition

    from pipeline.budget import clock

    monkeypatch.setattr(clock, "disturbed", lambda share: False)
    data = write_pair_competition(tmp_path / "comp", n_train=300, n_test=60)
    work = tmp_path / "work"
    assert run_stage("clean", work, data) == 0
    assert run_stage("plan", work, data, "select.candidates=[tfidf,pair_sim]", "tune.enabled=false",
                     'budget.time="1h"', "folds.n_splits=2") == 0
    plan = json.loads((work / "reports/plan.json").read_text())
    costs = plan["costs"]
    assert costs["pair_sim"]["available"] and costs["pair_sim"]["fit_row_s"] > 0
    assert plan["losses"]["twin"]["value"] == (0.0 if plan["device"] == "cpu" else 0.035)  # the stage says: a pair
    assert costs["tfidf"]["fit_row_s"] > 0


def _pair_plan(budget: float, pair: bool, device: str = "cpu", twin_too: bool = False):
    cfg = medium_config("medium")
    cfg.select.candidates = ["tfidf", "nbsvm", "minilm", "emb_mpnet"] + (["emb_minilm"] if twin_too else [])
    cfg.budget.medium_extra = []
    fine = dict(step_s=0.5 if device == "cpu" else 0.013, infer_row_s=0.004, load_s=2, max_len=64, epochs=2,
                device=device)
    c = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3), "nbsvm": Cost("nbsvm", "classical", fit_row_s=1e-3),
         "minilm": Cost("minilm", "transformer", **fine),
         "emb_minilm": Cost("emb_minilm", "embedding", infer_row_s=0.003, fit_row_s=2e-5, max_len=128, device=device),
         "emb_mpnet": Cost("emb_mpnet", "embedding", infer_row_s=0.02, fit_row_s=2e-5, max_len=128, device=device)}
    top = ceiling(cfg, c, budget, budget, [], "logloss", twins={"minilm": "emb_minilm"}, pair=pair)
    return make_plan(top, c, Work(n_train=5000, n_test=1000, augment_copies=1.0))


def test_a_pair_on_cpu_gives_a_short_fine_tune_up_for_its_frozen_twin_before_a_frozen_encoder():
    """relation 10m at 2b2e6c5: the plan dropped emb_mpnet "so that the fine-tunes fit" and kept
    MiniLM for 1 epoch, which learned the relation least (emb_minilm - minilm: -0.0585 log loss,
    SE 0.0071; at 30m emb_mpnet was the best member). On a pair on CPU the twin goes in first."""
    for budget in (300.0, 400.0):
        single, pair = _pair_plan(budget, pair=False), _pair_plan(budget, pair=True)
        assert single.fits and pair.fits
        assert "minilm" in {r.name for r in single.runs} and "emb_mpnet" not in {r.name for r in single.runs}
        names = {r.name for r in pair.runs}
        assert {"emb_minilm", "emb_mpnet"} <= names and "minilm" not in names
        assert any("minilm: dropped" in s and "emb_minilm (its encoder frozen + LR) instead" in s for s in pair.steps)
        assert pair.n_splits > single.n_splits  # the folds the fine-tune had cost come back
        assert pair.losses["twin"]["value"] == 0.0 and "pair" in pair.losses["twin"]["source"]
        assert single.losses["twin"]["value"] == 0.035
    beside = _pair_plan(300.0, pair=True, twin_too=True)  # the twin already planned: the fine-tune goes first
    assert {r.name for r in beside.runs} == {"tfidf", "nbsvm", "emb_minilm", "emb_mpnet"}
    roomy = _pair_plan(600.0, pair=True)  # where the fine-tune fits, it stays
    assert "minilm" in {r.name for r in roomy.runs}
    gpu = _pair_plan(300.0, pair=True, device="cuda")  # measured on CPU's 1-2 epochs only
    assert gpu.losses["twin"]["value"] == 0.035 and "minilm" in {r.name for r in gpu.runs}


def test_the_pair_prior_holds_for_short_fine_tunes_whose_epochs_are_the_plans():
    """twin_pair was measured against 1 and 2 epochs: a longer fine-tune, or one whose epochs the
    user set, keeps the usual prior (in the plan's cut and in train's re-plan alike)."""
    from pipeline.budget.moves import twin_loss
    from pipeline.budget.plans import RunPlan

    p = _pair_plan(300.0, pair=True)
    assert twin_loss(p, RunPlan("minilm", "transformer", epochs=2)) == 0.0
    assert twin_loss(p, RunPlan("minilm", "transformer", epochs=3)) == 0.035
    p.pinned = ["train.epochs"]
    assert twin_loss(p, RunPlan("minilm", "transformer", epochs=1)) == 0.035
    assert twin_loss(_pair_plan(300.0, pair=False), RunPlan("minilm", "transformer", epochs=1)) == 0.035


def _long_plan(budget: float, device: str = "cpu", pinned: tuple[str, ...] = (), twin_whole: bool = True):
    """benchmarks/shapes.py's long shape in small: the profile's candidates with the frozen mpnet,
    minilm's twin emb_minilm (costed reading whole where ``twin_whole``)."""
    cfg = medium_config("medium")
    cfg.select.candidates = ["tfidf", "nbsvm", "minilm", "emb_mpnet"]
    cfg.budget.medium_extra = []
    c = _costs(device)
    c["emb_minilm"].chunks = twin_whole
    c["emb_mpnet"] = Cost("emb_mpnet", "embedding", infer_row_s=0.02, fit_row_s=2e-5, max_len=128, chunks=True,
                          windows={"128": 4.6}, device=device)
    top = ceiling(cfg, c, budget, budget, list(pinned), "accuracy", twins={"minilm": "emb_minilm"}, reading=READING)
    return make_plan(top, c, WORK)


def test_on_cpu_a_fine_tune_that_would_read_only_the_heads_gives_way_to_its_twin_reading_whole():
    """long 30m at 1ab377b: the plan cut minilm's windows, dropped emb_mpnet "so that the
    fine-tunes fit" and trained minilm on the heads for 632 s of the 1,800: CV accuracy 0.6065
    against emb_minilm reading whole 0.7245 on the same folds (+0.118, SE 0.014); the stack gave
    minilm a coefficient of 0.05 (tfidf 1.53). Where its windows do not fit, the fine-tune goes and its twin
    reads whole; the frozen mpnet stays."""
    for budget in (200.0, 400.0, 500.0, 900.0):
        p = _long_plan(budget)
        names = {r.name for r in p.runs}
        assert p.fits and "minilm" not in names and "emb_minilm" in names, budget
        assert p.named("emb_minilm").chunks  # the twin reads whole
        assert any(s.startswith("cut: minilm: dropped") and "emb_minilm (its encoder frozen + LR) instead" in s
                   and "on the heads only" in s for s in p.steps)
        assert not any("so that the fine-tunes fit" in s for s in p.steps)
    assert "emb_mpnet" in {r.name for r in _long_plan(500.0).runs}  # the room minilm's heads took
    assert _long_plan(200.0).named("emb_minilm").chunks  # a later cut that takes its windows gives them back
    roomy = _long_plan(1200.0)  # its windows fit: the fine-tune reads whole and stays
    assert roomy.named("minilm").chunks and "emb_minilm" not in {r.name for r in roomy.runs}
    # what stays as it was: the user's candidates, a twin that would read the heads too, a GPU
    for p in (_long_plan(500.0, pinned=("select.candidates",)), _long_plan(500.0, twin_whole=False)):
        assert p.named("minilm").chunks is False and not any("on the heads only" in s for s in p.steps)
    for budget in (150.0, 500.0):  # on a GPU the cheapest cut per second decides (its fine-tune reads at 512 first)
        assert not any("on the heads only" in s for s in _long_plan(budget, device="cuda").steps)


def test_the_long_text_prior_holds_where_the_fine_tune_reads_heads_and_its_twin_reads_whole():
    from pipeline.budget.moves import twin_loss
    from pipeline.budget.plans import RunPlan

    p = _long_plan(500.0)
    heads = RunPlan("minilm", "transformer", epochs=3, chunks=False, ceiling_chunks=True)
    assert twin_loss(p, heads) == 0.0  # any number of epochs: the heads are what it reads
    assert twin_loss(p, RunPlan("minilm", "transformer", epochs=3, chunks=True, ceiling_chunks=True)) == 0.035
    assert twin_loss(_long_plan(500.0, twin_whole=False), heads) == 0.035
    p.device = "cuda"
    assert twin_loss(p, heads) == 0.035


def test_spare_time_does_not_buy_back_a_fine_tune_on_the_heads_beside_its_twin_reading_whole(tmp_path):
    """long 30m at 9d15d07: the plan gave minilm way to emb_minilm reading whole; spare time
    then bought minilm back on the heads (375 s of 1,800) for CV accuracy 0.5800 beside the
    twin's 0.7245. On CPU it is not bought; on a GPU, or where the twin reads the heads, it is."""
    import json

    from budget_helpers import FixedDeadline

    from pipeline.budget.replan import spare_runs
    from pipeline.core.config import load_config, with_diff
    from pipeline.core.paths import Paths

    def spare(device: str, twin_whole: bool = True) -> tuple[list[str], list[str]]:
        p = _long_plan(500.0, device=device, twin_whole=twin_whole)
        p.runs = [r for r in p.runs if r.name != "minilm"]
        p.dropped = [*p.dropped, "minilm"]
        if "emb_minilm" not in {r.name for r in p.runs}:
            from pipeline.budget.plans import RunPlan

            p.runs.append(RunPlan("emb_minilm", "embedding", max_len=128, chunks=twin_whole or None))
        P = Paths.make(tmp_path / f"{device}{twin_whole}")
        P.reports.mkdir(parents=True, exist_ok=True)
        planfile.save(P, p, Ledger())
        d = json.loads(P.plan_json.read_text())
        trained = [with_diff(load_config([], []), {"train": {"run": "emb_minilm", "family": "embedding"}})]
        got = [c.train.run for c in spare_runs(trained, FixedDeadline(5000, d), P)]
        return got, json.loads(P.plan_json.read_text())["replans"]

    got, said = spare("cpu")
    assert "minilm" not in got
    assert any("not minilm" in s and "beside emb_minilm reading them whole" in s for s in said)
    assert "minilm" in spare("cuda")[0]  # on a GPU its windows are what a cut takes last
    assert "minilm" in spare("cpu", twin_whole=False)[0]  # a twin on the heads too: nothing to lose to
