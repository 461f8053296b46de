"""Specifications on the planted run: the hand-set heads are found and replicated, their explanations
match their numbers on the rendered pages, every link (with #fragments) resolves, and the page
builders turn a typed run into the values the templates print."""

from __future__ import annotations

import dataclasses
import html as htmllib
import json
import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from reportgen.catalogue import BUILTIN, DETECTOR
from reportgen.evidence import Contrast
from reportgen.explain import explain, num, pct, qval, times
from reportgen.narrate import explain_ablation
from reportgen.pages import build_pages, head_file
from reportgen.results import Run, read_run
from reportgen.site import render
from reportgen.stats import N_BOOT
from reportgen.synthesis import model_quality

from .planted import HEADS, PLANTED, SILENT


@pytest.fixture(scope="module")
def run(planted_site) -> Run:
    out, _ = planted_site
    return read_run(out)


def test_every_planted_head_is_found_and_replicated_and_the_idle_head_is_not(run):
    (m,) = run.models
    assert m.findings, "the planted run must have findings"
    for head, (detector, role) in PLANTED.items():
        f = next((f for f in m.findings_at(0, head) if f.pattern == detector), None)
        assert f is not None, f"L0H{head}: no {detector} finding"
        assert f.role == role and f.replicated and f.primary  # e.g. the all-spaces head: space, not word boundary
        assert f.heldout.mean > 0.5 and f.effect > 0.3
    idle = HEADS - 1
    assert idle not in PLANTED
    assert m.findings_at(0, idle, replicated_only=True) == []
    assert m.role_label(0, idle) == "no replicated role"


def test_findings_agree_with_head_summaries_and_rules(run):
    (m,) = run.models
    assert m.findings
    for f in m.findings:
        s = m.head(f.layer, f.head).summary(f.pattern, "heldout")
        assert (f.heldout.mean, f.heldout.ci_low, f.heldout.q) == (s.mean, s.ci_low, s.q)
        assert f.effect == pytest.approx(s.mean - s.strictest_null, abs=2e-6)
        assert DETECTOR[f.pattern].rule.holds(m.head(f.layer, f.head).summary(f.pattern, "train").values())
        assert f.replicated == DETECTOR[f.pattern].rule.holds(s.values())
        assert f.rule == DETECTOR[f.pattern].rule.text()


def _text(html: str) -> str:
    """Visible text of an HTML fragment (tags dropped, entities decoded, whitespace collapsed)."""
    return " ".join(htmllib.unescape(re.sub(r"<[^>]+>", " ", html)).split())


def test_explanations_on_head_pages_state_their_findings_numbers(planted_site, run):
    """Parse each finding's card on its head page and compare every number with results.json."""
    out, _ = planted_site
    (m,) = run.models
    checked = 0
    for f in m.findings:
        html = (out / head_file(m, f.head_name)).read_text(encoding="utf-8")
        card = re.search(rf'<section class="card"><h2>{re.escape(htmllib.escape(f.role))}</h2>(.*?)</section>', html, re.S)
        assert card, f"{f.head_name}: no card for {f.role}"
        page = _text(card.group(1))
        h = f.heldout
        strength = re.search(r"On held-out text the mean is (\S+) \(95% CI (\S+)–(\S+)\), (\S+) the uniform-chance "
                             r"level of (\S+)\.", page)
        assert strength, f"{f.head_name} {f.role}: strength sentence missing"
        assert strength.groups() == (num(h.mean), num(h.ci_low), num(h.ci_high), times(h.times_chance),
                                     num(h.chance))
        consistency = re.search(r"It beats the strictest null in (\S+) of (\d+) held-out windows \(q (.+?)\)\. "
                                r"Discovered on (\d+) training windows \(mean (\S+)\)", page)
        assert consistency, f"{f.head_name}: consistency sentence missing"
        assert consistency.groups() == (pct(h.consistency), str(m.corpus.windows["heldout"]), qval(h.q),
                                        str(m.corpus.windows["train"]), num(f.train.mean))
        if h.positional is not None:
            content = re.search(r"Its own positional pattern alone would give (\S+), other windows' characters "
                                r"(\S+)(?:, its keys at word starts \(of any word\) and the last boundary (\S+))?, so content adds (\S+) "
                                r"on average over windows, each window measured against the stricter of its own two "
                                r"nulls \(lower CI bound (\S+)\)", page)
            assert content and content.groups() == (num(h.positional), num(h.swap),
                                                    None if h.structure is None else num(h.structure), num(h.gain),
                                                    num(h.gain_ci_low))
        abl = m.ablation_of(f.layer, f.head)
        assert abl is not None
        assert f"held-out loss changes by {abl.delta_bits_per_char:+.3f} bits/char" in page
        checked += 1
    assert checked == len(m.findings) >= len(PLANTED)


