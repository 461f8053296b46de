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
    """A share as a percentage, to the precision it has: whole percent, one decimal near 0% and 100%
    (99.8% is not printed as 100%)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if 0 < x < 0.005 or 0.995 <= x < 1:
        return f"{100 * x:.1f}%" if round(100 * x, 1) not in (0.0, 100.0) else f"{100 * x:.2f}%"
    return f"{100 * x:.0f}%"


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
    controls: str = ""
    example: str = ""


def _what(f: Finding) -> str:
    """What the head does, in one clause built from its detector's description."""
    mean = f.heldout.mean
    if f.pattern.startswith("hyp_"):  # your hypothesis: its mass per query it is about (nulls: the strength sentence)
        return (f"on the queries your hypothesis '{f.pattern[4:]}' is about ({f.description.removeprefix('your hypothesis: ')}), "
                f"it puts {num(mean)} of its attention on the keys the hypothesis names.")
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
        structure = (f", its word-start and last-boundary keys {num(h.structure)}" if h.structure is not None else "")
        strength += (f" Its own positional pattern alone would give {num(h.positional)}, other windows' "
                     f"characters {num(h.swap)}{structure}, so content adds {num(h.gain)} "
                     f"(lower CI bound {num(h.gain_ci_low)}).")
    if f.pattern == "duplicate":
        strength += (f" It also puts {num(m.head(f.layer, f.head).summary('offset_0').mean)} on the character "
                     f"itself.")
    if f.pattern in m.probes:  # probe roles are tested on repeated sequences, not on text windows
        n = m.probes[f.pattern].n_probes
        held, train = (("fresh repeated random-letter sequences", "other random-letter sequences")
                       if f.pattern == "probe_random" else
                       ("held-out passages repeated twice", "training passages repeated twice"))
        consistency = (f"It beats its positional null on {pct(h.consistency)} of {n} {held} (q {qval(h.q)}). "
                       f"Discovered on {n} {train} (mean {num(t.mean)}), it "
                       f"{'replicated' if f.replicated else 'did not replicate'}.")
    else:
        consistency = (f"It beats the strictest null in {pct(h.consistency)} of {windows['heldout']} held-out "
                       f"windows (q {qval(h.q)}). Discovered on {windows['train']} training windows "
                       f"(mean {num(t.mean)}), it {'replicated' if f.replicated else 'did not replicate'} "
                       f"on held-out text.")
    abl = m.ablation_of(f.layer, f.head)
    return Explanation(what, strength, consistency, _significance(f, m, abl), FAMILY[f.family].caveat,
                       explain_ablation(f, abl), explain_controls(f, m), explain_example(f, m))


def _show(text: str) -> str:
    return text.replace(" ", "␣").replace("\n", "↵")


def explain_example(f: Finding, m: ModelResult) -> str:
    """The worked example of the head's main role on a held-out passage, in words with its numbers."""
    effect = m.role_effect_of(f.layer, f.head)
    ex = effect.example if effect is not None and effect.role == f.role else None
    if ex is None:
        return ""
    keys = "; ".join(f"{num(w)} to '{_show(c)}' ({'itself' if k == ex.query else f'{ex.query - k} back'}"
                     f"{', a target' if hit else ''})" for k, c, w, hit in ex.keys)
    return (f"Reading '{_show(ex.char)}' at the end of '…{_show(ex.context)}', {f.head_name} sends {keys}; "
            f"in all {num(ex.target_mass)} of its attention goes to its role's targets.")


def explain_controls(f: Finding, m: ModelResult) -> str:
    """What the two controls say about this role: matched-sharpness random model, shuffled text."""
    c = m.controls
    if c is None:
        return ""
    parts = []
    ceiling = c.random_init.max_effect.get(f.pattern)
    if ceiling is not None and math.isfinite(ceiling):
        if f.effect <= ceiling:
            parts.append(f"Flagged: a randomly initialised model with equally sharp attention reaches an effect of "
                         f"{num(ceiling)} on this detector, at least this head's {num(f.effect)}, so the role is not "
                         f"clearly learned.")
        else:
            parts.append(f"A randomly initialised model with equally sharp attention reaches at most {num(ceiling)} "
                         f"on this detector (this head: {num(f.effect)}).")
    label = f"{f.head_name} {f.role}"
    kept = label in c.shuffled_text.positional_roles + c.shuffled_text.content_roles
    fam = FAMILY[f.family]
    if kept and fam.positional:
        parts.append("It keeps this role on character-shuffled text, as a role that depends on position should.")
    elif kept and f.family == "word boundary":
        parts.append("Flagged: it keeps this role on character-shuffled text, where no words are left, so it may "
                     "track the space character itself rather than word structure.")
    elif kept and f.pattern in ("induction", "probe_random", "probe_natural"):
        parts.append("Flagged: it keeps this role on character-shuffled text, which has no repeated phrases: it follows "
                     "earlier occurrences of the current character whatever the text, so the pattern alone is no "
                     "evidence of copying phrases.")
    elif kept:
        parts.append("It keeps this role on character-shuffled text, as a role defined by which characters are "
                     "there (not by their order) can.")
    elif fam.positional:
        parts.append("Surprisingly, it loses this role on character-shuffled text although the role is positional.")
    else:
        parts.append("It loses this role on character-shuffled text, as a role that needs the text's order should.")
    return " ".join(parts)


