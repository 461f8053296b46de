"""The catalogue: one record per detector, pattern family and language.

Every name, description, role label, role rule (thresholds as data, with the sentence the report
prints generated from the same numbers), causal target and display placement lives here; the CLI,
results.json, the methods page and the explanations read them from here. Adding a detector means
one `Detector` entry plus its computation in `detectors.py`; adding a language one `Language`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping

from .classes import CLASS_NAMES
from .caseclasses import DESCRIPTIONS as CASE_DESCRIPTIONS
from .languages import LANGUAGE, Language

ALPHA = 0.05  # FDR level for every role rule
MAX_OFFSET = 8  # fixed-offset and positional detectors look 0..MAX_OFFSET characters back
NEAR = 8  # punctuation within this many characters back counts as "near"

# ---- role rules ---------------------------------------------------------------------------------

# The class-wide gate of letter-class roles, on the per-character profile (each key character's attention mass
# over its mass under uniform causal attention): thresholds, and the sentence `Rule.text` appends.
WIDE_DROP = 2  # the class's members with the most mass above their chance left out
WIDE_FREQUENT = 0.01  # members at least this share of keys by chance count as frequent
WIDE_MEMBERS = 0.5  # share of frequent members above their own chance
_WIDE_TEXT = (f"; and class-wide, judged on the per-character profile. Within letters (among all keys when the class "
              f"holds every letter), the class's share of the head's mass over its share under uniform attention has a "
              f"lower 95% CI bound > 1 with the class's {WIDE_DROP} members with the most mass above their chance left "
              f"out (at least one member kept), and at least {WIDE_MEMBERS:.0%} of its members that are >= "
              f"{WIDE_FREQUENT:.0%} of keys by chance (all members if none is) are above their own share by chance")


@dataclass(frozen=True)
class Rule:
    """An effect-size rule: which summary fields must pass which thresholds.

    `kind` picks the sentence shape: 'mass' (CI bound of a mass, tested against uniform chance), 'argmax'
    (share of queries), 'content' (gain over the strictest of its `nulls`), 'probe' (mass on the induction
    target, gain over the positional null). `scope` ends the sentence (what the values are per).
    """

    kind: str
    target: str  # what is measured, in words ("the mass on i-1")
    ci_low_above: float | None = None
    mean_at_least: float | None = None
    gain_ci_low_at_least: float | None = None
    q_below: float | None = ALPHA
    cite: str = ""
    # Rare classes (uniform chance below `rare_below`) can hardly gain 0.10 in absolute mass; for them a
    # relative rule applies instead: lift over the stricter null and a smaller absolute gain, both by CI.
    rare_below: float | None = None
    rare_lift_ci_low_at_least: float = 2.0
    rare_gain_ci_low_at_least: float = 0.02
    nulls: tuple[str, ...] = ("positional", "label-swap")  # kind "content": the nulls besides uniform chance
    scope: str = ""
    class_wide: bool = False  # letter classes: the preference must be class-wide (fields from `classwide`)

    def holds(self, f: Mapping[str, float]) -> bool:
        """Whether one head's summary fields on one split pass every threshold (NaN fails; the class-wide gate
        applies where its fields were computed)."""
        if not _passes(f, [(self.ci_low_above, "ci_low", False), (self.mean_at_least, "mean", True),
                           (self.q_below, "q", None)]):
            return False
        if self.class_wide and "members_share" in f and not _passes(
                f, [(1.0, "wide_lift_ci_low", False), (WIDE_MEMBERS, "members_share", True)]):
            return False
        if _passes(f, [(self.gain_ci_low_at_least, "gain_ci_low", True)]):
            return True
        return (self.rare_below is not None and _passes(f, [(self.rare_below, "chance", None)]) and
                _passes(f, [(self.rare_lift_ci_low_at_least, "lift_ci_low", True),
                            (self.rare_gain_ci_low_at_least, "gain_ci_low", True)]))

    def text(self) -> str:
        """The rule as one sentence for results.json and the methods table, from the thresholds above."""
        cite = (f" ({self.cite})" if self.cite else "") + self.scope
        if self.kind == "argmax":
            return f"{self.target} for >= {self.mean_at_least:.0%} of queries{cite}"
        if self.kind == "content":
            nulls = ", ".join(self.nulls[:-1]) + f" and {self.nulls[-1]}" if len(self.nulls) > 1 else self.nulls[0]
            text = (f"q < {self.q_below:g} against uniform, {nulls} nulls, and the lower 95% CI bound of the mass "
                    f"above the {'stricter' if len(self.nulls) == 2 else 'strictest'} of the {nulls} nulls >= "
                    f"{self.gain_ci_low_at_least:.2f}")
            if self.rare_below is not None:
                text += (f"; for targets under {self.rare_below:.0%} of keys by chance, instead: lower 95% CI bounds "
                         f"of the ratio to that null >= {self.rare_lift_ci_low_at_least:g} and of the mass above it "
                         f">= {self.rare_gain_ci_low_at_least:.2f}")
            return text + (_WIDE_TEXT if self.class_wide else "") + cite
        if self.kind == "probe":
            return (f"{self.target}: lower 95% CI bound > {self.ci_low_above:g}, q < {self.q_below:g}, and >= "
                    f"{self.gain_ci_low_at_least:.2f} above the head's positional null{cite}")
        return (f"lower 95% CI bound of {self.target} > {self.ci_low_above:g} and q < {self.q_below:g} against uniform "
                f"chance{cite}")


def _passes(f: Mapping[str, float], checks) -> bool:
    """Every (threshold, field, inclusive) check holds; None threshold = no check; inclusive None = strict '<'."""
    for threshold, key, inclusive in checks:
        if threshold is None:
            continue
        v = f.get(key)
        if v is None or not math.isfinite(v):
            return False
        ok = v < threshold if inclusive is None else v >= threshold if inclusive else v > threshold
        if not ok:
            return False
    return True


# ---- families -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A pattern family: what its roles have in common, its generic note and caveat, its causal target."""

    name: str
    note: str = ""  # linguistic significance, unless the language record has its own
    caveat: str = ("Attention shows where a head reads, not that the model relies on it; causal ablation is the "
                   "test of reliance.")
    causal_target: str | None = None  # a targeted-ablation contrast (see CAUSAL_TARGETS)
    positional: bool = False  # roles decided by position alone (expected to survive shuffled text)
    compared: bool = True  # counted in the cross-model comparison


