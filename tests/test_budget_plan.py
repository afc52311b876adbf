"""The planner on synthetic costs: the cut order, what is never cut, the give-backs, the presets."""

import copy
import json
import re

import pytest
from budget_helpers import TWINS, WORK, ceiling, costs, disaster_like_costs, estimated, medium_config, small_plan

from pipeline.budget import costs as costs_mod
from pipeline.budget import moves, planfile, planner
from pipeline.budget.planner import make_plan
from pipeline.budget.plans import MIN_FOLDS, Ledger, Plan, RunPlan, Work, from_file, to_file
from pipeline.modeling.base import Cost

ORDER = ["trade:", "tune: ", "select:", "augment:", "seed", "epoch", "max_len", "folds:", "dropped", "classical model"]


def kind(cut: str) -> int:
    return max(i for i, k in enumerate(ORDER) if k in cut)


def test_a_budget_that_fits_everything_cuts_nothing():
    p = make_plan(ceiling(1e9), costs(), WORK)
    assert p.fits and p.cuts == [] and [r.name for r in p.runs] == ["tfidf", "nbsvm", "minilm", "mpnet", "emb_minilm"]
    assert p.added and "emb_minilm" in p.added[0]  # the time left buys minilm's frozen-encoder twin
    assert p.estimate_s == pytest.approx(sum(p.stages.values()))
    assert p.stages["train"] > p.stages["tune"] > 0


def test_a_budget_that_fits_nothing_keeps_the_classical_floor_and_says_so():
    p = make_plan(ceiling(1.0), costs(), WORK)
    assert not p.fits
    assert [r.name for r in p.runs] == ["tfidf", "nbsvm"] and set(p.dropped) == {"minilm", "mpnet", "emb_minilm"}
    assert p.n_splits == MIN_FOLDS  # never below 3
    assert p.classical_trials == 0 and "tune: 0 trial(s) per classical model instead of 1" in p.cuts  # the last cut


def test_cuts_come_in_the_documented_order_and_stop_as_soon_as_it_fits():
    full = make_plan(ceiling(1e9), costs(), WORK).estimate_s
    seen = []
    for share in (0.9, 0.6, 0.3, 0.15, 0.05):
        p = make_plan(ceiling(full * share), costs(), WORK)
        assert p.fits and p.estimate_s <= full * share
        cuts = [c for c in p.cuts if not c.startswith("trade:")]  # refill's trades come after the cuts
        kinds = [kind(c) for c in cuts]
        assert kinds == sorted(kinds), p.cuts  # trials, screening, augment, seeds, epochs, max_len, folds, drop
        # one cut fewer would not have fitted: no cut is spent for nothing
        shorter = make_plan(ceiling(1e9), costs(), WORK)
        for _ in cuts[:-1]:
            shorter = planner.next_cut(shorter)[0]
        assert sum(costs_mod.stage_seconds(shorter).values()) > full * share
        seen.append(len(p.cuts))
    assert seen == sorted(seen) and seen[0] < seen[-1]  # the smaller the budget, the more is cut
    # the score side: a larger budget never plans fewer epochs or fewer runs
    small, large = make_plan(ceiling(full * 0.15), costs(), WORK), make_plan(ceiling(full * 0.6), costs(), WORK)
    assert len(large.runs) >= len(small.runs)
    assert sum(r.epochs * r.seeds for r in large.runs) >= sum(r.epochs * r.seeds for r in small.runs)


def test_a_dropped_fine_tune_gives_way_to_its_frozen_encoder_named_in_its_config():
    full = make_plan(ceiling(1e9), costs(), WORK).estimate_s
    names = []
    for share in (0.3, 0.05, 0.02, 0.01, 0.005):
        p = make_plan(ceiling(full * share), costs(), WORK)
        names.append([r.name for r in p.runs])
        if "minilm" in p.dropped:
            assert "emb_minilm" in names[-1] and any("emb_minilm (its encoder frozen" in c for c in p.cuts)
    assert any("emb_minilm" in n for n in names), names
    alone = ceiling(full * 0.01)
    alone.twins = {}  # no budget.twin in its experiment file: dropped with nothing in its place
    assert "emb_minilm" not in {r.name for r in make_plan(alone, costs(), WORK).runs}
    # the pairings live in the candidates' experiment files, not in code
    from pipeline.core.config import with_diff
    from pipeline.core.experiments import candidate_diff

    root = planfile.Path(__file__).resolve().parents[1]
    cfg = medium_config()
    assert {n: with_diff(cfg, candidate_diff(n, root)[0]).budget.twin for n in ("minilm", "mpnet", "tfidf")} == \
        {**TWINS, "tfidf": None}


