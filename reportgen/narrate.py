"""Sentences about what a head does, from its causal and mechanistic evidence: what breaks without it (resample
ablation, with the mean ablation beside it), what it writes (direct logit attribution), what feeds it and what it
feeds (composition). Every verdict word is chosen by the numbers of this head, never by its family alone.
"""

from __future__ import annotations

import math

from .catalogue import CAUSAL_TARGETS, DETECTOR, FAMILY, WIDE_MEMBERS
from .classes import CLASS_NAMES
from .evidence import Ablation, Contrast, standout
from .results import Finding, ModelResult

SELECTIVE = 0.25  # an edge from a head whose removal breaks the model counts as selective this far above the median
MODE_WORDS = {"resample": "resample-ablated: its output at each position taken from other held-out windows",
              "mean": "mean-ablated: its output replaced by its mean", "zero": "zero-ablated"}
# the predicted class a role's removal should hurt most: a class detector's own class, and for target sets of one
# class that class
ROLE_CLASS = {**{f"class_{c}": c for c in CLASS_NAMES}, "punct_near": "punctuation", "punct_far": "punctuation",
              "recent_space": "space"}


def _s(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x + 0.0 if abs(x) >= 0.0005 else 0.0:+.3f}"


def _n(x: float | None) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}" if abs(x) >= 0.001 or x == 0 else f"{x:.2g}"