FAMILIES: tuple[Family, ...] = (
    Family("fixed offset",
           "A head that reads a fixed distance back supplies one slot of n-gram context; together with other offsets "
           "it lets the model see trigrams and beyond.",
           "A fixed-offset head reads by position; the label names the offset, not a linguistic category.",
           positional=True),
    Family("positional",
           "A positional head's choice of key depends on distance, not on which characters are there; it is a "
           "building block (a shift register) rather than a linguistic feature detector.", positional=True),
    Family("word boundary",
           "Knowing where the current word began tells the model how far into a word it is, and so which letters "
           "can come next.",
           "Spaces are frequent and regularly spaced; the positional null removes the share a recency profile alone "
           "would place on them.", causal_target="in_word"),
    Family("vowel / consonant", "",
           "Class preferences can arise from where classes sit in words (e.g. consonants at word starts); the "
           "positional, label-swap and word-structure nulls remove the part explained by position and word "
           "structure alone."),
    Family("punctuation", "Punctuation marks phrase and sentence structure; attending to it tells the model where "
                          "it is in a phrase or sentence.", causal_target="after_punct"),
    Family("repetition", "",
           "Mass on earlier copies can be incidental when characters are common; the label-swap null controls for "
           "this.", causal_target="second_copy"),
    Family("sink",
           "A sink head parks attention on the first position when it has nothing useful to read; it is a 'no-op' "
           "rather than a linguistic pattern.", positional=True),
    Family("other class", "Attention to rare symbols usually reflects their rarity rather than a linguistic role.",
           compared=False),
    Family("your hypotheses", "", "A hypothesis of yours is judged like the built-in detectors that read the same "
           "kind of keys (a fixed offset, characters or a class, a regex), with their nulls and rule, on the queries "
           "it is about.", compared=False),
)
FAMILY = {f.name: f for f in FAMILIES}

CAUSAL_TARGETS = {  # targeted ablation contrasts: name -> where the head's role predicts it matters
    "in_word": "when predicting letters inside a word (after its first letter)",
    "after_punct": "right after punctuation",
    "second_copy": "on the second copy of a repeated passage",
    "after_newline": "right after a line break (the first character of a line)",
}