def test_a_pinned_key_is_never_cut_and_its_value_is_what_is_estimated():
    full = make_plan(ceiling(1e9), costs(), WORK).estimate_s
    p = make_plan(ceiling(full * 0.3, pinned=["train.epochs", "folds.n_splits"]), costs(), WORK)
    assert all(r.epochs == 3 for r in p.runs if r.family == "transformer")
    assert p.n_splits == 5 and not any("epoch" in c or "folds:" in c for c in p.cuts)
    assert any("dropped" in c or "max_len" in c or "seed" in c for c in p.cuts)


def test_the_same_inputs_give_the_same_plan_and_the_file_reads_back():
    a = make_plan(ceiling(4000), costs(), WORK)
    b = make_plan(ceiling(4000), costs(), WORK)
    assert json.dumps(to_file(a, Ledger()), sort_keys=True) == json.dumps(to_file(b, Ledger()), sort_keys=True)
    back, ledger = from_file(json.loads(json.dumps(to_file(a, Ledger(stages={"folds": 3.0})))))
    assert back.steps == a.steps and back.runs == a.runs and back.costs == a.costs and back.work == a.work
    assert ledger.stages == {"folds": 3.0} and back.stages == a.stages


def test_a_drop_gives_back_the_folds_cut_before_it_when_they_fit():
    """Cut order is folds before the drop; once the transformer is dropped, the folds cut for its
    sake come back if the classical runs fit with them."""
    work = Work(n_train=25000, n_test=8000)
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
          "minilm": Cost("minilm", "transformer", step_s=0.6, infer_row_s=0.006, load_s=3, max_len=64, epochs=2)}
    runs = [RunPlan("tfidf", "classical"), RunPlan("minilm", "transformer", epochs=2, max_len=64, ceiling_epochs=2)]
    p = make_plan(small_plan(900, runs), cs, work)
    assert p.fits and "minilm" in p.dropped and any("folds:" in c for c in p.cuts)
    assert p.n_splits == 5 and any("folds: 5 again" in a for a in p.added)
    assert p.estimate_s <= p.available_s


def test_an_under_trained_fine_tune_buys_its_epoch_back_with_a_fold():
    """5 folds x 2 epochs does not fit, 4 x 2 does: the epoch cut is traded for a fold, never
    below 3 folds, never when folds or epochs are pinned, and never for a preset's bonus epoch."""
    work = Work(n_train=7600, n_test=3300)
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
          "minilm": Cost("minilm", "transformer", step_s=0.6, infer_row_s=0.006, load_s=3, max_len=64, epochs=2)}

    def plan(avail: float, epochs: int = 2, pinned: list[str] | None = None) -> Plan:
        return small_plan(avail, [RunPlan("tfidf", "classical"), RunPlan("minilm", "transformer", epochs=epochs,
                                                                        max_len=64, ceiling_epochs=epochs)],
                          pinned=pinned)

    def estimate(folds: int, epochs: int) -> float:
        p = plan(1e9)
        p.n_splits, p.runs[1].epochs = folds, epochs
        return estimated(p, cs, work)

    e52, e42, e32, e51 = estimate(5, 2), estimate(4, 2), estimate(3, 2), estimate(5, 1)
    assert e32 < e42 < e52 and e51 < e52
    p = make_plan(plan((e42 + e52) / 2), cs, work)
    assert p.fits and p.n_splits == 4 and p.runs[1].epochs == 2 and p.estimate_s <= p.available_s
    assert "minilm: 1 epoch instead of 2" in p.cuts and p.cuts[-1].startswith("trade: folds 4 instead of 5")
    p = make_plan(plan((e32 + min(e42, e51)) / 2), cs, work)  # only 3 folds buy the epoch back
    assert (p.n_splits, p.runs[1].epochs) == (3, 2) and p.cuts[-1].startswith("trade: folds 3 instead of")
    pinned = make_plan(plan((e42 + e52) / 2, pinned=["folds.n_splits"]), cs, work)
    assert (pinned.n_splits, pinned.runs[1].epochs) == (5, 1) and not any("trade" in c for c in pinned.cuts)
    # best's bonus epoch (3 against the config's 2) is cut first and not bought back with folds
    bonus = make_plan(plan(estimate(5, 2) + 1, epochs=3), cs, work)
    assert (bonus.n_splits, bonus.runs[1].epochs) == (5, 2) and not any("trade" in c for c in bonus.cuts)