def test_explanation_choice_follows_the_numbers(run):
    (m,) = run.models
    f = next(f for f in m.findings if f.pattern == "class_space")
    abl = m.ablation_of(f.layer, f.head)
    def with_contrast(lo, hi, raw=(0.4, 0.1, 0.7), **kw):
        t = Contrast(0.5, 0.1, *raw, 10, (lo + hi) / 2, lo, hi)
        a = dataclasses.replace(abl, targeted={"in_word": t}, ci_low=0.1, ci_high=0.2, **kw)
        return dataclasses.replace(m, ablation=[a if x is abl else x for x in m.ablation])
    assert "specific to where its role predicts" in explain_ablation(f, with_contrast(0.1, 0.7))
    assert "not specific" in explain_ablation(f, with_contrast(-0.7, -0.1))
    assert "not specific" in explain_ablation(f, with_contrast(-0.1, 0.7))
    assert "measurably worse" in explain_ablation(f, with_contrast(0.1, 0.7))
    # costs less at its role's positions than elsewhere: never specific, however it compares with the median head
    cheaper = explain_ablation(f, with_contrast(0.1, 0.7, raw=(-0.03, -0.05, -0.01)))
    assert "specific to" not in cheaper and "costs less there than elsewhere" in cheaper
    broken = with_contrast(0.1, 0.7, ablated_bits_per_char=9.0)
    if broken.unigram_bits_per_char is not None:  # the ablated model is worse than a unigram model of its text
        good = dataclasses.replace(broken, measured_bits_per_char=broken.unigram_bits_per_char - 1)  # intact: better
        assert "removing it breaks the model" in explain_ablation(f, good)
        assert "breaks the model" not in explain_ablation(f, broken)  # the planted model is no better intact
    assert "breaks the model" not in explain_ablation(f, with_contrast(0.1, 0.7, ablated_bits_per_char=0.5))
    assert explain_ablation(f, dataclasses.replace(m, ablation=[])) == "This head was not ablated in this run."
    prev = next(f for f in m.findings if f.pattern == "offset_1")
    assert "of its attention on the previous character" in explain(prev, m).what
    assert not any(f.pattern.startswith("argmax_") for f in m.findings)  # one phenomenon, one role
    assert "of its attention on space keys" in explain(f, m).what
    stands = Contrast(0.5, 0.1, 0.4, 0.1, 0.7, 10, 0.3, 0.1, 0.5)  # above 0 and above the median head, by CI
    def causal(**kw):
        a = dataclasses.replace(abl, **{"ci_low": 0.05, "ci_high": 0.2, "targeted": {"in_word": stands},
                                        "class_contrasts": {}, **kw})
        return dataclasses.replace(m, ablation=[a if x is abl else x for x in m.ablation])
    from reportgen.explain import kept_on_shuffled

    shuffled = causal()
    assert kept_on_shuffled(f, shuffled)  # the planted space head reads spaces whatever the order of the text
    note = explain(f, shuffled).linguistics  # so what spaces tell about words is not claimed for it
    assert note.startswith("Evidence is mixed") and "character-shuffled text" in note and "Spaces separate" not in note
    c = shuffled.controls  # had it lost the role on shuffled text, the space note would be printed
    lost = dataclasses.replace(c, shuffled_text=dataclasses.replace(
        c.shuffled_text, content_roles=[r for r in c.shuffled_text.content_roles if not r.startswith(f.head_name)]))
    note = explain(f, dataclasses.replace(shuffled, controls=lost)).linguistics
    assert "Spaces separate English words" in note and "where the current word" in note  # the space note
    # a class role without a targeted test (vowels): relied upon, but its removal stands out when predicting
    # another class, not its own: the note is not printed; when its own class stands out, it is
    vowel = next(f for f in m.findings if f.pattern == "class_vowel")
    vabl = m.ablation_of(vowel.layer, vowel.head)
    def vowel_causal(classes):
        a = dataclasses.replace(vabl, ci_low=0.05, ci_high=0.2, targeted={}, class_contrasts=classes)
        return dataclasses.replace(m, ablation=[a if x is vabl else x for x in m.ablation])
    elsewhere = explain(vowel, vowel_causal({"punctuation": stands})).linguistics
    assert "Evidence is mixed" in elsewhere and "punctuation" in elsewhere
    assert "Evidence is mixed" in explain(vowel, vowel_causal({})).linguistics  # nothing singles it out
    assert "Evidence is mixed" not in explain(vowel, vowel_causal({"vowel": stands})).linguistics
    # a fixed-offset role has no test of where it should matter: relied upon, its note is still not claimed
    pabl = m.ablation_of(prev.layer, prev.head)
    relied_prev = dataclasses.replace(m, ablation=[dataclasses.replace(a, ci_low=0.05, ci_high=0.2) if a is pabl else a
                                                   for a in m.ablation])
    assert "no test says where a role like this should matter" in explain(prev, relied_prev).linguistics
    notspecific = Contrast(-0.1, 0.1, -0.2, -0.3, -0.1, 10, 0.1, 0.05, 0.2)  # costs less where its role predicts
    mixed = explain(f, causal(targeted={"in_word": notspecific})).linguistics
    assert "Evidence is mixed" in mixed and "Spaces separate" not in mixed
    unrelied = dataclasses.replace(m, ablation=[dataclasses.replace(a, ci_low=-0.05, ci_high=0.2) if a is abl else a
                                                for a in m.ablation])
    assert "does not measurably rely on it" in explain(f, unrelied).linguistics
    assert "Spaces separate" not in explain(f, unrelied).linguistics


