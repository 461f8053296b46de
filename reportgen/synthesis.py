"""The overview's synthesis: key questions, success criteria, and limitations and surprises.

Every answer is built from the typed results (primary roles, held-out statistics, ablation and
controls) so that it agrees with the numbers on the model and head pages. Counts are of heads,
one main role each; a role is called relied upon only when its ablation CI lies above zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .catalogue import FAMILIES
from .explain import num, pct, signed, subsumed_positional
from .languages import shown
from . import narrate
from . import seeds as seedlib
from .results import Finding, ModelResult

MAX_Q1_HEADS = 6


@dataclass(frozen=True)
class Question:
    q: str
    a: list[str]


@dataclass(frozen=True)
class Criterion:
    ok: bool
    text: str
    link: str


def relied(m: ModelResult, f: Finding) -> bool | None:
    """Whether removing the head measurably hurts (ablation CI above 0); None if it was not ablated."""
    return narrate.relied(m.ablation_of(f.layer, f.head))


def _cost(m: ModelResult, f: Finding) -> str:
    a = m.ablation_of(f.layer, f.head)
    if a is None:
        return "not ablated"
    if narrate.breaks(m, a):
        return (f"removing it breaks the model ({num(a.ablated_bits_per_char)} bits/char without it, worse than a "
                f"unigram model's {num(m.unigram_bits_per_char)})")
    if a.ci_low > 0:
        return f"removing it costs {signed(a.delta_bits_per_char)} bits/char (95% CI {signed(a.ci_low)} to " \
               f"{signed(a.ci_high)})"
    return f"the model does not measurably rely on it (Δ {signed(a.delta_bits_per_char)}, 95% CI " \
           f"{signed(a.ci_low)} to {signed(a.ci_high)})"


def specific(m: ModelResult, f: Finding) -> bool | None:
    """Whether removing the head hurts specifically where its role predicts (None: no such test): the raw contrast
    and its difference from the median other head's both above 0 by CI."""
    return narrate.specific(f, m.ablation_of(f.layer, f.head))


@dataclass(frozen=True)
class Quality:
    """Whether a model predicts its held-out text better than a unigram model of it (and than uniform guessing);
    `text` says so when it does not (empty when it does, or when it was not measured)."""

    ok: bool
    text: str = ""


def model_quality(m: ModelResult) -> Quality:
    """The one test of whether a model's roles can be findings: its held-out bits/char against the unigram entropy
    of the held-out text and against uniform guessing over its vocabulary (log2 V)."""
    measured, unigram = m.measured_bits_per_char, m.unigram_bits_per_char
    if measured is None or unigram is None or not (math.isfinite(measured) and math.isfinite(unigram)):
        return Quality(True)
    vocab = int(m.hyperparameters.get("vocab_size", 0))
    uniform = math.log2(vocab) if vocab > 1 else math.inf
    if measured < unigram:
        return Quality(True)
    than = (f"worse than uniform guessing over its {vocab} symbols ({num(uniform)}) and than" if measured >= uniform
            else "no better than")
    return Quality(False, f"{shown(m.label)} predicts its held-out text at {num(measured)} bits/char, {than} a unigram model "
                          f"of the text (its character frequencies alone: {num(unigram)} bits/char). It has not learned "
                          f"to use context, so its heads' roles describe where its attention falls, not how it models "
                          f"the language; they are not headline findings.")


def ranked(models: list[ModelResult]) -> list[tuple[ModelResult, Finding]]:
    """Heads with a replicated main role, best evidence first: relied upon and (where testable) specific, then
    relied upon, then the rest; within a tier by held-out effect. Models no better than a unigram model of their
    text (`model_quality`) give none: their roles are not findings."""
    def tier(mf):
        m, f = mf
        r = relied(m, f)
        return 0 if narrate.supported(f, m) and r else 1 if r and not narrate.breaks(m, m.ablation_of(f.layer, f.head)) \
            else 2 if r else 3
    pairs = [(m, f) for m in models if model_quality(m).ok for f in m.primary]
    return sorted(pairs, key=lambda mf: (tier(mf), -mf[1].effect))