def _three(avail: float, epochs: int = 2) -> Plan:
    return small_plan(avail, [RunPlan("tfidf", "classical"),
                              RunPlan("minilm", "transformer", epochs=epochs, max_len=64, ceiling_epochs=epochs),
                              RunPlan("mpnet", "transformer", epochs=epochs, max_len=64, ceiling_epochs=epochs)],
                      preset="best")


def test_a_trade_after_a_drop_keeps_the_plan_readable():
    """Folds cut for a fine-tune that was dropped come back in refill; a trade may take them
    again for another fine-tune's epoch: the plan then says the folds it really has."""
    work = Work(n_train=7600, n_test=3300)
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
          "minilm": Cost("minilm", "transformer", step_s=0.6, infer_row_s=0.006, load_s=3, max_len=64, epochs=2),
          "mpnet": Cost("mpnet", "transformer", step_s=3.0, infer_row_s=0.03, load_s=8, max_len=64, epochs=2)}
    traded_after_drop = 0
    for avail in range(600, 6000, 50):
        p = make_plan(_three(avail), cs, work)
        assert p.estimate_s <= p.available_s or not p.fits
        assert not any(a.startswith("folds: ") and int(a.split()[1]) > p.n_splits for a in p.added), p.added
        traded_after_drop += "mpnet" in p.dropped and any(c.startswith("trade:") for c in p.cuts)
    assert traded_after_drop  # the case above happens in this range


def _replay(steps: list[str], n_splits: int, epochs: dict[str, int]) -> tuple[int, dict[str, int]]:
    """Folds and each fine-tune's epochs after reading the plan's steps top to bottom."""
    epochs = dict(epochs)
    for s in steps:
        if m := re.match(r"cut: (?:trade: )?folds:? (\d+) instead", s) or re.match(r"folds: (\d+) again", s):
            n_splits = int(m.group(1))
        if m := re.match(r"cut: (\w+): (\d+) epochs? instead", s) or re.match(r"(\w+): (\d+) epochs again", s):
            epochs[m.group(1)] = int(m.group(2))
        if m := re.match(r"cut: trade: .* for epochs back: (.*) \(the config", s):
            epochs |= {name: int(n) for name, n in (x.split() for x in m.group(1).split(", "))}
    return n_splits, epochs


def test_the_plan_reads_in_the_order_it_was_made():
    """Cuts, give-backs and trades are listed as they happened: read top to bottom, the last
    word on the folds and on each fine-tune's epochs is what the plan runs."""
    work = Work(n_train=7600, n_test=3300)
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
          "minilm": Cost("minilm", "transformer", step_s=0.6, infer_row_s=0.006, load_s=3, max_len=64, epochs=3),
          "mpnet": Cost("mpnet", "transformer", step_s=3.0, infer_row_s=0.03, load_s=8, max_len=64, epochs=3)}
    out_of_order = 0  # plans where listing the cuts first and the give-backs after would misread
    for avail in range(600, 9000, 50):
        p = make_plan(_three(avail, epochs=3), cs, work)
        runs = {r.name: r.epochs for r in p.runs if r.family == "transformer"}
        start = {"minilm": 3, "mpnet": 3}
        assert _replay(p.steps, 5, start)[0] == p.n_splits, p.steps
        assert {k: v for k, v in _replay(p.steps, 5, start)[1].items() if k in runs} == runs, p.steps
        p.budget = f"{avail}s"
        text = planner.format_plan(p).splitlines()
        assert [t.strip() for t in text[-len(p.steps):]] == p.steps if p.steps else "cut: nothing" in text[-1]
        old = [f"cut: {c}" for c in p.cuts] + p.added
        out_of_order += _replay(old, 5, start) != _replay(p.steps, 5, start)
    assert out_of_order  # the old order misread some plans in this range


