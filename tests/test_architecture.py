"""The house's layout, read from the code: stages on top, the library below, nothing upward.

Every ``pipeline`` import of every module (module level and inside functions; type-only
imports under ``if TYPE_CHECKING`` do not run and do not count) is checked against the layers
of docs/architecture.md; model families are told apart only in the registry.
"""

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
FAMILY_NAMES = {"transformer", "classical", "embedding"}
# what each layer may import (besides itself); stages may import any library layer
LAYERS = {
    "pipeline.runtime": set(),
    "pipeline.core": {"pipeline.runtime"},
    "pipeline.modeling": {"pipeline.core", "pipeline.runtime"},
    "pipeline.budget": {"pipeline.core", "pipeline.modeling"},
    "pipeline.cv": {"pipeline.core", "pipeline.modeling", "pipeline.budget", "pipeline.runtime"},
    "pipeline.reporting": {"pipeline.core", "pipeline.modeling", "pipeline.budget", "pipeline.runtime"},
    "pipeline.cli": {"pipeline.core", "pipeline.budget"},
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if "templates" in path.parts:
            continue  # the bundle's predict.py: it imports nothing from the project (test_package)
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _type_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path) -> set[str]:
    """The pipeline modules ``path`` imports when it runs."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipeline"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # from pipeline.x import module
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    known = modules()
    return {m for m in found if m in known}


def layer(module: str) -> str:
    return next((name for name in LAYERS if module == name or module.startswith(name + ".")), module)


GRAPH = {name: imports(path) for name, path in modules().items()}


def test_the_graph_is_read_from_the_code():
    assert "pipeline.cv.runs" in GRAPH["pipeline.stages.train"]  # the parser sees real imports
    assert "pipeline.modeling.transformer" in GRAPH["pipeline.modeling.families"]  # inside functions too
    assert len([m for m in GRAPH if m.startswith("pipeline.stages.")]) >= 13


def test_no_stage_imports_another_stage():
    offenders = {m: sorted(i for i in deps if i.startswith("pipeline.stages.") and i != m)
                 for m, deps in GRAPH.items() if m.startswith("pipeline.stages.")}
    assert not {m: d for m, d in offenders.items() if d}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if not m.startswith("pipeline.stages")
                                          and m not in ("pipeline", "pipeline.__main__", "pipeline.stages")))
def test_the_library_imports_only_downward(module):
    own = layer(module)
    allowed = LAYERS.get(own, set()) | {own}
    bad = sorted(i for i in GRAPH[module] if layer(i) not in allowed and i != "pipeline")
    assert not bad, f"{module} ({own}) imports {bad}; allowed: {sorted(allowed)}"


def test_no_module_is_named_like_the_standard_library():
    clash = sorted(m for m in GRAPH if m.rsplit(".", 1)[-1] in sys.stdlib_module_names)
    assert not clash


def _family_comparisons(path: Path) -> list[int]:
    """Lines where code compares something with a family's name (``family == "classical"``,
    ``family in ("transformer", ...)``): the branches the registry exists to hold."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Compare):
            continue
        values = [node.left, *node.comparators]
        names = {v.value for v in values if isinstance(v, ast.Constant)}
        for v in values:
            if isinstance(v, ast.Tuple | ast.List | ast.Set):
                names |= {e.value for e in v.elts if isinstance(e, ast.Constant)}
        if names & FAMILY_NAMES:
            lines.append(node.lineno)
    return lines


def test_families_are_told_apart_only_in_the_registry(tmp_path):
    branches = {name: _family_comparisons(path) for name, path in modules().items()}
    assert not {m: lines for m, lines in branches.items() if lines}
    planted = tmp_path / "planted.py"  # the check finds a branch where there is one
    planted.write_text('if cfg.train.family == "classical":\n    pass\nok = tc.family in ("transformer", "x")\n')
    assert _family_comparisons(planted) == [1, 3]


# -- metrics: told apart only in their registry ---------------------------------------------------
REGISTRY = "pipeline.core.metrics"
# files others rewrite now that still hold a metric table: (module, findings), cleared at their merge
KNOWN_METRIC_TABLES: dict[str, int] = {}


def _metric_names() -> set[str]:
    from pipeline.core.metrics import METRICS

    return set(METRICS)


