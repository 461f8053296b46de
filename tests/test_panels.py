"""Evidence panels follow the run: the character classes it used (the user's class_overrides) decide a class role's
targets, and a role from one of the user's hypotheses gets a panel of that hypothesis' own queries and keys. On the
planted model, whose head 2 reads vowels (tests/planted.py)."""

from __future__ import annotations

import numpy as np
import pytest

from reportgen import api
from reportgen.classes import CharClasses
from reportgen.hypotheses import Hypothesis
from reportgen.panels import ScriptModel, class_codes, passages, read_script, role_panel
from reportgen.webmodel import model_script

from .planted import write_planted

VOWELS = set("aeiouAEIOU")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """The planted model's explorer copy and its passages (a held-out window and the same with its end repeated)."""
    root = tmp_path_factory.mktemp("panels")
    ckpt, text = write_planted(root)
    body = text.read_text(encoding="utf-8")
    bundle = api.load(ckpt, device="cpu")
    model = ScriptModel(read_script(model_script(bundle, "en", body[-3000:], "x.js")))
    return model, passages(model)


def _run_classes(vocab: list[str], language: str, overrides: dict[str, str]) -> dict[str, str]:
    """What a run records as its classes (analyze: ModelResult.classes) under these overrides."""
    classes = CharClasses.for_vocab(vocab, language).with_overrides(overrides)
    return {classes.label(n): chars for n, chars in classes.members().items() if chars}


def test_class_codes_read_back_the_runs_classes_with_overrides_in_english_and_hebrew():
    vocab = ["<PAD>", " ", ",", "a", "b", "e", "t"]
    codes = class_codes(vocab, "en", _run_classes(vocab, "en", {"e": "consonant", ",": "space"}))
    assert list(codes) == list(CharClasses.for_vocab(vocab, "en").with_overrides({"e": "consonant", ",": "space"}).codes)
    assert list(codes) != list(CharClasses.for_vocab(vocab, "en").codes)
    he = [" ", "א", "ב", "ו", "ם", "׃"]  # vowel letters are recorded as "vowel letter (א ה ו י)", finals as "final form"
    record = _run_classes(he, "he", {"ב": "vowel"})
    assert any(k.startswith("vowel letter") for k in record) and "final form" in record
    assert list(class_codes(he, "he", record)) == list(CharClasses.for_vocab(he, "he").with_overrides({"ב": "vowel"}).codes)


def test_a_class_roles_panel_marks_the_runs_class_not_the_languages_default(planted):
    model, texts = planted
    vocab = model.rec["vocab"]
    default = role_panel(model, texts, 0, 2, "class_vowel", "en")
    assert default is not None and default.text[-1] != " "
    marked = {default.text[j] for j in np.nonzero(default.marks[-1])[0]}
    assert "e" in marked and marked <= VOWELS  # the default vowels, e among them
    codes = class_codes(vocab, "en", _run_classes(vocab, "en", {"e": "consonant"}))
    p = role_panel(model, texts, 0, 2, "class_vowel", "en", codes=codes)
    want = [c in VOWELS - {"e", "E"} for c in p.text]  # the last row: every key in the window of the run's vowels
    assert p.marks[-1].tolist() == want and any(want)
    assert not p.marks[:-1].any()  # a class's keys are everywhere: only the query's row is marked
    assert "e" in p.text and not any(p.marks[-1][k] for k, c in enumerate(p.text) if c == "e")
    assert abs(float((p.attn[-1] * p.marks[-1]).sum()) - p.mass) < 1e-9 and p.mass > 0.3


def test_a_hypothesis_role_gets_a_panel_of_its_own_queries_and_keys(planted):
    model, texts = planted
    hyp = Hypothesis("t_reads_vowels", "a t reads the vowels before it", query_chars="t", key_regex="[aeiou]")
    assert role_panel(model, texts, 0, 2, "hyp_t_reads_vowels", "en") is None  # no built-in target set
    p = role_panel(model, texts, 0, 2, "hyp_t_reads_vowels", "en", hypothesis=hyp)
    assert p is not None and p.text[-1] == "t" and p.mass > 0.3  # the query is one the hypothesis is about
    rows, cols = np.nonzero(p.marks)
    assert set(rows.tolist()) == {i for i, c in enumerate(p.text) if c == "t" and any(x in "aeiou" for x in p.text[:i + 1])}
    assert all(p.text[j] in "aeiou" and j <= i for i, j in zip(rows, cols))  # its keys, never later ones
    assert "keys the hypothesis names" in p.caption
    off = Hypothesis("three_back", "every query reads 3 back", key_offset=3)  # a fixed offset: one cell a row
    q = role_panel(model, texts, 0, 0, "hyp_three_back", "en", hypothesis=off)
    rows, cols = np.nonzero(q.marks)
    assert len(rows) and (rows - cols == 3).all()


@pytest.mark.slow
def test_a_run_with_overrides_and_a_hypothesis_shows_their_panels(tmp_path):
    """End to end on the planted model with a class override: the model page (site) shows the panel of the strongest
    head with the user's hypothesis as a replicated role, drawn from its own queries and keys."""
    import html
    import json

    from reportgen.cli import cli

    ckpt, text = write_planted(tmp_path)
    toml = tmp_path / "r.toml"
    toml.write_text(f'train_windows = 48\n[class_overrides]\n"," = "space"\n'
                    f'[[model]]\npath = "{ckpt}"\nlabel = "Planted"\nlanguage = "en"\ntext = "{text}"\n'
                    '[[hypothesis]]\nname = "consonants_read_vowels"\ndescription = "a consonant reads the vowels"\n'
                    'query_class = "consonant"\nkey_chars = "aeiou"\n', encoding="utf-8")
    out = tmp_path / "site"
    assert cli(["run", "--config", str(toml), "--out", str(out), "--no-pdf"]) == 0
    m = json.loads((out / "results.json").read_text(encoding="utf-8"))["models"][0]
    assert "," in m["classes"]["space"]
    found = [f["head_name"] for f in m["findings"] if f["pattern"] == "hyp_consonants_read_vowels" and f["replicated"]]
    assert found and found[0] == "L0H2"
    page = html.unescape((out / "model-planted.html").read_text(encoding="utf-8"))
    alt = "Attention of Planted L0H2 (your hypothesis consonants_read_vowels) on "
    assert alt in page and "keys the hypothesis names" in page
    src = page.split(alt)[0].rsplit('<img src="', 1)[1].split('"')[0]
    assert (out / src).is_file()
