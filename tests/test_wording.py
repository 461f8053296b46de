"""Wording from the user's own text: a report on a text that is not the Bible quotes no Bible (examples, figures,
explorer, notes); line-break heads are tested and described as line heads; every non-replication says why."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pytest

from reportgen import narrate
from reportgen.catalogue import CAUSAL_TARGETS, DETECTOR, FAMILY, linguistic_note
from reportgen.languages import LANGUAGE, example_inputs
from reportgen.outputs import OutputFolder
from reportgen.results import read_run

BIBLE = re.compile(r"in the beginning|god created|came to pass|\bverses?\b|bible|scripture|king james|genesis", re.I)
WORDS = ("the cat sat on a mat near our old house while my brother cooked soup and rice for dinner after school "
         "bus was late every morning so we walked to market through park under bright clouds students wrote short "
         "notes about their favourite books").split()


def story(n_chars: int = 24000) -> str:
    """Made-up everyday English sentences in the planted model's vocabulary (no Bible word)."""
    rng = np.random.default_rng(1)
    lines, length = [], 0
    while length < n_chars:
        words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(6, 14)))]
        if words[0][0].upper() in "ABCDEFGHIKLMNORSTUW":  # capitals the planted vocabulary has
            words[0] = words[0].capitalize()
        lines.append(" ".join(words) + ".\n")
        length += len(lines[-1])
    return "".join(lines)


def test_own_text_examples_come_from_that_text():
    text = "Short.\nThe cat sat on a mat near our old house while it rained.\n"
    (example,) = example_inputs("en", text)
    assert example == "The cat sat on a mat" and text.index(example) > 0
    assert example_inputs("en") == LANGUAGE["en"].examples  # the default corpus keeps its own
    assert not BIBLE.search(" ".join(example_inputs("en", story())))


def test_a_line_break_head_is_tested_and_described_as_a_line_head():
    d = DETECTOR["class_newline"]
    assert d.causal_target == "after_newline" and "line" in CAUSAL_TARGETS[d.causal_target]
    assert "inside a word" not in CAUSAL_TARGETS[d.causal_target]
    assert "Line breaks" in d.caveat and "Spaces" in FAMILY[d.family].caveat  # its own caveat, not the spaces'
    assert "line" in linguistic_note("class_newline", "en") and not BIBLE.search(linguistic_note("class_newline", "en"))
    assert DETECTOR["class_space"].causal_target == "in_word"  # the word-boundary family keeps its own


@pytest.fixture(scope="module")
def story_site(tmp_path_factory):
    """The planted model run on a made-up non-Bible English text (site, no PDF)."""
    from reportgen.cli import cli

    from .planted import write_planted

    root = tmp_path_factory.mktemp("story")
    ckpt, _ = write_planted(root)
    text = root / "story.txt"
    text.write_text(story(), encoding="utf-8")
    out = root / "site"
    assert cli(["run", "--model", str(ckpt), "--language", "en", "--text", str(text), "--out", str(out),
                "--train-windows", "48", "--no-pdf"]) == 0
    return out, text.read_text(encoding="utf-8")


@pytest.mark.slow
def test_no_bible_phrase_in_a_report_on_a_non_bible_text(story_site):
    out, text = story_site
    assert not BIBLE.search(text)
    files = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".html", ".js", ".json", ".css")]
    assert any(p.name.endswith(".model.js") for p in files) and any(p.name.startswith("head-") for p in files)
    hits = {p.name: BIBLE.findall(p.read_text(encoding="utf-8")) for p in files}
    assert {k: v for k, v in hits.items() if v} == {}
    inputs = OutputFolder(out).read_figure_inputs()  # what the figures draw (their PNG text is not searchable)
    shown = [(caption, example) for it in inputs for caption, example, _ in it.examples]
    assert shown and not any(BIBLE.search(c + e) for c, e in shown)
    assert all(e in text or e[:len(e) // 2] * 2 == e and e[:len(e) // 2] in text for _, e in shown)  # own text
    (script,) = out.glob("*.model.js")
    passages = json.loads(script.read_text().splitlines()[-1].split(" = ", 1)[1].rstrip(";"))["passages"]
    assert any(p["caption"].startswith("short input") for p in passages)
    assert all(t in text or t[:len(t) // 2] * 2 == t and t[:len(t) // 2] in text for t in (p["text"] for p in passages))


@pytest.mark.slow
def test_every_non_replication_says_why(story_site):
    out, _ = story_site
    pages = " ".join(p.read_text(encoding="utf-8") for p in out.glob("*.html"))
    said = re.findall(r"did not replicate(.{0,2})", pages)
    assert said and all(x.startswith(":") or x.startswith(" o") for x in said)
    assert "did not replicate on held-out text." not in pages and "did not replicate." not in pages
    run = read_run(out)
    (m,) = run.models
    f = next(f for f in m.findings if not f.replicated)
    reason = narrate.not_replicated(f, m)
    assert reason != "its rule does not hold on held-out text"
    # the reason follows the numbers: a held-out gain far below the rule is said as such, an FDR miss as such
    head = m.head(f.layer, f.head)
    s = head.detectors[f.pattern]["heldout"]
    weak = dataclasses.replace(s, q=0.001, ci_low=0.9, gain_ci_low=-0.2, lift_ci_low=0.5)
    m2 = _with_summary(m, head, f.pattern, weak)
    assert narrate.not_replicated(f, m2).startswith("effect on held-out text below the rule")
    m3 = _with_summary(m, head, f.pattern, dataclasses.replace(s, q=0.5, gain_ci_low=0.9, lift_ci_low=9.0))
    assert narrate.not_replicated(f, m3).startswith("not significant after FDR (q 0.5")


def _with_summary(m, head, pattern, summary):
    detectors = {**head.detectors, pattern: {**head.detectors[pattern], "heldout": summary}}
    heads = [dataclasses.replace(h, detectors=detectors) if h is head else h for h in m.heads]
    return dataclasses.replace(m, heads=heads)
