"""The explorer runs the model in the browser: its attention on typed English and Hebrew text equals PyTorch's to
1e-3 per weight on the shipped models and on a model without residual connections, in headless Chromium from
file:// with the network off; and an output folder keeps its cache files out of what a user publishes."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from reportgen import api
from reportgen.checkpoint import ModelBundle
from reportgen.corpora import bible_split
from reportgen.model import TransformerLM
from reportgen.outputs import CACHE, FIGURE_INPUTS, JOURNAL, STATUS, OutputFolder
from reportgen.pages import Common, Footer, explore_page
from reportgen.site import make_env
from reportgen.webmodel import model_script, model_script_file

from .conftest import TINY_TEXT

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = {"en": ROOT / "inputs/models/en/step05000.pt", "he": ROOT / "inputs/models/he/step05000.pt"}
TOL = 1e-3

needs_chromium = pytest.mark.skipif(not shutil.which("chromium") or not shutil.which("chromedriver"),
                                    reason="Debian chromium and chromium-driver are not installed")


def _explorer(folder: Path, bundle: ModelBundle, language: str, heldout: str, slug: str) -> Path:
    """The explorer page of one model, rendered from the real template, page builder and model export."""
    m = SimpleNamespace(label=slug.title(), slug=slug, language=language, n_layers=bundle.config.n_layers,
                        n_heads=bundle.config.n_heads, role_label=lambda l, h: f"role of L{l}H{h}")
    name = model_script_file(slug)
    (folder / name).write_text(model_script(bundle, language, heldout, name), encoding="utf-8")
    page = explore_page(m, name)
    common = Common([("index.html", "Overview")], Footer("today", "test", 0))
    html = make_env().get_template("explore.html.jinja2").render(page=page.file, common=common, p=page)
    (folder / page.file).write_text(html, encoding="utf-8")
    shutil.copy(ROOT / "templates/style.css", folder / "style.css")
    return folder / page.file


def _offline_chromium():
    """Headless Debian Chromium with every network request refused (file:// only)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--proxy-server=http://127.0.0.1:9",
                 "--proxy-bypass-list=<-loopback>", "--host-resolver-rules=MAP * ~NOTFOUND"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    return driver


def _type(driver, text: str, expected: str) -> dict:
    """Type `text` into the explorer's box; return what the page computed once it shows `expected`."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    box = driver.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    WebDriverWait(driver, 60, poll_frequency=0.2).until(
        lambda d: d.execute_script("return window.reportgenExplorer.shown().chars") == expected)
    return driver.execute_script("return window.reportgenExplorer.shown()")


def _max_diff(shown: dict, bundle: ModelBundle) -> float:
    torch_att = api.attention(bundle, shown["chars"])  # (L, H, N, N)
    page_att = np.array(shown["att"]).reshape(torch_att.shape)  # the page keeps each head's n x n row-major
    assert page_att.shape == torch_att.shape
    return float(np.abs(page_att - torch_att).max())


def _errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


@needs_chromium
@pytest.mark.parametrize("language", ["en", "he"])
def test_browser_attention_equals_pytorch_on_the_shipped_models(language, tmp_path):
    from selenium.webdriver.common.by import By

    bundle = api.load(SHIPPED[language], device="cpu")
    vocab = set(bundle.tokenizer.tokens)
    heldout = bible_split(language).heldout[:4000]
    page = _explorer(tmp_path, bundle, language, heldout, {"en": "english", "he": "hebrew"}[language])
    script = (tmp_path / model_script_file(page.stem.removeprefix("explore-"))).read_text()
    assert '"dtype":"float16"' in script  # the shipped checkpoints store float16: exported exactly
    typed = {"en": ["And the LORD said unto Moses, Go in; speak: (Let my people go!)",
                    "In the beginning \u00e9t\u00e9 \u05e9\u05dc\u05d5\u05dd God"],
             "he": ["\u05d5\u05d9\u05d0\u05de\u05e8 \u05de\u05e9\u05d4 \u05d0\u05dc \u05d4\u05e2\u05dd \u05d0\u05dc "
                    "\u05ea\u05d9\u05e8\u05d0\u05d5 \u05d4\u05ea\u05d9\u05e6\u05d1\u05d5 \u05d5\u05e8\u05d0\u05d5",
                    "\u05d1\u05e8\u05d0\u05e9\u05d9\u05ea Hello \u05d1\u05e8\u05d0 \u05d0\u05dc\u05d4\u05d9\u05dd"]}
    driver = _offline_chromium()
    try:
        driver.get(page.as_uri())
        shown = driver.execute_script("return window.reportgenExplorer.shown()")
        # the page opens on a held-out window of the full context, computed in the page
        assert len(shown["chars"]) == bundle.config.max_context_len
        diffs = [_max_diff(shown, bundle)]
        captions = driver.execute_script("return Array.from(document.querySelectorAll('#passage option'))"
                                         ".map(o => o.textContent)")
        assert any("the same again" in c for c in captions) and len(captions) >= 3
        for text in typed[language]:
            expected = "".join(c for c in text if c in vocab)
            skipped = sorted(set(text) - vocab)
            assert expected and len(expected) < len(text) or not skipped
            shown = _type(driver, text, expected)
            diffs.append(_max_diff(shown, bundle))
            note = driver.find_element(By.ID, "skipped")
            assert note.is_displayed() == bool(skipped)
            for c in skipped:  # unknown characters are shown (as text) and skipped
                assert c in note.text
        print(f"{language}: max |browser - torch| per input {['%.2e' % d for d in diffs]}")
        assert max(diffs) <= TOL, diffs
        # Hebrew reads right to left in the box and in the character view
        direction = driver.execute_script("return getComputedStyle(document.getElementById('text')).direction")
        assert direction == ("rtl" if language == "he" else "ltr")
        # grid mode: one pattern per head, each captioned with a link to its head page
        n_heads = bundle.config.n_layers * bundle.config.n_heads
        links = driver.execute_script("return Array.from(document.querySelectorAll('#grid figcaption a'))"
                                      ".map(a => a.getAttribute('href'))")
        assert len(links) == n_heads == len(driver.find_elements(By.CSS_SELECTOR, "#grid canvas"))
        assert all(re.fullmatch(r"head-(english|hebrew)-L\dH\d\.html", h) for h in links)
        # per-head view: pick L1H2, point at a character; its strongest key is what PyTorch says
        driver.find_element(By.CSS_SELECTOR, 'input[name="mode"][value="tokens"]').click()
        driver.execute_script("var s = document.getElementById('head'); s.value = '1,2';"
                              "s.dispatchEvent(new Event('change'));")
        chars = driver.execute_script("return window.reportgenExplorer.shown().chars")
        k = len(chars) - 5
        driver.execute_script(f"document.querySelectorAll('#query .ch')[{k}].dispatchEvent("
                              "new MouseEvent('mouseover', {bubbles: true}))")
        top = driver.find_element(By.ID, "top").text
        row = api.attention(bundle, chars)[1, 2, k, : k + 1]
        assert top.split(": ", 1)[1].startswith(f"{row.max():.2f}"), top
        assert f"position {k}" in top
        shaded = driver.execute_script("return Array.from(document.querySelectorAll('#query .ch'))"
                                       ".filter(s => s.style.background).length")
        assert shaded == k + 1  # the query and every earlier character, none after it
        assert _errors(driver) == []
    finally:
        driver.quit()


@needs_chromium
def test_browser_attention_without_residuals_and_in_float32(tokenizer, tmp_path):
    """A float32 model without residual connections: exported as float32, and the page's attention is the model's
    (and far from what the same weights give with residual connections, so the check can tell them apart)."""
    from selenium.webdriver.common.by import By

    torch.manual_seed(3)
    model = TransformerLM(3, 2, 16, 32, tokenizer.vocab_size(), 32, with_residuals=False).eval()
    bundle = ModelBundle(model, tokenizer, Path("tiny.pt"), "", "en", {})
    page = _explorer(tmp_path, bundle, "en", TINY_TEXT, "tiny")
    assert '"dtype":"float32"' in (tmp_path / model_script_file("tiny")).read_text()
    text = "the dog sat on the log. hello!"
    with_res = TransformerLM(3, 2, 16, 32, tokenizer.vocab_size(), 32, with_residuals=True).eval()
    with_res.load_state_dict(model.state_dict())
    residual = api.attention(ModelBundle(with_res, tokenizer, Path("tiny.pt"), "", "en", {}), text)
    driver = _offline_chromium()
    try:
        driver.get(page.as_uri())
        shown = _type(driver, text, text)
        diff = _max_diff(shown, bundle)
        print(f"no residuals: max |browser - torch| {diff:.2e}")
        assert diff <= TOL
        assert float(np.abs(np.array(shown["att"]).reshape(residual.shape) - residual).max()) > 10 * TOL
        # user text is text: markup typed into the box never becomes elements
        markup = "<img src=x onerror=alert(1)>the"
        _type(driver, markup, "".join(c for c in markup if c in tokenizer.tokens))
        assert "<" in driver.find_element(By.ID, "skipped").text
        assert driver.execute_script("return document.querySelectorAll('#explorer img').length") == 0
        assert _errors(driver) == []
    finally:
        driver.quit()


def test_model_export_is_deterministic_and_small(tokenizer):
    """Same model, same bytes; only the weights attention needs (no unembedding, no last MLP)."""
    torch.manual_seed(0)
    model = TransformerLM(2, 2, 16, 32, tokenizer.vocab_size(), 32, with_residuals=True).eval()
    bundle = ModelBundle(model, tokenizer, Path("tiny.pt"), "", "en", {})
    a, b = model_script(bundle, "en", TINY_TEXT, "x.model.js"), model_script(bundle, "en", TINY_TEXT, "x.model.js")
    assert a == b and a.isascii()
    assert "word_prediction" not in a and "layers.1.mlp" not in a and "layers.0.mlp.i2h.weight" in a


# ---- cache files stay out of what a user publishes --------------------------------------------------------


def _published(out: Path) -> list[str]:
    """What a user uploads: every file but the hidden cache folder the README says to leave out."""
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                  if p.is_file() and not p.relative_to(out).as_posix().startswith(f"{CACHE}/"))


def test_no_published_file_is_a_cache_file(planted_site):
    out, _ = planted_site
    assert (out / STATUS).is_file() and (out / FIGURE_INPUTS).is_file()
    assert all(name.startswith(f"{CACHE}/") for name in (STATUS, FIGURE_INPUTS, JOURNAL))
    published = _published(out)
    assert "index.html" in published and any(f.endswith(".model.js") for f in published)
    hidden = [f for f in published if any(part.startswith(".") for part in f.split("/"))]
    assert hidden == []  # no dot-file (status, figure inputs, install journal) beside the pages
    assert not any(f.endswith(".npz") and f != "windows.npz" for f in published)


def test_an_older_outputs_top_level_cache_is_read_and_replaced(planted_site, tmp_path, capsys):
    """An output written before the cache subfolder: it is still ours (not refused), its analysis is reused, and
    after the new run no cache file is left at the top level; `clean` then removes the cache folder too."""
    from reportgen.cli import cli

    out, args = planted_site
    copy = tmp_path / "site"
    shutil.copytree(out, copy)
    model_js = {p.name: p.read_bytes() for p in copy.glob("*.model.js")}
    status = json.loads((copy / STATUS).read_text())  # as an older reportgen wrote it: top-level names
    status["files"] = {k.replace(FIGURE_INPUTS, ".figure-inputs.npz"): v for k, v in status["files"].items()}
    (copy / ".reportgen-status.json").write_text(json.dumps(status))
    (copy / STATUS).unlink()
    (copy / FIGURE_INPUTS).rename(copy / ".figure-inputs.npz")
    (copy / CACHE).rmdir()
    (copy / "index.html").unlink()
    i = args.index("--out")
    assert cli(args[:i + 1] + [str(copy)] + args[i + 2:]) == 0
    assert "analysis unchanged; rendering again" in capsys.readouterr().err
    assert not (copy / ".reportgen-status.json").exists() and not (copy / ".figure-inputs.npz").exists()
    assert (copy / STATUS).is_file() and (copy / FIGURE_INPUTS).is_file() and OutputFolder(copy).complete()
    assert {p.name: p.read_bytes() for p in copy.glob("*.model.js")} == model_js  # reused on re-render
    assert cli(["clean", "--out", str(copy)]) == 0
    assert not (copy / CACHE).exists() and not any(copy.iterdir())