def _layers(m: ModelResult, family: str) -> str:
    layers = sorted({f.layer for f in m.primary if f.family == family})
    return "layer " + ", ".join(map(str, layers)) if layers else "none"


def key_questions(models: list[ModelResult]) -> list[Question]:
    """The five key questions, each answered from the results."""
    heads = [(m, f) for m in models for f in m.primary]
    total = sum(m.n_layers * m.n_heads for m in models)
    q1 = [f"{shown(m.label)} {f.head_name}, {f.role}: held-out {num(f.heldout.mean)} against a strictest null of "
          f"{num(f.heldout.mean - f.effect)}, above it in {pct(f.heldout.consistency)} of held-out windows; "
          f"{_cost(m, f)}." + (f" {narrate.recurs(f, m)}" if narrate.recurs(f, m) else "")
          for m, f in ranked(models)[:MAX_Q1_HEADS] if narrate.supported(f, m)
          or not any(mm.ablation for mm in models)]
    q2 = [f"{len(heads)} of {total} heads have a replicated role (each counted once, by its main role)."]
    seeded = [m for m in models if len(m.seeds) > 1]
    if seeded:
        q2.append("Over the seeds of each recipe (the drawn seed first): " + "; ".join(
            f"{shown(m.label)} {' / '.join(map(str, seedlib.counts_or_drawn(m)))} heads with a replicated role over "
            f"{len(m.seeds)} seeds" for m in seeded) + ".")
    for fam in FAMILIES:
        n = [sum(f.family == fam.name for f in m.primary) for m in models]
        per_seed = [seedlib.fam_counts(m, fam.name) for m in models]
        if any(n) or any(any(c) for c in per_seed):
            def one(m, k, c):
                return f"{shown(m.label)} {k}" + (f"; {' / '.join(map(str, c))} by seed" if len(c) > 1 else "")
            q2.append(f"{fam.name}: {sum(n)} head{'s' if sum(n) != 1 else ''}" + (
                " (" + "; ".join(one(m, k, c) for m, k, c in zip(models, n, per_seed)) + ")"
                if len(models) > 1 or seeded else ""))
    found = [f for m in models for f in m.findings]
    rep = [f for f in found if f.replicated]
    q3 = [f"{len(rep)} of {len(found)} roles discovered on training windows held on held-out text."]
    cons = [f.heldout.consistency for f in rep if f.heldout.consistency is not None]
    if cons:
        q3.append(f"Replicated roles beat their strictest null in a median {pct(float(np.median(cons)))} of held-out "
                  f"windows (lowest {pct(min(cons))}).")
    books = {b for f in rep for b in f.by_book}
    if books:
        worst = min(((f, b, v) for f in rep for b, v in f.by_book.items()), key=lambda x: x[2])
        q3.append(f"Across the {len(books)} held-out books, every replicated role beats its strictest null in at least "
                  f"{pct(worst[2])} of a book's windows (lowest: {next(m.label for m in models if worst[0] in m.findings)} {worst[0].head_name} {worst[0].role} in "
                  f"{worst[1]}).")
    if any(f.pattern.startswith("probe_") for f in found):
        q3.append("Roles from repeated-sequence probes are confirmed on fresh probe sequences built from held-out "
                  "text, not on held-out windows.")
    return [
        Question("Which layer/head combinations are most interpretable?", (q1 + [model_quality(m).text for m in models if not model_quality(m).ok])
                 or ["No head's role is borne out by its causal evidence (see question 4)." if any(m.primary for m in models)
                     else "No head has a replicated role."]),
        Question("Which pattern types are most common?", q2),
        Question("How consistent are the patterns across inputs?", q3),
        Question("Do the patterns make linguistic sense?", _linguistic_sense(models)),
        Question("How do the models differ?" if len({m.language for m in models}) < 2 or len(models) != 2
                 else "How do English and Hebrew differ?" if {m.language for m in models} == {"en", "he"}
                 else "How do the two languages differ?", _differences(models)),
    ]


