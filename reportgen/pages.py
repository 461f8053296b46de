"""Page builders: pure functions from a typed `Run` (and figure file names) to page records.

A page record holds every value its template prints, settings included; templates only lay
them out. Nothing here reads files, renders HTML or computes statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .catalogue import (
    ALPHA,
    CAUSAL_TARGETS,
    DETECTOR,
    FAMILIES,
    ROLE_DETECTORS,
    linguistic_note,
    run_detectors,
    shown_in,
)
from .config import slug
from .explain import Absent, Explanation, absent_families, explain
from .languages import LANGUAGE, shown
from .narrate import breaks, supported
from .results import Ablation, Finding, ModelResult, RoleEffect, Run, Summary
from .seeds import family_rows, only_seeds, recurrence, role_presence
from .stats import BLOCK, N_BOOT
from .synthesis import Criterion, Question, circuit_paragraph, circuit_text, conclusion, criteria, key_questions, limitations, model_quality, ranked

CLUSTER_THRESHOLD = 0.5  # Jensen–Shannon distance below which heads are clustered (analyze.cluster_heads)
MAX_HEADLINE_HEADS = 4  # headline cards per model


def model_file(m: ModelResult) -> str:
    return f"model-{m.slug or slug(m.label)}.html"


def explore_file(m: ModelResult) -> str:
    return f"explore-{m.slug or slug(m.label)}.html"


def head_file(m: ModelResult, name: str) -> str:
    return f"head-{m.slug or slug(m.label)}-{name}.html"


def compare_title(models: list[ModelResult]) -> str:
    """'English vs Hebrew' for one model in each of two known languages, else a neutral title."""
    langs = [m.language for m in models]
    if len(langs) == 2 and len(set(langs)) == 2 and all(l in LANGUAGE for l in langs):
        return " vs ".join(LANGUAGE[l].name for l in sorted(langs))
    return "Model comparison"


# ---- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Footer:
    generated: str
    version: str
    seed: int
    source: str = "results.json"


@dataclass(frozen=True)
class Common:
    """What every page shows: navigation and footer."""

    nav: list[tuple[str, str]]
    footer: Footer


@dataclass(frozen=True)
class FindingView:
    """A finding as pages show it: its model, its head page and its sentences."""

    f: Finding
    model: str
    page: str
    explanation: Explanation


@dataclass(frozen=True)
class HeadCell:
    name: str
    page: str
    roles: str
    entropy: float
    distance: float
    thumb: str = ""  # the head's attention on the grid's passage, a small image linking to its page


@dataclass(frozen=True)
class AblationRow:
    a: Ablation
    role: str
    page: str
    breaks: bool = False  # without this head the model is no better than a unigram model of its text


@dataclass(frozen=True)
class ModelPage:
    file: str
    model: ModelResult
    findings: list[FindingView]
    layers: list[list[HeadCell]]
    absent: list[Absent]
    grid: str
    scores: str
    timeline: str | None
    replicated: int
    ablation: list[AblationRow]
    shading: list[tuple[str, float, float]]  # (character, Δ bits, shade 0..1) on the generation passage
    shading_max: float
    explore: str | None  # the explorer page, when the run has passages for it
    hypotheses: list[HypothesisRow]
    cluster_threshold: float = CLUSTER_THRESHOLD
    alpha: float = ALPHA
    contrasts: tuple[tuple[str, str], ...] = tuple(CAUSAL_TARGETS.items())  # targeted-ablation columns
    quality: str = ""  # synthesis.model_quality: said at the top when the model is no better than a unigram model
    circuit: str | None = None  # the composition figure, when the causal stage ran
    circuit_text: str = ""  # its edges in words
    circuit_summary: str = ""  # the same, grouped by earlier head (the PDF)
    seeds: list = field(default_factory=list)  # seeds.Recurrence per role, when the recipe was measured on seeds


@dataclass(frozen=True)
class HypothesisRow:
    """One of your hypotheses on one model: its best head on held-out text and whether any head has it as a role."""

    name: str
    description: str
    rule: str  # the rule it is judged by (that of the built-in detectors with its kind of keys)
    head: str
    page: str
    measure: str  # what its rule bounds: the mass on its keys, or the mass above its strictest null
    value: float
    ci_low: float
    q: float
    found: list[str]  # heads with a replicated role for it


@dataclass(frozen=True)
class ExplorePage:
    """The offline attention explorer of one model: its script runs the model (`script`, a sibling file made by
    webmodel) on any text; `data` is what else it shows (head pages, roles), JSON-ready."""

    file: str
    model: ModelResult
    model_file: str
    data: dict
    script: str = ""


@dataclass(frozen=True)
class ScoreRow:
    name: str
    description: str
    heldout: Summary
    train: Summary
    role: bool


@dataclass(frozen=True)
class HeadPage:
    file: str
    model: ModelResult
    model_file: str
    name: str
    figure: str
    rows: list[ScoreRow]
    findings: list[FindingView]
    roles: str
    ablation: Ablation | None
    effect: RoleEffect | None  # the predictions its removal changes most


@dataclass(frozen=True)
class IndexPage:
    models: list[ModelPage]
    headline: list[FindingView]
    questions: list[Question]
    criteria: list[Criterion]
    limitations: list[str]


@dataclass(frozen=True)
class GalleryItem:
    model: str
    finding: FindingView
    figure: str


@dataclass(frozen=True)
class CompareCell:
    heads: list[str]
    strongest: Finding | None


@dataclass(frozen=True)
class CompareRow:
    family: str
    cells: list[CompareCell]
    note: str


@dataclass(frozen=True)
class StrengthCell:
    head: str
    mean: float
    times_chance: float
    chance: float


@dataclass(frozen=True)
class StrengthRow:
    detector: str
    description: str
    layers: list[list[StrengthCell | None]]


@dataclass(frozen=True)
class ComparePage:
    title: str
    models: list[ModelResult]
    rows: list[CompareRow]
    by_layer: list[tuple[str, list[list[str]]]]
    strength: list[StrengthRow]
    only: list[str]
    figure: str | None
    circuits: list[str] = field(default_factory=list)  # each model's composition edges in words
    seeds: list[tuple[str, list[str], str]] = field(default_factory=list)  # family, per-model counts by seed, verdict
    roles: list = field(default_factory=list)  # seeds.role_presence: roles whose presence differs between models


@dataclass(frozen=True)
class MethodsPage:
    models: list[ModelResult]
    detectors: list[tuple[str, str, str]]  # name, meaning, family
    rules: list[tuple[str, str, str]]  # role, detector, rule sentence
    skip_queries: int
    n_boot: int
    block: int
    n_probes: int
    alpha: float
    version: str
    environment: dict
    settings: dict


@dataclass(frozen=True)
class Pages:
    """Every page of the site plus the PDF document's parts."""

    common: Common
    index: IndexPage
    models: list[ModelPage]
    heads: list[HeadPage]
    gallery: list[GalleryItem]
    compare: ComparePage
    methods: MethodsPage
    grids: dict[str, str] = field(default_factory=dict)  # model label -> grid figure (PDF)
    explore: list[ExplorePage] = field(default_factory=list)
    author: str = ""  # the PDF title page
    course: str = ""
    conclusion: list[str] = field(default_factory=list)  # the PDF's closing chapter, one sentence per head


