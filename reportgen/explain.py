"""Plain-language explanations computed from a finding's numbers (never typed in).

Every number in a sentence is formatted by `num`/`pct`/`times`/`signed` from a value of the
finding, its model or its ablation, so a test can trace each one back to results.json. Linguistic
notes and caveats come from the catalogue's family and language records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .catalogue import CAUSAL_TARGETS, FAMILIES, FAMILY, family_detectors, linguistic_note
from .results import Ablation, Finding, ModelResult


def num(x: float | None) -> str:
    """A statistic: 3 decimals (or 2 significant digits below 0.001)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.3f}" if abs(x) >= 0.001 or x == 0 else f"{x:.2g}"


def pct(x: float | None) -> str:
    """A share as a whole percentage."""
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:.0f}%"


def times(x: float | None) -> str:
    """A ratio to chance."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.1f}×" if x < 10 else f"{x:.0f}×"


def qval(q: float | None) -> str:
    """A q-value, floored for display."""
    if q is None or not math.isfinite(q):
        return "n/a"
    return "< 1e-6" if q < 1e-6 else f"{q:.2g}"


def signed(x: float | None) -> str:
    """A change in bits/char with its sign."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.3f}"


@dataclass(frozen=True)
class Explanation:
    """Every sentence about one finding."""

    what: str
    strength: str
    consistency: str
    linguistics: str
    caveats: str
    ablation: str


def _what(f: Finding) -> str:
    """What the head does, in one clause built from its detector's description."""
    mean = f.heldout.mean
    if f.pattern.startswith("argmax_"):
        k = int(f.pattern.split("_")[1])
        where = "the query character itself" if k == 0 else "the previous character" if k == 1 else f"{k} characters back"
        return f"for {pct(mean)} of queries its strongest key is {where}."
    if ":" in f.description:  # probes: "<probe kind>: mass on <target>"
        kind, target = f.description.split(":", 1)
        return f"on {kind} it puts {num(mean)} of its attention on {target.strip().removeprefix('mass on ')}."
    return f"it puts {num(mean)} of its attention on {f.description.removeprefix('attention mass on ')}."


def explain(f: Finding, m: ModelResult) -> Explanation:
    """Sentences for one finding: what, strength, consistency, linguistics, caveats, ablation."""
    h, t = f.heldout, f.train
    windows = m.corpus.windows
    article = "an" if f.role[0] in "aeiou" else "a"
    what = f"{f.head_name} is {article} {f.role}: {_what(f)}"
    strength = (f"On held-out text the mean is {num(h.mean)} (95% CI {num(h.ci_low)}–{num(h.ci_high)}), "
                f"{times(h.times_chance)} the uniform-chance level of {num(h.chance)}.")
    if h.positional is not None:
        strength += (f" Its own positional pattern alone would give {num(h.positional)} and other windows' "
                     f"characters {num(h.swap)}, so content adds {num(h.gain)} "
                     f"(lower CI bound {num(h.gain_ci_low)}).")
    consistency = (f"It beats the strictest null in {pct(h.consistency)} of {windows['heldout']} held-out "
                   f"windows (q {qval(h.q)}). Discovered on {windows['train']} training windows "
                   f"(mean {num(t.mean)}), it {'replicated' if f.replicated else 'did not replicate'} "
                   f"on held-out text.")
    return Explanation(what, strength, consistency, linguistic_note(f.family, m.language), FAMILY[f.family].caveat,
                       explain_ablation(f, m.ablation_of(f.layer, f.head)))


def explain_ablation(f: Finding, abl: Ablation | None) -> str:
    """'What breaks without it': the head's ablation numbers, overall and where its role should matter."""
    if abl is None:
        return "This head was not ablated in this run."
    lo, hi = abl.ci_low, abl.ci_high
    verdict = ("the model gets measurably worse" if lo > 0 else
               "the model gets measurably better" if hi < 0 else "there is no measurable change overall")
    text = (f"Without {f.head_name} (mean-ablated) held-out loss changes by {signed(abl.delta_bits_per_char)} "
            f"bits/char (95% CI {signed(lo)} to {signed(hi)}): {verdict}.")
    target = FAMILY[f.family].causal_target
    t = abl.targeted.get(target) if target else None
    if t:
        where = ("more" if t.ci_low > 0 else "less" if t.ci_high < 0 else "no more and no less")
        text += (f" {CAUSAL_TARGETS[target].capitalize()} the change is {signed(t.delta_target)} vs "
                 f"{signed(t.delta_rest)} elsewhere (difference {signed(t.difference)}, 95% CI "
                 f"{signed(t.ci_low)} to {signed(t.ci_high)}): it matters {where} where its role predicts.")
    elif abl.by_target_class:
        worst = max(abl.by_target_class.items(), key=lambda kv: kv[1])
        text += f" The largest change is when predicting {worst[0]} characters ({signed(worst[1])} bits/char)."
    return text


@dataclass(frozen=True)
class Absent:
    """A family without any finding, its rule and its strongest candidate."""

    family: str
    rule: str
    text: str


def absent_families(m: ModelResult, rules: dict[str, str]) -> list[Absent]:
    """For each pattern family with no finding: the rule and the strongest candidate's numbers."""
    found = {f.family for f in m.findings}
    out = []
    for fam in FAMILIES:
        if fam.name in found or not fam.compared:
            continue
        best = None
        for head in m.heads:
            for d in family_detectors(fam.name):
                block = head.detectors.get(d, {}).get("heldout")
                if block is None or not math.isfinite(block.mean):
                    continue
                score = block.mean - block.strictest_null
                if best is None or score > best[0]:
                    best = (score, head, d, block)
        if best is None:
            continue
        _, head, d, block = best
        rule = next((rules[x] for x in family_detectors(fam.name) if x in rules), "")
        out.append(Absent(fam.name, rule, (
            f"No head passed the {fam.name} rule. The closest candidate is {head.name} "
            f"({d}): held-out mean {num(block.mean)} (95% CI {num(block.ci_low)}–{num(block.ci_high)}) "
            f"against chance {num(block.chance)}.")))
    return out