def test_medium_adds_the_frozen_base_encoder_where_installed_and_trades_the_fine_tunes_folds_for_it():
    """PRESET=medium = the profile + budget.medium_extra (configs/base.yaml: emb_mpnet) where
    `make setup-mpnet` ran (never for fast, never over a pinned candidate list); when the
    fine-tune's 5 folds x 2 epochs fit only without it, the plan keeps it and gives the
    fine-tune a fold for its second epoch."""
    work = Work(n_train=7613, n_test=3263)

    def plan_for(preset: str, available: float, installed: bool = True, pinned: tuple[str, ...] = ()) -> Plan:
        c = disaster_like_costs(installed)
        return make_plan(planner.ceiling(medium_config(preset), c, available, available, list(pinned), "logloss",
                                         TWINS), c, work)

    names = lambda p: [r.name for r in p.runs]  # noqa: E731
    assert "emb_mpnet" in names(plan_for("medium", 1e9))
    assert "emb_mpnet" not in names(plan_for("medium", 1e9, installed=False))
    assert "emb_mpnet" not in names(plan_for("fast", 1e9))
    assert "emb_mpnet" not in names(plan_for("medium", 1e9, pinned=("select.candidates",)))

    def uncut(installed: bool) -> tuple[Plan, float]:  # the medium ceiling itself, estimated
        c = disaster_like_costs(installed)
        p = planner.ceiling(medium_config(), c, 1e9, 1e9, [], "logloss", TWINS)
        p.costs, p.work, p.n_train, p.n_test = c, work, work.n_train, work.n_test
        return p, sum(costs_mod.stage_seconds(p).values())

    without, without_s = uncut(installed=False)
    minilm = next(r for r in without.runs if r.name == "minilm")
    assert minilm.epochs == 2 and without.n_splits == 5
    mpnet_s = next(r for r in uncut(installed=True)[0].runs if r.name == "emb_mpnet").estimate_s
    tight = without_s + 0.5 * mpnet_s  # 5 x 2 fits alone, not beside emb_mpnet
    assert plan_for("medium", tight, installed=False).n_splits == 5
    p = plan_for("medium", tight)
    assert p.fits and "emb_mpnet" in names(p) and "minilm" in names(p)
    assert next(r for r in p.runs if r.name == "minilm").epochs == 2 and 3 <= p.n_splits < 5
    assert any(c.startswith("trade:") for c in p.cuts) and p.estimate_s <= tight


def test_room_a_trade_leaves_buys_the_presets_epochs_then_seeds_back():
    """A trade gives up whole folds, which can leave room: the plan then takes the preset's
    epochs back, then its seeds, while it fits. Whatever the budget, the final plan leaves no
    such give-back that would still fit."""
    work = Work(n_train=7545, n_test=3263)
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-3),
          "minilm": Cost("minilm", "transformer", step_s=0.47, infer_row_s=0.005, load_s=2, max_len=64, epochs=2),
          "mpnet": Cost("mpnet", "transformer", step_s=2.7, infer_row_s=0.02, load_s=1, max_len=64, epochs=2)}

    def ceiling_plan(avail: float) -> Plan:
        runs = [RunPlan("tfidf", "classical"),
                RunPlan("minilm", "transformer", epochs=3, max_len=64, seeds=3, ceiling_epochs=3, ceiling_seeds=3),
                RunPlan("mpnet", "transformer", epochs=3, max_len=64, seeds=3, ceiling_epochs=3, ceiling_seeds=3)]
        return small_plan(avail, runs, preset="best", epochs=[1, 3])

    def still_fits(p: Plan, name: str, what: str) -> bool:
        trial = copy.deepcopy(p)
        r = trial.named(name)
        setattr(r, what, getattr(r, what) + 1)
        return costs_mod.fits(trial)

    bought_back = 0
    for avail in range(2000, 16000, 250):
        p = make_plan(ceiling_plan(avail), cs, work)
        assert not p.fits or p.estimate_s <= p.available_s
        if not p.fits:
            continue
        for r in p.runs:
            if r.family == "transformer":
                assert r.epochs >= r.ceiling_epochs or not still_fits(p, r.name, "epochs"), (avail, p.runs)
                assert r.seeds >= r.ceiling_seeds or not still_fits(p, r.name, "seeds"), (avail, p.runs)
        traded = any(c.startswith("trade:") for c in p.cuts)
        bought_back += traded and any(" again (" in a and ("epochs" in a or "seeds" in a) for a in p.added)
    assert bought_back  # the case happens in this range