# ---- builders -----------------------------------------------------------------------------------


def finding_view(f: Finding, m: ModelResult) -> FindingView:
    return FindingView(f, m.label, head_file(m, f.head_name), explain(f, m))


def model_page(m: ModelResult, figs: dict, explore: bool = False, detectors: dict | None = None) -> ModelPage:
    """Display data for a model page; `detectors` by name, the run's own (default: the catalogue's)."""
    findings = [finding_view(f, m) for f in m.findings]
    roles = {(f.layer, f.head): f.role for f in m.primary}  # each head's main role
    ablation = sorted((AblationRow(a, roles.get((a.layer, a.head), "—"), head_file(m, a.head_name), breaks(m, a))
                       for a in m.ablation), key=lambda r: -r.a.delta_bits_per_char)
    layers = [[HeadCell(h.name, head_file(m, h.name), m.role_label(h.layer, h.head),
                        h.summary("entropy").mean, h.summary("distance").mean, figs.get((m.label, "thumb", h.name), ""))
               for h in m.heads if h.layer == l] for l in range(m.n_layers)]
    deltas = m.generation.passage_delta if m.generation else []
    top = max((abs(d) for _, d in deltas), default=0.0) or 1.0
    shading = [(c, d, round(max(d, 0.0) / top, 3)) for c, d in deltas]
    return ModelPage(model_file(m), m, findings, layers, absent_families(m, _rule_text()), figs[(m.label, "grid")],
                     figs[(m.label, "scores")], figs.get((m.label, "timeline")), len(m.replicated), ablation, shading,
                     max((d for _, d in deltas), default=0.0), explore_file(m) if explore else None,
                     hypothesis_rows(m, DETECTOR if detectors is None else detectors), quality=model_quality(m).text,
                     circuit=figs.get((m.label, "circuit")) if circuit_text(m) else None, circuit_text=circuit_text(m),
                     circuit_summary=circuit_paragraph(m), seeds=recurrence(m.seeds) if len(m.seeds) > 1 else [])


