"""Causal evidence: ablate each head and measure Δ bits/char on held-out text, overall and where its
role should matter, with paired bootstrap CIs over windows; generation with role heads removed.

Ablation never modifies weights (`TransformerLM.ablate` is a context manager). Shapes: W windows,
T positions, L layers, H heads.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from .capture import natural_probes, random_probes
from .catalogue import roles_of
from .checkpoint import ModelBundle
from .classes import CLASS_NAMES, CharClasses
from .circuits import composition
from .controls import finish_controls, measure_controls
from .evidence import Ablation, CausalAgreement, Circuit, Contrast, Controls, Generation, RoleEffect, Writes
from .examples import worked_example
from .generation import generation_evidence, heldout_sentence, prompt_for, role_predictions
from .languages import LANGUAGE
from .results import Finding
from .stats import average_ranks, bootstrap_ci, resample_counts, spearman
from .writes import head_writes

if TYPE_CHECKING:
    from .config import RunConfig
    from .stages import ModelAnalysis, Prepared

LN2 = float(np.log(2.0))
MAX_ROLE_EFFECTS = 8  # role heads whose single ablation is shown prediction by prediction
COMPOSITION_WINDOWS = 16  # held-out windows (and probes) on which each earlier head is removed for composition
RESAMPLE_DRAWS = 2  # donor windows per resample ablation (paired: each window's Δ averages its draws)


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
    writes: list[Writes]
    circuit: Circuit | None


RESUME_BYTES = 256 * 2 ** 20  # most memory kept for resuming forward passes at an ablated head's layer


@torch.no_grad()
def nll_bits(model, windows: torch.Tensor, batch_size: int = 64,
             resume: tuple[int, list[list[torch.Tensor]]] | None = None, given=None) -> torch.Tensor:
    """Per-position loss in bits (W, T-1) of predicting windows[:, 1:] from windows[:, :-1]. With `resume`
    (layer, `layer_inputs(...)` of the same windows) each batch's pass starts at that layer from its stored
    input: an ablation at that layer leaves the layers below it unchanged, so the result is the same bit for bit.
    `given(k)`: head outputs {(layer, head): (B | 1, N, hs)} patched into batch k's pass."""
    out = []
    for k, batch in enumerate(batches(windows, batch_size)):
        with model.patch(given(k)) if given else contextlib.nullcontext():
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
    return [model.layer_inputs(batch[:, :-1]) for batch in batches(windows, batch_size)]


@torch.no_grad()
def clean_heads(model, stored: list[list[torch.Tensor]] | None) -> list[list[torch.Tensor]] | None:
    """Per batch and layer, every head's output (B, H, N, hs) on the stored layer inputs (`layer_inputs`), as the
    unablated pass computes it: a resumed pass that ablates one head of a layer patches in the others' (and the
    head's own, rolled, for a resample) instead of attending again."""
    if stored is None or 2 * sum(x.numel() for xs in stored for x in xs) * 4 > RESUME_BYTES:
        return None
    return [[layer.causal_attention.head_outputs(layer.layer_norm_1(x)) for layer, x in zip(model.layers, xs)]
            for xs in stored]


def _replaced(y: torch.Tensor, layer: int, head: int, mode: str, mean: torch.Tensor | None,
              shift: int) -> dict[tuple[int, int], torch.Tensor]:
    """Every head's output of `layer` (B, N, hs) from its clean outputs y (B, H, N, hs), with `head` ablated as
    `TransformerLM.ablate` does it (resample: window b takes window b - shift's; mean; zero)."""
    out = {(layer, j): y[:, j] for j in range(y.shape[1])}
    own = y[:, head]
    if mode == "resample":
        out[layer, head] = own.roll(shift % len(y) or 1, dims=0)
    else:
        out[layer, head] = torch.zeros_like(own) if mode == "zero" else mean.to(y.dtype).expand(1, *own.shape[1:])
    return out


