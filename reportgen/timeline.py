"""Emergence timeline: how strongly each of the final model's roles holds at every sibling checkpoint."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .capture import capture, window_starts
from .checkpoint import load_checkpoint
from .device import device_of
from .evidence import Series, Timeline
from .layouts import series as checkpoint_series
from .stats import block_resample_counts, bootstrap_ci, split_stats

if TYPE_CHECKING:
    from .config import RunConfig
    from .stages import ModelAnalysis


def _from_main_capture(a: ModelAnalysis, cfg: RunConfig, rng: np.random.Generator
                       ) -> tuple[dict[str, dict[str, np.ndarray]], int] | None:
    """The analysed checkpoint's timeline point from the run's own held-out capture (no second capture): the
    observed values of the same windows a fresh capture would score, with the same bootstrap. None when the main
    capture does not hold all of those windows (a `heldout_windows` cap that picked others)."""
    main = a.scores["heldout"]
    T = a.prep.bundle.config.max_context_len
    wanted = window_starts(len(a.prep.ids["heldout"]), T, cfg.timeline_windows, "held-out text")
    at = np.clip(np.searchsorted(main.window_starts, wanted), 0, len(main.window_starts) - 1)
    if len(wanted) < 2 or not np.array_equal(main.window_starts[at], wanted):
        return None
    counts = block_resample_counts(len(wanted), rng, 1)  # as split_stats draws them for independent windows
    out = {}
    for name, obs in main.observed.items():
        W, L, H = obs[at].shape
        low, high, _ = bootstrap_ci(obs[at].reshape(W, L * H), counts)
        out[name] = {"mean": obs[at].mean(0), "ci_low": low.reshape(L, H), "ci_high": high.reshape(L, H)}
    return out, len(wanted)


RECORDED = {"course": ("train_loss", "training loss"), "nanogpt": ("best_val_loss", "validation loss (best so far)")}


def recorded_loss(meta: dict) -> tuple[float | None, str | None]:
    """(bits/char, what it is) of the loss a course or nanoGPT checkpoint recorded in training (nats per character,
    as cross-entropy is), else (None, None)."""
    key, what = RECORDED.get(meta.get("format"), (None, None))
    value = meta.get(key) if key else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        return None, None
    return float(value) / math.log(2), what


def emergence(a: ModelAnalysis, cfg: RunConfig, index: int, progress) -> Timeline | None:
    """Strength of the final model's strongest roles at every sibling checkpoint (step*.pt), with CIs.

    Runs only when the model's folder holds three or more checkpoints of one run (reportgen `stepN.pt` or the
    course's `checkpoint_step{S}_loss{L}.pt`) of the same shape.
    Each checkpoint is scored on the same evenly spread held-out windows.
    """
    prep = a.prep
    path = prep.bundle.path
    siblings = checkpoint_series(path)
    if len(siblings) < 3 or path not in siblings:
        return None
    chosen = {}
    for f in a.findings:  # strongest replicated finding per family, plus the natural-text induction score
        if f.replicated and f.family not in chosen and not f.pattern.startswith("probe_"):
            chosen[f.family] = f
    series = [(f.pattern, f.layer, f.head, f"L{f.layer}H{f.head} {f.role}") for f in chosen.values()]
    if not any(p == "induction" for p, *_ in series):
        ind = a.stats["heldout"].values["induction"]["mean"]
        l, h = np.unravel_index(np.nanargmax(ind), ind.shape)
        series.append(("induction", int(l), int(h), f"L{l}H{h} natural-text induction attention (strongest at the final step)"))
    task = progress.add_task(f"{prep.spec.label}: emergence over {len(siblings)} checkpoints", total=len(siblings))
    steps, bpc, recorded, kinds = [], [], [], set()
    values = {s[3]: {"mean": [], "ci_low": [], "ci_high": []} for s in series}
    for ckpt in siblings:
        bundle = prep.bundle if ckpt == path else load_checkpoint(
            ckpt, with_residuals=prep.bundle.config.with_residuals, train_text=prep.spec.train_text,
            meta_path=prep.spec.meta, device=device_of(prep.bundle.model))
        if bundle.config != prep.bundle.config or bundle.tokenizer.vocab != prep.bundle.tokenizer.vocab:
            progress.advance(task)
            continue
        rng = np.random.default_rng([cfg.seed, index, 21])
        point = _from_main_capture(a, cfg, rng) if ckpt == path else None
        if point is None:
            scores = capture(bundle, prep.ids["heldout"], prep.classes, limit=cfg.timeline_windows, n_samples=0,
                             hypotheses=cfg.hypotheses)
            point = (split_stats(scores, {}, rng).values, scores.n_windows)
        summary, n_windows = point
        steps.append(bundle.metadata.get("step"))
        bpc.append(bundle.metadata.get("heldout_bits_per_char"))
        value, kind = recorded_loss(bundle.metadata)
        recorded.append(value)
        kinds.update([kind] if kind else [])
        for det, l, h, label in series:
            for k in ("mean", "ci_low", "ci_high"):
                values[label][k].append(float(summary[det][k][l, h]))
        progress.advance(task)
    if len(steps) < 3:
        return None
    return Timeline(steps, bpc, n_windows,
                    [Series(label, det, l, h, None, **values[label]) for det, l, h, label in series],
                    recorded if kinds else None, " / ".join(sorted(kinds)) if kinds else None)
