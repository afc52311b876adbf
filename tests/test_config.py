from pathlib import Path

import pytest
import yaml

from pipeline.core.config import Config, ConfigError, diff_dict, load_config, parse_override

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_base_yaml_loads():
    cfg = load_config([ROOT / "configs" / "base.yaml"])
    assert cfg.folds.n_splits == 5
    assert cfg.train.warmup_ratio == 0.1


def test_every_shipped_config_loads():
    files = sorted((ROOT / "configs").rglob("*.yaml"))
    assert files
    for f in files:
        if f.name == "select.yaml":
            continue
        load_config([ROOT / "configs" / "base.yaml", f])


def test_experiment_file_holds_only_diffs(tmp_path):
    exp = tmp_path / "exp.yaml"
    exp.write_text("train:\n  lr: 3.0e-5\n  run: small\n")
    cfg = load_config([exp])
    assert cfg.train.lr == 3e-5 and cfg.train.run == "small"
    assert cfg.train.epochs == Config().train.epochs  # untouched keys keep defaults
    assert diff_dict(cfg) == {"train": {"run": "small", "lr": 3e-5}}


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1e-5", "unknown config key 'train.lrr'"),
    ("trian.lr=1e-5", "unknown config key 'trian'"),
    ("train.epochs=two", "train.epochs must be an integer"),
    ("train.epochs=2.5", "train.epochs must be an integer"),
    ("train.group_by_length=3", "must be true or false"),
    ("train.warmup_ratio=1.5", "warmup_ratio must be in [0, 1)"),
    ("train.grad_accum=0", "train.grad_accum must be >= 1"),
    ("train.schedule=cosin", "train.schedule must be one of"),
    ("data.metric=auc", "data.metric must be one of"),
    ("folds.n_splits=1", "folds.n_splits must be >= 2"),
    ("train", "must look like section.key=value"),
])
def test_bad_overrides_fail_at_load(override, message):
    with pytest.raises(ConfigError) as e:
        load_config([], [override])
    assert message in str(e.value)


def test_overrides_keep_types():
    cfg = load_config([], ["train.lr=2e-5", "train.epochs=3", "train.head_lr=1", "train.folds=[0,2]",
                           "train.dropout=null", "clean.urls=null"])
    assert cfg.train.lr == 2e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.head_lr == 1.0 and isinstance(cfg.train.head_lr, float)  # int -> float is lossless
    assert cfg.train.folds == [0, 2]
    assert cfg.clean.urls is None
    assert parse_override("a.b.c=x") == {"a": {"b": {"c": "x"}}}


def test_bad_yaml_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1,\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config([bad])
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown config key 'train.epocs'"):
        load_config([typo])


def test_stage_writes_resolved_config(binary_comp, workdir):
    from conftest import run_stage

    assert run_stage("clean", workdir, binary_comp, "clean.lowercase=true") == 0
    written = yaml.safe_load((workdir / "reports" / "configs" / "clean.yaml").read_text())
    assert written["config"]["clean"]["lowercase"] is True
    changed = written["run"]["changed_from_defaults"]
    assert changed.pop("clean") == {"lowercase": True}
    base_budget = set(yaml.safe_load((Path(__file__).parents[1] / "configs" / "base.yaml").read_text())["budget"])
    assert set(changed) <= {"budget"} and set(changed.get("budget", {})) <= base_budget  # what base.yaml sets
    assert "torch" in written["run"]["environment"]["packages"]