def _constants(node: ast.AST) -> list[str]:
    """The string constants of a literal collection (tuple, list, set; a dict's keys), or []."""
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        elts = node.elts
    elif isinstance(node, ast.Dict):
        elts = [k for k in node.keys if k is not None]
    else:
        return []
    return [e.value for e in elts if isinstance(e, ast.Constant) and isinstance(e.value, str)] \
        if all(isinstance(e, ast.Constant) for e in elts) else []


def _metric_comparisons(path: Path, names: set[str]) -> list[int]:
    """Lines where code compares something with a metric's name (``metric == "f1"``, ``metric in
    ("f1", "roc_auc")``) or keeps a table of metrics of its own (a tuple, list, set or dict keyed
    by nothing but two or more metric names, such as a direction per metric): facts the registry
    exists to hold."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            values = [node.left, *node.comparators]
            found = {v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)}
            for v in values:
                found |= set(_constants(v))
            if found & names:
                lines.append(node.lineno)
        elif isinstance(node, ast.Tuple | ast.List | ast.Set | ast.Dict):
            consts = _constants(node)
            if len(consts) >= 2 and set(consts) <= names:
                lines.append(node.lineno)
    return sorted(set(lines))


def test_metrics_are_told_apart_only_in_the_registry(tmp_path):
    names = _metric_names()
    found = {m: _metric_comparisons(path, names) for m, path in modules().items() if m != REGISTRY}
    found = {m: lines for m, lines in found.items() if lines}
    unknown = {m: lines for m, lines in found.items() if m not in KNOWN_METRIC_TABLES}
    assert not unknown, f"metric names compared outside {REGISTRY}: ask metric_of(name) instead: {unknown}"
    for m, n in KNOWN_METRIC_TABLES.items():
        assert m in GRAPH, f"{m} is gone: drop it from KNOWN_METRIC_TABLES"
        assert len(found.get(m, [])) <= n, f"{m} compares metric names more often than known: {found.get(m)}"
        assert found.get(m), f"{m} no longer compares metric names: drop it from KNOWN_METRIC_TABLES"
    planted = tmp_path / "planted.py"  # the check finds each form where there is one
    planted.write_text('if schema.metric == "f1":\n    pass\nok = m not in ("mean_auc", "x")\n'
                       'SIGN = {"f1": 1, "logloss": -1}\nSEEDS = ("logloss", "roc_auc")\n'
                       'fine = score("logloss", y, p)\ncols = ("cv", "logloss", "accuracy")\nkind == "label"\n')
    assert _metric_comparisons(planted, names) == [1, 3, 4, 5]


def _every_import(path: Path) -> set[str]:
    """The pipeline modules ``path`` names in any import, type-only ones too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("pipeline"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pipeline"):
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return found & set(modules())


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph`` (strongly connected sets of two modules or more)."""
    reach = {m: set() for m in graph}
    for m in graph:  # a small graph: reachability by search from each module
        todo = list(graph[m])
        while todo:
            n = todo.pop()
            if n in graph and n not in reach[m]:
                reach[m].add(n)
                todo += graph[n]
    groups = {frozenset({m, *(n for n in reach[m] if m in reach[n])}) for m in graph}
    return sorted(sorted(g) for g in groups if len(g) > 1)


def test_the_budget_and_the_model_families_import_in_one_direction():
    """The family interface holds ``Cost``; the budget reads it. Nothing in modeling names the
    budget, not even for a type, and no circle runs through the budget (planner, costs and the
    families' cost formulas once formed one of eight files)."""
    every = {m: _every_import(p) - {m} for m, p in modules().items()}
    assert not {m: sorted(i for i in deps if layer(i) == "pipeline.budget")
                for m, deps in every.items() if layer(m) == "pipeline.modeling"
                and any(layer(i) == "pipeline.budget" for i in deps)}
    sub = {m: {i for i in deps if layer(i) in ("pipeline.budget", "pipeline.modeling")}
           for m, deps in every.items() if layer(m) in ("pipeline.budget", "pipeline.modeling")}
    assert not [c for c in _circles(sub) if any(layer(m) == "pipeline.budget" for m in c)]
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check finds one