def _linguistic_sense(models: list[ModelResult]) -> list[str]:
    """Q4: reliance and specificity weighed, role by role."""
    heads = [(m, f) for m in models for f in m.primary]
    if not heads:
        return ["No replicated pattern to interpret."]
    ablated = [(m, f) for m, f in heads if relied(m, f) is not None]
    if not ablated:
        return ["Ablation was not run, so whether the model relies on these patterns is untested."]
    out = []
    for m in models:
        mine = [f for mm, f in ablated if mm is m]
        if not mine:
            continue
        good = [f for f in mine if narrate.supported(f, m)]
        broken = [f for f in mine if narrate.breaks(m, m.ablation_of(f.layer, f.head))]
        idle = [f for f in mine if not relied(m, f)]
        untested = [f for f in mine if f not in good and f not in broken and f not in idle
                    and not narrate.testable(f, m)]
        mixed = [f for f in mine if f not in good and f not in broken and f not in idle and f not in untested]
        verdict = ("yes, for most of its roles" if len(good) * 2 > len(mine) else
                   "partly" if good else "not shown: no role's causal evidence matches what the role predicts")
        text = f"{shown(m.label)}: {verdict}. Of {len(mine)} heads with a replicated role, {len(good)} " \
               f"{'matters' if len(good) == 1 else 'matter'} where {'its' if len(good) == 1 else 'their'} role " \
               f"says" + (f" ({', '.join(f'{f.head_name} {f.role}' for f in good)})" if good else "") + "."
        if broken:
            text += (f" Removing {', '.join(f.head_name for f in broken)} breaks the model (worse than a unigram model of "
                     f"its text), which shows the model needs them but not for what.")
        if mixed:
            one = len(mixed) == 1
            text += f" Mixed evidence for {', '.join(f'{f.head_name} {f.role}' for f in mixed)}: " \
                    f"{'it matters' if one else 'they matter'}, but not where {'its' if one else 'their'} role " \
                    f"predicts (each head page says where)."
        if untested:
            text += (f" {', '.join(f'{f.head_name} {f.role}' for f in untested)}: the model relies on "
                     f"{'it' if len(untested) == 1 else 'them'}, but nothing tests where such a role should matter, so "
                     f"no linguistic role is claimed.")
        if idle:
            text += (f" {', '.join(f.head_name for f in idle)}: real attention pattern, no measurable reliance, so no "
                     f"linguistic role is claimed.")
        out.append(text)
    return out


