"""Analysis stage: for each model, capture on training and held-out windows, score, validate, summarise.

`analyze(config)` returns the models' analyses and the results.json document (schema below,
documented in README.md). Roles are discovered on training windows and confirmed on held-out
windows; q-values come from one Benjamini–Hochberg family per split over every model, layer,
head and tested detector.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from . import __version__
from .ablation import causal_evidence
from .capture import HeadScores, ProbeScores, capture, encode, natural_probes, probe, random_probes
from .checkpoint import ModelBundle, load_checkpoint
from .classes import CLASS_NAMES, CharClasses
from .config import ModelSpec, RunConfig
from .corpora import TextSplit, bible_split, text_split
from .detectors import DESCRIPTIONS, SKIP
from .errors import ReportgenError
from .progress import make_progress
from .stats import FAMILY_OF, ROLE_RULES, SplitStats, add_q_values, head_fields, roles_of, split_stats
from .timeline import emergence

SCHEMA_VERSION = 2
SPLITS = ("train", "heldout")
FINDING_FIELDS = ("mean", "chance", "ci_low", "ci_high", "p", "q", "consistency", "times_chance",
                  "positional", "swap", "gain", "gain_ci_low", "gain_ci_high")


@dataclass(frozen=True)
class ModelAnalysis:
    """Everything measured for one model: bundle, text, scores and statistics per split, probes."""

    spec: ModelSpec
    bundle: ModelBundle
    split: TextSplit
    classes: CharClasses
    scores: dict[str, HeadScores]
    probes: dict[str, ProbeScores]
    stats: dict[str, SplitStats]
    head_distance: np.ndarray  # (L*H, L*H) Jensen–Shannon distance between heads
    clusters: list[list[str]]
    examples: tuple[tuple[str, str, np.ndarray], ...]  # (caption, text, attention (L, H, T, T))
    causal: dict  # ablation, controls and generation (results.json's "ablation", "controls", "generation")
    timeline: dict | None = None  # role strength across the model's sibling checkpoints


EXAMPLE_INPUTS = {"en": ("HELLO", "HELLO WORLD"), "he": ("שלום", "שלום עולם")}


@torch.no_grad()
def example_attention(bundle: ModelBundle, language: str, heldout: str) -> tuple[tuple[str, str, np.ndarray], ...]:
    """Attention on short illustrative inputs and a held-out passage, skipping inputs outside the vocabulary."""
    passage = heldout[:32]
    inputs = [(f"input: {t}", t) for t in EXAMPLE_INPUTS.get(language, ())]
    inputs.append(("held-out passage", passage))
    inputs.append(("the same 16 characters twice", heldout[32:48] * 2))  # shows copying / induction
    out = []
    for caption, text in inputs:
        if not text or bundle.tokenizer.unknown_chars(text) or len(text) > bundle.config.max_context_len:
            continue
        idx = torch.tensor([bundle.tokenizer.tokenize(text)])
        _, attn = bundle.model(idx, return_attention_weights=True)  # (L, 1, H, T, T)
        out.append((caption, text, attn[:, 0].numpy()))
    return tuple(out)


def load_text(spec: ModelSpec, language: str | None) -> TextSplit:
    """The model's text: the user's file(s), or the default corpus of its language."""
    if spec.text is not None:
        return text_split(spec.text, language or "en", spec.heldout)
    if language is None:
        raise ReportgenError(f"{spec.path}: checkpoint does not record its language; give a language or --text")
    return bible_split(language)


def js_distance(samples: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Mean Jensen–Shannon distance (base 2) between heads' attention rows over sample windows: (K, K)."""
    mats = np.stack([a for _, a in samples]).astype(np.float64)  # (N, L, H, T, S)
    N, L, H, T, S = mats.shape
    rows = mats[..., SKIP:, :].reshape(N, L * H, T - SKIP, S)
    causal = np.tril(np.ones((T, S), dtype=bool))[SKIP:]  # (T', S)
    rows = np.where(causal, rows + 1e-3, 0.0)  # smooth within the visible prefix only
    rows /= rows.sum(-1, keepdims=True)
    logs = np.log2(np.where(rows > 0, rows, 1.0))
    K = L * H
    dist = np.zeros((K, K))
    for a in range(K):
        m = 0.5 * (rows[:, a:a + 1] + rows)  # (N, K, T', S)
        log_m = np.log2(np.where(m > 0, m, 1.0))
        js = 0.5 * (rows[:, a:a + 1] * (logs[:, a:a + 1] - log_m)).sum(-1) + 0.5 * (rows * (logs - log_m)).sum(-1)
        dist[a] = np.sqrt(np.clip(js, 0, 1)).mean((0, 2))
    return (dist + dist.T) / 2


