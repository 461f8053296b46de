"""The rendered site and PDF of two models (English text holding a script tag, and Hebrew): every page
loads in headless Chromium with no broken link, missing image or console error; the PDF has pages,
extractable text and Hebrew; user text is escaped; failed runs leave no half-written site; re-runs
are cached. (Findings, explanations and golden pages are tested on the planted run: test_planted.py.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

from reportgen.checkpoint import save_checkpoint
from reportgen.cli import cli
from reportgen.model import TransformerLM
from reportgen.tokenizer import CharTokenizer

from .conftest import TINY_TEXT

pytestmark = pytest.mark.slow

XSS = "<script>alert(1)</script>"
HEBREW = "שלום עולם. בבוקר אחד הלך איש אל השדה\n"


def _tiny_checkpoint(folder: Path, text: str, language: str, name: str) -> Path:
    tok = CharTokenizer.from_text([text])
    torch.manual_seed(1)
    model = TransformerLM(2, 2, 32, 32, tok.vocab_size(), 64, True).eval()
    path = folder / f"{name}.pt"
    save_checkpoint(path, model, tok, step=1, train_loss=3.0, heldout_bits_per_char=3.0,
                    corpus={"name": name, "language": language}, seed=0, history=[])
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A full run (site + PDF) on two tiny models: English text holding a script tag, and Hebrew."""
    root = tmp_path_factory.mktemp("run")
    en_text = (TINY_TEXT + XSS + "\n") * 8
    he_text = HEBREW * 30
    (root / "en.txt").write_text(en_text)
    (root / "he.txt").write_text(he_text)
    en = _tiny_checkpoint(root, en_text, "en", "en")
    he = _tiny_checkpoint(root, he_text, "he", "he")
    out = root / "site"
    args = ["run", "--out", str(out), "--train-windows", "16", "--model", str(en), "--label", XSS,
            "--language", "en", "--text", str(root / "en.txt")]
    assert cli(args) == 0
    # Second model with its own text: run once more into a separate folder with both models via TOML.
    toml = root / "both.toml"
    toml.write_text(f'out = "{out}"\ntrain_windows = 16\n'
                    f'[[model]]\npath = "{en}"\nlabel = "{XSS}"\nlanguage = "en"\ntext = "{root / "en.txt"}"\n'
                    f'[[model]]\npath = "{he}"\nlabel = "Hebrew"\nlanguage = "he"\ntext = "{root / "he.txt"}"\n')
    assert cli(["run", "--config", str(toml)]) == 0
    return out, toml


def test_run_writes_site_results_and_pdf(site):
    out, _ = site
    for name in ("index.html", "methods.html", "gallery.html", "compare.html", "results.json", "report.pdf",
                 "explore-hebrew.html"):
        assert (out / name).is_file(), name
    assert list((out / "figures").glob("*.png"))
    assert not list(out.parent.glob(".site.staging-*"))


def test_user_text_is_escaped_never_executed(site):
    out, _ = site
    pages = list(out.glob("*.html"))
    assert pages
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;" in p.read_text() for p in pages)
    for page in pages:
        assert XSS not in page.read_text(), page.name


def test_no_output_names_the_build_folder_or_a_staging_folder(site):
    """No absolute path of the machine that built the report in any output (pages, JSON, the PDF's text and links)."""
    from pypdf import PdfReader

    out, _ = site
    build = str(out.parent.resolve())
    files = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".html", ".json", ".md", ".txt", ".css")]
    assert len(files) > 10
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert build not in text and ".staging-" not in text, path.name
    reader = PdfReader(out / "report.pdf")
    pdf_text = "\n".join(p.extract_text() or "" for p in reader.pages)
    links = [str(a.get_object().get("/A", {}).get("/URI", "")) for p in reader.pages for a in p.get("/Annots") or []]
    for text in (pdf_text, *links):
        assert build not in text and ".staging-" not in text and "file:" not in text


def _local_targets(page: Path, html: str) -> list[Path]:
    targets = []
    for ref in re.findall(r'(?:href|src)="([^"]+)"', html):
        url = urlparse(ref)
        if url.scheme or ref.startswith("#"):
            continue
        targets.append((page.parent / unquote(url.path)).resolve())
    return targets


