"""Your own hypotheses ([[hypothesis]] in TOML) are scored like the built-in detectors: one the planted
vowel head fits is found on that head, one no head fits is reported as not supported, and a bad regex
or an empty target set is a one-line error before any work."""

from __future__ import annotations

import json

import pytest

from reportgen.cli import cli


def _toml(root, body: str):
    path = root / "h.toml"
    path.write_text(f'train_windows = 48\nablation_windows = 16\ntimeline_windows = 0\n'
                    f'[[model]]\npath = "{root / "planted.pt"}"\nlabel = "Planted"\nlanguage = "en"\n'
                    f'text = "{root / "planted.txt"}"\n' + body)
    return path


@pytest.fixture(scope="module")
def hypothesis_run(planted_site, tmp_path_factory):
    out, _ = planted_site
    root = out.parent
    toml = _toml(root, '[[hypothesis]]\nname = "reads_vowels"\ndescription = "every query reads the vowels"\n'
                       'key_class = "vowel"\n'
                       '[[hypothesis]]\nname = "t_reads_three_back"\ndescription = "a t reads the character 3 back"\n'
                       'query_chars = "t"\nkey_offset = 3\n')
    site = tmp_path_factory.mktemp("hyp") / "site"
    assert cli(["run", "--config", str(toml), "--out", str(site), "--no-pdf"]) == 0
    return site


def test_a_hypothesis_the_planted_head_fits_is_found_and_one_no_head_fits_is_not(hypothesis_run):
    (m,) = json.loads((hypothesis_run / "results.json").read_text())["models"]
    found = {(f["head_name"], f["pattern"]) for f in m["findings"] if f["replicated"]}
    assert ("L0H2", "hyp_reads_vowels") in found  # head 2 was planted to read vowels
    assert not any(p == "hyp_t_reads_three_back" for _, p in found)
    block = m["heads"][2]["detectors"]["hyp_reads_vowels"]["heldout"]
    assert block["lift_ci_low"] >= 2 and block["q"] < 0.05 and "positional" in block and "swap" in block
    t = m["ablation"][0]["targeted"]["hyp_t_reads_three_back"]  # ablation contrast after the hypothesis' queries
    assert {"difference", "specificity", "specificity_ci_low"} <= set(t)
    assert all("hyp_reads_vowels" not in a["targeted"] for a in m["ablation"])  # no query: no contrast
    page = (hypothesis_run / "model-planted.html").read_text()
    assert "Your hypotheses" in page and "none: not supported" in page


@pytest.mark.parametrize("body, expect", [
    ('[[hypothesis]]\nname = "bad"\nkey_regex = "("\n', "bad regex"),
    ('[[hypothesis]]\nname = "never"\nkey_chars = "Q"\n', "no query-key pair"),
    ('[[hypothesis]]\nname = "two_keys"\nkey_chars = "a"\nkey_offset = 2\n', "exactly one"),
    ('[[hypothesis]]\nname = "Bad Name"\nkey_chars = "a"\n', "unique name"),
])
def test_bad_hypotheses_are_one_line_errors(planted_site, tmp_path, capsys, body, expect):
    out, _ = planted_site
    toml = _toml(out.parent, body)
    assert cli(["analyze", "--config", str(toml), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expect in err, err