def hypothesis_rows(m: ModelResult, detectors: dict) -> list[HypothesisRow]:
    """Your hypotheses on this model, each with its best head on held-out text by what its rule bounds: the mass
    above the strictest null (hypotheses over content, whose summaries have a gain) or the mass itself (fixed offset)."""
    rows = []
    for name in [d for d in (m.heads[0].detectors if m.heads else {}) if d.startswith("hyp_")]:
        gain = m.heads[0].summary(name).gain is not None
        measure = (lambda s: (s.gain, s.gain_ci_low)) if gain else (lambda s: (s.mean, s.ci_low))
        best = max(m.heads, key=lambda h: _or0(measure(h.summary(name))[0]))
        found = sorted({f.head_name for f in m.replicated if f.pattern == name})
        d = detectors.get(name)
        description = d.description.removeprefix("your hypothesis: ") if d else name
        rows.append(HypothesisRow(name[4:], description, d.rule.text() if d and d.rule else "", best.name,
                                  head_file(m, best.name), "mass above the strictest null" if gain else "mass on its keys",
                                  *measure(best.summary(name)), best.summary(name).q, found))
    return rows


def head_page(m: ModelResult, layer: int, head: int, figs: dict) -> HeadPage:
    """Display data for one head's page."""
    h = m.head(layer, head)
    found = {f.pattern for f in m.findings_at(layer, head)}
    rows = [ScoreRow(d, DETECTOR[d].description if d in DETECTOR else d, s["heldout"], s["train"], d in found)
            for d, s in h.detectors.items()]
    return HeadPage(head_file(m, h.name), m, model_file(m), h.name, figs[(m.label, layer, head)], rows,
                    [finding_view(f, m) for f in m.findings_at(layer, head)], m.role_label(layer, head),
                    m.ablation_of(layer, head), m.role_effect_of(layer, head))


def _rule_text() -> dict[str, str]:
    return {d.name: d.rule.text() for d in ROLE_DETECTORS}


def _strongest_heads(models: list[ModelResult], per_model: int) -> list[FindingView]:
    """Per model, its heads with a replicated main role, those the model relies on first, then by effect."""
    return [finding_view(f, m) for m in models for _, f in ranked([m])[:per_model]]


