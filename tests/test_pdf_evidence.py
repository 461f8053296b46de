"""The PDF a reader keeps, read back from its text layer (glyph positions, not by eye): Hebrew runs in the per-character
loss strip and in the worked examples are laid out right to left, with the '…' of a cut context on its right; every
headline card has its evidence figure on the same or the facing page; the evidence panels' attention is the model's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pdfplumber
import pytest
import torch

from reportgen import api
from reportgen.cli import cli
from reportgen.corpora import bible_split
from reportgen.languages import has_rtl
from reportgen.panels import REPEAT, WINDOW, ScriptModel, passages, read_script, role_panel
from reportgen.webmodel import model_script

ROOT = Path(__file__).resolve().parent.parent
HEBREW = ROOT / "inputs/models/he/step05000.pt"
VISIBLE = {" ": "␣", "\n": "↵"}


def _shown(text: str) -> str:
    return "".join(VISIBLE.get(c, c) for c in text)


@pytest.fixture(scope="module")
def hebrew_report(tmp_path_factory):
    """The shipped Hebrew model's report with small settings (site and PDF), its results and the PDF's lines."""
    root = tmp_path_factory.mktemp("he")
    toml = root / "he.toml"
    toml.write_text(f'out = "{root / "site"}"\ntrain_windows = 32\nheldout_windows = 96\nn_probes = 8\n'
                    'ablation_windows = 8\ncontrol_windows = 4\ntimeline_windows = 0\n'
                    f'[[model]]\npath = "{HEBREW}"\nlabel = "Hebrew"\nlanguage = "he"\n')
    assert cli(["run", "--config", str(toml)]) == 0
    out = root / "site"
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    with pdfplumber.open(out / "report.pdf") as pdf:
        pages = [(p.page_number, p.chars, p.extract_text() or "", len(p.images)) for p in pdf.pages]
    return out, results["models"][0], pages


def _lines(chars: list[dict], keep=lambda c: True) -> list[list[dict]]:
    """Characters grouped into lines (same baseline), each line left to right."""
    lines: dict[tuple, list[dict]] = {}
    for c in chars:
        if keep(c):
            lines.setdefault((round(c["bottom"], 0), round(c["size"], 1)), []).append(c)
    return [sorted(line, key=lambda c: c["x0"]) for _, line in sorted(lines.items())]


@pytest.mark.slow
def test_hebrew_loss_strip_reads_right_to_left(hebrew_report):
    _, m, pages = hebrew_report
    logical = _shown("".join(c for c, _ in m["generation"]["passage_delta"]))
    assert has_rtl(logical)
    strip = []  # the strip's lines, top to bottom, each read right to left
    for _, chars, text, _ in pages:  # the strip's characters are 8 pt (Hebrew letters in a fallback font)
        if "Per-character loss change" not in text:
            continue
        for line in _lines(chars, lambda c: abs(c["size"] - 8) < 0.05):
            strip.append("".join(c["text"] for c in reversed(line)))
    joined = "".join(strip)
    assert logical in joined, (logical, strip)
    assert logical[::-1] not in joined  # laid out left to right, it would read backwards


@pytest.mark.slow
def test_hebrew_worked_examples_read_right_to_left_with_the_ellipsis_on_the_cut_side(hebrew_report):
    _, m, pages = hebrew_report
    examples = [e["example"] for e in m["role_effects"] if e.get("example")]
    assert examples, "no worked example to check"
    card = [line for _, chars, _, _ in pages for line in _lines(chars, lambda c: abs(c["size"] - 9) < 0.05)]
    right_to_left = ["".join(c["text"] for c in reversed(line)) for line in card]  # the cards' text is 9 pt
    left_to_right = ["".join(c["text"] for c in line) for line in card]
    checked = 0
    for ex in examples:
        context = _shown(ex["context"])
        if not has_rtl(context):
            continue
        cut = ex["query"] + 1 > len(ex["context"])
        want = ("…" if cut else "") + context  # read right to left: the ellipsis comes first, at the right
        printed = [line for line in right_to_left if context in line]
        if not printed:
            continue  # this example's head has no card in the PDF
        checked += 1
        assert any(want in line for line in printed), (want, printed)
        assert context == context[::-1] or not any(context in line for line in left_to_right)  # not left to right
        for k, c, w, _ in ex["keys"]:  # "sends 0.962 to 'ש' (1 back": the quote and the bracket stay in place
            if has_rtl(c):
                assert f"to '{c}' (" in " ".join(left_to_right), (c, [line for line in left_to_right if c in line])
    assert checked, "no Hebrew worked example was printed"


@pytest.mark.slow
def test_every_headline_card_has_its_figure_on_the_same_or_facing_page(hebrew_report):
    out, m, pages = hebrew_report
    html = (out / "index.html").read_text(encoding="utf-8")
    roles = {f["head_name"]: f["role"] for f in m["findings"] if f.get("primary") and f.get("replicated")}
    cards = [h for h in roles if f"Hebrew {h}</a>" in html]  # the index's headline cards
    assert cards, "the report has no headline card"
    for head in cards:
        card = [n for n, _, text, _ in pages if f"{head} — {roles[head]}" in text]
        figure = [n for n, _, text, images in pages if f"Hebrew {head} on a held-out passage" in text and images]
        assert card and figure, (head, card, figure)
        n, f = card[-1], figure[0]
        assert n == f or (abs(n - f) == 1 and min(n, f) % 2 == 0), (head, n, f)  # pages 2k and 2k+1 face each other


@pytest.mark.slow
def test_no_appendix_of_every_head_in_the_pdf(hebrew_report):
    _, _, pages = hebrew_report
    assert not any("Appendix: every head" in text for _, _, text, _ in pages)


@pytest.mark.parametrize("language", ["en", "he"])
def test_evidence_panel_attention_is_the_models(language):
    """The panels' attention, computed from the explorer's copy of the weights, equals PyTorch's on the shipped
    models; a role's panel ends at a query with attention on its targets, inside the window."""
    bundle = api.load(ROOT / f"inputs/models/{language}/step05000.pt", device="cpu")
    model = ScriptModel(read_script(model_script(bundle, language, bible_split(language).heldout[:4000], "x.js")))
    texts = passages(model)
    assert len(texts) == 2 and texts[1][1][-REPEAT:] == texts[1][1][-2 * REPEAT:-REPEAT]
    for _, text in texts:
        with torch.no_grad():
            _, ref = bundle.model(torch.tensor([bundle.tokenizer.tokenize(text)]), return_attention_weights=True)
        assert np.abs(model.attention(text) - ref[:, 0].numpy()).max() < 1e-4
    p = role_panel(model, texts, 0, 0, "induction", language)  # copying: both copies of the repeated passage
    assert p is not None and 0 < p.mass <= 1 and p.text == texts[1][1][-WINDOW:] and p.marks[-1, REPEAT]
    assert abs(float((p.attn[-1] * p.marks[-1]).sum()) - p.mass) < 1e-9
    p = role_panel(model, texts, 1, 0, "word_start", language)  # its word start 2 or more back, inside the window
    back = len(p.text) - 1 - np.nonzero(p.marks[-1])[0]
    assert len(p.text) == WINDOW and back.size and (back >= 2).all() and p.text[-1] != " "


