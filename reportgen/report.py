"""Render stage: page data from results.json and analyses, Jinja2 pages, the PDF, atomic site writes.

Data generation is separate from rendering: `build_pages` turns results into display-ready
dicts; templates only loop over them. Rendering never builds HTML in Python and autoescapes
every value. The site is written into a temporary sibling folder and swapped in at the end, so
a failed run never leaves a half-written site.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np

from .analyze import ModelAnalysis
from .classes import CLASS_LABELS
from .classes import CLASS_NAMES
from .config import template_dir
from .detectors import DESCRIPTIONS
from .explain import (FAMILY_TARGET, TARGET_TEXT, absent_families, explain_ablation, explain_finding,
                      linguistic_note, num, pct, qval, signed, times)
from .figures import FigureWriter, HeadFigureData
from .stats import FAMILIES

SCORE_DETECTORS = [d for d in DESCRIPTIONS if d not in ("entropy", "distance", "confidence")]


def make_env() -> jinja2.Environment:
    """A fresh Jinja2 environment: autoescape on, StrictUndefined, the report's filters."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir())), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=num, pct=pct, times=times, qval=qval, signed=signed)
    return env


def slug(text: str) -> str:
    """A file-name-safe slug."""
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return s or hashlib.sha256(text.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Site:
    """Everything rendered: page name -> HTML, the PDF's HTML, and figure files."""

    pages: dict[str, str]
    pdf_html: str


@dataclass(frozen=True)
class FigureInputs:
    """The arrays a model's figures need beyond results.json (saved so rendering can run without analysis)."""

    label: str
    language: str
    examples: tuple[tuple[str, str, np.ndarray], ...]  # (caption, text, attention (L, H, T, T))
    mean_attn: np.ndarray  # (L, H, T, S) held-out mean attention
    class_matrix: np.ndarray  # (L, H, C, C)
    class_chance: np.ndarray  # (C, C)
    class_count: np.ndarray  # (C,)

    @classmethod
    def of(cls, a: ModelAnalysis) -> "FigureInputs":
        """From a fresh analysis."""
        h = a.scores["heldout"]
        return cls(a.spec.label, a.split.language, a.examples, h.mean_attn, h.class_matrix, h.class_chance,
                   h.class_count)


def save_figure_inputs(path: Path, items: list[FigureInputs]) -> None:
    """Write figure inputs to one .npz (plain arrays and strings; nothing pickled)."""
    arrays: dict[str, np.ndarray] = {}
    for k, it in enumerate(items):
        p = f"m{k}_"
        arrays[p + "meta"] = np.array([it.label, it.language])
        arrays[p + "captions"] = np.array([e[0] for e in it.examples])
        arrays[p + "texts"] = np.array([e[1] for e in it.examples])
        for j, e in enumerate(it.examples):
            arrays[f"{p}example{j}"] = e[2]
        for name in ("mean_attn", "class_matrix", "class_chance", "class_count"):
            arrays[p + name] = getattr(it, name)
    with path.open("wb") as fh:
        np.savez_compressed(fh, **arrays)


def load_figure_inputs(path: Path) -> list[FigureInputs] | None:
    """Inverse of save_figure_inputs; None if missing or unreadable (the caller re-analyses)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            items, k = [], 0
            while f"m{k}_meta" in data.files:
                p = f"m{k}_"
                label, language = (str(x) for x in data[p + "meta"])
                examples = tuple((str(c), str(t), data[f"{p}example{j}"])
                                 for j, (c, t) in enumerate(zip(data[p + "captions"], data[p + "texts"])))
                items.append(FigureInputs(label, language, examples, data[p + "mean_attn"], data[p + "class_matrix"],
                                          data[p + "class_chance"], data[p + "class_count"]))
                k += 1
        return items or None
    except (OSError, ValueError, KeyError):
        return None


def _class_label(name: str, language: str) -> str:
    """Display name of a class (short form, for axis labels)."""
    return CLASS_LABELS.get(language, {}).get(name, name).split(" (")[0]


def _figures(inputs: list[FigureInputs], results: dict, folder: Path, cache: dict) -> dict:
    """Queue and render every figure; return a lookup of figure file names."""
    fw = FigureWriter(folder)
    idx: dict = {}
    for a, m in zip(inputs, results["models"]):
        L, H = m["hyperparameters"]["n_layers"], m["hyperparameters"]["n_heads"]
        roles = [[_head_role(m, l, h) for h in range(H)] for l in range(L)]
        caption, text, attn = next((e for e in a.examples if e[0] == "held-out passage"), a.examples[-1])
        idx[(m["label"], "grid")] = fw.add("grid_figure", f"{m['label']}: every layer × head", text, attn, roles)
        ratio = np.array([[_ratio(m, l, h, d) for l in range(L) for h in range(H)] for d in SCORE_DETECTORS])
        marked = np.array([[any(f["pattern"] == d and f["layer"] == l and f["head"] == h for f in m["findings"])
                            for l in range(L) for h in range(H)] for d in SCORE_DETECTORS])
        idx[(m["label"], "scores")] = fw.add("score_matrix_figure", f"{m['label']}: detector scores vs chance",
                                             SCORE_DETECTORS, [f"L{l}H{h}" for l in range(L) for h in range(H)],
                                             ratio, marked)
        if m.get("timeline"):
            t = m["timeline"]
            idx[(m["label"], "timeline")] = fw.add("timeline_figure", f"{m['label']}: how roles emerge during training",
                                                   t["steps"], t["series"], t["heldout_bits_per_char"])
        present = [c for c in CLASS_NAMES if a.class_count[CLASS_NAMES.index(c)] > 0]
        ci = [CLASS_NAMES.index(c) for c in present]
        offsets = np.asarray(m["offset_profile"]["heldout"])
        for l in range(L):
            for h in range(H):
                obs = a.class_matrix[l, h][np.ix_(ci, ci)]
                ch = a.class_chance[np.ix_(ci, ci)]
                data = HeadFigureData(
                    title=f"{m['label']} L{l}H{h}: {roles[l][h]}",
                    examples=tuple((cap, t, att[l, h]) for cap, t, att in a.examples),
                    mean_attn=a.mean_attn[l, h], offset_profile=offsets[l, h],
                    class_names=tuple(_class_label(c, a.language) for c in present),
                    class_ratio=np.where(ch > 0, obs / np.maximum(ch, 1e-12), np.nan))
                idx[(m["label"], l, h)] = fw.add("head_figure", data)
    if len(results["models"]) > 1:
        fams = [f for f in FAMILIES if f != "other class"]
        counts = {m["label"]: [len({(f["layer"], f["head"]) for f in m["findings"] if f["family"] == fam
                                    and f["replicated"]}) for fam in fams] for m in results["models"]}
        n_heads = {m["label"]: m["hyperparameters"]["n_layers"] * m["hyperparameters"]["n_heads"]
                   for m in results["models"]}
        idx["compare"] = fw.add("comparison_figure", fams, counts, n_heads)
    names = fw.run(cache)
    return {k: f"figures/{names[v]}" for k, v in idx.items()}


def _head_role(m: dict, layer: int, head: int) -> str:
    """The head's replicated roles joined, or 'no replicated role'."""
    roles = [f["role"] for f in m["findings"] if f["layer"] == layer and f["head"] == head and f["replicated"]]
    return ", ".join(dict.fromkeys(roles)) or "no replicated role"


def _ratio(m: dict, layer: int, head: int, detector: str) -> float:
    """Held-out mean / chance for one cell (NaN if undefined)."""
    block = m["heads"][layer * m["hyperparameters"]["n_heads"] + head]["detectors"][detector]["heldout"]
    if not block.get("chance") or block.get("mean") is None:
        return float("nan")
    return block["mean"] / block["chance"]


def _explanation(f: dict, m: dict) -> dict[str, str]:
    """Every sentence about a finding: what, strength, consistency, linguistics, caveats, ablation."""
    return dict(explain_finding(f, m), ablation=explain_ablation(f, m))


def _model_page(m: dict, results: dict, figs: dict) -> dict:
    """Display data for a model page."""
    n_heads = m["hyperparameters"]["n_heads"]
    findings = [dict(f, explanation=_explanation(f, m),
                     page=f"head-{slug(m['label'])}-{f['head_name']}.html") for f in m["findings"]]
    roles = {(f["layer"], f["head"]): f["role"] for f in reversed(findings) if f["replicated"]}
    ablation = sorted((dict(a, role=roles.get((a["layer"], a["head"]), "—"),
                            page=f"head-{slug(m['label'])}-{a['head_name']}.html") for a in m.get("ablation", [])),
                      key=lambda a: -a["delta_bits_per_char"])
    heads = [{"name": f"L{h['layer']}H{h['head']}", "page": f"head-{slug(m['label'])}-L{h['layer']}H{h['head']}.html",
              "roles": _head_role(m, h["layer"], h["head"]),
              "entropy": h["detectors"]["entropy"]["heldout"]["mean"],
              "distance": h["detectors"]["distance"]["heldout"]["mean"]} for h in m["heads"]]
    layers = [heads[l * n_heads:(l + 1) * n_heads] for l in range(m["hyperparameters"]["n_layers"])]
    gen = m.get("generation") or {}
    top = max((abs(d) for _, d in gen.get("passage_delta", [])), default=0.0) or 1.0
    shading = [(c, d, round(max(d, 0.0) / top, 3)) for c, d in gen.get("passage_delta", [])]
    return {"model": m, "slug": slug(m["label"]), "findings": findings, "layers": layers, "shading": shading,
            "absent": absent_families(m, results["rules"]), "grid": figs[(m["label"], "grid")],
            "scores": figs[(m["label"], "scores")], "replicated": sum(f["replicated"] for f in findings),
            "ablation": ablation, "timeline": figs.get((m["label"], "timeline"))}


def _head_page(m: dict, head: dict, figs: dict) -> dict:
    """Display data for one head's page."""
    l, h = head["layer"], head["head"]
    rows = []
    for d, splits in head["detectors"].items():
        ho, tr = splits["heldout"], splits["train"]
        rows.append({"name": d, "description": DESCRIPTIONS[d], "heldout": ho, "train": tr,
                     "role": any(f["pattern"] == d and f["layer"] == l and f["head"] == h for f in m["findings"])})
    findings = [dict(f, explanation=_explanation(f, m))
                for f in m["findings"] if f["layer"] == l and f["head"] == h]
    ablation = next((a for a in m.get("ablation", []) if a["layer"] == l and a["head"] == h), None)
    return {"model": m, "name": f"L{l}H{h}", "figure": figs[(m["label"], l, h)], "rows": rows,
            "findings": findings, "slug": slug(m["label"]), "roles": _head_role(m, l, h), "ablation": ablation}


def _key_questions(results: dict) -> list[dict]:
    """The five key questions, each answered with numbers from results."""
    models = results["models"]
    rep = [(m, f) for m in models for f in m["findings"] if f["replicated"]]
    best, seen = [], set()
    for m, f in sorted(rep, key=lambda mf: -mf[1]["effect"]):  # one line per head: its strongest role
        if (m["label"], f["head_name"]) not in seen and len(best) < 6:
            seen.add((m["label"], f["head_name"]))
            best.append((m, f))
    q1 = [f"{m['label']} {f['head_name']} ({f['role']}: held-out {num(f['heldout']['mean'])} vs chance "
          f"{num(f['heldout']['chance'])})" for m, f in best]
    fam_counts = {}
    for m, f in rep:
        fam_counts.setdefault(f["family"], set()).add((m["label"], f["head_name"]))
    q2 = [f"{fam}: {len(heads)} head(s)" for fam, heads in sorted(fam_counts.items(), key=lambda kv: -len(kv[1]))]
    cons = [f["heldout"]["consistency"] for _, f in rep if f["heldout"].get("consistency") is not None]
    n_found = sum(len(m["findings"]) for m in models)
    q3 = [f"{len(rep)} of {n_found} roles discovered on training windows replicated on held-out books."]
    if cons:
        q3.append(f"Replicated roles beat their strictest null in a median {pct(float(np.median(cons)))} of held-out "
                  f"windows (lowest {pct(min(cons))}).")
    q4 = []
    for m, f in rep:  # causal support: does ablation hurt most where the role predicts?
        target = FAMILY_TARGET.get(f["family"])
        abl = next((a for a in m.get("ablation") or [] if a["layer"] == f["layer"] and a["head"] == f["head"]), None)
        t = abl["targeted"].get(target) if abl and target else None
        if t and not any(f["family"] in line and m["label"] in line for line in q4):
            verdict = ("yes" if t["ci_low"] > 0 else "no, the opposite" if t["ci_high"] < 0 else "not measurably")
            q4.append(f"{m['label']} {f['head_name']} ({f['family']}): does removing it hurt most {TARGET_TEXT[target]}? "
                      f"{verdict} (difference {signed(t['difference'])} bits/char, 95% CI {signed(t['ci_low'])} to "
                      f"{signed(t['ci_high'])}).")
    q4 += [f"{fam}: {linguistic_note(fam, models[0]['language'])}" for fam in list(fam_counts)[:2]]
    q5 = []
    if len(models) > 1:
        for fam in FAMILIES:
            n = [len({f["head_name"] for f in m["findings"] if f["family"] == fam and f["replicated"]}) for m in models]
            if any(n):
                q5.append(f"{fam}: " + ", ".join(f"{m['label']} {k} head(s)" for m, k in zip(models, n)))
        absent = [fam for fam in FAMILIES if not any(f["family"] == fam and f["replicated"] for m in models
                                                     for f in m["findings"])]
        if absent:
            q5.append(f"in neither model: {', '.join(absent)}")
    return [
        {"q": "Which layer/head combinations are most interpretable?", "a": q1 or ["No head has a replicated role."]},
        {"q": "Which pattern types are most common?", "a": q2 or ["No pattern replicated."]},
        {"q": "How consistent are the patterns across inputs?", "a": q3},
        {"q": "Do the patterns make linguistic sense?", "a": q4 or ["No replicated pattern to interpret."]},
        {"q": "How do English and Hebrew differ?", "a": q5 or ["Only one model was analysed."]},
    ]


def _criteria(results: dict) -> list[dict]:
    """Success criteria of the mission as a checklist with evidence links."""
    models = results["models"]
    rep = sum(f["replicated"] for m in models for f in m["findings"])
    langs = {m["language"] for m in models}
    return [
        {"ok": rep > 0, "text": f"Heads with a clear role identified with CIs ({rep} replicated roles)",
         "link": f"model-{slug(models[0]['label'])}.html"},
        {"ok": True, "text": "Every layer × head visualised on illustrative inputs and held-out passages",
         "link": f"model-{slug(models[0]['label'])}.html"},
        {"ok": True, "text": "Significance against three nulls with Benjamini–Hochberg FDR over all tests",
         "link": "methods.html"},
        {"ok": rep > 0, "text": "Roles confirmed on held-out books never used for discovery", "link": "index.html#findings"},
        {"ok": len(langs) > 1, "text": "English and Hebrew compared on the same books", "link": "compare.html"},
        {"ok": all(m.get("ablation") for m in models),
         "text": "Causal evidence: every head ablated, with targeted effects and controls",
         "link": f"model-{slug(models[0]['label'])}.html#causal"},
    ]


def compare_title(models: list[dict]) -> str:
    """'English vs Hebrew' for the default pair, else a neutral title."""
    return "English vs Hebrew" if sorted(m["language"] for m in models) == ["en", "he"] else "Model comparison"


def _compare(results: dict, figs: dict) -> dict:
    """English vs Hebrew: replicated-role counts per family and per layer."""
    models = results["models"]
    rows = []
    for fam in FAMILIES:
        cells = []
        for m in models:
            fs = [f for f in m["findings"] if f["family"] == fam and f["replicated"]]
            heads = sorted({f["head_name"] for f in fs})
            strongest = max(fs, key=lambda f: f["heldout"]["mean"], default=None)
            cells.append({"heads": heads, "strongest": strongest})
        if any(c["heads"] for c in cells):
            langs = {m["language"] for m in models}
            notes = dict.fromkeys(linguistic_note(fam, lang) for lang in sorted(langs))  # ordered, no repeats
            rows.append({"family": fam, "cells": cells, "note": " ".join(n for n in notes if n)})
    by_layer = []
    for m in models:
        L = m["hyperparameters"]["n_layers"]
        by_layer.append({"label": m["label"], "layers": [
            sorted({f["role"] for f in m["findings"] if f["layer"] == l and f["replicated"]}) for l in range(L)]})
    strength = []  # the same detectors per layer: strongest head's held-out mean (and x chance) per model
    for det in ("offset_1", "class_space", "word_start", "class_vowel", "class_consonant", "class_final",
                "class_punctuation", "duplicate", "induction", "probe_natural"):
        row = {"detector": det, "description": DESCRIPTIONS[det], "layers": []}
        L = max(m["hyperparameters"]["n_layers"] for m in models)
        for l in range(L):
            cells = []
            for m in models:
                heads = [h for h in m["heads"] if h["layer"] == l and det in h["detectors"]]
                best = max(heads, key=lambda h: h["detectors"][det]["heldout"]["mean"] or 0, default=None)
                cells.append(None if best is None else {"head": f"L{l}H{best['head']}", **best["detectors"][det]["heldout"]})
            row["layers"].append(cells)
        if any(c and c.get("chance") for cells in row["layers"] for c in cells):  # skip classes no text has
            strength.append(row)
    only = []
    if len(models) == 2:
        fams = [{f["family"] for f in m["findings"] if f["replicated"]} for m in models]
        for i in (0, 1):
            for fam in sorted(fams[i] - fams[1 - i]):
                only.append(f"{fam}: only in {models[i]['label']}")
    return {"rows": rows, "by_layer": by_layer, "only": only, "figure": figs.get("compare"), "models": models,
            "strength": strength, "title": compare_title(models)}


def build_site(inputs: list[FigureInputs], results: dict, out: Path, cache: dict, diff_link: bool = False) -> Site:
    """Render every page and the PDF document into memory (figures are written to out/figures)."""
    figs = _figures(inputs, results, out / "figures", cache)
    env = make_env()
    models = results["models"]
    nav = [("index.html", "Overview")] + [(f"model-{slug(m['label'])}.html", m["label"]) for m in models] + [
        ("gallery.html", "Gallery"), ("compare.html", compare_title(models)), ("methods.html", "Methods")] + (
        [("diff/diff.html", "Checkpoint diff")] if diff_link else [])
    common = {"results": results, "nav": nav, "models": models}
    model_pages = [_model_page(m, results, figs) for m in models]
    head_pages = [_head_page(m, head, figs) for m in models for head in m["heads"]]
    gallery = []
    for m, mp in zip(models, model_pages):
        seen = set()
        for f in mp["findings"]:
            if f["replicated"] and f["family"] not in seen:
                seen.add(f["family"])
                gallery.append({"model": m, "finding": f, "figure": figs[(m["label"], f["layer"], f["head"])]})
    headline = []
    for mp, m in zip(model_pages, models):
        heads = set()
        for f in mp["findings"]:
            if f["replicated"] and f["head_name"] not in heads and len(heads) < 4:
                heads.add(f["head_name"])  # one card per head: its strongest replicated role
                headline.append((m, f))
    overview = {"questions": _key_questions(results), "criteria": _criteria(results), "headline": headline}
    compare = _compare(results, figs)
    pages = {"index.html": env.get_template("index.html.jinja2").render(page="index.html", **common, **overview,
                                                                          model_pages=model_pages)}
    for mp in model_pages:
        name = f"model-{mp['slug']}.html"
        pages[name] = env.get_template("model.html.jinja2").render(page=name, **common, p=mp)
    for hp in head_pages:
        name = f"head-{hp['slug']}-{hp['name']}.html"
        pages[name] = env.get_template("head.html.jinja2").render(page=name, **common, p=hp)
    pages["gallery.html"] = env.get_template("gallery.html.jinja2").render(page="gallery.html", **common, items=gallery)
    pages["compare.html"] = env.get_template("compare.html.jinja2").render(page="compare.html", **common, c=compare)
    pages["methods.html"] = env.get_template("methods.html.jinja2").render(page="methods.html", **common)
    pdf_html = env.get_template("report.html.jinja2").render(
        **common, **overview, model_pages=model_pages, c=compare, head_pages=head_pages,
        grids={m["label"]: figs[(m["label"], "grid")] for m in models})
    return Site(pages, pdf_html)


def write_site(site: Site, staging: Path) -> None:
    """Write pages and the stylesheet into the staging folder."""
    for name, html in site.pages.items():
        (staging / name).write_text(html, encoding="utf-8")
    shutil.copy(template_dir() / "style.css", staging / "style.css")
    (staging / ".gitignore").write_text("*\n")


def write_pdf(site: Site, staging: Path) -> Path:
    """Render the PDF with WeasyPrint from the report document (figures resolved inside staging)."""
    import logging

    from weasyprint import CSS, HTML

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    path = staging / "report.pdf"
    HTML(string=site.pdf_html, base_url=str(staging)).write_pdf(
        path, stylesheets=[CSS(filename=str(template_dir() / "print.css"))])
    return path


def swap_into_place(staging: Path, out: Path) -> None:
    """Replace `out` with the finished staging folder (old output removed only after success)."""
    old = out.with_name(f".{out.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out.exists():
        for p in out.iterdir():  # keep what other commands put there: the README and `reportgen diff` output
            if p.name == "README.md":
                shutil.copy(p, staging / p.name)
            elif p.name == "diff" and p.is_dir() and not (staging / "diff").exists():
                shutil.copytree(p, staging / "diff")
        out.rename(old)
    staging.rename(out)
    if old.exists():
        shutil.rmtree(old)


def cache_key(results: dict, cfg_pdf: bool) -> str:
    """Hash of what the site depends on besides figures: results (minus time), templates, code version."""
    doc = {k: v for k, v in results.items() if k != "generated"}
    h = hashlib.sha256(json.dumps(doc, sort_keys=True).encode())
    for p in sorted(template_dir().iterdir()):
        h.update(p.read_bytes())
    h.update(str(cfg_pdf).encode())
    return h.hexdigest()
