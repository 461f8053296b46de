"""What a head writes: its output read through the final LayerNorm's scale and the unembedding (direct logit
attribution, Elhage et al. 2021), compared with what it reads.

For every valid query of held-out windows, the head's direct logits (centred over the vocabulary) are ranked and
set against the character at its strongest key: a copying head raises exactly that character (rank 1). The null
is the same head's logits against the character another query of the same window attends to (its top-1 rate is
what raising a frequent character regardless of what the head read would give). Also measured: the character
*after* the strongest key (what followed what it reads), and the mean direct logit of each character class.

Models without residual connections have no residual stream a head writes into directly; nothing is computed
for them. Shapes: W windows, T positions, V vocabulary.
"""

from __future__ import annotations

import numpy as np
import torch

from .classes import CLASS_NAMES, CharClasses
from .detectors import SKIP
from .evidence import Writes
from .stats import bootstrap_ci, resample_counts

COPY_MARGIN = 0.10  # "copies": lower 95% bound of (top-1 share - its null) at least this
CLASS_LOGITS = 0.5  # "raises a class": lower 95% bound of the class's mean direct logit at least this (nats)
MIN_MEMBERS = 2  # classes with fewer vocabulary symbols are not tested as classes


def _ranks(logits: torch.Tensor, chars: torch.Tensor) -> torch.Tensor:
    """Rank (1 = highest) of chars (W, T) among logits (W, T, V); ties count against the character."""
    own = logits.gather(-1, chars.unsqueeze(-1))  # (W, T, 1)
    return (logits >= own).sum(-1)  # (W, T)


@torch.no_grad()
def head_writes(model, windows: torch.Tensor, classes: CharClasses, heads: list[tuple[int, int]],
                rng: np.random.Generator, batch_size: int = 32) -> list[Writes]:
    """Direct-logit verdicts for `heads` [(layer, head)] on windows (W, T) (W >= 2)."""
    if not heads or not model.config.with_residuals:
        return []
    V = model.config.vocab_size
    lookup = torch.as_tensor(classes.lookup())
    per: dict[tuple[int, int], dict[str, list[np.ndarray]]] = {k: {} for k in heads}
    codes = lookup[torch.arange(V)]  # class of each vocabulary symbol
    for batch in windows.split(batch_size):
        cache = model.run_with_cache(batch)
        W, T = batch.shape
        for layer in sorted({l for l, _ in heads}):
            dla = model.direct_logits(cache, layer)[..., SKIP:, :]  # (W, H, T', V)
            for l, h in [k for k in heads if k[0] == layer]:
                att = cache.attention[layer][:, h, SKIP:]  # (W, T', S)
                key = att.argmax(-1)  # (W, T') strongest key of each valid query
                read = batch.gather(1, key)  # the character there
                after = batch.gather(1, (key + 1).clamp_max(T - 1))  # the character after it
                has_after = (key + 1) <= torch.arange(SKIP, T)  # it lies in the query's visible prefix
                other = read.roll(1, dims=1)  # another query's read character (same window): the null
                logits = dla[:, h]  # (W, T', V)
                rank = _ranks(logits, read).float()
                cls = torch.stack([logits[..., codes == c].mean(-1) if (codes == c).sum() >= MIN_MEMBERS
                                   else torch.full(logits.shape[:2], float("nan")) for c in range(len(CLASS_NAMES))],
                                  -1)  # (W, T', C)
                d = per[(l, h)]
                for name, v in (("rank", rank), ("top1", (rank == 1).float()),
                                ("null", (_ranks(logits, other) == 1).float()),
                                ("after", torch.where(has_after, (_ranks(logits, after) == 1).float(),
                                                      torch.tensor(float("nan"))))):
                    d.setdefault(name, []).append(np.nanmean(v.numpy(), 1))
                d.setdefault("class", []).append(cls.mean(1).numpy())  # (W, C)
    out = []
    for (l, h), d in per.items():
        rank, top1, null, after = (np.concatenate(d[k]) for k in ("rank", "top1", "null", "after"))
        cls = np.concatenate(d["class"])  # (W, C)
        counts = resample_counts(len(top1), rng)
        ok = np.isfinite(after)
        cols = np.stack([top1 - null, np.where(ok, after, 0) - null, *cls.T], 1)  # (W, 2 + C)
        low, high, _ = bootstrap_ci(np.nan_to_num(cols), counts)
        class_mean = {CLASS_NAMES[c]: float(cls[:, c].mean()) for c in range(len(CLASS_NAMES))
                      if np.isfinite(cls[:, c]).all()}
        class_low = {CLASS_NAMES[c]: float(low[2 + c]) for c in range(len(CLASS_NAMES)) if CLASS_NAMES[c] in class_mean}
        best = max(class_mean, key=class_mean.get) if class_mean else None
        if low[0] >= COPY_MARGIN:
            verdict = "copies"
        elif low[1] >= COPY_MARGIN:
            verdict = "next"
        elif best is not None and class_low[best] >= CLASS_LOGITS:
            verdict = "class"
        else:
            verdict = "none"
        out.append(Writes(l, h, f"L{l}H{h}", int(np.isfinite(top1).sum()), V, float(rank.mean()), float(top1.mean()),
                          float(null.mean()), float(low[0]), float(high[0]), float(np.nanmean(after)),
                          float(low[1]), class_mean, best, class_low.get(best) if best else None, verdict))
    return out
