"""When each role forms, and phase changes: rules over the timeline's numbers (computed, never typed).

* A role is *significant from* step s when its lower 95% CI bound is above its detector's uniform chance at s and at
  every later checkpoint; it *never leaves chance* when its lower bound is above chance at no checkpoint.
* A series *jumps* between checkpoints k-1 and k when it rises beyond both CIs (lower bound at k above the upper
  bound at k-1) by at least `JUMP_SHARE` of its whole range over the run; an in-context score jumps when it falls
  that way (a lower score: later characters predicted better than earlier ones) to below 0 (its upper bound at k
  under 0: a fall from "worse late" to "no worse" is not learning in context).
* A *phase change* is marked between k-1 and k when an in-context score (the in-context-learning score on natural
  text, or the copying score: second-copy minus first-copy loss on repeated held-out passages) and at least one
  drawn role jump there together; each score is tested on its own and named.
"""

from __future__ import annotations

import math
from typing import Sequence

from .evidence import PhaseChange, Series

JUMP_SHARE = 0.25
RULE = (f"a phase change is marked where, between two consecutive checkpoints, an in-context score (the "
        f"in-context-learning score on natural text, or the copying score on repeated passages) falls to below 0 "
        f"(its upper 95% bound under 0: the later characters predicted better than the earlier) and a role's "
        f"strength rises together, each beyond both checkpoints' 95% CIs and by at least {JUMP_SHARE:.0%} of its "
        f"whole range over the run")


def significant_from(steps: Sequence[int], ci_low: Sequence[float], chance: float | None) -> int | None:
    """The first step from which the lower 95% bound stays above chance at every later checkpoint (None: not at
    the last checkpoint either)."""
    if chance is None:
        return None
    k = len(ci_low)
    while k > 0 and ci_low[k - 1] > chance:  # NaN compares False: an undefined bound is not above chance
        k -= 1
    return steps[k] if k < len(steps) else None


def leaves_chance(ci_low: Sequence[float], chance: float | None) -> bool:
    """Whether the lower 95% bound is above chance at any checkpoint."""
    return chance is not None and any(c > chance for c in ci_low)


def jumps(mean: Sequence[float], ci_low: Sequence[float], ci_high: Sequence[float]) -> list[bool]:
    """jumps[k]: from checkpoint k-1 to k the value rose beyond both CIs by at least JUMP_SHARE of its range."""
    finite = [m for m in mean if math.isfinite(m)]
    span = max(finite) - min(finite) if finite else 0.0
    return [False] + [span > 0 and ci_low[k] > ci_high[k - 1] and mean[k] - mean[k - 1] >= JUMP_SHARE * span
                      for k in range(1, len(mean))]


def phase_changes(steps: Sequence[int], icl: Sequence[float], icl_low: Sequence[float], icl_high: Sequence[float],
                  series: Sequence[Series], score: str = "in-context-learning score") -> list[PhaseChange]:
    """Where an in-context score (`score`: the in-context-learning score, or the copying score) falls and a drawn
    role rises together (see the module's rule)."""
    falls = jumps([-x for x in icl], [-x for x in icl_high], [-x for x in icl_low])
    rising = {s.label: jumps(s.mean, s.ci_low, s.ci_high) for s in series if s.leaves_chance}
    out = []
    for k in range(1, len(steps)):
        roles = [label for label, up in rising.items() if up[k]]
        if falls[k] and icl_high[k] < 0 and roles:  # it falls to where the model does learn in context
            out.append(PhaseChange(steps[k - 1], steps[k], icl[k - 1] - icl[k], roles, score))
    return out
