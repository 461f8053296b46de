"""Emergence timeline: how strongly each of the final model's roles holds at every sibling checkpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .capture import capture
from .checkpoint import load_checkpoint
from .stats import split_stats

if TYPE_CHECKING:
    from .analyze import ModelAnalysis, Prepared
    from .config import RunConfig


def emergence(a: ModelAnalysis, prep: Prepared, cfg: RunConfig, index: int, progress) -> dict | None:
    """Strength of the final model's strongest roles at every sibling checkpoint (step*.pt), with CIs.

    Runs only when the model's folder holds three or more reportgen checkpoints of the same shape.
    Each checkpoint is scored on the same evenly spread held-out windows.
    """
    path = a.bundle.path
    siblings = sorted(path.parent.glob("step*.pt"))
    if len(siblings) < 3 or path not in siblings:
        return None
    chosen: dict[str, dict] = {}
    from .analyze import findings

    for f in findings(a):  # strongest replicated finding per family, plus the natural-text induction score
        if f["replicated"] and f["family"] not in chosen and not f["pattern"].startswith("probe_"):
            chosen[f["family"]] = f
    series = [(f["pattern"], f["layer"], f["head"], f"L{f['layer']}H{f['head']} {f['role']}") for f in chosen.values()]
    if not any(p == "induction" for p, *_ in series):
        ind = a.stats["heldout"].values["induction"]["mean"]
        l, h = np.unravel_index(np.nanargmax(ind), ind.shape)
        series.append(("induction", int(l), int(h), f"L{l}H{h} induction (strongest at the final step)"))
    task = progress.add_task(f"{prep.spec.label}: emergence over {len(siblings)} checkpoints", total=len(siblings))
    steps, bpc, values = [], [], {s[3]: {"mean": [], "ci_low": [], "ci_high": []} for s in series}
    for ckpt in siblings:
        bundle = load_checkpoint(ckpt)
        if bundle.config != a.bundle.config or bundle.tokenizer.vocab != a.bundle.tokenizer.vocab:
            progress.advance(task)
            continue
        scores = capture(bundle, prep.ids["heldout"], prep.classes, limit=cfg.timeline_windows, n_samples=0)
        st = split_stats(scores, {}, np.random.default_rng([cfg.seed, index, 21]))
        steps.append(bundle.metadata.get("step"))
        bpc.append(bundle.metadata.get("heldout_bits_per_char"))
        for det, l, h, label in series:
            for k in ("mean", "ci_low", "ci_high"):
                values[label][k].append(float(st.values[det][k][l, h]))
        progress.advance(task)
    if len(steps) < 3:
        return None
    return {"steps": steps, "heldout_bits_per_char": bpc, "windows": min(cfg.timeline_windows, scores.n_windows),
            "series": [{"label": label, "detector": det, "layer": l, "head": h, "chance": None, **values[label]}
                       for det, l, h, label in series]}