# ---- detectors ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detector:
    """One detector: its meaning, how it is tested, and the role it can support."""

    name: str
    kind: str  # offset | argmax | class | target | shape | probe | descriptive
    description: str
    family: str | None = None
    role: str | None = None  # role label given when `rule` holds
    rule: Rule | None = None
    shown: frozenset[str] = frozenset({"scores"})  # scores: score matrix; compare: per-layer strength table
    note: str = ""  # what the pattern is good for, when no language record has its own note
    target: str | None = None  # its own targeted-ablation contrast, instead of its family's
    caveat: str = ""  # its own caveat, instead of its family's

    @property
    def tested(self) -> bool:
        """Tested against chance (descriptive summaries are not)."""
        return self.kind != "descriptive"

    @property
    def content(self) -> bool:
        """Scored against positional and label-swap nulls as well as uniform chance."""
        return self.kind in ("class", "target") or self.kind == "hypothesis" and self.rule.kind == "content"

    @property
    def causal_target(self) -> str | None:
        """The targeted-ablation contrast where this detector's role should matter most."""
        return self.target or (FAMILY[self.family].causal_target if self.family else None)


COPYING = ("Reading what followed an earlier occurrence of the current character, together with the model's better "
           "prediction of a repeated passage, is copying: continuing a name or phrase already seen.")
_MASS = dict(ci_low_above=0.5)
_CONTENT = Rule("content", "", gain_ci_low_at_least=0.10)
_CLASS = Rule("content", "", gain_ci_low_at_least=0.10, rare_below=0.10,
              nulls=("positional", "label-swap", "word-structure"))
LETTER_CLASSES = ("vowel", "consonant", "final")  # class roles that must be class-wide (space, line break: one
# character each; punctuation: a few marks of very unequal frequency, its profile is reported instead)
_LETTER = replace(_CLASS, class_wide=True)
_PROBE = Rule("probe", "mass on the token after the earlier copy", ci_low_above=0.3, gain_ci_low_at_least=0.10,
              cite="Olsson et al. 2022")
_COMPARE = frozenset({"scores", "compare"})


