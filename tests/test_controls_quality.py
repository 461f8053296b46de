"""Controls over several random draws, the model-quality gate, induction in Olsson's sense, and true positional
statements (issue 20, parts A-D), on the planted model and a random-weight model of the same shape."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reportgen.analyze import _bits, analyze_model, model_result, prepare, unigram_bits
from reportgen.catalogue import DETECTOR, set_hypotheses
from reportgen.checkpoint import save_checkpoint
from reportgen.codec import decode, encode
from reportgen.config import ModelSpec, RunConfig
from reportgen.controls import run_controls
from reportgen.evidence import ControlResult
from reportgen.explain import absent_families, explain_controls, num, pct, random_repeats_sentence, subsumed_positional
from reportgen.model import TransformerLM
from reportgen.narrate import article
from reportgen.pages import build_pages
from reportgen.results import SPLITS, Run
from reportgen.roles import findings, role_labels
from reportgen.site import render
from reportgen.stats import add_q_values
from reportgen.synthesis import conclusion, criteria, key_questions, limitations, model_quality, ranked
from reportgen.tokenizer import CharTokenizer

from .planted import CONTEXT, EMBED, HEADS, planted_text, write_planted


class _Quiet:
    def add_task(self, *a, **k):
        return 0

    def advance(self, *a, **k):
        pass


def _analysed(ckpt, text, **settings):
    """(config, analysis) of one checkpoint on its text, q-values added; no causal stage."""
    cfg = RunConfig(models=(ModelSpec(ckpt, "Planted", "en", text=text),), train_windows=24, n_probes=8,
                    control_windows=8, **settings)
    torch.manual_seed(cfg.seed)
    set_hypotheses(())
    a = analyze_model(prepare(cfg.models[0], cfg), cfg, 0, _Quiet())
    for s in SPLITS:
        add_q_values([a.stats[s]])
    return cfg, a


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    ckpt, text = write_planted(tmp_path_factory.mktemp("cq"))
    cfg, a = _analysed(ckpt, text)
    return cfg, a, dataclasses.replace(a, findings=findings(a.stats, 1, HEADS))


def _controls(cfg, a):
    return run_controls(a.prep, cfg, 0, a.stats, np.random.default_rng([cfg.seed, 0, 11]), _Quiet())


def test_controls_draw_eight_times_and_the_ceiling_is_their_high_end(planted):
    cfg, a, _ = planted
    c = _controls(cfg, a)
    ri = c.random_init
    assert cfg.control_draws == 8 and ri.n_draws == 8 and len(ri.draws) == 8
    names = set().union(*(d.max_effect for d in ri.draws))
    assert names and set(ri.max_effect) == names
    for name in names:
        assert ri.max_effect[name] == max(d.max_effect.get(name, -math.inf) for d in ri.draws)
    assert len({d.scale for d in ri.draws}) > 1  # different random models
    assert ri.draws_with_roles == sum(bool(d.positional_roles or d.content_roles) for d in ri.draws)
    assert ri.tests == sum(d.tests for d in ri.draws)
    again = _controls(cfg, a)  # seeded: the same draws
    assert encode(again.random_init) == encode(ri)
    assert decode(ControlResult, encode(ri)) == decode(ControlResult, encode(ri))
    old = {k: v for k, v in encode(ri).items() if k != "draws"}  # results written before draws were kept
    assert decode(ControlResult, old).n_draws == 1
    one = _controls(dataclasses.replace(cfg, control_draws=1), a).random_init
    assert one.n_draws == 1 and one.draws is None and encode(one) == {k: v for k, v in encode(ri.draws[0]).items()}


def test_trained_roles_inside_the_ceiling_are_flagged_with_the_draws(planted):
    cfg, a, af = planted
    m = dataclasses.replace(model_result(af, None, None), controls=_controls(cfg, a))
    f = m.primary[0]
    ri = m.controls.random_init
    high = dataclasses.replace(ri, max_effect={**ri.max_effect, f.pattern: f.effect + 0.01},
                               draws=[dataclasses.replace(d, max_effect={**d.max_effect, f.pattern: f.effect + 0.01})
                                      if k == 3 else d for k, d in enumerate(ri.draws)])
    inside = dataclasses.replace(m, controls=dataclasses.replace(m.controls, random_init=high))
    text = explain_controls(f, inside)
    assert text.startswith("Flagged") and "over 8 randomly initialised models" in text and "1 of 8 draws" in text
    low = dataclasses.replace(ri, max_effect={**ri.max_effect, f.pattern: f.effect - 0.01})
    outside = dataclasses.replace(m, controls=dataclasses.replace(m.controls, random_init=low))
    assert "Flagged: over" not in explain_controls(f, outside) and "above it" in explain_controls(f, outside)
    said = " ".join(limitations([inside]))
    assert f"{ri.draws_with_roles or 'none'} of 8 randomly initialised models" in said
    assert f"{f.head_name} {f.role}" in said.split("high end")[1]


def test_a_model_worse_than_the_unigram_entropy_is_said_and_gives_no_headline(tmp_path, planted):
    text = planted_text()
    tok = CharTokenizer.from_text([text])
    torch.manual_seed(3)
    model = TransformerLM(1, HEADS, EMBED, CONTEXT, tok.vocab_size(), 4 * EMBED, with_residuals=True).eval()
    ckpt = tmp_path / "random.pt"
    save_checkpoint(ckpt, model, tok, step=1, train_loss=5.0, heldout_bits_per_char=5.0,
                    corpus={"name": "planted", "language": "en"}, seed=0, history=[], dtype=torch.float32)
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    cfg, a = _analysed(ckpt, tmp_path / "t.txt")
    a = dataclasses.replace(a, findings=findings(a.stats, 1, HEADS))
    m = model_result(a, None, None)
    ids = a.prep.ids["heldout"]
    assert m.unigram_bits_per_char == pytest.approx(unigram_bits(ids))
    assert m.measured_bits_per_char == pytest.approx(_bits(a.prep.bundle.model, ids))
    assert m.measured_bits_per_char > math.log2(tok.vocab_size()) > m.unigram_bits_per_char  # worse than uniform
    q = model_quality(m)
    assert not q.ok and "worse than uniform guessing" in q.text and "not headline findings" in q.text
    # whatever roles it has are not headlines, and the criteria do not tick "heads with a clear role"
    fake_role = dataclasses.replace(planted[2].findings[0], replicated=True, primary=True)
    bad = dataclasses.replace(m, findings=[fake_role])
    assert ranked([bad]) == [] and q.text in key_questions([bad])[0].a and q.text in conclusion([bad])
    first = criteria([bad], "m.html")[0]
    assert not first.ok and "not counted: Planted" in first.text
    good = dataclasses.replace(bad, measured_bits_per_char=m.unigram_bits_per_char - 1)
    assert model_quality(good).ok and ranked([good]) and criteria([good], "m.html")[0].ok
    run = Run("now", "0", {"python": "3", "torch": "2", "numpy": "1"}, {"seed": 0}, 0, [bad])
    figs = {(bad.label, "grid"): "g.png", (bad.label, "scores"): "s.png"}
    figs.update({(bad.label, h.layer, h.head): f"{h.name}.png" for h in bad.heads})
    pages = build_pages(run, figs)
    assert pages.index.headline == [] and pages.models[0].quality == q.text
    html = render(pages)[0]
    assert "Warning." in html[pages.models[0].file] and "Warning." in html["index.html"]


def _stats(probe_random_passes: bool):
    """Fake statistics of one head (1 x 1) on both splits: natural-text induction holds; random-letter induction
    holds only when asked."""
    def block(**kw):
        base = dict(mean=0.2, chance=0.05, ci_low=0.18, ci_high=0.22, bca=1.0, times_chance=4.0, q=1e-4, p=1e-5,
                    gain=0.15, gain_ci_low=0.12, positional=0.05)
        return {k: np.array([[v]]) for k, v in {**base, **kw}.items()}
    rand = block(mean=0.6, ci_low=0.5, ci_high=0.7) if probe_random_passes else block(mean=0.08, ci_low=0.06,
                                                                                        gain_ci_low=0.01)
    return {s: SimpleNamespace(values={"induction": block(), "probe_random": rand}) for s in SPLITS}


def test_induction_head_requires_the_random_sequence_rule():
    weak = findings(_stats(False), 1, 1)
    assert [f.role for f in weak] == ["copying head (natural text)"]
    assert role_labels(_stats(False), 0, 0) == {s: ["copying head (natural text)"] for s in SPLITS}
    strong = {f.pattern: f.role for f in findings(_stats(True), 1, 1)}
    assert strong == {"induction": "induction head (natural text)", "probe_random": "induction head (random)"}
    assert article("offset-2 head") == "an" and article("induction head") == "an" and article("copying head") == "a"


def test_the_copying_sentence_gives_the_random_sequence_score(planted):
    _, _, af = planted
    m = model_result(af, None, None)
    f = dataclasses.replace(m.findings[0], pattern="induction", role="copying head (natural text)")
    s = m.head(f.layer, f.head).summary("probe_random")
    text = random_repeats_sentence(f, m)
    assert "On repeated random letters" in text and "copying head, not an induction head" in text
    assert f"puts {num(s.mean)} on the token" in text and f"above {num(DETECTOR['probe_random'].rule.ci_low_above)}" in text


def test_positional_statements_are_true_when_the_rule_is_met_but_subsumed(planted):
    _, _, af = planted
    m = model_result(af, None, None)
    block = m.head(0, 0).summary("argmax_1")
    if block.mean < 0.9:  # make the planted previous-character head meet the positional rule on held-out text
        h = m.heads[0]
        met = dataclasses.replace(block, mean=0.967)
        m = dataclasses.replace(m, heads=[dataclasses.replace(h, detectors={**h.detectors, "argmax_1": {
            **h.detectors["argmax_1"], "heldout": met}})] + m.heads[1:])
        block = met
    assert not any(f.family == "positional" for f in m.findings)
    (s,) = subsumed_positional(m)
    assert (s.head, s.offset, s.by.pattern) == ("L0H0", 1, "offset_1")
    rules = {d: DETECTOR[d].rule.text() for d in ("argmax_0", "argmax_1")}
    (pos,) = [x for x in absent_families(m, rules) if x.family == "positional"]
    assert "No head passed" not in pos.text and pos.rule == rules["argmax_1"]
    assert f"L0H0 also meets the positional rule (strongest key 1 back for {pct(block.mean)} of held-out queries)" \
           in pos.text and "subsumed by its fixed-offset role" in pos.text
    other = dataclasses.replace(m, label="Other")
    q5 = key_questions([m, other])[4].a
    assert not any("in neither model" in line and "positional" in line for line in q5)
    assert any(line.startswith("positional: no role of its own") and "L0H0" in line for line in q5)
