"""Roles: which catalogue rules hold for each head, and the findings discovered on training windows."""

from __future__ import annotations

import dataclasses

from .catalogue import ROLE_DETECTORS, role_label, roles_of
from .classwide import head_profiles
from .results import SPLITS, Finding, FindingBlock, Summary
from .stats import SplitStats


def summary(split: SplitStats, detector: str, layer: int, head: int) -> Summary:
    """One head's summary of one detector on one split, typed."""
    return Summary(**{k: float(v[layer, head]) for k, v in split.values[detector].items()})


def random_repeats(stats: dict[str, SplitStats], layer: int, head: int) -> bool:
    """Whether a head passes the repeated-random-sequence induction rule (probe_random, Olsson et al. 2022) on
    every split that was probed (training and held-out probe sequences): what "induction head" requires."""
    probed = [s for s in stats.values() if "probe_random" in s.values]
    return bool(probed) and all(any(d.name == "probe_random" for d in roles_of(s, layer, head)) for s in probed)


def findings(stats: dict[str, SplitStats], n_layers: int, n_heads: int) -> list[Finding]:
    """Roles discovered on training windows, each with its held-out numbers; replicated and strongest first."""
    out = []
    for layer in range(n_layers):
        for head in range(n_heads):
            held = {d.name for d in roles_of(stats["heldout"], layer, head)}
            olsson = random_repeats(stats, layer, head)
            for d in roles_of(stats["train"], layer, head):
                train = summary(stats["train"], d.name, layer, head)
                heldout = summary(stats["heldout"], d.name, layer, head)
                out.append(Finding(layer, head, f"L{layer}H{head}", d.name, role_label(d, olsson), d.family, d.rule.text(),
                                   d.description, FindingBlock.of(train), FindingBlock.of(heldout),
                                   d.name in held, heldout.mean - heldout.strictest_null))
    out.sort(key=lambda f: (not f.replicated, -f.effect))
    seen: set[tuple[int, int]] = set()
    for k, f in enumerate(out):  # each head's first (strongest, replicated first) finding is its main role;
        if f.replicated and (f.layer, f.head) not in seen and f.family != "your hypotheses":  # yours are reported apart
            seen.add((f.layer, f.head))
            out[k] = dataclasses.replace(f, primary=True)
    return out


def role_labels(stats: dict[str, SplitStats], layer: int, head: int) -> dict[str, list[str]]:
    """The role labels whose rules hold for a head, per split."""
    olsson = random_repeats(stats, layer, head)
    return {s: [role_label(d, olsson) for d in roles_of(stats[s], layer, head)] for s in SPLITS}


def profile_fields(stats: dict[str, SplitStats], profiles: dict, vocab: list[str], layer: int, head: int) -> dict:
    """A head's held-out profile fields (`classwide.head_profiles`) for the detectors whose rule holds on either
    split, and the class detectors whose rule fails only the class-wide gate (their per-character preference)."""
    def held(d, s):
        f = {k: float(v[layer, head]) for k, v in stats[s].values.get(d.name, {}).items()}
        return bool(f) and dataclasses.replace(d.rule, class_wide=False).holds(f)
    names = {d.name for s in SPLITS for d in roles_of(stats[s], layer, head)}
    names |= {d.name for d in ROLE_DETECTORS if d.kind == "class" and any(held(d, s) for s in SPLITS)}
    return head_profiles(profiles, vocab, layer, head, [d.name for d in ROLE_DETECTORS if d.name in names],
                         stats["heldout"].values)