def test_best_buys_seeds_only_where_the_metric_scores_probabilities():
    """best's ceiling has three seeds per fine-tune for log loss or AUC, one for F1 or accuracy;
    a pinned train.seeds wins either way."""
    cfg = medium_config("best", "select.candidates=[tfidf,nbsvm,minilm,mpnet]")

    def seeds(metric, pinned=(), c=cfg):
        plan = planner.ceiling(c, costs(), 1e9, 1e9, list(pinned), metric)
        return {r.name: r.seeds for r in plan.runs if r.family == "transformer"}

    assert seeds("logloss") == seeds("roc_auc") == {"minilm": 3, "mpnet": 3}
    assert seeds("f1") == seeds("accuracy") == seeds("macro_f1") == {"minilm": 1, "mpnet": 1}
    pinned = medium_config("best", "select.candidates=[tfidf,nbsvm,minilm,mpnet]", "train.seeds=[1,2]")
    assert seeds("f1", ["train.seeds"], pinned) == {"minilm": 2, "mpnet": 2}


def test_long_texts_get_a_longer_max_len_when_the_budget_has_room_and_chunks_cost_their_windows():
    """Inspect says the texts need 256 tokens; the fine-tune was set for 64: with room the plan
    raises it (x2 steps, never past the backbone's positions); without room it stays."""
    work = Work(n_train=2000, n_test=500)
    base = dict(step_s=0.3, infer_row_s=0.002, load_s=2, max_len=64, epochs=1, suggested_max_len=256,
                lengths={"64": 60.0, "128": 110.0, "256": 200.0})
    cs = {"tfidf": Cost("tfidf", "classical", fit_row_s=1e-4),
          "minilm": Cost("minilm", "transformer", max_positions=128, **base)}

    def plan(avail: float) -> Plan:
        runs = [RunPlan("tfidf", "classical"), RunPlan("minilm", "transformer", epochs=1, max_len=64, ceiling_epochs=1)]
        p = small_plan(avail, runs, epochs=[1])
        p.n_splits = p.ceiling_folds = 3
        return p

    roomy = make_plan(plan(1e6), cs, work)
    assert roomy.runs[1].max_len == 128 and any("max_len 128 instead of 64" in s for s in roomy.steps)  # positions cap
    at = {}
    for n in (64, 128):
        p = plan(1e6)
        p.runs[1].max_len = n
        at[n] = estimated(p, cs, work)
    assert at[128] > at[64]
    tight = make_plan(plan((at[64] + at[128]) / 2), cs, work)
    assert tight.fits and tight.runs[1].max_len == 64  # 128 does not fit: the texts stay cut


def test_room_beyond_mediums_ceiling_buys_bests_extras_in_order_of_worth():
    """A medium ceiling that fits with room to spare would leave the budget unused: the room
    buys best's base-size fine-tune at its config's epochs, then the frozen encoders, then the
    extra epoch, then seeds (only for a probability metric); fast never grows."""
    work = Work(n_train=7613, n_test=3263)
    c = {**disaster_like_costs(), "mpnet": Cost("mpnet", "transformer", step_s=2.0, infer_row_s=0.02, load_s=5,
                                                max_len=64, epochs=2)}

    def plan_for(preset: str, available: float, metric: str = "f1") -> Plan:
        return make_plan(planner.ceiling(medium_config(preset), c, available, available, [], metric, TWINS), c, work)

    runs = lambda p: {r.name: (r.epochs, r.seeds) for r in p.runs}  # noqa: E731
    top = planner.ceiling(medium_config(), c, 1e9, 1e9, [], "f1", TWINS)
    medium_s = estimated(top, c, work)
    assert runs(plan_for("medium", medium_s * 1.001)).keys() == {"tfidf", "nbsvm", "minilm", "emb_mpnet"}
    roomy = plan_for("medium", 1e9, metric="f1")
    assert runs(roomy)["mpnet"] == (3, 1) and "emb_minilm" in runs(roomy)
    assert runs(roomy)["minilm"] == (3, 1)  # best's extra epoch (mpnet's too: it was added at its config's 2)
    assert all(seeds == 1 for _, seeds in runs(roomy).values())  # F1: seeds were measured not to pay
    assert [a.split(":")[0] for a in roomy.added][:2] == ["mpnet", "emb_minilm"]
    assert all(s == 3 for n, (_, s) in runs(plan_for("medium", 1e9, metric="logloss")).items()
               if n in ("minilm", "mpnet"))
    assert "mpnet" not in runs(plan_for("fast", 1e9))
    mid = plan_for("medium", medium_s * 1.001 + 60, metric="f1")  # room for the cheap extra only
    assert "mpnet" not in runs(mid) and "emb_minilm" in runs(mid) and mid.estimate_s <= mid.available_s


