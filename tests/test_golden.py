"""Golden snapshots of the planted run: results.json (scrubbed of time, versions and paths), the index,
the model page and one head page. Regenerate after a deliberate change with `make golden`
(= `pytest tests/test_golden.py --update-golden`) and review the diff before committing."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"
PAGES = ("index.html", "model-planted.html", "head-planted-L0H1.html")


def scrub_results(text: str, root: Path) -> dict:
    """results.json without what differs between machines and runs: time, versions, the run's folder."""
    doc = json.loads(text.replace(str(root), "<tmp>"))
    return dict(doc, generated="<generated>", reportgen_version="<version>", environment="<environment>")


def scrub_page(html: str, root: Path) -> str:
    """A page without its generation time, version, the run's folder and content-hashed figure names."""
    html = re.sub(r"Generated \S+ by reportgen \S+", "Generated <generated> by reportgen <version>",
                  html.replace(str(root), "<tmp>"))
    return re.sub(r"figures/[0-9a-f]{16}\.png", "figures/<hash>.png", html)


def _close(a, b, path="") -> list[str]:
    """Paths where two JSON values differ (numbers compared to 1e-4 relative, 1e-6 absolute)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path}: keys {sorted(a.keys() ^ b.keys())}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{path}[{i}]")]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return [] if math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) else [f"{path}: {a} != {b}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _check(name: str, actual: str, update: bool) -> str | None:
    path = GOLDEN / name
    if update:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return None
    assert path.exists(), f"{path} missing: run `make golden`"
    return path.read_text(encoding="utf-8")


def test_results_json_matches_the_golden_snapshot(planted_site, request):
    out, _ = planted_site
    actual = scrub_results((out / "results.json").read_text(encoding="utf-8"), out.parent)
    expected = _check("results.json", json.dumps(actual, indent=1, ensure_ascii=False) + "\n",
                      request.config.getoption("--update-golden"))
    if expected is not None:
        diffs = _close(json.loads(expected), actual)
        assert not diffs, "results.json differs from tests/golden/results.json:\n" + "\n".join(diffs[:20])


@pytest.mark.parametrize("page", PAGES)
def test_page_matches_the_golden_snapshot(planted_site, request, page):
    out, _ = planted_site
    actual = scrub_page((out / page).read_text(encoding="utf-8"), out.parent)
    expected = _check(page, actual, request.config.getoption("--update-golden"))
    if expected is not None:
        assert actual.splitlines() == expected.splitlines(), f"{page} differs from tests/golden/{page}"
