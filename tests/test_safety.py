"""Nothing outside the project: names that become paths are checked, deletions stay inside the
artifact folders, and the HTML report cannot run what the data says."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_stage

from pipeline.core.config import ConfigError, load_config
from pipeline.core.paths import PathError, Paths, check_name
from pipeline.reporting.markdown import md_escape, md_table, safe_url, to_html


@pytest.mark.parametrize("name", ["../x", "../../etc", "/abs/path", "a/b", "", ".hidden", "..", "a\\b", "x\n",
                                  "a" * 101, "run name"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(PathError):
        check_name(name, "train.run")


@pytest.mark.parametrize("name", ["minilm", "run-1.v2", "tfidf_C2", "A"])
def test_plain_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("override", ["train.run=../../x", "train.run=/tmp/x", "ensemble.name=../outside",
                                      "ensemble.runs=[minilm,../../x]", "submit.source=run:/abs/path",
                                      "submit.source=run:../models/x", "submit.source=/tmp/preds"])
def test_config_refuses_names_that_leave_the_project(override):
    with pytest.raises(ConfigError, match="must"):
        load_config([], [override])


def test_train_with_force_and_a_hostile_run_name_touches_nothing_outside(prepared, tmp_path):
    from pipeline.__main__ import main

    data, workdir = prepared
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("precious")
    rel = Path("..") / ".." / victim.relative_to(tmp_path)
    code = main(["train", "--workdir", str(workdir), "--data", str(data), "--force", "-q",
                 "--set", "train.family=classical", f"train.run={rel}"])
    assert code == 2
    assert (victim / "keep.txt").read_text() == "precious"
    assert not (workdir / "models").exists() or not any((workdir / "models").iterdir())


def test_remove_tree_stays_inside_the_artifact_folders(tmp_path):
    paths = Paths.make(tmp_path / "work")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("x")
    models = paths.models
    models.mkdir(parents=True)
    (models / "escape").symlink_to(outside, target_is_directory=True)  # a symlink out of models/
    with pytest.raises(PathError):
        paths.remove_tree(models / "escape")
    with pytest.raises(PathError):
        paths.remove_tree(outside)
    with pytest.raises(PathError):
        paths.remove_tree(models)  # never a whole artifact folder
    with pytest.raises(PathError):
        paths.run_dir("escape")  # resolves outside: refused before anything is written there
    assert (outside / "f").read_text() == "x"
    (models / "ok" / "fold0").mkdir(parents=True)
    paths.remove_tree(models / "ok")
    assert not (models / "ok").exists()


# ---------------------------------------------------------------- the report and hostile data

HOSTILE = ['<script>alert(1)</script>', '"><img src=x onerror=alert(2)>', '![x" onerror="alert(3)](y)',
           '[click](javascript:alert(4))', '[a](data:text/html,<script>alert(5)</script>)',
           '<iframe src="https://evil.example"></iframe>', '`code` **bold** | pipe', '<a href=x onclick=alert(6)>a</a>']


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


def assert_inert(page: str) -> list[tuple[str, list]]:
    parser = _Collect()
    parser.feed(page)
    for tag, attrs in parser.tags:
        assert tag not in ("script", "iframe", "object", "embed", "form", "base"), (tag, attrs)
        for key, value in attrs:
            assert not key.lower().startswith("on"), (tag, key, value)
            if key in ("href", "src") and value is not None:
                assert not re.match(r"\s*(javascript|data|vbscript|file):", value, re.I), (tag, key, value)
    assert "Content-Security-Policy" in page and "script-src 'none'" in page
    return parser.tags


@pytest.mark.parametrize("s", HOSTILE)
def test_escaped_data_renders_as_the_same_text(s):
    page = to_html(f"text: {md_escape(s)}\n\n" + md_table([[s, 1]], ["text", "n"]), "t")
    tags = assert_inert(page)
    assert {t for t, _ in tags} <= {"html", "head", "meta", "title", "style", "body", "p", "table", "thead", "tbody",
                                    "tr", "th", "td"}
    from html import unescape

    assert unescape(re.sub(r"<[^>]+>", "", page)).count(s) == 2  # shown verbatim, twice


def test_even_unescaped_markdown_cannot_make_scripts_or_scheme_links():
    page = to_html("\n\n".join(HOSTILE) + "\n\n[ok](runs/a.md) ![img](figures/x.png) [web](https://x.org)\n", "t")
    tags = assert_inert(page)
    hrefs = [dict(a).get("href") for t, a in tags if t == "a"]
    assert "runs/a.html" in hrefs and "https://x.org" in hrefs
    assert not safe_url("javascript:alert(1)") and not safe_url("//evil.org/x") and safe_url("figures/a.png")


def test_hostile_competition_through_the_flow_to_the_report(tmp_path, workdir):
    """Texts, keywords, labels and a column name that carry hostile strings, from clean to report."""
    from conftest import NEG, POS, synthetic_texts

    texts, labels = synthetic_texts(80, [NEG, POS], 7)
    texts = [f"{t} {HOSTILE[i % len(HOSTILE)]}" for i, t in enumerate(texts)]
    names = ['<script>alert("no")</script>', '[x](javascript:alert(1))']
    folder = tmp_path / "hostile"
    folder.mkdir()
    df = pd.DataFrame({"id": range(80), "<b onmouseover=alert(7)>kw": [HOSTILE[i % 4] for i in range(80)],
                       "text": texts, "label": [names[y] for y in labels]})
    df.iloc[:60].to_csv(folder / "train.csv", index=False)
    df.iloc[60:].drop(columns="label").to_csv(folder / "test.csv", index=False)
    df.iloc[60:][["id"]].assign(label=names[0]).to_csv(folder / "sample_submission.csv", index=False)
    for stage, sets in (("inspect", ["inspect.adversarial=false", "train.family=classical"]), ("clean", []),
                        ("folds", ["folds.n_splits=2"]), ("train", ["train.family=classical", "train.run=lr"]),
                        ("submit", ["submit.source=run:lr"]), ("report", [])):
        assert run_stage(stage, workdir, folder, *sets) == 0, stage
    pages = sorted((workdir / "reports").rglob("*.html"))
    assert {p.name for p in pages} >= {"index.html", "inspect.html", "lr.html"}
    for page in pages:
        assert_inert(page.read_text())
    run_page = (workdir / "reports/runs/lr.html").read_text()
    assert "&lt;script&gt;alert(&quot;no&quot;)&lt;/script&gt;" in run_page  # the label, shown as text