def article(word: str) -> str:
    """'an' before a vowel sound as written ('an offset-2 head', 'an induction head'), else 'a'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def breaks(m: ModelResult, a: Ablation | None) -> bool:
    """Whether the ablated model is no better than a unigram model of the text: its Δ then measures the network
    leaving its working range, not what the head contributes. Not said of a model already no better than that
    intact (synthesis.model_quality says so at the top of its page instead)."""
    u = getattr(m, "unigram_bits_per_char", None)
    intact = getattr(m, "measured_bits_per_char", None)
    return (a is not None and a.ablated_bits_per_char is not None and u is not None
            and math.isfinite(u) and a.ablated_bits_per_char >= u and not (intact is not None and intact >= u))


def standout_classes(a: Ablation | None) -> list[tuple[str, Contrast]]:
    """Predicted classes where removing this head hurts more than elsewhere and more than removing the median
    other head does (both by CI), strongest first."""
    if a is None:
        return []
    return sorted(((c, t) for c, t in a.class_contrasts.items() if standout(t)), key=lambda ct: -ct[1].specificity)


def relied(a: Ablation | None) -> bool | None:
    return None if a is None else a.ci_low > 0


def _target(f: Finding, a: Ablation) -> str | None:
    d = DETECTOR.get(f.pattern)  # a line-break head has its own target, not its family's letters inside a word
    return f.pattern if f.pattern in a.targeted else d.causal_target if d else FAMILY[f.family].causal_target


def not_replicated(f: Finding, m: ModelResult) -> str:
    """Why a role found on training text fails its rule on held-out text: each threshold the held-out values miss
    (the same checks as `Rule.holds`), e.g. "not significant after FDR (q 0.21, not below 0.05)"."""
    d, s = DETECTOR.get(f.pattern), m.head(f.layer, f.head).detectors.get(f.pattern, {}).get("heldout")
    if d is None or d.rule is None or s is None:
        return "its rule does not hold on held-out text"
    r, v = d.rule, s.values()
    bad = lambda key, limit, ok: limit is not None and not (key in v and math.isfinite(v[key]) and ok(v[key], limit))
    why = []
    if bad("q", r.q_below, lambda x, t: x < t):
        why.append(f"not significant after FDR (q {_n(v.get('q', math.nan))}, not below {r.q_below:g})")
    if bad("ci_low", r.ci_low_above, lambda x, t: x > t):
        why.append(f"its lower 95% CI bound on held-out text ({_n(v.get('ci_low', math.nan))}) is not above "
                   f"{r.ci_low_above:g}")
    if bad("mean", r.mean_at_least, lambda x, t: x >= t):
        why.append(f"it holds for {_n(v.get('mean', math.nan))} of held-out queries, below the rule's "
                   f"{r.mean_at_least:.0%}")
    if r.class_wide and "members_share" in v and (bad("wide_lift_ci_low", 1.0, lambda x, t: x > t) or
                                                 bad("members_share", WIDE_MEMBERS, lambda x, t: x >= t)):
        why.append("on held-out text the preference is not class-wide (it rests on a few members)")
    rare = r.rare_below is not None and not bad("chance", r.rare_below, lambda x, t: x < t)
    if bad("gain_ci_low", r.gain_ci_low_at_least, lambda x, t: x >= t) and not (
            rare and not bad("lift_ci_low", r.rare_lift_ci_low_at_least, lambda x, t: x >= t)
            and not bad("gain_ci_low", r.rare_gain_ci_low_at_least, lambda x, t: x >= t)):
        why.append(f"effect on held-out text below the rule (lower 95% CI bound of its gain over the nulls "
                   f"{_n(v.get('gain_ci_low', math.nan))}, the rule asks {r.gain_ci_low_at_least:.2f})")
    return "; ".join(why) or "its rule does not hold on held-out text"


def specific(f: Finding, a: Ablation | None) -> bool | None:
    """Whether removing the head hurts specifically where its role predicts (None: no such test)."""
    t = a.targeted.get(_target(f, a) or "") if a is not None else None
    return None if t is None or t.specificity_ci_low is None else standout(t)


def supported(f: Finding, m: ModelResult) -> bool:
    """Whether the head's causal evidence agrees with its role enough to print what the role is good for: the
    model measurably relies on it without breaking, and its targeted test stands out or, for a class role,
    removing it hurts most when predicting its own class (by the same rule). A role with neither test (a fixed
    offset, a sink) is never "supported": nothing tests where it should matter."""
    a = m.ablation_of(f.layer, f.head)
    if a is None:
        return True  # no causal stage: the role's note stands as a hypothesis (the page says ablation was not run)
    if not relied(a) or breaks(m, a):
        return False
    own = ROLE_CLASS.get(f.pattern)  # a class role: removing it hurts most when predicting its own class
    return bool(specific(f, a)) or (own is not None and own in [c for c, _ in standout_classes(a)])


def testable(f: Finding, m: ModelResult) -> bool:
    """Whether the role has a causal test of where it should matter (a targeted contrast or its own class)."""
    a = m.ablation_of(f.layer, f.head)
    return a is not None and (specific(f, a) is not None or ROLE_CLASS.get(f.pattern) is not None)


def explain_ablation(f: Finding, m: ModelResult) -> str:
    """'What breaks without it': the raw numbers first, then whether they single this head out."""
    a = m.ablation_of(f.layer, f.head)
    if a is None:
        return "This head was not ablated in this run."
    lo, hi = a.ci_low, a.ci_high
    how = MODE_WORDS.get(a.mode or "mean", a.mode or "")
    text = f"Without {f.head_name} ({how}) held-out loss changes by {_s(a.delta_bits_per_char)} bits/char (95% CI " \
           f"{_s(lo)} to {_s(hi)})"
    if a.second_delta is not None:
        text += f"; {a.second_mode}-ablated: {_s(a.second_delta)} (95% CI {_s(a.second_ci_low)} to {_s(a.second_ci_high)})"
    if breaks(m, a):
        text += (f". Without it the model scores {_n(a.ablated_bits_per_char)} bits/char, no better than a unigram "
                 f"model of the text ({_n(m.unigram_bits_per_char)}): removing it breaks the model, so this Δ measures "
                 f"the breakage, not the size of its contribution.")
    else:
        text += ": " + ("the model gets measurably worse." if lo > 0 else "the model gets measurably better." if hi < 0
                        else "no measurable change overall.")
    target = _target(f, a)
    t = a.targeted.get(target) if target else None
    if t is not None and t.specificity is not None:
        where = CAUSAL_TARGETS.get(target, "after the queries your hypothesis is about")
        text += (f" {where[0].upper() + where[1:]} its removal costs {_s(t.delta_target)} vs {_s(t.delta_rest)} "
                 f"elsewhere (difference {_s(t.difference)}, 95% CI {_s(t.ci_low)} to {_s(t.ci_high)}); the median "
                 f"other head's difference is {_s(t.difference - t.specificity)}, and this head's minus the median's is "
                 f"{_s(t.specificity)} (95% CI {_s(t.specificity_ci_low)} to {_s(t.specificity_ci_high)}): "
                 + ("specific to where its role predicts." if standout(t) else
                    "it costs less there than elsewhere, so not specific." if t.ci_high < 0 else
                    "not specific: a typical other head's removal shifts the loss there as much."))
    classes = standout_classes(a)
    if classes:
        c, ct = classes[0]
        text += (f" Against the median other head, its removal stands out most when predicting {c} characters: "
                 f"{_s(ct.delta_target)} there vs "
                 f"{_s(ct.delta_rest)} elsewhere, {_s(ct.specificity)} more than the median other head (95% CI "
                 f"{_s(ct.specificity_ci_low)} to {_s(ct.specificity_ci_high)}).")
    return text


def explain_writes(f: Finding, m: ModelResult) -> str:
    """What the head writes, from direct logit attribution (one sentence)."""
    w = m.writes_of(f.layer, f.head)
    if w is None:
        if m.ablation and not m.hyperparameters.get("with_residuals", True):
            return ("Not computed: without residual connections no head writes into a stream the "
                    "unembedding reads directly.")
        return ""
    read = (f"the character at its strongest key ranks {w.copy_rank:.1f} of {w.vocab} among the characters its "
            f"output raises (top-1 for {w.copy_top1:.0%} of queries; another query's character: {w.copy_null:.0%})")
    if w.verdict == "copies":
        return (f"It copies: {read}, read through the final LayerNorm and unembedding. It raises "
                f"the very character it attends to.")
    if w.verdict == "next":
        return (f"It raises the character that followed the one it attends to (top-1 for "
                f"{w.next_top1:.0%} of queries); it does not copy what it reads ({read}).")
    if w.verdict == "class":
        return (f"It raises {w.top_class} characters as a class (mean direct logit "
                f"{_s(w.class_logits[w.top_class])}, lower 95% bound {_s(w.top_class_ci_low)}); it does not copy "
                f"({read}).")
    return (f"Nothing in particular directly: {read}; its output acts through later layers, if at "
            f"all.")


def others_cut(m: ModelResult, source: str, target: str) -> float | None:
    """The median cut the same earlier head's removal makes in the *other* role heads it was measured on (None if
    there are none): an edge much larger than this is selective, one like it is general disruption."""
    cuts = sorted(e.cut for e in m.circuit.measured if e.source == source and e.target != target
                  and math.isfinite(e.cut)) if m.circuit else []
    if not cuts:
        return None
    mid = (len(cuts) - 1) / 2
    return 0.5 * (cuts[int(math.floor(mid))] + cuts[int(math.ceil(mid))])


def short_role(role: str) -> str:
    """A role label without its parenthesis, for use inside one: 'previous-character head (offset 1)' -> '...head'."""
    return role.split(" (")[0]


def score_name(detector: str) -> str:
    """A detector's score in words: 'word_start' -> 'mass on the first character of the current word'."""
    d = DETECTOR.get(detector)
    return d.description.replace("attention mass on ", "mass on ") if d else detector


