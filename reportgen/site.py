"""Rendering and writing: figures, Jinja2 pages, the stylesheet and the PDF (shared by run and diff).

Rendering never builds HTML in Python (but for the escaped <bdi> of `isolate`) and autoescapes every value. Everything is written into
the staging folder that `outputs.OutputFolder.staged` swaps into place.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jinja2
import markupsafe
import numpy as np

from .caserows import case_rows
from .catalogue import FAMILIES, shown_in
from .classes import CLASS_NAMES
from .config import template_dir
from .explain import num, pct, qval, signed, times
from .figures import FigureWriter
from .headfig import HeadFigureData
from .keysets import SKIP
from .languages import LANGUAGE, has_rtl, without_bidi_controls
from .narrate import selective
from .outputs import FIGURES, OutputFolder, write_text_atomic
from .pages import MAX_HEADLINE_HEADS, Pages, build_pages
from .hypotheses import Hypothesis
from .panels import ScriptModel, class_codes, passages, read_script, role_panel
from .results import Run
from .rowgroups import group_rows
from .stages import FigureInputs
from .synthesis import ranked
from .timefig import timeline_args


def make_env() -> jinja2.Environment:
    """A fresh Jinja2 environment: autoescape on, StrictUndefined, the report's filters."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=num, pct=pct, times=times, qval=qval, signed=signed, target=link_target, bidi=isolate,
                       direction=lambda text: "rtl" if has_rtl(str(text)) else "ltr", grouped=group_rows)
    env.globals["in_pdf"] = False
    return env


def isolate(text) -> str:
    """A user string (label, author, course, hypothesis description) on a page: without explicit bidi controls, and
    in <bdi> when it has right-to-left characters, so it cannot reorder the sentence around it; a left-to-right
    string in these left-to-right pages needs no isolation and is left as it is."""
    if isinstance(text, markupsafe.Markup):
        return text
    text = without_bidi_controls(str(text))
    return markupsafe.Markup("<bdi>%s</bdi>") % text if has_rtl(text) else text


def link_target(page: str, in_pdf: bool) -> str:
    """A link to a site page; in the PDF, where head pages are appendix figures, an in-document anchor."""
    if not in_pdf:
        return page
    return "#" + page.split("#", 1)[1] if "#" in page else "#" + page.removesuffix(".html")


def _class_label(name: str, language: str) -> str:
    """Display name of a class (short form, for axis labels)."""
    lang = LANGUAGE.get(language)
    return (lang.class_label(name) if lang else name).split(" (")[0]


def plan_figures(run: Run, inputs: list[FigureInputs], folder: Path,
                 scripts: dict[str, str] | None = None) -> tuple[FigureWriter, dict, tuple[int, ...]]:
    """Queue every figure (`FigureWriter.run` draws them); return the writer, a lookup of figure file names (relative
    to the site), with each evidence panel's caption under (label, "panel_caption", head), and the jobs the PDF
    shows (all but the head pages' figures and thumbnails). `scripts`: model label -> its explorer model script,
    from which the headline roles' evidence panels are computed (models without one get none)."""
    fw = FigureWriter(folder)
    idx: dict = {}
    captions: dict = {}
    detectors = shown_in("scores")
    for a, m in zip(inputs, run.models):
        L, H = m.n_layers, m.n_heads
        roles = [[m.role_label(l, h) for h in range(H)] for l in range(L)]
        caption, text, attn = next((e for e in a.examples if e[0] == "held-out passage"), a.examples[-1])
        idx[(m.label, "grid")] = fw.add("gridfig.grid_figure", m.label, text, attn, roles, has_rtl(text))
        if m.circuit is not None and m.circuit.measured:
            idx[(m.label, "circuit")] = fw.add(
                "circuit_figure", f"{m.label}: what feeds each role head (composition)",
                [[next((f.role for f in m.primary if (f.layer, f.head) == (l, h)), "") for h in range(H)]
                 for l in range(L)],
                [(e.source, e.target, e.cut, selective(m, e) is not False) for e in m.circuit.edges],
                [w.head_name for w in m.writes if w.verdict == "copies"])
        for l in range(L):
            for h in range(H):
                idx[(m.label, "thumb", f"L{l}H{h}")] = fw.add("thumbnail", attn[l, h])
        if scripts and scripts.get(m.label):
            _panels(fw, idx, captions, m, scripts[m.label], run.settings.get("hypotheses", []))
        ratio = np.array([[_ratio(m.head(l, h).summary(d)) for l in range(L) for h in range(H)] for d in detectors])
        marked = np.array([[any(f.pattern == d for f in m.findings_at(l, h)) for l in range(L) for h in range(H)]
                           for d in detectors])
        idx[(m.label, "scores")] = fw.add("score_matrix_figure", f"{m.label}: detector scores vs chance",
                                          list(detectors), [f"L{l}H{h}" for l in range(L) for h in range(H)],
                                          ratio, marked)
        if m.timeline:
            idx[(m.label, "timeline")] = fw.add("timefig.timeline_figure", f"{m.label}: how roles emerge during training",
                                                *timeline_args(m.timeline))
        present = [c for c in CLASS_NAMES if a.class_count[CLASS_NAMES.index(c)] > 0]
        ci = [CLASS_NAMES.index(c) for c in present]
        offsets = np.asarray(m.offset_profile["heldout"])
        for l in range(L):
            for h in range(H):
                obs = a.class_matrix[l, h][np.ix_(ci, ci)]
                ch = a.class_chance[np.ix_(ci, ci)]
                data = HeadFigureData(
                    title=f"{m.label} L{l}H{h}: {roles[l][h]}",
                    examples=tuple((cap, t, att[l, h]) for cap, t, att in a.examples),
                    mean_attn=a.mean_attn[l, h], offset_profile=offsets[l, h],
                    class_names=tuple(_class_label(c, a.language) for c in present),
                    class_ratio=np.where(ch > 0, obs / np.maximum(ch, 1e-12), np.nan))
                idx[(m.label, l, h)] = fw.add("headfig.head_figure", data, group=m.label)
    if len(run.models) > 1:
        fams = [f.name for f in FAMILIES if f.compared]
        counts = {m.label: [len({f.head_name for f in m.primary if f.family == fam}) for fam in fams]
                  for m in run.models}
        idx["compare"] = fw.add("comparison_figure", fams, counts, {m.label: m.n_layers * m.n_heads for m in run.models})
    names = fw.names()
    pdf = tuple(v for k, v in idx.items() if not (isinstance(k, tuple) and (len(k) == 3 and isinstance(k[1], int)
                                                                          or k[1:2] == ("thumb",))))
    return fw, {**{k: f"{FIGURES}/{names[v]}" for k, v in idx.items()}, **captions}, pdf