def _floor(c: dict[str, Cost], work: Work, rows: int | None, drop: tuple[str, ...] = ()) -> float:
    """The seconds of the plan every cut before the last one makes: 3 folds, 1 epoch, 500-row screening."""
    floor = planner.ceiling(medium_config(), c, 1e9, 1e9, [], "f1", TWINS)
    floor.runs = [r for r in floor.runs if r.name not in drop]
    floor.select_rows, floor.n_splits = moves.MIN_SELECT_ROWS, MIN_FOLDS
    for r in floor.runs:
        if r.name == "minilm":
            r.epochs, r.rows = 1, rows
    return estimated(floor, c, work)


def test_the_last_cut_drops_a_frozen_encoder_rather_than_the_fine_tune_where_that_fits():
    """A busy probe made all-mpnet frozen cost 434 s: the plan dropped MiniLM's fine-tune and kept
    the frozen mpnet, though the fine-tune fitted without it. The frozen encoder goes."""
    work = Work(n_train=7613, n_test=3263)
    c = disaster_like_costs()
    c["emb_mpnet"] = Cost("emb_mpnet", "embedding", infer_row_s=0.2, fit_row_s=2e-5, max_len=128)
    available = _floor(c, work, None, drop=("emb_mpnet",)) + 1.0
    p = make_plan(planner.ceiling(medium_config(), c, available, available, [], "f1", TWINS), c, work)
    names = {r.name: r for r in p.runs}
    assert "minilm" in names and "emb_mpnet" not in names and p.fits
    assert any(x.startswith("emb_mpnet: dropped") and "fine-tunes fit" in x for x in p.cuts)
    assert p.estimate_s <= available


def test_a_fine_tune_that_does_not_fit_trains_on_a_subsample_of_its_rows_before_it_is_dropped():
    """The largest tenth of each fold's rows that fits; a frozen encoder goes first where only
    that makes a subsample fit; below 30% of the rows it is dropped as before; and train gets
    the subsample through the run's diff; a pinned train.max_train_rows is never planned over."""
    work = Work(n_train=7613, n_test=3263)
    c = disaster_like_costs(mpnet_installed=False)
    full = costs_mod.fold_train_rows(work.n_train, 3)
    assert full == 5075
    between = (_floor(c, work, int(full * 0.6)) + _floor(c, work, int(full * 0.7))) / 2

    def plan(available: float, cs: dict[str, Cost] = c, pinned: tuple[str, ...] = ()) -> Plan:
        return make_plan(planner.ceiling(medium_config(), cs, available, available, list(pinned), "f1", TWINS),
                         cs, work)

    p = plan(between)
    minilm = p.named("minilm")
    assert minilm.rows == int(full * 0.6) and minilm.epochs == 1 and p.n_splits == 3 and p.fits
    assert p.estimate_s <= between and "minilm: 3,045 of each fold's 5,075 training rows (60%" in p.cuts[-1]
    assert planfile.run_diff(p, "minilm", 42)["train"]["max_train_rows"] == 3045
    assert "max_train_rows" not in planfile.run_diff(plan(1e9), "minilm", 42)["train"]
    secs = {n: costs_mod.run_seconds(c["minilm"], RunPlan("minilm", "transformer", rows=n), work, 3, False)
            for n in (None, 3045, 1522)}
    assert secs[None] > secs[3045] > secs[1522]
    tight = plan(_floor(c, work, int(full * 0.3)) - 1)  # below 30% nothing fits: its frozen twin instead
    assert "minilm" not in {r.name for r in tight.runs} and "emb_minilm" in {r.name for r in tight.runs}
    c2 = disaster_like_costs()
    c2["emb_mpnet"] = Cost("emb_mpnet", "embedding", infer_row_s=0.2, fit_row_s=2e-5, max_len=128)
    p = plan(_floor(c2, work, int(full * 0.5), drop=("emb_mpnet",)), c2)
    assert "emb_mpnet" not in {r.name for r in p.runs} and p.named("minilm").rows and p.fits
    assert any("so that minilm fits on a subsample" in x for x in p.cuts)
    assert "minilm" not in {r.name for r in plan(between, pinned=("train.max_train_rows",)).runs}