def test_every_relative_link_and_image_resolves(site):
    out, _ = site
    targets = [(page, t) for page in out.glob("*.html") for t in _local_targets(page, page.read_text())]
    assert len(targets) > 20
    for page, target in targets:
        assert target.exists(), f"{page.name} -> {target}"


needs_chromium = pytest.mark.skipif(not shutil.which("chromium") or not shutil.which("chromedriver"),
                                    reason="Debian chromium and chromium-driver are not installed")


def _chromium(javascript: bool = True):
    """Headless Debian Chromium through its chromedriver, logging the console; optionally with scripts off."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if not javascript:
        opts.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))


@needs_chromium
def test_every_page_loads_in_headless_chromium_without_errors(site):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.wait import WebDriverWait

    out, _ = site
    driver = _chromium()
    try:
        pages = sorted(out.glob("*.html"))
        assert pages
        for page in pages:
            driver.get(page.as_uri())
            # A loaded CI machine may return from get() before every image has decoded: wait for the
            # browser to finish (up to 20 s), then require each image to have really loaded.
            unloaded = "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
            try:
                WebDriverWait(driver, 20, poll_frequency=0.2).until(lambda d: d.execute_script(unloaded) == [])
            except TimeoutException:
                pass  # reported just below, with the images' names
            broken = driver.execute_script(unloaded)
            assert broken == [], f"{page.name}: missing images {broken}"
            links = driver.execute_script("return Array.from(document.links).map(a => a.href)")
            for href in links:
                url = urlparse(href)
                if url.scheme == "file":
                    assert Path(unquote(url.path)).exists(), f"{page.name}: broken link {href}"
            errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
            assert errors == [], f"{page.name}: console errors {errors}"
            driver.set_window_size(390, 844)  # a phone: the page itself never scrolls sideways
            wide = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            assert wide[0] <= wide[1], f"{page.name}: {wide[0]} px wide in a {wide[1]} px viewport"
            driver.set_window_size(1280, 900)
            if page.name.startswith("explore-"):  # the one page with a script: inline, and it works offline
                driver.execute_script("document.querySelector('input[name=\"mode\"][value=\"tokens\"]').click()")
                driver.execute_script("document.querySelectorAll('#query .ch')[12].dispatchEvent("
                                      "new MouseEvent('mouseover', {bubbles: true}))")
                shaded = driver.execute_script(
                    "return Array.from(document.querySelectorAll('#heads .line span')).filter(s => s.style.background).length")
                assert shaded > 0, page.name
                # inline, or the model's own file beside the page (file://, no network)
                assert driver.execute_script("return Array.from(document.scripts).every(s => !s.src || "
                                             "s.src.startsWith('file:') && s.src.endsWith('.model.js'))")
                assert [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")] == []
            else:
                assert driver.execute_script("return document.scripts.length") == 0
    finally:
        driver.quit()


@needs_chromium
def test_pages_read_with_javascript_switched_off(site):
    """Without JavaScript every page but the explorer is complete, and the explorer says where the numbers are."""
    from selenium.webdriver.common.by import By

    out, _ = site
    driver = _chromium(javascript=False)
    try:
        driver.get((out / "explore-hebrew.html").as_uri())
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "This page needs JavaScript" in body  # the <noscript> note is shown: scripts really are off
        driver.get((out / "model-hebrew.html").as_uri())
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Every layer × head" in body and "L0H0" in body and "Roles" in body
        assert "needs JavaScript" not in body
    finally:
        driver.quit()


def test_pdf_has_pages_extractable_text_and_hebrew(site):
    from pypdf import PdfReader

    out, _ = site
    reader = PdfReader(out / "report.pdf")
    assert len(reader.pages) >= 5
    text = "\n".join(p.extract_text() or "" for p in reader.pages)
    assert "Summary and key questions" in text and "Methods" in text
    assert re.search("[\u05d0-\u05ea]", text), "no Hebrew letters extracted from the PDF"


def test_rerun_with_nothing_changed_is_skipped(site, capsys):
    out, toml = site
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert cli(["run", "--config", str(toml)]) == 0
    assert "up to date" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_failed_run_leaves_previous_site_untouched(site, tmp_path):
    out, toml = site
    before = sorted(p.name for p in out.iterdir())
    bad = tmp_path / "bad.toml"
    bad.write_text(toml.read_text().replace('label = "Hebrew"', 'label = "Hebrew"\nwith_residuals = true')
                   .replace(str(out.parent / "he.txt"), str(tmp_path / "missing.txt")))
    assert cli(["run", "--config", str(bad), "--force"]) == 2
    assert sorted(p.name for p in out.iterdir()) == before
    assert not list(out.parent.glob(".site.staging-*"))


def test_render_only_change_reuses_the_analysis(site, tmp_path, capsys):
    out, toml = site
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = json.loads((copy / "results.json").read_text())
    capsys.readouterr()
    assert cli(["run", "--config", str(toml), "--out", str(copy), "--no-pdf"]) == 0
    err = capsys.readouterr().err
    assert "analysis unchanged; rendering again" in err
    assert json.loads((copy / "results.json").read_text()) == before
    assert (copy / "index.html").exists() and (copy / "windows.npz").exists()
    timings = json.loads((copy / "timings.json").read_text())
    assert "analyze" not in timings


def test_pdf_links_stay_inside_the_document(site):
    """Links in the PDF point to its own sections and appendix figures, never to files (or staging folders)."""
    from pypdf import PdfReader

    out, _ = site
    reader = PdfReader(out / "report.pdf")
    uris, internal = [], []
    for page in reader.pages:
        for annot in page.get("/Annots") or []:
            obj = annot.get_object()
            action = obj.get("/A", {})
            if action.get("/URI"):
                uris.append(str(action["/URI"]))
            dest = obj.get("/Dest") or action.get("/D")
            if dest is not None:
                internal.append(str(dest))
    assert internal, "the PDF has no internal links"
    assert uris == [] or all(u.startswith(("http://", "https://")) for u in uris), uris
    names = set(reader.named_destinations)
    assert all(d in names for d in internal if not d.startswith("[")), set(internal) - names


def _gray_pages(pdf: Path, dpi: int = 40) -> list:
    """Every page of `pdf` as a grey-level array (pdftoppm, PGM)."""
    import subprocess

    import numpy as np

    subprocess.run(["pdftoppm", "-gray", "-r", str(dpi), str(pdf), str(pdf.with_suffix(""))], check=True)
    pages = []
    for path in sorted(pdf.parent.glob(f"{pdf.stem}-*.pgm")):
        data = path.read_bytes()
        magic, width, height, maxval, rest = data.split(maxsplit=4)
        assert magic == b"P5" and maxval == b"255"
        pages.append(np.frombuffer(rest[: int(width) * int(height)], dtype=np.uint8).reshape(int(height), int(width)))
    return pages


@pytest.mark.skipif(not shutil.which("pdftoppm"), reason="poppler-utils (pdftoppm) is not installed")
@pytest.mark.parametrize("layers, heads", [(1, 1), (2, 4), (4, 4), (8, 8)])
def test_every_pdf_page_keeps_its_content_inside_the_margins(tmp_path, layers, heads):
    """Render each page and require blank outer margins: no figure, table or line of text runs off the page."""
    text = TINY_TEXT * 10
    (tmp_path / "t.txt").write_text(text)
    tok = CharTokenizer.from_text([text])
    torch.manual_seed(layers * 10 + heads)
    model = TransformerLM(layers, heads, 8 * heads, 32, tok.vocab_size(), 32, True).eval()
    ckpt = tmp_path / f"m{layers}x{heads}.pt"
    save_checkpoint(ckpt, model, tok, step=1, train_loss=3.0, heldout_bits_per_char=3.0,
                    corpus={"name": "tiny", "language": "en"}, seed=0, history=[])
    toml = tmp_path / "r.toml"
    toml.write_text("train_windows = 16\nn_probes = 8\nablation_windows = 8\ncontrol_windows = 8\ntimeline_windows = 0\n")
    out = tmp_path / "site"
    assert cli(["run", "--config", str(toml), "--model", str(ckpt), "--language", "en", "--text",
                str(tmp_path / "t.txt"), "--out", str(out)]) == 0
    pages = _gray_pages(out / "report.pdf")
    assert len(pages) >= 5
    for n, page in enumerate(pages, 1):
        side = round(9 / 25.4 * 40)  # the outer 9 mm of the 16 mm side margins, 18 mm top margin
        strips = {"left": page[:, :side], "right": page[:, -side:], "top": page[:side], "bottom": page[-4:]}
        for where, strip in strips.items():
            assert strip.min() >= 235, f"{layers}x{heads}: page {n} has content in its {where} margin"