def _significance(f: Finding, m: ModelResult, abl: Ablation | None) -> str:
    """The pattern's linguistic significance, claimed only when the evidence supports it.

    No claim when ablation shows the model does not measurably rely on the head; no copying claim for an
    induction role unless the head reads the token after an earlier copy on repeated passages and the model
    predicts the second copy of a passage better than the first.
    """
    if m.ablation_mode and abl is not None and abl.ci_low <= 0:
        return (f"{f.head_name} attends there, but the model does not measurably rely on it (removing it changes "
                f"held-out loss by {signed(abl.delta_bits_per_char)} bits/char, 95% CI {signed(abl.ci_low)} to "
                f"{signed(abl.ci_high)}), so no linguistic role is claimed.")
    note = linguistic_note(f.pattern, m.language, "".join(m.classes.values()))
    if f.pattern in ("induction", "probe_random", "probe_natural"):
        probe = m.probes.get("probe_natural")
        reads = m.head(f.layer, f.head).summary("probe_natural") if "probe_natural" in m.head(0, 0).detectors else None
        gain = None if probe is None else probe.loss_first_copy_bits_per_char - probe.loss_later_copies_bits_per_char
        if gain is None or reads is None or gain <= 0 or not (reads.gain_ci_low or 0) > 0:
            why = []
            if reads is not None and not (reads.gain_ci_low or 0) > 0:
                why.append(f"on repeated passages it puts only {num(reads.mean)} on the token after the earlier copy "
                           f"(its positional pattern alone: {num(reads.positional)})")
            if gain is not None and gain <= 0:
                why.append(f"the model predicts a repeated passage no better the second time "
                           f"({num(probe.loss_first_copy_bits_per_char)} → {num(probe.loss_later_copies_bits_per_char)}"
                           f" bits/char)")
            return (f"It reads what followed earlier occurrences of the current character, but "
                    f"{' and '.join(why) or 'copying was not measured'}, so this is no evidence of copying.")
    return note


def explain_ablation(f: Finding, abl: Ablation | None) -> str:
    """'What breaks without it': the head's ablation numbers, overall and where its role should matter."""
    if abl is None:
        return "This head was not ablated in this run."
    lo, hi = abl.ci_low, abl.ci_high
    verdict = ("the model gets measurably worse" if lo > 0 else
               "the model gets measurably better" if hi < 0 else "there is no measurable change overall")
    text = (f"Without {f.head_name} (mean-ablated) held-out loss changes by {signed(abl.delta_bits_per_char)} "
            f"bits/char (95% CI {signed(lo)} to {signed(hi)}): {verdict}.")
    target = f.pattern if f.pattern in abl.targeted else FAMILY[f.family].causal_target
    t = abl.targeted.get(target) if target else None
    if t and t.specificity is not None:
        where = CAUSAL_TARGETS.get(target, "after the queries your hypothesis is about")
        text += (f" {where.capitalize()} its removal costs {signed(t.delta_target)} vs "
                 f"{signed(t.delta_rest)} elsewhere; compared with removing the other heads, that contrast is "
                 f"{signed(t.specificity)} bits/char (95% CI {signed(t.specificity_ci_low)} to "
                 f"{signed(t.specificity_ci_high)}): {specificity_verdict(t)}.")
    elif abl.by_target_class:
        worst = max(abl.by_target_class.items(), key=lambda kv: kv[1])
        text += f" The largest change is when predicting {worst[0]} characters ({signed(worst[1])} bits/char)."
    return text


def specificity_verdict(t) -> str:
    """Whether a targeted contrast singles this head out among all heads."""
    if t.specificity_ci_low > 0:
        return "specific to where its role predicts"
    return "not specific: other heads' removal shifts the loss there as much"


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