def cluster_heads(dist: np.ndarray, n_heads: int, threshold: float = 0.5) -> list[list[str]]:
    """Average-linkage clusters of heads whose JS distance is below `threshold`; labels 'L0H1'."""
    names = [f"L{k // n_heads}H{k % n_heads}" for k in range(len(dist))]
    if len(dist) < 2:
        return [names]
    np.fill_diagonal(dist, 0.0)
    labels = hierarchy.fcluster(hierarchy.linkage(squareform(dist, checks=False), "average"), threshold, "distance")
    groups: dict[int, list[str]] = {}
    for name, lab in zip(names, labels):
        groups.setdefault(int(lab), []).append(name)
    return sorted(groups.values(), key=lambda g: (-len(g), g))


@dataclass(frozen=True)
class Prepared:
    """A model whose inputs are loaded and checked, ready for capture."""

    spec: ModelSpec
    bundle: ModelBundle
    split: TextSplit
    classes: CharClasses
    ids: dict[str, np.ndarray]
    sources: dict[str, str]


def prepare(spec: ModelSpec, cfg: RunConfig) -> Prepared:
    """Load the checkpoint and text and check every input before any work starts (errors are one line)."""
    bundle = load_checkpoint(spec.path, with_residuals=spec.with_residuals, train_text=spec.train_text,
                             language=spec.language)
    split = load_text(spec, spec.language or bundle.language)
    classes = CharClasses.for_vocab(bundle.tokenizer.vocab, split.language).with_overrides(cfg.class_overrides)
    sources = {"train": str(spec.text or f"{split.name} (training books)"),
               "heldout": str(spec.heldout or spec.text or f"{split.name} (held-out books)")}
    texts = {"train": split.train, "heldout": split.heldout}
    ids = {s: encode(bundle, texts[s], sources[s], cfg.oov) for s in SPLITS}
    T = bundle.config.max_context_len
    for s in SPLITS:
        if len(ids[s]) // T < 2:
            raise ReportgenError(f"{sources[s]}: {s} text has {len(ids[s])} characters, shorter than two "
                                 f"windows of {T} (the model's context); windows are the unit of every statistic")
    return Prepared(spec, bundle, split, classes, ids, sources)


def analyze_model(prep: Prepared, cfg: RunConfig, index: int, progress) -> ModelAnalysis:
    """Capture both splits and probes, and compute per-split statistics (q-values come later)."""
    spec, bundle, split, classes, ids = prep.spec, prep.bundle, prep.split, prep.classes, prep.ids
    T = bundle.config.max_context_len
    limits = {"train": cfg.train_windows, "heldout": cfg.heldout_windows}
    scores: dict[str, HeadScores] = {}
    for s in SPLITS:
        n = len(ids[s]) // T
        n = min(n, limits[s]) if limits[s] else n
        task = progress.add_task(f"{spec.label}: capture {s} ({n} windows)", total=n)
        scores[s] = capture(bundle, ids[s], classes, limit=limits[s], batch_size=cfg.batch_size, n_samples=8,
                            source=prep.sources[s], on_batch=lambda k, t=task: progress.advance(t, k))
    # Probes per split: fresh random sequences, and repeated passages from that split's own text, so a
    # probe-based role found on training text is confirmed on sequences it never saw.
    task = progress.add_task(f"{spec.label}: repeated-sequence probes", total=2 * len(SPLITS))
    split_probes: dict[str, dict[str, ProbeScores]] = {}
    for k, s in enumerate(SPLITS):
        rand, period = random_probes(classes, cfg.n_probes, T, np.random.default_rng([cfg.seed, index, 7, k]))
        split_probes[s] = {"probe_random": probe(bundle, rand, period, "random", scores["train"].mean_attn)}
        progress.advance(task)
        nat, period = natural_probes(ids[s], cfg.n_probes, T)
        split_probes[s]["probe_natural"] = probe(bundle, nat, period, "natural", scores["train"].mean_attn)
        progress.advance(task)
    probes = split_probes["heldout"]
    task = progress.add_task(f"{spec.label}: bootstrap and tests", total=2)
    stats = {}
    for k, s in enumerate(SPLITS):
        stats[s] = split_stats(scores[s], split_probes[s], np.random.default_rng([cfg.seed, index, k]))
        progress.advance(task)
    dist = js_distance(scores["heldout"].samples)
    return ModelAnalysis(spec, bundle, split, classes, scores, probes, stats, dist,
                         cluster_heads(dist.copy(), bundle.config.n_heads),
                         example_attention(bundle, split.language, split.heldout), {})