def _panels(fw: FigureWriter, idx: dict, captions: dict, m, script: str, hypotheses: list[dict]) -> None:
    """Queue the evidence panel of each headline role of `m` and of the strongest head with each of the run's
    `hypotheses` as a replicated role (panels.role_panel, on the run's classes) and note their captions."""
    model = ScriptModel(read_script(script))
    texts, attn = passages(model), {}
    codes = class_codes(model.rec["vocab"], m.language, m.classes)
    heads = [(f, None, "panel", f.head_name) for _, f in ranked([m])[:MAX_HEADLINE_HEADS]]
    for h in hypotheses:
        f = next((f for f in m.replicated if f.pattern == f"hyp_{h['name']}"), None)
        heads += [(f, Hypothesis(**h), "hyp_panel", f.pattern)] if f else []
    for f, hyp, kind, name in heads:
        p = role_panel(model, texts, f.layer, f.head, f.pattern, m.language, attn, codes, hyp)
        if p is not None:
            key = (m.label, kind, name) + ((f.head_name,) if hyp else ())  # a hypothesis' panel: also its head
            idx[key] = fw.add("role_panel", f"{m.label} {f.head_name}: {f.role}", p.text, p.attn, p.marks,
                              has_rtl(p.text))
            captions[(m.label, "panel_caption", name)] = p.caption


def _ratio(s) -> float:
    """Held-out mean / chance for one cell (NaN if undefined)."""
    if not s.chance or not np.isfinite(s.mean):
        return float("nan")
    return s.mean / s.chance


