"""Plain-language explanations computed from results.json numbers (never typed in).

Every number in a sentence is formatted by `num`/`pct`/`times` from a value of the finding or
model entry it explains, so a test can trace each one back to results.json.
"""

from __future__ import annotations

import math

from .stats import FAMILIES

LINGUISTICS = {
    "previous character": {
        "": "Looking one character back is the cheapest useful context for a character-level model: it turns "
            "single-letter statistics into bigram statistics (after 'q' comes 'u'), and deeper layers can build "
            "longer n-grams by composing it.",
    },
    "fixed offset": {
        "": "A head that reads a fixed distance back supplies a specific slot of n-gram context; together with a "
            "previous-character head it lets the model see trigrams and beyond.",
    },
    "positional": {
        "": "A positional head's choice of key depends on distance, not on which characters are there; it is "
            "a building block (a shift register) rather than a linguistic feature detector.",
    },
    "word boundary": {
        "en": "Spaces delimit English words, so knowing where the current word started tells the model how far "
              "into a word it is and which word-initial patterns (th-, wh-) or endings (-eth, -ed) are possible.",
        "he": "Spaces delimit Hebrew words. One-letter prefixes such as ו ה ב ל מ ש כ attach to the word, so the "
              "distance to the word start tells the model whether a prefix letter or the stem is expected; the "
              "final forms ך ם ן ף ץ mark word ends in writing as well.",
    },
    "vowel / consonant": {
        "en": "English alternates vowels and consonants; a head that collects vowels (or consonants) gives the "
              "model the syllable context it needs to predict which class comes next.",
        "he": "Consonantal Hebrew writes few vowels. The vowel letters א ה ו י are matres lectionis but also "
              "prefixes, suffixes and root letters, so a head that prefers them may be tracking morphology as much "
              "as vowels. The final forms ך ם ן ף ץ appear only at word ends.",
    },
    "punctuation": {
        "en": "Punctuation marks clause and verse structure (commas, colons, full stops before a new verse); "
              "attending to it tells the model where it is in a sentence.",
        "he": "Maqaf ־ joins words into one stress unit and sof pasuq ׃ ends each verse; attending to them tells "
              "the model where it is in a phrase or verse.",
    },
    "repetition": {
        "": "Repetition heads copy: attending to an earlier copy of the current character, or to what followed "
            "it (induction), lets the model continue names and phrases it has already seen in the window.",
    },
    "sink": {
        "": "A sink head parks attention on the first position when it has nothing useful to read; it is a "
            "'no-op' rather than a linguistic pattern.",
    },
    "other class": {"": "Attention to rare symbols usually reflects their rarity rather than a linguistic role."},
}

CAVEATS = {
    "previous character": "High attention to the previous character is also what a purely positional head does; "
                          "the label names the offset, not a linguistic category.",
    "vowel / consonant": "Class preferences can arise from where classes sit in words (e.g. vowels mid-word); the "
                         "positional and label-swap nulls remove the part explained by position alone.",
    "word boundary": "Spaces are frequent and regularly spaced; the positional null removes the share a recency "
                     "profile alone would place on them.",
    "repetition": "Mass on earlier copies can be incidental when characters are common; the label-swap null "
                  "controls for this.",
}


def num(x: float | None) -> str:
    """A statistic: 3 decimals (or 2 significant digits below 0.001)."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.3f}" if abs(x) >= 0.001 or x == 0 else f"{x:.2g}"


def pct(x: float | None) -> str:
    """A share as a whole percentage."""
    return "n/a" if x is None else f"{100 * x:.0f}%"


def times(x: float | None) -> str:
    """A ratio to chance."""
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.1f}×" if x < 10 else f"{x:.0f}×"


def qval(q: float | None) -> str:
    """A q-value, floored for display."""
    if q is None:
        return "n/a"
    return "< 1e-6" if q < 1e-6 else f"{q:.2g}"


def linguistic_note(family: str, language: str) -> str:
    """The linguistic significance of a pattern family for this language."""
    notes = LINGUISTICS.get(family, {})
    return notes.get(language) or notes.get("", "")


def _what(pattern: str, description: str, mean: float) -> str:
    """What the head does, in one clause built from its detector's description."""
    if pattern.startswith("argmax_"):
        k = int(pattern.split("_")[1])
        where = "the query character itself" if k == 0 else "the previous character" if k == 1 else f"{k} characters back"
        return f"for {pct(mean)} of queries its strongest key is {where}."
    if ":" in description:  # probes: "<probe kind>: mass on <target>"
        kind, target = description.split(":", 1)
        return f"on {kind} it puts {num(mean)} of its attention on {target.strip().removeprefix('mass on ')}."
    return f"it puts {num(mean)} of its attention on {description.removeprefix('attention mass on ')}."


