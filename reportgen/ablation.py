"""Causal evidence: ablate each head and measure Δ bits/char on held-out text, overall and where its
role should matter, with paired bootstrap CIs over windows; generation with role heads removed.

Ablation never modifies weights (`TransformerLM.ablate` is a context manager). Shapes: W windows,
T positions, L layers, H heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .capture import natural_probes
from .catalogue import roles_of
from .checkpoint import ModelBundle
from .classes import CLASS_NAMES, CharClasses
from .controls import run_controls
from .evidence import Ablation, CausalAgreement, Contrast, Controls, Generation, RoleEffect
from .examples import worked_example
from .generation import generation_evidence, heldout_sentence, prompt_for, role_predictions
from .languages import LANGUAGE
from .results import Finding
from .stats import average_ranks, bootstrap_ci, resample_counts, spearman

if TYPE_CHECKING:
    from .config import RunConfig
    from .stages import ModelAnalysis

LN2 = float(np.log(2.0))
MAX_ROLE_EFFECTS = 8  # role heads whose single ablation is shown prediction by prediction


@dataclass(frozen=True)
class CausalEvidence:
    """The causal stage's output for one model."""

    mode: str
    windows: int
    baseline: float  # bits/char of the full model on the ablation windows
    heads: list[Ablation]
    controls: Controls
    generation: Generation | None
    role_effects: list[RoleEffect]
    baseline_ci: tuple[float, float]


RESUME_BYTES = 256 * 2 ** 20  # most memory kept for resuming forward passes at an ablated head's layer


