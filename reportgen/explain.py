"""Plain-language explanations computed from a finding's numbers (never typed in).

Every number in a sentence is formatted by `num`/`pct`/`times`/`signed` from a value of the
finding, its model or its ablation, so a test can trace each one back to results.json. Linguistic
notes and caveats come from the catalogue's family and language records.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .catalogue import COPYING_ROLES, DETECTOR, FAMILIES, FAMILY, family_detectors, linguistic_note
from .catalogue import WIDE_DROP, WIDE_MEMBERS
from .languages import has_rtl
from . import narrate
from .results import Ablation, Finding, HeadResult, ModelResult


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
    return "n/a" if x is None or not math.isfinite(x) else f"{x if abs(x) >= 0.0005 else 0.0:+.3f}"  # no -0.000


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
    writes: str = ""  # what its output raises (direct logit attribution)
    inputs: str = ""  # which earlier heads feed its role, which later ones it feeds
    profile: str = ""  # the per-character profile behind a class role and the role's distance profile
    verdict: str = ""  # the causal evidence in one sentence (the overview's cards)
    seeds: str = ""  # whether the role recurs in the recipe's other seeds
    recurs: str = ""  # the same in a few words (the overview's cards)


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
    what = f"{f.head_name} is {narrate.article(f.role)} {f.role}: {_what(f)}"
    strength = (f"On held-out text the mean is {num(h.mean)} (95% CI {num(h.ci_low)}–{num(h.ci_high)}), "
                f"{times(h.times_chance)} the uniform-chance level of {num(h.chance)}.")
    if h.positional is not None:
        structure = (f", its keys at word starts (of any word) and the last boundary {num(h.structure)}" if h.structure is not None else "")
        strength += (f" Its own positional pattern alone would give {num(h.positional)}, other windows' "
                     f"characters {num(h.swap)}{structure}, so content adds {num(h.gain)} "
                     f"on average over windows, each window measured against the stricter of its own two nulls (lower "
                     f"CI bound {num(h.gain_ci_low)}).")
    strength += random_repeats_sentence(f, m)
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
                       f"{'replicated' if f.replicated else 'did not replicate: ' + narrate.not_replicated(f, m)}.")
    else:
        consistency = (f"It beats the strictest null in {pct(h.consistency)} of {windows['heldout']} held-out "
                       f"windows (q {qval(h.q)}). Discovered on {windows['train']} training windows "
                       f"(mean {num(t.mean)}), it " + ("replicated on held-out text." if f.replicated else
                                                       f"did not replicate on held-out text: "
                                                       f"{narrate.not_replicated(f, m)}."))
    abl = m.ablation_of(f.layer, f.head)
    own = DETECTOR[f.pattern].caveat if f.pattern in DETECTOR else ""  # a line-break head's, not the spaces'
    return Explanation(what, strength, consistency, _significance(f, m, abl), own or FAMILY[f.family].caveat,
                       narrate.explain_ablation(f, m), explain_controls(f, m), explain_example(f, m),
                       narrate.explain_writes(f, m), narrate.explain_inputs(f, m),
                       " ".join(x for x in (explain_profile(m.head(f.layer, f.head), f.pattern),
                                            explain_distance(m.head(f.layer, f.head), f.pattern)) if x),
                       verdict=narrate.causal_verdict(f, m), seeds=narrate.explain_seeds(f, m),
                       recurs=narrate.recurs(f, m))


def _show(text: str) -> str:
    return text.replace(" ", "␣").replace("\n", "↵")


def _quote(text: str) -> str:
    """The model's text quoted in a sentence, with symbols for whitespace: isolated (FSI … PDI) when it has
    right-to-left characters, so that it reads in its own direction and cannot reorder the sentence around it (the
    quote marks and a following '(1 back' stay in place; a leading '…' stays at its start, on the right)."""
    return f"'\u2068{_show(text)}\u2069'" if has_rtl(text) else f"'{_show(text)}'"


def explain_profile(h: HeadResult, detector: str) -> str:
    """One sentence on the per-character profile behind a class detector (held-out): each frequent member's mass
    over its chance, and whether the preference is class-wide (the catalogue's gate) or a few characters'."""
    cp = h.char_profile
    if cp is None or cp.detector != detector:
        return ""
    cls = detector.removeprefix("class_")
    chars = ", ".join(f"{_quote(c)} {times(m / ch)}" for c, m, ch in cp.members if ch > 0)
    text = f"Behind its {cls} mass, each frequent {cls} character's attention over its chance: {chars}"
    if cp.members_frequent is None or not math.isfinite(cp.members_frequent):
        top = ", ".join(f"{_quote(c)} {num(m)} (chance {num(ch)})" for c, m, ch in cp.top[:3])
        return text + f"; its largest excesses over chance are {top}."
    wide = cp.members_above / cp.members_frequent >= WIDE_MEMBERS and cp.wide_lift_ci_low > 1
    text += (f"; {cp.members_above:.0f} of {cp.members_frequent:.0f} are above chance, and without its {WIDE_DROP} "
             f"most preferred the class's share of letter mass is {times(cp.wide_lift)} its chance share "
             f"(lower CI bound {times(cp.wide_lift_ci_low)})")
    if wide:
        below = [f"{_quote(c)}" for c, m, ch in cp.members if ch > 0 and m <= ch]
        return text + (": the rule's class-wide test passes" + (f", though {', '.join(below)} "
                       f"{'is' if len(below) == 1 else 'are'} not above chance." if below else "."))
    liked = [f"{_quote(c)}" for c, m, ch in cp.top if m > ch][:WIDE_DROP]
    return text + f": it prefers {' and '.join(liked)}, not {cls}s as a class." if liked else text + "."


_AT = {"1": "one", "2": "two", "3": "three", "4": "four", "5+": "five or more"}


def explain_distance(h: HeadResult, detector: str) -> str:
    """One sentence on a role's mass by how far back its target is (word start, last boundary, nearest class
    key), with a verdict only where the numbers give one."""
    p = (h.distance_profiles or {}).get(detector)
    if p is None:
        return ""
    far = {o: x for o, x in zip(p.offsets, p.mass) if o != "0" and math.isfinite(x)}
    if not far:
        return ""
    what = {"word_start": "the word start", "recent_space": "the last space or line break"}.get(
        detector, f"the nearest {detector.removeprefix('class_')} before the query")
    steps = ", ".join(f"{num(x)} {_AT[o]} back" for o, x in far.items())
    text = f"Its mass on {what} by distance: {steps}"
    if detector == "word_start" and p.share[0] > 0:
        text += (f"; word-initial queries attending to themselves carry {pct(p.share[0])} of its word-start mass "
                 f"({num(p.mass[0])} each)")
    if detector.startswith("class_"):  # how much of the class mass the nearest key takes
        cls = detector.removeprefix("class_")
        near = sum(x * q for x, q in zip(p.mass, p.queries) if math.isfinite(x)) / h.summary(detector).mean
        text += (f"; {pct(near)} of its {cls} mass is on the nearest one"
                 + (f" (a recent-{cls} head)" if near >= 0.5 else ", the rest spread over earlier ones"))
    share1 = p.share[p.offsets.index("1")] / max(1e-12, 1 - p.share[0])
    if share1 >= 0.5:
        return text + (f": {pct(share1)} of that mass is where {what} is the previous character, where a "
                       f"previous-character head would read the same key.")
    if len(far) == len(_AT) and far["5+"] < 0.5 * max(far.values()):
        return text + f": it reads {what} mostly when it is near, fading to {num(far['5+'])} five or more back."
    return text + (f": it reads {what} at every distance." if len(far) == len(_AT) else ".")


def explain_example(f: Finding, m: ModelResult) -> str:
    """The worked example of the head's main role on a held-out passage, in words with its numbers."""
    effect = m.role_effect_of(f.layer, f.head)
    ex = effect.example if effect is not None and effect.role == f.role else None
    if ex is None:
        return ""
    keys = "; ".join(f"{num(w)} to {_quote(c)} ({'itself' if k == ex.query else f'{ex.query - k} back'}"
                     f"{', a target' if hit else ''})" for k, c, w, hit in ex.keys)
    cut = "…\u2060" if ex.query + 1 > len(ex.context) else ""  # cut before it; no line break after the "…"
    return (f"Reading {_quote(ex.char)} at the end of {_quote(cut + ex.context)}, {f.head_name} sends {keys}; "
            f"in all {num(ex.target_mass)} of its attention goes to its role's targets.")