def explain_finding(f: dict, model: dict) -> dict[str, str]:
    """Sentences for one finding: what, strength, consistency, linguistics, caveats."""
    h, t = f["heldout"], f["train"]
    windows = model["corpus"]["windows"]
    article = "an" if f["role"][0] in "aeiou" else "a"
    what = f"{f['head_name']} is {article} {f['role']}: {_what(f['pattern'], f['description'], h['mean'])}"
    strength = (f"On held-out text the mean is {num(h['mean'])} (95% CI {num(h['ci_low'])}–{num(h['ci_high'])}), "
                f"{times(h.get('times_chance'))} the uniform-chance level of {num(h['chance'])}.")
    if h.get("positional") is not None:
        strength += (f" Its own positional pattern alone would give {num(h['positional'])} and other windows' "
                     f"characters {num(h.get('swap'))}, so content adds {num(h.get('gain'))} "
                     f"(lower CI bound {num(h.get('gain_ci_low'))}).")
    consistency = (f"It beats the strictest null in {pct(h.get('consistency'))} of {windows['heldout']} held-out "
                   f"windows (q {qval(h.get('q'))}). Discovered on {windows['train']} training windows "
                   f"(mean {num(t['mean'])}), it {'replicated' if f['replicated'] else 'did not replicate'} "
                   f"on held-out text.")
    return {"what": what, "strength": strength, "consistency": consistency,
            "linguistics": linguistic_note(f["family"], model["language"]),
            "caveats": CAVEATS.get(f["family"], "Attention shows where a head reads, not that the model relies on "
                                                "it; causal ablation is the test of reliance.")}


def absent_families(model: dict, rules: list[dict]) -> list[dict]:
    """For each pattern family with no finding: the rule and the strongest candidate's numbers."""
    found = {f["family"] for f in model["findings"]}
    out = []
    for family, detectors in FAMILIES.items():
        if family in found or family == "other class":
            continue
        best = None
        for head in model["heads"]:
            for d in detectors:
                block = head["detectors"].get(d, {}).get("heldout")
                if not block or block.get("mean") is None:
                    continue
                score = block["mean"] - max(v for v in (block.get("chance"), block.get("positional"), block.get("swap"))
                                            if v is not None)
                if best is None or score > best[0]:
                    best = (score, head, d, block)
        rule = next((r["rule"] for r in rules if r["detector"] in detectors), "")
        if best is None:
            continue
        _, head, d, block = best
        out.append({"family": family, "rule": rule, "text": (
            f"No head passed the {family} rule. The closest candidate is L{head['layer']}H{head['head']} "
            f"({d}): held-out mean {num(block['mean'])} (95% CI {num(block['ci_low'])}–{num(block['ci_high'])}) "
            f"against chance {num(block['chance'])}.")})
    return out


FAMILY_TARGET = {"word boundary": "word_start", "punctuation": "after_punct", "repetition": "second_copy"}
TARGET_TEXT = {"word_start": "when predicting the first character of a word",
               "after_punct": "right after punctuation",
               "second_copy": "on the second copy of a repeated passage"}


def signed(x: float | None) -> str:
    """A change in bits/char with its sign."""
    return "n/a" if x is None else f"{x:+.3f}"


def explain_ablation(f: dict, model: dict) -> str:
    """'What breaks without it': the head's ablation numbers, overall and where its role should matter."""
    abl = next((a for a in model.get("ablation", []) if a["layer"] == f["layer"] and a["head"] == f["head"]), None)
    if abl is None:
        return "This head was not ablated in this run."
    lo, hi = abl["ci_low"], abl["ci_high"]
    verdict = ("the model gets measurably worse" if lo > 0 else
               "the model gets measurably better" if hi < 0 else "there is no measurable change overall")
    text = (f"Without {f['head_name']} (mean-ablated) held-out loss changes by {signed(abl['delta_bits_per_char'])} "
            f"bits/char (95% CI {signed(lo)} to {signed(hi)}): {verdict}.")
    target = FAMILY_TARGET.get(f["family"])
    t = abl["targeted"].get(target) if target else None
    if t:
        where = ("more" if t["ci_low"] > 0 else "less" if t["ci_high"] < 0 else "no more and no less")
        text += (f" {TARGET_TEXT[target].capitalize()} the change is {signed(t['delta_target'])} vs "
                 f"{signed(t['delta_rest'])} elsewhere (difference {signed(t['difference'])}, 95% CI "
                 f"{signed(t['ci_low'])} to {signed(t['ci_high'])}): it matters {where} where its role predicts.")
    elif abl.get("by_target_class"):
        worst = max(abl["by_target_class"].items(), key=lambda kv: kv[1])
        text += f" The largest change is when predicting {worst[0]} characters ({signed(worst[1])} bits/char)."
    return text