def selective(m: ModelResult, e) -> bool | None:
    """For an edge whose source breaks the model when removed: whether its cut exceeds every other role head's cut
    by the same removal by SELECTIVE (None when the source does not break the model)."""
    if not breaks(m, m.ablation_of(*map(int, e.source[1:].split("H")))):
        return None
    cuts = [x.cut for x in m.circuit.measured if x.source == e.source and x.target != e.target and math.isfinite(x.cut)]
    return e.cut >= max(cuts, default=-math.inf) + SELECTIVE


def edge_words(m: ModelResult, e) -> str:
    """One composition edge with what it is measured against: chance, and the source's median cut elsewhere."""
    text = (f"removing {e.source} cuts {e.target}'s {score_name(e.detector)} from {_n(e.clean)} to {_n(e.ablated)} "
            f"(chance {_n(e.chance)}; {e.cut:.0%} of its excess over chance")
    other = others_cut(m, e.source, e.target)
    if other is not None:
        text += f"; the median other role head loses {other:.0%}"
    text += ")"
    sel = selective(m, e)
    if sel is not None:
        text += (f"; removing {e.source} also breaks the whole model, " +
                 ("but this cut exceeds its cut of every other role head by at least "
                  f"{SELECTIVE * 100:.0f} percentage points" if sel else "so this cut may be general disruption rather than a specific input"))
    return text


def explain_inputs(f: Finding, m: ModelResult) -> str:
    """Which earlier heads feed this head's role, and which later role heads it feeds."""
    if m.circuit is None:
        return ""
    name = f.head_name
    parts = []
    inputs = m.inputs_of(f.layer, f.head)
    measured = [e for e in m.circuit.measured if e.target == name]
    if inputs:
        parts.append("What feeds it: " + "; ".join(edge_words(m, e) for e in inputs) + ".")
    elif measured:
        top = max(measured, key=lambda e: e.cut if math.isfinite(e.cut) else -1)
        parts.append(f"No single earlier head feeds it: removing any one of the {len(measured)} earlier heads cuts "
                     f"its role score by at most {top.cut:.0%} ({top.source}).")
    feeds = [e for e in m.circuit.edges if e.source == name]
    if feeds:
        parts.append("Removing it cuts later role heads' scores by half or more: " + ", ".join(
            f"{e.target} ({score_name(e.detector)}: {_n(e.clean)} → {_n(e.ablated)}"
            + ("; may be general disruption, as removing it breaks the model" if selective(m, e) is False else "") + ")"
            for e in feeds) + ".")
    return " ".join(parts)