def compare_page(models: list[ModelResult], figs: dict) -> ComparePage:
    """Replicated-role counts per family and per layer, and the same detectors' strength layer by layer."""
    rows = []
    for fam in FAMILIES:
        cells = []
        for m in models:
            fs = [f for f in m.primary if f.family == fam.name]
            cells.append(CompareCell(sorted({f.head_name for f in fs}),
                                     max(fs, key=lambda f: f.heldout.mean, default=None)))
        if any(c.heads for c in cells):
            # a family's note only for a language where one of its heads has causal evidence agreeing with its role
            # (the same gate as the head pages' linguistic-significance paragraph)
            langs = sorted({m.language for m in models if any(f.family == fam.name and supported(f, m)
                                                               for f in m.primary)})
            notes = dict.fromkeys(linguistic_note(fam.name, lang) for lang in langs)
            rows.append(CompareRow(fam.name, cells, " ".join(n for n in notes if n)))
    by_layer = [(m.label, [sorted({f.role for f in m.primary if f.layer == l}) for l in range(m.n_layers)])
                for m in models]
    strength = []
    L = max(m.n_layers for m in models)
    for det in shown_in("compare"):
        layers = []
        for l in range(L):
            cells = []
            for m in models:
                heads = [h for h in m.heads if h.layer == l and det in h.detectors]
                best = max(heads, key=lambda h: _or0(h.summary(det).mean), default=None)
                s = best.summary(det) if best else None
                cells.append(s and StrengthCell(best.name, s.mean, s.times_chance, s.chance))
            layers.append(cells)
        if any(c and _or0(c.chance) for cells in layers for c in cells):  # skip classes no text has
            strength.append(StrengthRow(det, DETECTOR[det].description, layers))
    only = []
    if len(models) == 2:
        fams = [{f.family for f in m.primary} for m in models]
        only = [f"{fam}: only in {shown(models[i].label)}" + only_seeds(models, i, fam)
                for i in (0, 1) for fam in sorted(fams[i] - fams[1 - i])]
    return ComparePage(compare_title(models), models, rows, by_layer, strength, only, figs.get("compare"),
                       [t for t in (circuit_paragraph(m) for m in models) if t], family_rows(models),
                       role_presence(models))


def _or0(x: float | None) -> float:
    return 0.0 if x is None or not np.isfinite(x) else x


def methods_page(run: Run) -> MethodsPage:
    detectors = run_detectors(run.settings)  # the run's own: built-in ones and its hypotheses
    return MethodsPage(run.models, [(d.name, d.description, d.family or "descriptive") for d in detectors],
                       [(d.role, d.name, d.rule.text()) for d in detectors if d.rule], run.skip_queries, N_BOOT, BLOCK,
                       run.settings.get("n_probes", 0), ALPHA, run.reportgen_version, run.environment, run.settings)


def explore_page(m: ModelResult, script: str) -> ExplorePage:
    """Explorer data: the model script the page runs (its weights and default passages), head pages and roles."""
    data = {"layers": m.n_layers, "heads": m.n_heads, "script": script,
            "roles": [[m.role_label(l, h) for h in range(m.n_heads)] for l in range(m.n_layers)],
            "pages": [[head_file(m, f"L{l}H{h}") for h in range(m.n_heads)] for l in range(m.n_layers)]}
    return ExplorePage(explore_file(m), m, model_file(m), data, script)


def build_pages(run: Run, figs: dict, diff_link: bool = False, author: str = "", course: str = "",
                passages: dict[str, str] | None = None) -> Pages:
    """Every page record of a run, given the figure file names (see site.plan_figures) and, per model label, the
    explorer's model script (`passages`; models without one get no explorer)."""
    models = run.models
    nav = ([("index.html", "Overview")] + [(model_file(m), m.label) for m in models] +
           [("gallery.html", "Gallery"), ("compare.html", compare_title(models)), ("methods.html", "Methods")] +
           ([("diff/diff.html", "Checkpoint diff")] if diff_link else []))
    common = Common(nav, Footer(run.generated, run.reportgen_version, run.settings.get("seed", 0)))
    own = {d.name: d for d in run_detectors(run.settings)}  # with the run's hypotheses, also when re-rendered
    model_pages = [model_page(m, figs, bool(passages and passages.get(m.label)), own) for m in models]
    heads = [head_page(m, h.layer, h.head, figs) for m in models for h in m.heads]
    gallery = []
    for m in models:  # the strongest head of each role (main roles only)
        for f in {f.pattern: f for f in reversed(m.primary)}.values():
            gallery.append(GalleryItem(m.label, finding_view(f, m), figs[(m.label, f.layer, f.head)]))
    index = IndexPage(model_pages, _strongest_heads(models, MAX_HEADLINE_HEADS), key_questions(models),
                      criteria(models, model_file(models[0])), limitations(models))
    explore = [explore_page(m, passages[m.label]) for m in models if passages and passages.get(m.label)]
    return Pages(common, index, model_pages, heads, gallery, compare_page(models, figs), methods_page(run),
                 {m.label: figs[(m.label, "grid")] for m in models}, explore, author, course, conclusion(models))