def test_a_subsampled_fine_tune_gets_its_rows_back_when_a_later_cut_leaves_room():
    work = Work(n_train=7613, n_test=3263)
    c = disaster_like_costs(mpnet_installed=False)
    p = make_plan(planner.ceiling(medium_config(), c, 1e9, 1e9, [], "f1", TWINS), c, work)
    p.n_splits, p.select_rows = 3, 500
    r = p.named("minilm")
    r.epochs, r.rows = 1, 4000
    costs_mod.fits(p)
    p.available_s = p.estimate_s + 1  # room for 4,000 rows a fold
    r.rows = 1522
    back = planner.give(p, moves.ROWS)
    assert back.named("minilm").rows == 3552  # 70% of 5,075: 80% (4,060) > 4,000
    assert back.added[-1].startswith("minilm: 3,552 of each fold's 5,075 training rows")


def test_every_move_gives_back_what_it_cuts():
    """Each move's step down and back up returns the plan to where it was (one set of moves for
    the cuts, the give-backs and train's re-plan)."""
    p = make_plan(ceiling(1e9), costs(), WORK)
    p.runs[2].ceiling_seeds, p.runs[2].ceiling_epochs = p.runs[2].seeds, p.runs[2].epochs
    for move in (moves.EPOCHS, moves.SEEDS, moves.ROWS, moves.FOLDS, moves.MAX_LEN):
        trial = copy.deepcopy(p)
        r = trial.runs[2] if move.run_level else None
        before = (trial.n_splits, r.epochs, r.seeds, r.rows, r.max_len) if r else trial.n_splits
        assert move.down(trial, r), move
        assert move.loss(p, p.runs[2] if r else None) >= 0
        if move is moves.MAX_LEN:  # back up toward what the texts need, not to the config's 128
            assert r.max_len == 64 and move.up(trial, r) is None
            continue
        while move.up(trial, r):
            pass
        assert ((trial.n_splits, r.epochs, r.seeds, r.rows, r.max_len) if r else trial.n_splits) == before, move


def test_on_a_gpu_the_fine_tunes_are_cut_last():
    """On a GPU the cuts follow expected score per second: tuning trials (the classical models'
    too), screening rows and seeds go before any fine-tune loses an epoch, a fold or its rows,
    where the CPU's fixed order cuts the fine-tunes' epochs and keeps every classical trial."""
    gpu = {n: Cost(**{**c.__dict__, "device": "cuda", "step_s": c.step_s / 40, "infer_row_s": c.infer_row_s / 40})
           if c.family == "transformer" else c for n, c in costs().items()}
    top = ceiling(1e9)
    top.device, top.augment = "cuda", False
    top.runs.append(RunPlan("emb_minilm", "embedding"))
    full = make_plan(copy.deepcopy(top), gpu, WORK)
    assert not full.cuts
    training = re.compile(r"epochs? instead|training rows|^folds:|(minilm|mpnet): dropped")
    for share in (0.9, 0.5, 0.3, 0.2):
        top.available_s = full.estimate_s * share
        p = make_plan(copy.deepcopy(top), gpu, WORK)
        assert p.fits and p.device == "cuda"
        own = [i for i, c in enumerate(p.cuts) if training.search(c)]
        rest = [i for i, c in enumerate(p.cuts) if not training.search(c) and not c.startswith("trade:")]
        assert not own or max(rest) < min(own), p.cuts
    assert own and any("per classical model" in c for c in p.cuts)  # at 20% both kinds were cut
    cpu = copy.deepcopy(top)
    cpu.device = "cpu"
    q = make_plan(cpu, gpu, WORK)
    assert any("epoch" in c for c in q.cuts) and not any("classical model" in c for c in q.cuts)