def test_page_builders_hold_every_printed_value(run):
    (m,) = run.models
    figs = {(m.label, "grid"): "figures/grid.png", (m.label, "scores"): "figures/scores.png"}
    figs.update({(m.label, h.layer, h.head): f"figures/{h.name}.png" for h in m.heads})
    assert not model_quality(m).ok  # the planted model is a bad language model (random values and unembedding):
    m = dataclasses.replace(m, measured_bits_per_char=m.unigram_bits_per_char - 1)  # its roles headline only if good
    run = dataclasses.replace(run, models=[m])
    pages = build_pages(run, figs)
    assert {v.f.head for v in pages.index.headline} == set(PLANTED)
    assert len(pages.heads) == HEADS and pages.heads[0].figure == "figures/L0H0.png"
    assert {r.name for r in pages.heads[0].rows} == {d.name for d in BUILTIN}  # the planted run has no hypotheses
    assert [r.name for r in pages.heads[1].rows if r.role] == [f.pattern for f in m.findings_at(0, 1)]
    assert pages.methods.n_boot == N_BOOT and len(pages.methods.rules) == sum(d.rule is not None for d in BUILTIN)
    assert pages.models[0].layers[0][HEADS - 1].roles == "no replicated role"
    assert pages.compare.title == "Model comparison" and len(pages.compare.models) == 1
    gen = m.generation
    html, pdf = render(pages)
    assert f"temperature {gen.temperature}, top-{gen.top_k}" in _text(html[pages.models[0].file])
    assert f"{N_BOOT:,} resamples" in _text(html["methods.html"])
    # No replicated role anywhere: the index says so instead of showing cards.
    bare = dataclasses.replace(m, findings=[dataclasses.replace(f, replicated=False) for f in m.findings])
    empty = build_pages(dataclasses.replace(run, models=[bare]), figs)
    assert empty.index.headline == [] and empty.gallery == []
    assert "No head has a role that replicated on held-out text." in _text(render(empty)[0]["index.html"])


def _ids(html: str) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', html))


def test_every_link_and_fragment_resolves(planted_site):
    out, _ = planted_site
    pages = sorted(out.glob("*.html"))
    assert pages
    links = 0
    for page in pages:
        html = page.read_text(encoding="utf-8")
        for ref in re.findall(r'(?:href|src)="([^"]+)"', html):
            url = urlparse(htmllib.unescape(ref))
            if url.scheme:
                continue
            target = (page.parent / unquote(url.path)).resolve() if url.path else page
            assert target.exists(), f"{page.name} -> {ref}"
            if url.fragment:
                assert url.fragment in _ids(target.read_text(encoding="utf-8")), f"{page.name} -> {ref}: no such id"
            links += 1
    assert links > 20


def test_results_json_round_trips_through_the_typed_codec(planted_site):
    out, _ = planted_site
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert Run.from_json(doc).to_json() == doc


def test_a_head_that_writes_nothing_gets_no_linguistic_claim(run):
    (m,) = run.models
    abl = m.ablation_of(0, SILENT)
    assert abl.delta_bits_per_char == 0 and abl.ci_low == 0 == abl.ci_high
    fs = m.findings_at(0, SILENT, replicated_only=True)
    assert fs
    for f in fs:
        e = explain(f, m)
        assert "does not measurably rely on it" in e.linguistics
        assert "vowel" not in e.linguistics.lower()


def test_no_absolute_path_of_this_machine_in_any_output(planted_site):
    out, _ = planted_site
    files = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".html", ".json", ".css")]
    assert files
    for p in files:
        text = p.read_text(encoding="utf-8")
        assert str(out.parent) not in text and str(Path.home()) + "/" not in text, p.name


def test_worked_examples_state_the_attention_they_describe(planted_site, run):
    from reportgen import api

    out, _ = planted_site
    (m,) = run.models
    model = api.load(out.parent / "planted.pt")
    examples = [(e, e.example) for e in m.role_effects if e.example is not None]
    assert len(examples) >= len(PLANTED)
    for effect, ex in examples:
        attn = api.attention(model, effect.passage)[effect.layer, effect.head]
        assert effect.passage[ex.query] == ex.char
        for k, c, w, _ in ex.keys:
            assert effect.passage[k] == c and abs(attn[ex.query, k] - w) < 1e-4
        assert len(ex.row) == ex.query + 1 and max(abs(a - b) for a, b in zip(ex.row, attn[ex.query])) < 1e-4
        f = next(f for f in m.primary if (f.layer, f.head) == (effect.layer, effect.head))
        assert num(ex.target_mass) in explain(f, m).example