def test_index_links_the_pdf_explorer_and_key_questions_and_every_image_is_described(planted_site):
    import re

    out, _ = planted_site
    index = (out / "index.html").read_text(encoding="utf-8")
    questions = re.findall(r'<section class="question" id="(q\d+)">', index)
    assert questions and all(f'href="#{q}"' in index for q in questions)
    assert 'id="how-to-read"' in index and 'href="#how-to-read"' in index
    explorers = sorted(p.name for p in out.glob("explore-*.html"))
    assert explorers and all(f'href="{e}"' in index for e in explorers)
    assert ('href="report.pdf"' in index) == (out / "report.pdf").exists()  # this run has --no-pdf
    for page in out.glob("*.html"):
        for tag in re.findall(r"<img [^>]*>", page.read_text(encoding="utf-8")):
            alt = re.search(r'alt="([^"]*)"', tag)
            assert alt and len(alt.group(1)) >= 20, (page.name, tag)  # says what the figure shows


@pytest.mark.slow
def test_the_pdf_is_tagged_with_its_figures_alt_text(hebrew_report):
    """PDF/UA-1: a structure tree (MarkInfo Marked true), the document's language, and each evidence figure tagged
    as a Figure carrying its page's alt text."""
    import pypdf

    out, _, _ = hebrew_report
    root = pypdf.PdfReader(out / "report.pdf").trailer["/Root"]
    assert bool(root["/MarkInfo"]["/Marked"]) and root["/Lang"] == "en"  # pypdf's BooleanObject
    figures, todo = [], [root["/StructTreeRoot"]]
    while todo:
        node = todo.pop().get_object()
        if not isinstance(node, pypdf.generic.DictionaryObject):
            continue
        if node.get("/S") == "/Figure":
            figures.append(str(node.get("/Alt", "")))
        kids = node.get("/K")
        if kids is not None:
            kids = kids.get_object()
            todo += list(kids) if isinstance(kids, pypdf.generic.ArrayObject) else [kids]
    assert any(a.startswith("Attention of Hebrew L") for a in figures), figures
    assert all(figures), "a figure without alt text"