def _clean(x):
    """JSON-safe value: NaN/inf -> None, numpy -> Python, rounded to 6 significant digits."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return None if not math.isfinite(x) else float(f"{x:.6g}")
    if isinstance(x, np.integer):
        return int(x)
    return x


def _block(split: SplitStats, detector: str, layer: int, head: int) -> dict:
    """A finding's per-split block of numbers."""
    f = head_fields(split, detector, layer, head)
    return {k: f[k] for k in FINDING_FIELDS if k in f}


def findings(analysis: ModelAnalysis) -> list[dict]:
    """Roles discovered on training windows, each with its held-out confirmation numbers."""
    cfg = analysis.bundle.config
    out = []
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            held = {r.role for r in roles_of(analysis.stats["heldout"], layer, head)}
            for rule in roles_of(analysis.stats["train"], layer, head):
                train = _block(analysis.stats["train"], rule.detector, layer, head)
                heldout = _block(analysis.stats["heldout"], rule.detector, layer, head)
                baseline = max(v for v in (heldout.get("chance"), heldout.get("positional"), heldout.get("swap"))
                               if v is not None and math.isfinite(v))
                out.append({"layer": layer, "head": head, "head_name": f"L{layer}H{head}", "pattern": rule.detector,
                            "role": rule.role, "family": rule.family, "rule": rule.rule,
                            "description": DESCRIPTIONS.get(rule.detector, rule.detector),
                            "train": train, "heldout": heldout, "replicated": rule.role in held,
                            "effect": heldout["mean"] - baseline})
    return sorted(out, key=lambda f: (not f["replicated"], -f["effect"]))


def model_results(a: ModelAnalysis, seed: int = 0) -> dict:
    """The results.json entry for one model."""
    cfg = a.bundle.config
    heads = []
    for layer in range(cfg.n_layers):
        for head in range(cfg.n_heads):
            detectors = {name: {s: {k: float(v[layer, head]) for k, v in a.stats[s].values[name].items()}
                                for s in SPLITS} for name in a.stats["train"].values}
            heads.append({"layer": layer, "head": head, "detectors": detectors,
                          "roles": {s: [r.role for r in roles_of(a.stats[s], layer, head)] for s in SPLITS}})
    probes = {name: {"period": p.period, "n_probes": int(len(p.observed)), "example": p.example,
                     "loss_first_copy_bits_per_char": float(p.loss_first.mean()),
                     "loss_later_copies_bits_per_char": float(p.loss_repeat.mean())}
              for name, p in a.probes.items()}
    meta = a.bundle.metadata
    T = cfg.max_context_len
    found = findings(a)
    return {
        "label": a.spec.label, "language": a.split.language,
        "checkpoint": {"path": _display_path(a.bundle.path), "sha256": a.bundle.sha256, "format": meta.get("format"),
                       "step": meta.get("step"), "heldout_bits_per_char_at_training": meta.get("heldout_bits_per_char"),
                       "history": meta.get("history")},
        "hyperparameters": cfg.to_dict(),
        "corpus": {"name": a.split.name, "description": a.split.description, "sha256": a.split.sha256,
                   "train_chars": len(a.split.train), "heldout_chars": len(a.split.heldout),
                   "heldout_books": list(a.split.heldout_books),
                   "windows": {s: a.scores[s].n_windows for s in SPLITS}, "window_length": T},
        "classes": {a.classes.label(n): chars for n, chars in a.classes.members().items() if chars},
        "heads": heads,
        "findings": found,
        "probes": probes,
        "class_matrix": {s: {"classes": list(CLASS_NAMES), "observed": a.scores[s].class_matrix,
                             "chance": a.scores[s].class_chance, "queries": a.scores[s].class_count} for s in SPLITS},
        "offset_profile": {s: _offset_profile(a.scores[s].mean_attn) for s in SPLITS},
        "head_distance": a.head_distance, "clusters": a.clusters,
        **_causal_results(a, found, seed),
        "timeline": a.timeline,
    }