def _differences(models: list[ModelResult]) -> list[str]:
    """Q5: where each family sits in each model, and copying on repeated passages."""
    if len(models) < 2:
        return ["Only one model was analysed."]
    out = []
    seeded = all(len(m.seeds) > 1 for m in models)
    if seeded:
        out.append("Each model was measured on several training seeds of its recipe (counts below: the drawn seed, "
                   "then per seed); a difference is called one only when it holds for every pair of seeds.")
    for fam in FAMILIES:
        if any(any(seedlib.fam_counts(m, fam.name)) for m in models):
            verdict = seedlib.compare_counts(models, lambda m: seedlib.fam_counts(m, fam.name))
            out.append(f"{fam.name}: " + "; ".join(
                f"{shown(m.label)} {sum(f.family == fam.name for f in m.primary)} ({_layers(m, fam.name)}"
                + (f"; {' / '.join(map(str, seedlib.fam_counts(m, fam.name)))} by seed" if len(m.seeds) > 1 else "")
                + ")" for m in models) + (f" — {verdict}" if verdict else ""))
    for role, kn, verdict in seedlib.role_presence(models):
        out.append(f"{role}: " + "; ".join(f"{shown(m.label)} in {k} of {n} seeds" for m, (k, n) in zip(models, kn))
                   + f" — {verdict}")
    absent = [fam.name for fam in FAMILIES if fam.compared and
              not any(any(seedlib.fam_counts(m, fam.name)) for m in models)]
    subsumed = {m.label: subsumed_positional(m) for m in models} if "positional" in absent else {}
    if any(subsumed.values()):  # the rule is met, but as part of another role: not "absent"
        absent.remove("positional")
        out.append("positional: no role of its own in either model; the rule is met by heads described by another "
                   "role of theirs in " + "; ".join(f"{shown(label)} " + ", ".join(f"{s.head}, {s.by.role}" for s in heads)
                                                   for label, heads in subsumed.items() if heads))
    if absent:
        out.append(f"in neither model{' (in no seed)' if seeded else ''}: {', '.join(absent)}")
    copying = []
    for m in models:
        p = m.probes.get("probe_natural")
        if p:
            gain = p.loss_first_copy_bits_per_char - p.loss_later_copies_bits_per_char
            copying.append(f"{shown(m.label)} {num(p.loss_first_copy_bits_per_char)} → {num(p.loss_later_copies_bits_per_char)} "
                           f"bits/char ({'copies' if gain > 0 else 'no copying gain'}"
                           + (f"; copies in {sum(bool(seedlib.copies(x)) for x in m.seeds)} of {len(m.seeds)} seeds"
                              if len(m.seeds) > 1 else "") + ")")
    if copying:
        verdict = seedlib.compare_counts(models, lambda m: tuple(int(bool(seedlib.copies(x))) for x in m.seeds))
        out.append("Repeated held-out passages, first → second copy: " + "; ".join(copying)
                   + (f" — copying {verdict}" if verdict else "") + ".")
    if seeded:
        out.append("Held-out bits/char by seed [95% CI]: " + "; ".join(
            f"{shown(m.label)} " + ", ".join(f"{x.label} {num(x.bits_per_char)}" + (
                f" [{num(x.ci_low)}, {num(x.ci_high)}]" if x.ci_low is not None else "") for x in m.seeds)
            for m in models) + ".")
    circuits = [m for m in models if circuit_text(m)]
    if circuits:
        out.append("Circuits (composition edges: removing the earlier head cuts the later head's role score above chance "
                   "by at least half; the share cut, and the median share the same removal cuts from the other role "
                   "heads): " + " ".join(
                       f"{shown(m.label)}: " + ("; ".join(
                           f"{e.source} → {e.target} ({e.cut:.0%}" + (
                               f" vs {narrate.others_cut(m, e.source, e.target):.0%}"
                               if narrate.others_cut(m, e.source, e.target) is not None else "")
                           + ("; possibly general disruption" if narrate.selective(m, e) is False else "") + ")"
                           for e in sorted(m.circuit.edges, key=lambda e: -e.cut)) or "none") + "."
                       for m in circuits)
                   + (" Composition was measured on the drawn seed only: a difference here is not yet tested across "
                      "seeds." if seeded else
                      " Each model is one training run: a difference here is not yet a property of the languages."))
    return out