def causal_verdict(f: Finding, m: ModelResult) -> str:
    """The causal evidence on a role in one short sentence (for the overview's cards)."""
    a = m.ablation_of(f.layer, f.head)
    if a is None:
        return "Causal evidence: not measured in this run."
    if breaks(m, a):
        return (f"Causal evidence: removing it breaks the model ({_n(a.ablated_bits_per_char)} bits/char, a unigram "
                f"model: {_n(m.unigram_bits_per_char)}), so the model needs it but its contribution is not measured.")
    if not relied(a):
        return f"Causal evidence: no measurable reliance (Δ {_s(a.delta_bits_per_char)} bits/char, CI includes 0)."
    if supported(f, m):
        target = _target(f, a)
        where = CAUSAL_TARGETS.get(target, "after the queries your hypothesis is about") if target else None
        if specific(f, a):
            return (f"Causal evidence agrees: removing it costs {_s(a.delta_bits_per_char)} bits/char, most where its "
                    f"role predicts: {where}.")
        mixed = f"; {where} it is not specific" if where and specific(f, a) is False else ""
        return (f"Causal evidence agrees: removing it costs {_s(a.delta_bits_per_char)} bits/char, most when "
                f"predicting {ROLE_CLASS.get(f.pattern)} characters, its own class{mixed}.")
    if not testable(f, m):
        return (f"Causal evidence: removing it costs {_s(a.delta_bits_per_char)} bits/char; no test says where such a "
                f"role should matter, so its linguistic use is not claimed.")
    return (f"Causal evidence is mixed: removing it costs {_s(a.delta_bits_per_char)} bits/char, but not specifically "
            f"where its role predicts.")


def _seed_list(rec, present: bool, seeds) -> str:
    return ", ".join(s.label for s, c in zip(seeds, rec.counts) if (c > 0) == present)


def explain_seeds(f: Finding, m: ModelResult) -> str:
    """Whether this role recurs in the recipe's other seeds (matched by role, never by head index): in how many,
    in which layers, and the spread of its strongest head's effect and resample Δ over the seeds holding it."""
    from .seeds import recurrence

    if len(m.seeds) < 2 or not f.replicated:
        return ""
    rec = next((r for r in recurrence(m.seeds) if r.role == f.role), None)
    if rec is None:
        return ""
    n, k = rec.seeds, rec.present
    where = (f"in layer {', '.join(map(str, next(ls for ls in rec.layers if ls)))} each time" if rec.same_layers
             else "in layers " + " / ".join(",".join(map(str, ls)) or "–" for ls in rec.layers) + " by seed")
    text = (f"{article(f.role).title()} {f.role} recurs in all {n} seeds of this recipe, {where}" if k == n else
            f"{article(f.role).title()} {f.role} is found in {k} of {n} seeds ({_seed_list(rec, True, m.seeds)}; "
            f"not in {_seed_list(rec, False, m.seeds)}), {where}")
    eff, dlt = rec.spread(rec.effects), rec.spread(rec.deltas)
    if k > 1 and eff:
        text += "; the strongest such head's effect " + (f"is {_n(eff[0])} in each" if _n(eff[0]) == _n(eff[1]) else
                                                         f"ranges {_n(eff[0])}–{_n(eff[1])}")
        if dlt:
            text += " and its resample Δ " + (f"{_s(dlt[0])} bits/char in each" if _s(dlt[0]) == _s(dlt[1]) else
                                               f"{_s(dlt[0])} to {_s(dlt[1])} bits/char")
    return text + ("." if k == n else ": a property of this training run at least as much as of the recipe.")


def recurs(f: Finding, m: ModelResult) -> str:
    """'In 3 of 3 seeds of this recipe.' for a replicated role of a model measured on several seeds, else ''."""
    from .seeds import recurrence

    rec = next((r for r in recurrence(m.seeds) if r.role == f.role), None) if len(m.seeds) > 1 and f.replicated else None
    return f"In {rec.present} of {rec.seeds} seeds of this recipe." if rec else ""