def batches(windows: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, ...]:
    """Windows in near-equal batches of at most `batch_size` (never a lone window after a full batch: resample
    ablation takes a window's donor from its own batch)."""
    return torch.tensor_split(windows, max(1, -(-len(windows) // batch_size)))


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
        for batch in batches(windows, batch_size):
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


def median_other(d: np.ndarray) -> np.ndarray:
    """Per head, window by window, the contrast of the median *other* head (heads ranked by mean contrast; the
    mean of the two middle ones for an even count): (heads, W) from d (heads, W). Two layer-0 heads whose removal
    breaks everything cannot drag a median the way they drag a mean."""
    n = len(d)
    order = np.argsort(d.mean(1), kind="stable")
    out = np.empty_like(d)
    for h in range(n):
        others = order[order != h]
        if len(others) == 0:
            out[h] = np.nan
            continue
        mid = (len(others) - 1) / 2
        out[h] = 0.5 * (d[others[int(np.floor(mid))]] + d[others[int(np.ceil(mid))]])
    return out


def _contrasts(values: dict[str, list[np.ndarray]], means: dict[str, list[tuple[float, float]]],
               rng: np.random.Generator) -> list[dict[str, Contrast]]:
    """Per head, each targeted contrast (Δ where the role predicts minus Δ elsewhere, per window) with a paired CI,
    and its specificity: the head's contrast minus the median other head's, window by window, with a CI. Any
    ablation hurts more at hard positions; a role predicts that *this* head's ablation does so more than a
    typical other head's."""
    n_heads = len(next(iter(values.values())))
    out: list[dict[str, Contrast]] = [{} for _ in range(n_heads)]
    for name, per_head in values.items():
        d = np.stack(per_head)  # (heads, W)
        ok = np.isfinite(d).all(0)
        if ok.sum() < 5:
            continue
        d = d[:, ok]
        spec = d - median_other(d) if n_heads > 1 else np.full_like(d, np.nan)
        counts = resample_counts(d.shape[1], rng)
        low, high, _ = bootstrap_ci(d.T, counts)
        s_low, s_high, _ = bootstrap_ci(spec.T, counts) if n_heads > 1 else (low * np.nan, high * np.nan, None)
        for h in range(n_heads):
            target, rest = means[name][h]
            out[h][name] = Contrast(target, rest, float(d[h].mean()), float(low[h]), float(high[h]), int(ok.sum()),
                                    float(spec[h].mean()), float(s_low[h]), float(s_high[h]))
    return out


def _ablated(model, key: tuple[int, int], mode: str, data: torch.Tensor, stored, means, draws: int) -> np.ndarray:
    """Per-position loss (W, T) with one head ablated; a resample is averaged over `draws` donors (shifts 1..).
    `stored`: (`layer_inputs`, `clean_heads`) of `data`, or None; with both, a pass starts at the head's layer with
    its outputs patched in (`_replaced`), with layer inputs only it attends again at that layer: the same losses."""
    inputs, heads = stored or (None, None)
    shifts = range(1, draws + 1) if mode == "resample" else (1,)
    total = 0.0
    for shift in shifts:
        resume = (key[0], inputs) if inputs else None
        if heads is not None and mode in ("resample", "mean", "zero"):
            given = lambda k, shift=shift: _replaced(heads[k][key[0]], *key, mode,  # noqa: E731
                                                     means[key] if mode == "mean" else None, shift)
            total = total + nll_bits(model, data, resume=resume, given=given).numpy()
            continue
        with model.ablate({key: mode}, means=means, shift=shift):
            total = total + nll_bits(model, data, resume=resume).numpy()
    return total / len(shifts)


def ablate_heads(bundle: ModelBundle, windows: torch.Tensor, probes: torch.Tensor | None, period: int,
                 classes: CharClasses, rng: np.random.Generator, mode: str = "resample",
                 on_head=None, means: dict | None = None, baseline_ci: list | None = None,
                 extra_masks: dict[str, np.ndarray] | None = None, second: str | None = None,
                 draws: int = RESAMPLE_DRAWS) -> tuple[float, list[Ablation]]:
    """Ablate every head in turn on held-out windows (W, T+1) and repeated passages (P, T; None: no second-copy
    contrast, and no pass over them).

    Returns (baseline bits/char, per-head results). Δ > 0 means the model got worse without the head. `mode` gives
    the primary Δ, its CI, per-class changes and targeted contrasts ('resample': the head's output from `draws`
    other windows at the same positions, averaged; paired with the unablated loss window by window); `second`
    (e.g. 'mean') adds that mode's overall Δ with its CI as a second column. The baseline's 95% CI over windows
    is appended to `baseline_ci` when one is passed.
    Targeted contrasts: `in_word` (predicting letters inside a word after its first: where knowing the word
    start helps), `after_punct` (predicting right after punctuation), `after_newline` (the first character of a
    line: where a line-break head helps), `second_copy` (the second copy of a
    repeated passage), and per predicted class `class:<name>` (is this class where the head matters most?).
    """
    model = bundle.model
    cfg = model.config
    baseline_ci = [] if baseline_ci is None else baseline_ci
    if "mean" in (mode, second) and means is None:
        means = head_means(model, windows)
    base = nll_bits(model, windows).numpy()  # (W, T)
    base_probe = nll_bits(model, probes).numpy() if probes is not None else None  # (P, T-1)
    lookup = classes.lookup()
    target_codes = lookup[windows[:, 1:].numpy()]  # (W, T) class of the predicted character
    input_codes = lookup[windows[:, :-1].numpy()]
    boundary_codes = [CLASS_NAMES.index("space"), CLASS_NAMES.index("newline")]
    in_word = ~np.isin(input_codes, boundary_codes) & ~np.isin(target_codes, boundary_codes)
    in_word[:, 1:] &= ~np.isin(input_codes[:, :-1], boundary_codes)  # the input is not the word's first letter
    masks = {"in_word": in_word, "after_punct": input_codes == CLASS_NAMES.index("punctuation"),
             "after_newline": input_codes == CLASS_NAMES.index("newline"),  # where a line-break head should matter
             **(extra_masks or {})}  # e.g. the queries each of your hypotheses is about
    class_masks = {f"class:{CLASS_NAMES[c]}": target_codes == c for c in range(len(CLASS_NAMES))
                   if (target_codes == c).sum() >= 20}
    copy = None
    if probes is not None:
        copy = np.zeros(base_probe.shape, dtype=bool)
        copy[:, period:] = True  # predicting positions period+1.. : inside the second copy
    names = [*masks, *(["second_copy"] if probes is not None else []), *class_masks]
    rows, values, target_means = [], {k: [] for k in names}, {k: [] for k in names}
    inputs = (layer_inputs(model, windows),  # layers below an ablated head: as they were
              layer_inputs(model, probes) if probes is not None else None)
    stored = [(x, clean_heads(model, x)) for x in inputs]
    for l in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            delta = _ablated(model, (l, h), mode, windows, stored[0], means, draws) - base  # (W, T)
            on_probes = {}
            if probes is not None:
                on_probes["second_copy"] = (_ablated(model, (l, h), mode, probes, stored[1], means, draws) - base_probe,
                                            copy)
            per_window = delta.mean(1)
            low, high, _ = bootstrap_ci(per_window[:, None], rng)
            by_class = {k.removeprefix("class:"): float(delta[m].mean()) for k, m in class_masks.items()}
            for name, (dl, mask) in {**{k: (delta, m) for k, m in {**masks, **class_masks}.items()},
                                     **on_probes}.items():
                values[name].append(_contrast_values(dl, mask))
                target_means[name].append((float(dl[mask].mean()) if mask.any() else float("nan"),
                                           float(dl[~mask].mean()) if (~mask).any() else float("nan")))
            alt = None
            if second:
                alt_window = (_ablated(model, (l, h), second, windows, stored[0], means, draws) - base).mean(1)
                alt_low, alt_high, _ = bootstrap_ci(alt_window[:, None], rng)
                alt = (float(alt_window.mean()), float(alt_low[0]), float(alt_high[0]))
            rows.append((l, h, float(per_window.mean()), float(low[0]), float(high[0]), by_class, alt))
            if on_head:
                on_head()
    contrasts = _contrasts(values, target_means, rng)
    low, high, _ = bootstrap_ci(base.mean(1)[:, None], rng)
    baseline_ci.extend([float(low[0]), float(high[0])])
    out = []
    for (l, h, d, lo, hi, by, alt), c in zip(rows, contrasts):
        targeted = {k: v for k, v in c.items() if not k.startswith("class:")}
        per_class = {k.removeprefix("class:"): v for k, v in c.items() if k.startswith("class:")}
        out.append(Ablation(l, h, f"L{l}H{h}", d, lo, hi, by, targeted, mode=mode,
                            ablated_bits_per_char=float(base.mean()) + d, class_contrasts=per_class,
                            **({} if alt is None else dict(second_mode=second, second_delta=alt[0],
                                                          second_ci_low=alt[1], second_ci_high=alt[2]))))
    return float(base.mean()), out


def ablation_inputs(ids: np.ndarray, T: int, cfg: "RunConfig") -> tuple[torch.Tensor, np.ndarray, int]:
    """The held-out windows (W, T+1) every head is ablated on (`cfg.ablation_windows`, evenly spread) and the
    repeated passages (P, T) with their period, for the second-copy contrast: the same for a model and its seeds."""
    n = (len(ids) - 1) // (T + 1)
    starts = np.linspace(0, n - 1, min(n, cfg.ablation_windows)).round().astype(int) * (T + 1)
    nat, period = natural_probes(ids, max(8, cfg.n_probes // 4), T)
    return torch.as_tensor(np.stack([ids[s:s + T + 1] for s in starts])), nat, period


@dataclass(frozen=True)
class Ablated:
    """What the causal stage measures before the roles are known (`ablate_model`): it runs beside the capture of
    the run's other models, and `causal_evidence` goes on from it, with the same random stream."""

    baseline: float
    heads: list[Ablation]
    baseline_ci: tuple[float, float]
    controls: tuple | None  # `controls.measure_controls` (finished once the run's q-values are known), None for a seed
    means: dict | None  # each head's mean output on the ablation windows (mean-ablation), None for a seed
    rng: np.random.Generator  # the stream, where the ablations and controls left it
    windows: torch.Tensor  # the held-out windows (W, T+1) every head was ablated on (`ablation_inputs`)


def ablate_model(prep: "Prepared", stats: dict, cfg: "RunConfig", index: int, progress, seed: bool = False) -> Ablated:
    """Every head ablated on the held-out ablation windows, and (for a drawn model) the two controls: nothing here
    depends on the run's roles. A drawn model's heads get targeted contrasts (the second-copy one on repeated
    passages, and each hypothesis' queries) and a mean-ablation column; another seed's record keeps each head's
    resample Δ and CI only, so it has neither (nor a pass over the repeated passages)."""
    bundle, classes = prep.bundle, prep.classes
    T = bundle.config.max_context_len
    windows, nat, period = ablation_inputs(prep.ids["heldout"], T, cfg)
    rng = np.random.default_rng([cfg.seed, index, 11])
    L, H = bundle.config.n_layers, bundle.config.n_heads
    task = progress.add_task(f"{prep.spec.label}: {'seeds: ' if seed else ''}ablate each head", total=L * H)
    baseline_ci: list[float] = []
    if seed:
        baseline, heads = ablate_heads(bundle, windows, None, period, classes, rng,
                                       on_head=lambda: progress.advance(task), baseline_ci=baseline_ci)
        return Ablated(baseline, heads, tuple(baseline_ci), None, None, rng, windows)
    means = head_means(bundle.model, windows)
    extra = {h.detector: h.query_positions(windows[:, :-1], torch.as_tensor(classes.lookup())[windows[:, :-1]],
                                           bundle.tokenizer.vocab).numpy()
             for h in cfg.hypotheses if h.has_query}
    baseline, heads = ablate_heads(bundle, windows, torch.as_tensor(nat), period, classes, rng,
                                   on_head=lambda: progress.advance(task), means=means, baseline_ci=baseline_ci,
                                   extra_masks=extra, second="mean")
    controls = measure_controls(prep, cfg, index, stats, rng, progress)
    return Ablated(baseline, heads, tuple(baseline_ci), controls, means, rng, windows)


def causal_evidence(a: "ModelAnalysis", cfg: "RunConfig", index: int, progress,
                    first: Ablated | None = None) -> CausalEvidence:
    """Head ablations with targeted contrasts, the two controls (`first`, from `ablate_model`, measured here if not
    given), and what needs the roles: generation with role heads removed, each role head's prediction changes,
    what the role heads write and which earlier heads feed them."""
    prep, stats = a.prep, a.stats
    bundle, classes = prep.bundle, prep.classes
    T = bundle.config.max_context_len
    first = first or ablate_model(prep, a.stats, cfg, index, progress)
    baseline, heads, baseline_ci, means, rng = first.baseline, first.heads, first.baseline_ci, first.means, first.rng
    windows = first.windows
    controls = finish_controls(first.controls, stats)
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
    writes, circuit = mechanisms(a, windows[:, :-1], rng, progress)
    return CausalEvidence("resample", len(windows), baseline, heads, controls, generation,
                          [e for e in effects if e is not None], baseline_ci, writes, circuit)


def mechanisms(a: "ModelAnalysis", windows: torch.Tensor, rng: np.random.Generator,
               progress) -> tuple[list[Writes], Circuit]:
    """What each main-role head writes, and which earlier heads feed its role (on held-out windows (W, T))."""
    prep = a.prep
    model, classes = prep.bundle.model, prep.classes
    primary = [f for f in a.findings if f.primary]
    writes = head_writes(model, windows, classes, [(f.layer, f.head) for f in primary], rng)
    T = windows.shape[1]
    probes = {}
    if any(f.pattern == "probe_natural" for f in primary):
        nat, period = natural_probes(prep.ids["heldout"], COMPOSITION_WINDOWS, T)
        probes["probe_natural"] = (torch.as_tensor(nat), period)
    if any(f.pattern == "probe_random" for f in primary):
        rand, period = random_probes(classes, COMPOSITION_WINDOWS, T, rng)
        probes["probe_random"] = (torch.as_tensor(rand), period)
    targets = [(f.layer, f.head, f.pattern) for f in primary if f.layer >= 1]
    sources = max((l for l, _, _ in targets), default=0) * model.config.n_heads
    task = progress.add_task(f"{prep.spec.label}: composition", total=sources)
    sample = windows[:COMPOSITION_WINDOWS]
    circuit = composition(model, sample, torch.as_tensor(classes.lookup())[sample], targets, probes,
                          prep.bundle.tokenizer.vocab_size(), rng, on_step=lambda: progress.advance(task))
    return writes, circuit


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
                           "Δ bits/char when the head is resample-ablated", degenerate)