def limitations(models: list[ModelResult]) -> list[str]:
    """Limitations and surprises, each computed from the results."""
    out = [model_quality(m).text for m in models if not model_quality(m).ok]
    for m in models:
        primary = {(f.layer, f.head) for f in m.primary}
        missed = [a for a in m.ablation if a.ci_low > 0 and (a.layer, a.head) not in primary]
        missed.sort(key=lambda a: -a.delta_bits_per_char)
        if missed:
            out.append(f"{shown(m.label)}: {len(missed)} heads matter when removed but have no replicated role — "
                       + ", ".join(f"{a.head_name} ({signed(a.delta_bits_per_char)} bits/char)" for a in missed)
                       + ". The detectors do not describe what they do.")
        idle = [f for f in m.primary if relied(m, f) is False]
        if idle:
            out.append(f"{shown(m.label)}: roles the model does not measurably rely on — "
                       + ", ".join(f"{f.head_name} {f.role}" for f in idle) + ".")
        if m.controls:
            survive = set(m.controls.shuffled_text.content_roles)  # "L1H0 word-start head"
            word = [f for f in m.primary if f.family == "word boundary" and f"{f.head_name} {f.role}" in survive]
            if word:
                out.append(f"{shown(m.label)}: word-structure roles that survive character-shuffled text (where no words are "
                           f"left) — " + ", ".join(f"{f.head_name} {f.role}" for f in word) +
                           "; they may track the space character rather than word structure.")
            ri = m.controls.random_init
            random_roles = ri.positional_roles + ri.content_roles
            listed = ", ".join(random_roles[:4]) + (f" and {len(random_roles) - 4} more" if len(random_roles) > 4 else "")
            if ri.n_draws > 1:
                many = f"{ri.draws_with_roles} of {ri.n_draws}" if random_roles else f"none of {ri.n_draws}"
                out.append(f"{shown(m.label)}: {many} randomly initialised models of the same shape, with attention as sharp "
                           f"as the trained model's, {'was given roles' if random_roles and ri.draws_with_roles == 1 else 'were given roles' if random_roles else 'was given a role'}"
                           + (f" ({listed}); roles like these are not evidence of learning." if random_roles else "."))
            elif random_roles:
                out.append(f"{shown(m.label)}: a randomly initialised model of the same shape was given roles too ("
                           + listed + "); roles like these are not evidence of learning.")
            inside = [f for f in m.primary if f.effect <= ri.max_effect.get(f.pattern, -math.inf)]
            if inside:
                out.append(f"{shown(m.label)}: roles no stronger than the random models' high end on their detector (flagged "
                           f"on their pages) — " + ", ".join(f"{f.head_name} {f.role} ({num(f.effect)} ≤ "
                                                             f"{num(ri.max_effect[f.pattern])})" for f in inside) + ".")
        p = m.probes.get("probe_natural")
        if p and p.loss_later_copies_bits_per_char >= p.loss_first_copy_bits_per_char:
            out.append(f"{shown(m.label)} predicts a repeated passage no better the second time "
                       f"({num(p.loss_first_copy_bits_per_char)} → {num(p.loss_later_copies_bits_per_char)} bits/char): "
                       f"it does not copy in context, whatever its same-character or induction attention.")
    out.append("What a head writes is read directly (through the unembedding) for role heads only; its effect through later "
               "layers is seen only in composition. Ablation removes one head at a time and misses heads that back each "
               "other up.")
    if all(len(m.seeds) > 1 for m in models):
        out.append("Roles were measured on " + ", ".join(f"{len(m.seeds)} seeds of {shown(m.label)}" for m in models)
                   + "; pages, figures, generation, controls and composition are drawn from one seed each, and a "
                     "role found in fewer than every seed is marked so on its page.")
    else:
        out.append("One training run per model: roles may differ between seeds of the same recipe.")
    return out


def criteria(models: list[ModelResult], first: str) -> list[Criterion]:
    """Success criteria of the mission as a checklist with evidence links (roles of a model no better than a
    unigram model of its text do not count)."""
    heads = sum(len(m.primary) for m in models if model_quality(m).ok)
    poor = [m.label for m in models if not model_quality(m).ok]
    caveat = (f"; not counted: {', '.join(poor)}, no better than a unigram model of {'its' if len(poor) == 1 else 'their'}"
              f" text" if poor else "")
    return [
        Criterion(heads > 0, f"Heads with a clear role identified with CIs ({heads} heads with a replicated role"
                             f"{caveat})", first),
        Criterion(True, "Every layer × head visualised on illustrative inputs and held-out passages", first),
        Criterion(True, "Significance against uniform, positional, label-swap and (for classes) word-structure nulls "
                        "with Benjamini–Hochberg FDR over all tests", "methods.html"),
        Criterion(heads > 0, "Roles confirmed on held-out text never used for discovery", "index.html#findings"),
    ] + ([Criterion(True, "Models in different languages compared", "compare.html")]
         if len({m.language for m in models}) > 1 else []) + (
        [Criterion(True, "Causal evidence: every head ablated, with targeted effects and controls", f"{first}#causal")]
        if all(m.ablation for m in models) else [])


def circuit_text(m: ModelResult) -> str:
    """The model's composition edges in one sentence, each with its role labels and the cut it measures."""
    if m.circuit is None or not m.circuit.measured:  # no role head above layer 0: nothing to compose
        return ""
    role = {f.head_name: f.role for f in m.primary}
    edges = m.circuit.edges
    if not edges:
        return (f"{shown(m.label)}: no composition edge — removing any single earlier head leaves every later role head's "
                f"score above half its excess over chance ({len(m.circuit.measured)} pairs measured).")
    return f"{shown(m.label)}: " + "; ".join(
        f"{e.source} ({narrate.short_role(role.get(e.source, 'no role'))}) → {e.target} "
        f"({narrate.short_role(role.get(e.target, 'no role'))}): " + narrate.edge_words(m, e) for e in sorted(edges, key=lambda e: -e.cut)) + "."