def _causal_results(a: ModelAnalysis, found: list[dict], seed: int) -> dict:
    """results.json blocks from the causal stage: ablation, agreement with detectors, controls, generation."""
    if not a.causal:
        return {"ablation": [], "controls": None, "generation": None, "causal_agreement": None}
    from scipy.stats import rankdata, spearmanr

    strength = {}
    for f in found:
        if f["replicated"]:
            key = (f["layer"], f["head"])
            strength[key] = max(strength.get(key, 0.0), f["effect"])
    abl = a.causal["ablation"]
    x = np.array([strength.get((h["layer"], h["head"]), 0.0) for h in abl])
    y = np.array([h["delta_bits_per_char"] for h in abl])
    agreement = None
    if len(abl) >= 4 and x.std() > 0 and y.std() > 0:
        rho = float(spearmanr(x, y).statistic)
        k = np.random.default_rng([seed, 5]).integers(0, len(x), (2000, len(x)))  # resample heads
        rx, ry = rankdata(x[k], axis=1), rankdata(y[k], axis=1)  # (R, heads) ranks with ties averaged
        rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
        denom = np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
        boots = ((rx * ry).sum(1) / np.where(denom > 0, denom, np.nan))
        boots = boots[np.isfinite(boots)]
        agreement = {"spearman_rho": rho, "ci_low": float(np.percentile(boots, 2.5)),
                     "ci_high": float(np.percentile(boots, 97.5)), "heads": len(abl),
                     "x": "largest held-out effect among the head's replicated roles (0 if none)",
                     "y": "Δ bits/char when the head is mean-ablated"}
    return {"ablation_mode": a.causal["mode"], "ablation_windows": a.causal["windows"],
            "baseline_bits_per_char": a.causal["baseline_bits_per_char"], "ablation": abl,
            "controls": a.causal["controls"], "generation": a.causal["generation"], "causal_agreement": agreement}


def _display_path(path: Path) -> str:
    """A checkpoint path relative to the working directory when it lies inside it (machine-independent)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _offset_profile(mean_attn: np.ndarray, max_offset: int = 32) -> np.ndarray:
    """Mean attention at offsets 0..max_offset over valid queries: (L, H, K)."""
    L, H, T, _ = mean_attn.shape
    K = min(max_offset, T - SKIP - 1) + 1
    return np.stack([np.diagonal(mean_attn, offset=-k, axis1=-2, axis2=-1)[..., SKIP - k if k <= SKIP else 0:].mean(-1)
                     for k in range(K)], axis=-1)


def analyze(cfg: RunConfig, prepared: list[Prepared] | None = None) -> tuple[list[ModelAnalysis], dict]:
    """Run the analysis for every model and build the results.json document."""
    torch.manual_seed(cfg.seed)
    prepared = prepared if prepared is not None else [prepare(spec, cfg) for spec in cfg.models]
    analyses = []
    with make_progress() as progress:
        for index, prep in enumerate(prepared):
            analyses.append(analyze_model(prep, cfg, index, progress))
        for s in SPLITS:
            add_q_values([a.stats[s] for a in analyses])
        if cfg.ablation_windows:  # causal stage needs the roles, so it runs after the FDR step
            analyses = [replace(a, causal=causal_evidence(prep, cfg, index, a.stats, progress))
                        for index, (a, prep) in enumerate(zip(analyses, prepared))]
        if cfg.timeline_windows:
            analyses = [replace(a, timeline=emergence(a, prep, cfg, index, progress))
                        for index, (a, prep) in enumerate(zip(analyses, prepared))]
    results = {
        "schema_version": SCHEMA_VERSION,
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "reportgen_version": __version__,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
        "settings": _clean(cfg.fingerprint()),
        "skip_queries": SKIP,
        "detectors": DESCRIPTIONS,
        "families": {d: FAMILY_OF.get(d) for d in DESCRIPTIONS},
        "rules": [{"role": r.role, "detector": r.detector, "family": r.family, "rule": r.rule} for r in ROLE_RULES],
        "models": [model_results(a, cfg.seed) for a in analyses],
    }
    return analyses, _clean(results)


def write_json(path: Path, document: dict) -> None:
    """Write JSON atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    tmp.replace(path)
