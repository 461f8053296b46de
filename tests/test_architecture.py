"""Structure the next maintainer relies on: no import circles (function-level imports included), the
run never imports diff, modules stay readable, and the catalogue is the one source of names."""

from __future__ import annotations

import ast
from pathlib import Path

from reportgen.catalogue import DETECTOR, DETECTORS, FAMILY, ROLE_DETECTORS
from reportgen.languages import LANGUAGES

PACKAGE = Path(__file__).parent.parent / "reportgen"
MAX_LINES = 420


def _graph() -> dict[str, set[str]]:
    """Module -> reportgen modules it imports anywhere in its body."""
    graph: dict[str, set[str]] = {}
    for f in PACKAGE.glob("*.py"):
        deps = graph.setdefault(f.stem, set())
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module.split(".")[0]] if node.module else [a.name for a in node.names]
                deps.update(n for n in names if (PACKAGE / f"{n}.py").exists())
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in graph.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_no_import_circles():
    graph = _graph()
    assert len(graph) > 20
    circles = [m for m in graph if m in _reachable(graph, m)]
    assert circles == []


def test_the_run_does_not_import_diff_and_stages_do_not_import_the_orchestrator():
    graph = _graph()
    assert "diff" not in _reachable(graph, "pipeline")
    for stage in ("ablation", "timeline", "roles", "stats", "capture", "detectors"):
        assert "analyze" not in _reachable(graph, stage), stage


def test_no_module_is_too_long_to_read():
    lengths = {f.name: len(f.read_text(encoding="utf-8").splitlines()) for f in PACKAGE.glob("*.py")}
    assert lengths
    assert {n: k for n, k in lengths.items() if k > MAX_LINES} == {}


def test_catalogue_entries_are_complete_and_consistent():
    assert len(DETECTOR) == len(DETECTORS)  # unique names
    assert ROLE_DETECTORS
    for d in ROLE_DETECTORS:
        assert d.role and d.family in FAMILY and d.rule.text()
    for lang in LANGUAGES:
        assert lang.name and lang.corpus and lang.prompt and lang.examples
        assert all(key in FAMILY or key in DETECTOR for key in lang.notes)