def circuit_paragraph(m: ModelResult) -> str:
    """The model's circuit in a few words, grouped by the earlier head: what it feeds, the share cut."""
    if not circuit_text(m):
        return ""
    role = {f.head_name: f.role for f in m.primary}
    edges = m.circuit.edges
    if not edges:
        return f"{shown(m.label)}: no earlier head alone feeds any role head (removing one cuts no role score by half)."
    parts = []
    for src in dict.fromkeys(e.source for e in sorted(edges, key=lambda e: -e.cut)):
        mine = [e for e in edges if e.source == src]
        text = (f"{src} ({narrate.short_role(role.get(src, 'no role'))}) feeds " + ", ".join(
            f"{e.target} ({narrate.short_role(role.get(e.target, 'no role'))}, {e.cut:.0%} of its score above "
            f"chance{', selective' if narrate.selective(m, e) else ''})" for e in mine))
        if narrate.selective(m, mine[0]) is not None:
            loose = [e.target for e in mine if not narrate.selective(m, e)]
            text += (f"; removing {src} also breaks the model, so only cuts exceeding its cut of every other role "
                     f"head by {narrate.SELECTIVE * 100:.0f} percentage points count as selective"
                     + (f" ({', '.join(loose)}: possibly general disruption)" if loose else ""))
        parts.append(text)
    return f"{shown(m.label)} circuit: " + ". ".join(parts) + "."


def conclusion(models: list[ModelResult]) -> list[str]:
    """Paragraphs: circuits first (what feeds what), then the roles with their evidence, then what is absent."""
    out = [t for t in (circuit_paragraph(m) for m in models if model_quality(m).ok) if t]
    for m in models:
        heads = ranked([m])
        if not model_quality(m).ok:
            out.append(model_quality(m).text)
            continue
        if not heads:
            out.append(f"{shown(m.label)}: no head has a role that held on held-out text.")
            continue
        good = [f for _, f in heads if narrate.supported(f, m)]
        broken = [f for _, f in heads if narrate.breaks(m, m.ablation_of(f.layer, f.head))]
        rest = [f for _, f in heads if f not in good and f not in broken]
        text = f"{shown(m.label)}: {len(heads)} of {m.n_layers * m.n_heads} heads have a replicated role."
        if good:
            text += " Roles the causal evidence agrees with (the model relies on the head where its role predicts): " \
                    + "; ".join(f"{f.head_name}, {narrate.article(f.role)} {f.role}" for f in good) + "."
        if broken:
            text += " Heads the model cannot work without (removing one breaks it, so what it contributes is not " \
                    "measured): " + "; ".join(f"{f.head_name}, {f.role}" for f in broken) + "."
        if rest:
            text += " Attention pattern real, causal evidence absent or pointing elsewhere: " + "; ".join(
                f"{f.head_name}, {f.role}" for f in rest) + "."
        copies = [w.head_name for w in m.writes if w.verdict == "copies"]
        if copies:
            text += f" Heads whose output raises the character they attend to (copying): {', '.join(copies)}."
        out.append(text)
    if not any(model_quality(m).ok for m in models):
        return out
    absent = [fam.name for fam in FAMILIES if fam.compared
              and not any(f.family == fam.name for m in models for f in m.primary)]
    if "positional" in absent and any(subsumed_positional(m) for m in models):
        absent.remove("positional")  # met by heads whose fixed-offset or other role already describes them
        out.append("No head has a positional role of its own; the heads that meet the positional rule are described "
                   "by another role of theirs (" + "; ".join(f"{shown(m.label)} {s.head}" for m in models
                                                            for s in subsumed_positional(m)) + ").")
    if absent:
        out.append("Not found in any model: " + ", ".join(absent) + " (each model page gives the closest candidate).")
    return out
