"""A label is a name, not an input to the numbers: changing it re-renders the stored analysis under the new name
(results, pages, per-window values, the explorer's files) without analysing again."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from reportgen.cli import cli
from reportgen.outputs import OutputFolder


@pytest.fixture
def site_copy(planted_site, tmp_path):
    out, args = planted_site
    copy = tmp_path / "site"
    shutil.copytree(out, copy)
    i = args.index("--out")
    return copy, args[:i + 1] + [str(copy)] + args[i + 2:]


def _relabel(args, label):
    i = args.index("--label")
    return args[:i + 1] + [label] + args[i + 2:]


def test_a_label_change_renders_again_without_analysing_and_renames_everything(site_copy, capsys):
    out, args = site_copy
    before = json.loads((out / "results.json").read_text())
    windows_before = OutputFolder(out).read_windows()
    capsys.readouterr()
    assert cli(_relabel(args, "Renamed model")) == 0
    err = capsys.readouterr().err
    assert "analysis unchanged; rendering again" in err
    after = json.loads((out / "results.json").read_text())
    (m,) = after["models"]
    assert (m["label"], m["slug"]) == ("Renamed model", "renamed-model")
    expected = json.loads(json.dumps(before))
    expected["models"][0].update(label="Renamed model", slug="renamed-model")
    assert after == expected  # every number (and the time of the analysis) as it was
    assert (out / "model-renamed-model.html").is_file() and not (out / "model-planted.html").exists()
    assert "<title>" in (out / "model-renamed-model.html").read_text()
    assert "Renamed model" in (out / "index.html").read_text()
    script = (out / "explore-renamed-model.model.js").read_text()
    assert 'REPORTGEN_MODELS["explore-renamed-model.model.js"] = ' in script
    assert not (out / "explore-planted.model.js").exists()
    assert "explore-renamed-model.model.js" in (out / "explore-renamed-model.html").read_text()
    windows = OutputFolder(out).read_windows()
    assert list(windows) == ["Renamed model"]
    for name, values in windows_before["Planted"].items():
        np.testing.assert_array_equal(windows["Renamed model"][name], values)
    assert cli(_relabel(args, "Renamed model")) == 0
    assert "up to date" in capsys.readouterr().err
    assert cli(args) == 0  # and back: the old name again, still without analysing
    assert "analysis unchanged; rendering again" in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text()) == before