def explain_controls(f: Finding, m: ModelResult) -> str:
    """What the two controls say about this role: matched-sharpness random model, shuffled text."""
    c = m.controls
    if c is None:
        return ""
    parts = []
    ceiling = c.random_init.max_effect.get(f.pattern)
    if ceiling is not None and math.isfinite(ceiling):
        n = c.random_init.n_draws
        who = (f"Over {n} randomly initialised models with equally sharp attention (seeded draws), the high end of "
               f"this detector's effect is {num(ceiling)}" if n > 1 else
               f"A randomly initialised model with equally sharp attention reaches an effect of {num(ceiling)} on "
               f"this detector")
        if f.effect <= ceiling:
            reach = sum(d.max_effect.get(f.pattern, -math.inf) >= f.effect for d in c.random_init.draws or [])
            parts.append(f"Flagged: {who[0].lower()}{who[1:]}, at least this head's {num(f.effect)}"
                         + (f" ({reach} of {n} draws reach it)" if n > 1 else "") +
                         ", so the role is not clearly learned.")
        else:
            parts.append(f"{who} (this head's effect size, its held-out mean minus its strictest null: "
                         f"{num(f.effect)}, above it).")
    kept = kept_on_shuffled(f, m)
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


def kept_on_shuffled(f: Finding, m: ModelResult) -> bool:
    """Whether the head keeps this role on character-shuffled text (the shuffled-text control)."""
    c = m.controls
    return c is not None and f"{f.head_name} {f.role}" in c.shuffled_text.positional_roles + c.shuffled_text.content_roles