def _detectors() -> tuple[Detector, ...]:
    """Every detector, in the order roles are listed for a head."""
    ds = [Detector("offset_1", "offset", "attention mass on the previous character", "fixed offset",
                   "previous-character head (offset 1)",
                   Rule("mass", "the mass on i-1", **_MASS, cite="cf. Clark et al. 2019"), _COMPARE,
                   "Looking one character back is the cheapest useful context for a character-level model: it turns "
                   "single-letter statistics into bigram statistics (after 'q' comes 'u'), and deeper layers can "
                   "build longer n-grams by composing it.")]
    ds += [Detector(f"offset_{k}", "offset",
                    "attention mass on the current character itself" if k == 0 else
                    f"attention mass on the character {k} back", "fixed offset",
                    "current-character head (offset 0)" if k == 0 else f"offset-{k} head",
                    Rule("mass", f"the mass on i-{k}", **_MASS),
                    note="A head that reads the current character passes its identity on to later layers unchanged."
                    if k == 0 else "")
           for k in range(MAX_OFFSET + 1) if k != 1]
    ds += [Detector(f"argmax_{k}", "argmax", f"share of queries whose strongest key is {k} back", "positional",
                    f"positional head (offset {k})",
                    Rule("argmax", f"the strongest key sits at i-{k}", mean_at_least=0.9, q_below=None,
                         cite="Voita et al. 2019")) for k in range(MAX_OFFSET + 1)]
    classes = {"vowel": ("vowel / consonant", "vowel head"), "consonant": ("vowel / consonant", "consonant head"),
               "final": ("vowel / consonant", "final-letter head"), "space": ("word boundary", "space head"),
               "newline": ("word boundary", "line-break head"), "punctuation": ("punctuation", "punctuation head"),
               "digit": ("other class", "digit head"), "other": ("other class", "other-symbol head")}
    compared = {"vowel", "consonant", "final", "space", "punctuation"}
    class_notes = {
        "space": "A space head gathers the spaces in its window wherever they are: how many words there were and "
                 "where they fell, which bears on word lengths and on when the next space is due.",
        "newline": "A line-break head reads where lines ended; in text written one sentence or one line of a poem "
                   "per line this locates the start of the current line.",
    }
    line = {"target": "after_newline", "caveat": "Line breaks are few and their spacing depends on how the text is "
            "laid out; the positional null removes the share a recency profile alone would place on them."}
    ds += [Detector(f"class_{c}", "class", f"attention mass on {c} keys", *classes[c],
                    _LETTER if c in LETTER_CLASSES else _CLASS,
                    _COMPARE if c in compared else frozenset({"scores"}), class_notes.get(c, ""),
                    **(line if c == "newline" else {}))
           for c in CLASS_NAMES]
    targets = [
        ("recent_space", "attention mass on the most recent space or line break before the query", "word boundary",
         "word-boundary head", ""),
        ("word_start", "attention mass on the first character of the current word", "word boundary", "word-start head", ""),
        ("duplicate", "attention mass on earlier copies of the query character (itself excluded)", "repetition",
         "same-character head",
         "A same-character head looks at earlier occurrences of the character it is reading (doubled letters, "
         "how often a letter has appeared). That is not copying: copying needs attention to what followed an "
         "earlier occurrence."),
        ("induction", "attention mass on characters that followed an earlier copy of the query character",
         "repetition", "induction head (natural text)", COPYING),
        ("punct_near", f"attention mass on punctuation up to {NEAR} characters back", "punctuation",
         "near-punctuation head", ""),
        ("punct_far", f"attention mass on punctuation more than {NEAR} characters back", "punctuation",
         "far-punctuation head", ""),
    ]
    ds += [Detector(n, "target", d, fam, role, _CONTENT, _COMPARE if n in ("word_start", "duplicate", "induction")
                    else frozenset({"scores"}), note) for n, d, fam, role, note in targets]
    ds += [Detector("probe_random", "probe", "repeated random letters: mass on the token after the earlier copy",
                    "repetition", "induction head (random)", _PROBE, note=COPYING),
           Detector("probe_natural", "probe", "repeated held-out passage: mass on the token after the earlier copy",
                    "repetition", "induction head (repeated passages)", _PROBE, _COMPARE, COPYING)]
    ds.append(Detector("sink", "shape", "attention mass on the first position of the window", "sink", "sink head",
                       Rule("mass", "the mass on position 0", **_MASS)))
    ds += [Detector(n, "case", d, shown=frozenset()) for n, d in CASE_DESCRIPTIONS.items()]  # no role (caseclasses)
    ds += [Detector("entropy", "descriptive", "normalised entropy H_i / ln(i+1) (1 = uniform over the prefix)",
                    shown=frozenset()),
           Detector("distance", "descriptive", "mean attention distance (characters back)", shown=frozenset()),
           Detector("confidence", "descriptive", "largest attention weight of a query", shown=frozenset())]
    return tuple(ds)


BUILTIN: tuple[Detector, ...] = _detectors()
# Lists, not tuples: a run's own hypotheses (hypotheses.py) join them through `set_hypotheses`.
DETECTORS: list[Detector] = list(BUILTIN)
DETECTOR = {d.name: d for d in DETECTORS}
ROLE_DETECTORS: list[Detector] = [d for d in DETECTORS if d.rule is not None]


def hypothesis_keys(h: Mapping) -> str:
    """Which built-in detectors a hypothesis (its settings; an absent key = None) is judged like: 'offset'
    (key_offset: the fixed-offset detectors), 'class' (key_class, key_chars: the class detectors) or 'target'
    (key_regex: the target-set detectors such as word_start). A set of characters (key_chars) gets the class rule
    without the class-wide gate of letter classes: the set is your claim, not a class's."""
    if h.get("key_offset") is not None:
        return "offset"
    return "target" if h.get("key_regex") is not None else "class"


def hypothesis_rule(h: Mapping) -> Rule:
    """A hypothesis' rule: the rule of the built-in detectors it is judged like (`hypothesis_keys`), applied to its
    values per query it is about. With every query and the keys of a built-in detector (`key_offset = 1`,
    `key_class = "vowel"`) it has that detector's numbers, so the same verdict."""
    keys = hypothesis_keys(h)
    scope = ("" if not any(h.get(k) is not None for k in ("query_chars", "query_class", "query_regex")) else
             "; every value per query the hypothesis is about, pooled over them")
    if keys == "offset":
        return Rule("mass", f"the mass on i-{h['key_offset']}", **_MASS, scope=scope)
    if h.get("key_class") is not None:  # the class detector's own rule (a letter class: with the class-wide gate)
        return replace(DETECTOR[f"class_{h['key_class']}"].rule, scope=scope)
    return replace(_CLASS if keys == "class" else _CONTENT, scope=scope)


