"""Your own hypotheses ([[hypothesis]] in TOML) are scored like the built-in detectors: one the planted
vowel head fits is found on that head, one no head fits is reported as not supported, five that restate
built-in detectors agree with them head by head (numbers and verdicts), a fixed-offset one gets no
positional or label-swap null, and a bad regex or an empty target set is a one-line error before any work."""

from __future__ import annotations

import html
import json

import numpy as np
import pytest
import torch

from reportgen.capture import score_windows
from reportgen.catalogue import DETECTOR, hypothesis_detector
from reportgen.classes import CharClasses
from reportgen.cli import cli
from reportgen.hypotheses import Hypothesis
from reportgen.tokenizer import CharTokenizer

from .planted import CONTEXT, planted_model, planted_text

# hypotheses over every query that restate a built-in detector: name -> (TOML key line, detector)
EQUIVALENT = {"reads_vowels": ('key_class = "vowel"', "class_vowel"),
              "prev_char": ("key_offset = 1", "offset_1"),
              "two_back": ("key_offset = 2", "offset_2"),
              "spaces": ('key_class = "space"', "class_space"),
              "punctuation": ('key_class = "punctuation"', "class_punctuation")}


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
    same = "".join(f'[[hypothesis]]\nname = "{n}"\n{key}\n' for n, (key, _) in EQUIVALENT.items())
    toml = _toml(root, same + '[[hypothesis]]\nname = "t_reads_three_back"\ndescription = "a t reads the character 3 back"\n'
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


def test_hypotheses_that_restate_built_in_detectors_agree_with_them_head_by_head(hypothesis_run):
    (m,) = json.loads((hypothesis_run / "results.json").read_text())["models"]
    settings = json.loads((hypothesis_run / "results.json").read_text())["settings"]["hypotheses"]
    rules = {f"hyp_{h['name']}": hypothesis_detector(h).rule for h in settings}
    findings = lambda p: {(f["head_name"], f["replicated"]) for f in m["findings"] if f["pattern"] == p}
    planted = {"offset_1": {"L0H0"}, "class_space": {"L0H1"}, "class_vowel": {"L0H2"}}
    for name, (_, builtin) in EQUIVALENT.items():
        hyp = f"hyp_{name}"
        assert rules[hyp].text().replace("(cf. Clark et al. 2019)", "").strip() == \
            DETECTOR[builtin].rule.text().replace(" (cf. Clark et al. 2019)", "")
        assert findings(hyp) == findings(builtin)  # the same heads, replicated or not
        assert {h for h, rep in findings(hyp) if rep} == planted.get(builtin, set())
        for head in m["heads"]:
            for split in ("train", "heldout"):
                a, b = head["detectors"][hyp][split], head["detectors"][builtin][split]
                assert set(a) == set(b), (hyp, builtin)  # the same nulls and fields
                for k in ("mean", "chance", "ci_low", "positional", "swap", "structure", "gain_ci_low",
                          "wide_lift_ci_low", "members_share"):  # the last two: the letter classes' class-wide gate
                    if k in a:
                        assert a[k] == pytest.approx(b[k], abs=1e-5), (hyp, k)
                assert rules[hyp].holds(a) == DETECTOR[builtin].rule.holds(b), (hyp, head["layer"], head["head"])


def test_a_fixed_offset_hypothesis_is_tested_against_uniform_chance_only(hypothesis_run):
    (m,) = json.loads((hypothesis_run / "results.json").read_text())["models"]
    for name in ("hyp_prev_char", "hyp_t_reads_three_back"):
        for head in m["heads"]:
            block = head["detectors"][name]["heldout"]
            assert not {"positional", "swap", "structure", "gain", "lift"} & set(block)
            assert block["p"] == block["p_uniform"]
    page = html.unescape((hypothesis_run / "model-planted.html").read_text())
    settings = json.loads((hypothesis_run / "results.json").read_text())["settings"]["hypotheses"]
    for h in settings:  # the page prints the rule that is applied
        assert hypothesis_detector(h).rule.text() in page
    t = next(h for h in settings if h["name"] == "t_reads_three_back")
    assert "per query the hypothesis is about" in hypothesis_detector(t).rule.text()


def test_restating_hypotheses_have_the_built_in_numbers_window_by_window():
    """On the planted model's attention, straight from `score_windows`: observed values, chance and every null of a
    restating hypothesis equal the built-in detector's per window (a key_chars set equal to a class included)."""
    text = planted_text(6000)
    tok = CharTokenizer.from_text([text])
    model = planted_model(tok)
    ids = torch.tensor([tok.stoi[c] for c in text])
    windows = ids[: 48 * CONTEXT].view(48, CONTEXT)
    hyps = (Hypothesis("o1", "", key_offset=1), Hypothesis("o2", "", key_offset=2),
            Hypothesis("v", "", key_class="vowel"), Hypothesis("sp", "", key_class="space"),
            Hypothesis("pu", "", key_class="punctuation"), Hypothesis("spc", "", key_chars=" "))

    def batches():
        with torch.no_grad():
            for lo in range(0, len(windows), 16):
                _, attn = model(windows[lo:lo + 16], return_attention_weights=True)  # (L, B, H, T, S)
                yield attn.transpose(0, 1), windows[lo:lo + 16]

    s = score_windows(batches(), windows, CharClasses.for_vocab(tok.vocab, "en"), tok.vocab_size(),
                      np.arange(len(windows)) * CONTEXT, hypotheses=hyps, vocab=tok.vocab)
    for hyp, builtin in (("o1", "offset_1"), ("o2", "offset_2"), ("v", "class_vowel"), ("sp", "class_space"),
                         ("pu", "class_punctuation"), ("spc", "class_space")):
        for field in ("observed", "chance", "swap", "positional", "structure"):
            got, want = getattr(s, field).get(f"hyp_{hyp}"), getattr(s, field).get(builtin)
            assert (got is None) == (want is None), (hyp, field)
            if got is not None:
                np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"{hyp} {field}")
    for field in ("char_mass", "char_chance"):  # the per-character profile behind the vowel class' class-wide gate
        np.testing.assert_allclose(s.profiles[f"hyp_v:vowel:{field}"], s.profiles[field], atol=1e-6)
    assert not any(k.startswith(("hyp_sp:", "hyp_spc:", "hyp_o1:")) for k in s.profiles)  # letter classes only


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