def random_repeats_sentence(f: Finding, m: ModelResult) -> str:
    """For an induction-pattern role on natural text: the head's score on repeated random letters (Olsson et al.'s
    test), and whether it passes the rule "induction head" requires (catalogue.role_label)."""
    if f.pattern not in COPYING_ROLES or "probe_random" not in m.head(f.layer, f.head).detectors:
        return ""
    s, rule = m.head(f.layer, f.head).summary("probe_random"), DETECTOR["probe_random"].rule
    passes = COPYING_ROLES[f.pattern] != f.role
    verdict = ("it passes that test too, so it is an induction head in their sense" if passes else
               f"short of the rule \"induction head\" requires (lower CI bound above {num(rule.ci_low_above)} and at "
               f"least {num(rule.gain_ci_low_at_least)} above its positional null, on training and held-out probes "
               f"alike), so it is called a copying head, not an induction head")
    return (f" On repeated random letters (Olsson et al.'s test) it puts {num(s.mean)} on the token after the earlier "
            f"copy (95% CI {num(s.ci_low)}–{num(s.ci_high)}; its positional null {num(s.positional)}): {verdict}.")


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
    if m.ablation_mode and abl is not None and not narrate.supported(f, m) and not narrate.breaks(m, abl) \
            and not narrate.testable(f, m):
        return (f"The model relies on {f.head_name}, but no test says where a role like this should matter (there is "
                f"no targeted contrast for it), so what the pattern is good for is not claimed here; what its removal "
                f"changes is under What breaks without it.")
    if m.ablation_mode and abl is not None and not narrate.supported(f, m):
        why = ("removing it breaks the model rather than removing one contribution" if narrate.breaks(m, abl) else
               "its removal does not hurt most where this role predicts" if narrate.specific(f, abl) is False else
               f"its removal stands out most when predicting {narrate.standout_classes(abl)[0][0]} characters"
               if narrate.standout_classes(abl) else "no test singles out its removal where this role predicts")
        return (f"Evidence is mixed: {f.head_name} reads where this role says, but {why} (see What breaks without "
                f"it), so what the pattern is good for is not claimed here.")
    note = linguistic_note(f.pattern, m.language, "".join(m.classes.values()))
    if note and f.family == "word boundary" and kept_on_shuffled(f, m):
        return (f"Evidence is mixed: {f.head_name} keeps this role on character-shuffled text, where no words are "
                f"left, so it may track the space character itself; what it would tell the model about words is not "
                f"claimed here.")
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


@dataclass(frozen=True)
class Absent:
    """A family without any finding, its rule and its strongest candidate."""

    family: str
    rule: str
    text: str


@dataclass(frozen=True)
class Subsumed:
    """A head that meets the positional (argmax) rule on held-out text but whose positional role is not given,
    because another role of the same head explains it (catalogue.roles_of): its offset, share and that role."""

    head: str
    offset: int
    share: float
    by: Finding

    @property
    def text(self) -> str:
        where = "itself" if self.offset == 0 else f"{self.offset} back"
        same = self.by.pattern == f"offset_{self.offset}"
        return (f"{self.head} also meets the positional rule (strongest key {where} for {pct(self.share)} of held-out "
                f"queries); " + ("it is subsumed by its fixed-offset role at the same offset, " + self.by.role + "."
                                 if same else
                                 f"it is not given a positional role because it has a role that depends on which "
                                 f"characters are there ({self.by.role}), which a purely positional head would not."))


def subsumed_positional(m: ModelResult) -> list[Subsumed]:
    """Heads whose argmax rule holds on held-out text without a positional finding, each with the role that
    subsumes it (its fixed-offset role at the same offset when it has one, else its main role)."""
    positional = {(f.layer, f.head) for f in m.findings if f.family == "positional"}
    out = []
    for h in m.heads:
        mine = m.findings_at(h.layer, h.head)
        if (h.layer, h.head) in positional or not mine:
            continue
        for d in family_detectors("positional"):
            block = h.detectors.get(d, {}).get("heldout")
            if block is not None and DETECTOR[d].rule.holds(block.values()):
                k = int(d.split("_")[1])
                by = next((f for f in mine if f.pattern == f"offset_{k}"), next((f for f in mine if f.primary), mine[0]))
                out.append(Subsumed(h.name, k, block.mean, by))
    return out


def absent_families(m: ModelResult, rules: dict[str, str]) -> list[Absent]:
    """For each pattern family with no finding: the rule and the strongest candidate's numbers (for the positional
    family: the heads that meet its rule but whose role another role subsumes, when there are any)."""
    found = {f.family for f in m.findings}
    out = []
    for fam in FAMILIES:
        if fam.name in found or not fam.compared:
            continue
        subsumed = subsumed_positional(m) if fam.name == "positional" else []
        if subsumed:
            out.append(Absent(fam.name, rules.get(f"argmax_{subsumed[0].offset}", ""),
                              "No head has a positional role of its own. " + " ".join(s.text for s in subsumed)))
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