def hypothesis_detector(h: Mapping) -> Detector:
    """The detector of one hypothesis (given as its settings: name, description, ...)."""
    return Detector(f"hyp_{h['name']}", "hypothesis", f"your hypothesis: {h['description']}", "your hypotheses",
                    f"{h['name'].replace('_', ' ')} head (your hypothesis)", hypothesis_rule(h), frozenset())


def run_detectors(settings: Mapping) -> list[Detector]:
    """The detectors of a run: the built-in ones and the hypotheses its settings record (not the global state)."""
    return list(BUILTIN) + [hypothesis_detector(h) for h in settings.get("hypotheses", [])]


def set_hypotheses(hypotheses) -> None:
    """Make a run's hypotheses detectors like the built-in ones (replacing any earlier run's)."""
    for d in [d for d in DETECTORS if d.kind == "hypothesis"]:
        DETECTORS.remove(d)
        ROLE_DETECTORS.remove(d)
        DETECTOR.pop(d.name, None)
    for h in hypotheses:
        d = hypothesis_detector(vars(h))
        DETECTORS.append(d)
        ROLE_DETECTORS.append(d)
        DETECTOR[d.name] = d


def family_detectors(family: str) -> tuple[str, ...]:
    """Names of the detectors whose roles belong to a family."""
    return tuple(d.name for d in DETECTORS if d.family == family)


def shown_in(place: str) -> tuple[str, ...]:
    """Names of the detectors displayed in one place ('scores', 'compare')."""
    return tuple(d.name for d in DETECTORS if place in d.shown)


def roles_of(split, layer: int, head: int) -> list[Detector]:
    """Every role-bearing detector whose rule holds for a head on one split's statistics (`SplitStats`).

    A positional role (strongest key at a fixed offset) is given only when nothing else explains the head:
    not when a content role holds (identity-driven self-attention is not positional) nor when the same head
    already has a fixed-offset mass role (one phenomenon, counted once). Your hypotheses' roles leave the built-in
    ones as they are (they are reported apart).
    """
    out = []
    for d in ROLE_DETECTORS:
        values = split.values.get(d.name)
        if values is not None and d.rule.holds({k: float(v[layer, head]) for k, v in values.items()}):
            out.append(d)
    if any(d.kind not in ("argmax", "hypothesis") for d in out):
        out = [d for d in out if d.kind != "argmax"]
    return out


# Olsson et al. (2022) define an induction head by its attention on repeated *random* sequences; a head whose
# induction pattern holds on natural text only (word structure helps there) copies natural text.
COPYING_ROLES = {"induction": "copying head (natural text)", "probe_natural": "copying head (repeated passages)"}


def role_label(d: Detector, random_repeats: bool) -> str:
    """The role label of a detector whose rule holds for a head: the one place labels are decided. Natural-text
    induction roles are called "induction head" only when the head also passes the repeated-random-sequence rule
    (`random_repeats`), else "copying head"."""
    return d.role if random_repeats else COPYING_ROLES.get(d.name, d.role)


def linguistic_note(key: str, code: str | None, vocab: str | None = None) -> str:
    """What a detector's (or a family's) pattern is good for in a language: the language record's note for the
    detector, else the detector's generic note, else the language's note for its family, else the family's.
    With `vocab` (the model's characters), language notes naming characters it lacks are skipped."""
    lang: Language | None = LANGUAGE.get(code) if code else None
    d = DETECTOR.get(key)
    family = d.family if d else key
    def own(k):  # a language note that names characters the model's vocabulary lacks does not apply
        needs = lang.note_needs.get(k, "") if lang else ""
        return lang.notes.get(k) if lang and (vocab is None or all(c in vocab for c in needs)) else None
    candidates = (own(key), d.note if d else None, own(family), FAMILY[family].note if family in FAMILY else None)
    for note in candidates:
        if note:
            return note
    return ""