@torch.no_grad()
def nll_bits(model, windows: torch.Tensor, batch_size: int = 64,
             resume: tuple[int, list[list[torch.Tensor]]] | None = None) -> torch.Tensor:
    """Per-position loss in bits (W, T-1) of predicting windows[:, 1:] from windows[:, :-1]. With `resume`
    (layer, `layer_inputs(...)` of the same windows) each batch's pass starts at that layer from its stored
    input: an ablation at that layer leaves the layers below it unchanged, so the result is the same bit for bit."""
    out = []
    for k, batch in enumerate(windows.split(batch_size)):
        if resume is None:
            logits = model(batch[:, :-1])  # (B, T-1, V)
        else:
            logits = model.logits_from(resume[0], resume[1][k][resume[0]]).to(batch.device)
        out.append(F.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none") / LN2)
    return torch.cat(out)


@torch.no_grad()
def layer_inputs(model, windows: torch.Tensor, batch_size: int = 64) -> list[list[torch.Tensor]] | None:
    """Per batch of `nll_bits`, the input of every layer (for `resume`); None if they would not fit RESUME_BYTES."""
    cfg = model.config
    size = 4 * windows.shape[0] * (windows.shape[1] - 1) * cfg.embed_size * cfg.n_layers
    if size > RESUME_BYTES:
        return None
    return [model.layer_inputs(batch[:, :-1]) for batch in windows.split(batch_size)]


@torch.no_grad()
def head_means(model, windows: torch.Tensor, batch_size: int = 64) -> dict[tuple[int, int], torch.Tensor]:
    """Mean output (hs,) of every head over all positions of windows, for mean-ablation."""
    sums: dict[int, torch.Tensor] = {}
    count = 0
    hooks = []
    for l, layer in enumerate(model.layers):
        attn = layer.causal_attention

        def hook(module, args, l=l):
            out = module.head_outputs(args[0])  # (B, H, N, hs)
            sums[l] = sums.get(l, 0) + out.sum((0, 2))
        hooks.append(attn.register_forward_pre_hook(hook))
    try:
        for batch in windows.split(batch_size):
            model(batch[:, :-1])
            count += batch[:, :-1].numel()
    finally:
        for h in hooks:
            h.remove()
    return {(l, h): sums[l][h] / count for l in sums for h in range(sums[l].shape[0])}


def _contrast_values(delta: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per window: mean Δ on masked positions minus mean Δ on the rest (NaN where either set is empty)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return (delta * mask).sum(1) / mask.sum(1) - (delta * ~mask).sum(1) / (~mask).sum(1)


def _contrasts(values: dict[str, list[np.ndarray]], means: dict[str, list[tuple[float, float]]],
               rng: np.random.Generator) -> list[dict[str, Contrast]]:
    """Per head, each targeted contrast with a paired CI and its specificity: the head's contrast minus the
    mean contrast of all heads, window by window, with a CI. Any ablation hurts more at hard positions; a
    role predicts that *this* head's ablation does so more than the others'."""
    n_heads = len(next(iter(values.values())))
    out: list[dict[str, Contrast]] = [{} for _ in range(n_heads)]
    for name, per_head in values.items():
        d = np.stack(per_head)  # (heads, W)
        ok = np.isfinite(d).all(0)
        if ok.sum() < 5:
            continue
        d = d[:, ok]
        spec = d - d.mean(0)
        counts = resample_counts(d.shape[1], rng)
        low, high, _ = bootstrap_ci(d.T, counts)
        s_low, s_high, _ = bootstrap_ci(spec.T, counts)
        for h in range(n_heads):
            target, rest = means[name][h]
            out[h][name] = Contrast(target, rest, float(d[h].mean()), float(low[h]), float(high[h]), int(ok.sum()),
                                    float(spec[h].mean()), float(s_low[h]), float(s_high[h]))
    return out


def ablate_heads(bundle: ModelBundle, windows: torch.Tensor, probes: torch.Tensor, period: int,
                 classes: CharClasses, rng: np.random.Generator, mode: str = "mean",
                 on_head=None, means: dict | None = None, baseline_ci: list | None = None,
                 extra_masks: dict[str, np.ndarray] | None = None) -> tuple[float, list[Ablation]]:
    """Ablate every head in turn on held-out windows (W, T+1) and repeated passages (P, T).

    Returns (baseline bits/char, per-head results). Δ > 0 means the model got worse without the head.
    The baseline's 95% CI over windows is appended to `baseline_ci` when one is passed.
    Targeted contrasts: `in_word` (predicting letters inside a word after its first: where knowing the word
    start helps), `after_punct` (predicting right after punctuation), `second_copy` (the second copy of a
    repeated passage).
    """
    model = bundle.model
    cfg = model.config
    baseline_ci = [] if baseline_ci is None else baseline_ci
    if mode == "mean" and means is None:
        means = head_means(model, windows)
    base = nll_bits(model, windows).numpy()  # (W, T)
    base_probe = nll_bits(model, probes).numpy()  # (P, T-1)
    lookup = classes.lookup()
    target_codes = lookup[windows[:, 1:].numpy()]  # (W, T) class of the predicted character
    input_codes = lookup[windows[:, :-1].numpy()]
    boundary_codes = [CLASS_NAMES.index("space"), CLASS_NAMES.index("newline")]
    in_word = ~np.isin(input_codes, boundary_codes) & ~np.isin(target_codes, boundary_codes)
    in_word[:, 1:] &= ~np.isin(input_codes[:, :-1], boundary_codes)  # the input is not the word's first letter
    masks = {"in_word": in_word, "after_punct": input_codes == CLASS_NAMES.index("punctuation"),
             **(extra_masks or {})}  # e.g. the queries each of your hypotheses is about
    second = np.zeros(base_probe.shape, dtype=bool)
    second[:, period:] = True  # predicting positions period+1.. : inside the second copy
    rows, values, target_means = [], {k: [] for k in [*masks, "second_copy"]}, {k: [] for k in [*masks, "second_copy"]}
    stored = layer_inputs(model, windows), layer_inputs(model, probes)  # layers below an ablated head: as they were
    for l in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            with model.ablate({(l, h): mode}, means=means):
                abl = nll_bits(model, windows, resume=(l, stored[0]) if stored[0] else None).numpy()
                abl_probe = nll_bits(model, probes, resume=(l, stored[1]) if stored[1] else None).numpy()
            delta = abl - base  # (W, T)
            per_window = delta.mean(1)
            low, high, _ = bootstrap_ci(per_window[:, None], rng)
            by_class = {CLASS_NAMES[c]: float(delta[target_codes == c].mean())
                        for c in range(len(CLASS_NAMES)) if (target_codes == c).sum() >= 20}
            for name, (dl, mask) in {**{k: (delta, m) for k, m in masks.items()},
                                     "second_copy": (abl_probe - base_probe, second)}.items():
                values[name].append(_contrast_values(dl, mask))
                target_means[name].append((float(dl[mask].mean()) if mask.any() else float("nan"),
                                           float(dl[~mask].mean()) if (~mask).any() else float("nan")))
            rows.append((l, h, float(per_window.mean()), float(low[0]), float(high[0]), by_class))
            if on_head:
                on_head()
    contrasts = _contrasts(values, target_means, rng)
    low, high, _ = bootstrap_ci(base.mean(1)[:, None], rng)
    baseline_ci.extend([float(low[0]), float(high[0])])
    return float(base.mean()), [Ablation(l, h, f"L{l}H{h}", d, lo, hi, by, c)
                                for (l, h, d, lo, hi, by), c in zip(rows, contrasts)]


def causal_evidence(a: "ModelAnalysis", cfg: "RunConfig", index: int, progress) -> CausalEvidence:
    """Head ablations with targeted contrasts, the two controls, and generation with role heads removed."""
    prep, stats = a.prep, a.stats
    bundle, classes = prep.bundle, prep.classes
    model = bundle.model
    T = bundle.config.max_context_len
    ids = prep.ids["heldout"]
    n = (len(ids) - 1) // (T + 1)
    starts = np.linspace(0, n - 1, min(n, cfg.ablation_windows)).round().astype(int) * (T + 1)
    windows = torch.as_tensor(np.stack([ids[s:s + T + 1] for s in starts]))  # (W, T+1)
    nat, period = natural_probes(ids, max(8, cfg.n_probes // 4), T)
    rng = np.random.default_rng([cfg.seed, index, 11])
    L, H = bundle.config.n_layers, bundle.config.n_heads
    task = progress.add_task(f"{prep.spec.label}: ablate each head", total=L * H)
    means = head_means(model, windows)
    baseline_ci: list[float] = []
    extra = {h.detector: h.query_positions(windows[:, :-1], torch.as_tensor(classes.lookup())[windows[:, :-1]],
                                           bundle.tokenizer.vocab).numpy()
             for h in cfg.hypotheses if h.has_query}
    baseline, heads = ablate_heads(bundle, windows, torch.as_tensor(nat), period, classes, rng,
                                   on_head=lambda: progress.advance(task), means=means, baseline_ci=baseline_ci,
                                   extra_masks=extra)
    controls = run_controls(prep, cfg, index, stats, rng, progress)
    # Generation with the strongest role heads removed.
    role_heads = []
    for h in sorted(heads, key=lambda x: -x.delta_bits_per_char):
        if roles_of(stats["train"], h.layer, h.head) and len(role_heads) < 2:
            role_heads.append((h.layer, h.head))
    lang = LANGUAGE.get(prep.split.language)
    heldout = prep.heldout_start()  # the held-out text as the model reads it, decoded once
    prompt = prompt_for(lang.prompt if lang else "", prep.spec.text is not None, heldout, bundle.tokenizer)
    generation = generation_evidence(bundle, prompt, heldout, role_heads,
                                     cfg.seed, means)
    passage = heldout_sentence(heldout, T)
    effects = [role_predictions(bundle, passage, f.layer, f.head, f.role, means,
                                example=worked_example(bundle, classes, passage, f.layer, f.head, f.pattern))
               for f in [f for f in a.findings if f.primary][:MAX_ROLE_EFFECTS]]
    return CausalEvidence("mean", len(windows), baseline, heads, controls, generation,
                          [e for e in effects if e is not None], tuple(baseline_ci))


def causal_agreement(found: list[Finding], ablation: list[Ablation], seed: int) -> CausalAgreement | None:
    """Spearman ρ between each head's strongest replicated effect (0 if none) and its ablation Δ, with a
    bootstrap CI over heads; None when there are too few heads or no variation."""
    strength: dict[tuple[int, int], float] = {}
    for f in found:
        if f.replicated:
            key = (f.layer, f.head)
            strength[key] = max(strength.get(key, 0.0), f.effect)
    x = np.array([strength.get((h.layer, h.head), 0.0) for h in ablation])
    y = np.array([h.delta_bits_per_char for h in ablation])
    if len(ablation) < 4 or x.std() == 0 or y.std() == 0:
        return None
    rho = spearman(x, y)
    k = np.random.default_rng([seed, 5]).integers(0, len(x), (2000, len(x)))  # resample heads
    rx, ry = average_ranks(x[k]), average_ranks(y[k])  # (R, heads) ranks with ties averaged
    rx, ry = rx - rx.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
    denom = np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
    boots = (rx * ry).sum(1) / np.where(denom > 0, denom, np.nan)
    degenerate = float(np.mean(~np.isfinite(boots)))
    boots = np.where(np.isfinite(boots), boots, 0.0)  # a resample with no variation shows no association
    return CausalAgreement(rho, float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)), len(ablation),
                           "largest held-out effect among the head's replicated roles (0 if none)",
                           "Δ bits/char when the head is mean-ablated", degenerate)