def render(pages: Pages, figs: dict | None = None, pdf_link: bool = False) -> tuple[dict[str, str], str]:
    """Every page's HTML (file name -> HTML) and the PDF document's HTML; `figs` (plan_figures) gives the PDF its
    evidence panels; `pdf_link`: the index links report.pdf."""
    env = make_env()
    figs = figs or {}
    panels = {f"{k[0]} {k[2]}": (v, figs.get((k[0], "panel_caption", k[2]), "")) for k, v in figs.items()
              if isinstance(k, tuple) and len(k) == 3 and k[1] == "panel"}  # "label head" -> (figure, caption)
    hyp_panels = {f"{k[0]} {k[2]}": (v, figs.get((k[0], "panel_caption", k[2]), ""), k[3]) for k, v in figs.items()
                  if isinstance(k, tuple) and k[1:2] == ("hyp_panel",)}  # "label hyp_name" -> (figure, caption, head)
    env.globals.update(pdf_link=pdf_link, panels=panels, hyp_panels=hyp_panels, case_rows=case_rows, query_skip=SKIP)
    c = pages.common

    def page(template: str, name: str, **values) -> str:
        return env.get_template(template).render(page=name, common=c, **values)

    html = {"index.html": page("index.html.jinja2", "index.html", p=pages.index)}
    for mp in pages.models:
        html[mp.file] = page("model.html.jinja2", mp.file, p=mp)
    for hp in pages.heads:
        html[hp.file] = page("head.html.jinja2", hp.file, p=hp)
    html["gallery.html"] = page("gallery.html.jinja2", "gallery.html", items=pages.gallery)
    for ep in pages.explore:
        html[ep.file] = page("explore.html.jinja2", ep.file, p=ep)
    html["compare.html"] = page("compare.html.jinja2", "compare.html", c=pages.compare)
    html["methods.html"] = page("methods.html.jinja2", "methods.html", mth=pages.methods)
    cards = {v.page for v in pages.index.headline}  # the PDF has a card for these heads, their model chapters for others
    chapter = {hp.file: hp.model_file for hp in pages.heads if hp.file not in cards}
    env.filters["target"] = lambda page, in_pdf: link_target(chapter.get(page, page) if in_pdf else page, in_pdf)
    pdf = env.get_template("report.html.jinja2").render(common=c, pages=pages, p=pages.index, c=pages.compare,
                                                        mth=pages.methods, in_pdf=True)
    return html, pdf


def write_pdf(html: str, base: Path, path: Path) -> None:
    """Render HTML to a tagged PDF (WeasyPrint's PDF/UA-1 variant: a structure tree with headings, tables, figures
    and their alt text, for screen readers and reflow) with the print stylesheet (relative links resolved in `base`)."""
    import logging

    from weasyprint import CSS, HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    tmp = path.with_name(f".{path.name}.tmp")
    HTML(string=html, base_url=str(base)).write_pdf(tmp, stylesheets=[CSS(filename=str(template_dir() / "print.css"))],
                                                    pdf_variant="pdf/ua-1")
    tmp.replace(path)


def write_pages(html: dict[str, str], folder: Path) -> None:
    """Write pages and the stylesheet."""
    for name, text in html.items():
        write_text_atomic(folder / name, text)
    shutil.copy(template_dir() / "style.css", folder / "style.css")


def write_site(run: Run, inputs: list[FigureInputs], out: OutputFolder, figure_cache: dict, *, pdf: bool,
               previous: OutputFolder, clock, diff_link: bool = False, title: tuple[str, str] = ("", ""),
               explorer: dict[str, str] | None = None) -> None:
    """Figures, pages and (optionally) the PDF into `out`; `figure_cache` is updated with the figures used.
    `explorer`: model label -> its explorer model script (already in `out`), for the models that get an explorer."""
    from .progress import stderr

    if (previous.path / FIGURES).is_dir():  # reuse unchanged figures
        shutil.copytree(previous.path / FIGURES, out.path / FIGURES)
    with stderr.status("rendering figures and pages") as status:
        scripts = {label: (out.path / name).read_text(encoding="utf-8") for label, name in (explorer or {}).items()
                   if (out.path / name).is_file()}
        fw, figs, pdf_figures = plan_figures(run, inputs, out.path / FIGURES, scripts)
        pdf_html = []

        def write_html() -> None:  # while the workers draw the PDF's figures (the pages only name them)
            html, pdf_page = render(build_pages(run, figs, diff_link, *title, passages=explorer or {}), figs, pdf)
            write_pages(html, out.path)  # the output folder is staged: nothing is published before every figure
            pdf_html.append(pdf_page)
            if pdf:
                import weasyprint  # noqa: F401  (its import, ~1 s, off the PDF's own path)

        def write_report() -> None:  # while the workers draw the head pages' figures
            clock.lap("figures_and_pages")
            status.update("writing the PDF (and drawing the head pages' figures)")
            write_pdf(pdf_html[0], out.path, out.path / "report.pdf")
            clock.lap("pdf")
            status.update("drawing the head pages' figures")

        fw.run(figure_cache, first=pdf_figures, between=write_report if pdf else None, meanwhile=write_html)
    used = {v for k, v in figs.items() if not (isinstance(k, tuple) and k[1:2] == ("panel_caption",))}
    for stale in (out.path / FIGURES).glob("*.png"):
        if f"{FIGURES}/{stale.name}" not in used:
            stale.unlink()
    for key in [k for k, v in figure_cache.items() if f"{FIGURES}/{v}" not in used]:
        del figure_cache[key]
    clock.lap("figures_and_pages" if not pdf else "figures_after_pdf")
