"""Character classes per language: the data every class-based detector and report table uses.

English: vowel (a e i o u, either case), consonant (other Latin letters), space, newline,
punctuation, digit, other. Hebrew: consonant letters; "vowel" = the matres lectionis א ה ו י
(vowel letters; ו and ה are also one-letter prefixes); final forms ך ם ן ף ץ; space; newline;
punctuation (maqaf ־, sof pasuq ׃, paseq ׀, ASCII punctuation); digit; other.
A user overrides any character's class with `CharClasses.with_overrides`.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np

from .languages import LANGUAGE

CLASS_NAMES = ("vowel", "consonant", "final", "space", "newline", "punctuation", "digit", "other")
HEBREW_PUNCT = "\u05be\u05c3\u05c0\u05c6"  # maqaf, sof pasuq, paseq, nun hafukha


def default_class(char: str, language: str) -> str:
    """The class of one character under the language's default rules (its `Language` record)."""
    if char == " ":
        return "space"
    if char == "\n":
        return "newline"
    if char.isdigit():
        return "digit"
    lang = LANGUAGE.get(language) or LANGUAGE["en"]  # an unknown language: Latin letters
    if lang.letters(char):  # only the language's own letters: another script's vowels are not its vowel letters
        if char in lang.vowels or char.lower() in lang.vowels:
            return "vowel"
        return "final" if char in lang.finals else "consonant"
    if char in HEBREW_PUNCT or unicodedata.category(char).startswith("P"):
        return "punctuation"
    return "other"


@dataclass(frozen=True)
class CharClasses:
    """Class of each vocabulary symbol, as codes into CLASS_NAMES."""

    language: str
    vocab: tuple[str, ...]
    codes: tuple[int, ...]  # one per vocab symbol

    @classmethod
    def for_vocab(cls, vocab: list[str], language: str) -> "CharClasses":
        """Default classes for a vocabulary (<PAD> counts as other)."""
        names = [default_class(c, language) if len(c) == 1 else "other" for c in vocab]
        return cls(language, tuple(vocab), tuple(CLASS_NAMES.index(n) for n in names))

    def with_overrides(self, overrides: dict[str, str]) -> "CharClasses":
        """A copy with {character: class name} overrides applied."""
        codes = list(self.codes)
        for char, name in overrides.items():
            if name not in CLASS_NAMES:
                raise ValueError(f"unknown character class {name!r}; choose one of {CLASS_NAMES}")
            if char in self.vocab:
                codes[self.vocab.index(char)] = CLASS_NAMES.index(name)
        return CharClasses(self.language, self.vocab, tuple(codes))

    def lookup(self) -> np.ndarray:
        """Token id -> class code array (V,)."""
        return np.asarray(self.codes, dtype=np.int64)

    def present(self) -> tuple[str, ...]:
        """Class names that at least one vocabulary symbol has."""
        return tuple(n for i, n in enumerate(CLASS_NAMES) if i in self.codes)

    def members(self) -> dict[str, str]:
        """Class name -> the characters in it (for the report)."""
        out: dict[str, str] = {}
        for char, code in zip(self.vocab, self.codes):
            out.setdefault(CLASS_NAMES[code], "")
            out[CLASS_NAMES[code]] += char if len(char) == 1 else ""
        return out

    def label(self, name: str) -> str:
        """Display name of a class in this language."""
        lang = LANGUAGE.get(self.language)
        return lang.class_label(name) if lang else name
