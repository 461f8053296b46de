"""Capital letters and sentence starts: key sets offered where the model's vocabulary has case.

Both are scored like the built-in content detectors through the hypotheses' code path (`hypotheses.scores`,
`hypotheses.positional`): observed mass, uniform chance, the positional and label-swap nulls, a bootstrap CI,
BH-FDR with every other test and the same numbers on training and held-out text. They give no role: they are
classes of the class analysis (each head page's detector table, results.json, the model page's summary).

* `capital`: keys that are upper-case letters of the language (A-Z in English).
* `sentence_start`: the first letter after sentence-final punctuation (. ? !, optionally closed by quotes or
  brackets) and whitespace (spaces, line breaks; optionally opening quotes or brackets before the letter), both
  inside the window. The window's first letter is not counted: a window is cut anywhere, so its first letter is
  usually inside a sentence, and the model cannot see what came before it.

Their word-structure null is the simpler explanations, each a head blind to the distinction, the strictest of
them window by window: for key set K and a coarser set E, the head's own mass on E spread over E's keys in view
with K's share of them, plus its mass off E spread likewise. Capital: E = word-initial letters (a head reading
word starts, of any case). Sentence start: E = word-initial letters (word start), capital letters (a capital
head), and letters after any punctuation and whitespace (after a comma, colon, semicolon or full stop alike).
Shapes as in `detectors`: B windows, L layers, H heads, T queries, S keys.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
import torch

from .keysets import SKIP, keys_product, window_text, word_initial
from .languages import LANGUAGE

SENTENCE_END = re.compile(r"[.?!][\"')\]\u2019\u201d]*\s+[\"'(\[\u2018\u201c]*(\w)")
AFTER_PUNCT = re.compile(r"[^\w\s][\"')\]\u2019\u201d]*\s+[\"'(\[\u2018\u201c]*(\w)")
DESCRIPTIONS = {
    "capital": "attention mass on capital letters",
    "sentence_start": "attention mass on the first letter of each sentence in view (after . ? ! and a space)",
}


def _letters(vocab: list[str], language: str | None):
    lang = LANGUAGE.get(language or "") or LANGUAGE["en"]
    return [c for c in vocab if len(c) == 1 and lang.letters(c)]


def capitals(vocab: list[str], language: str | None) -> str:
    """The vocabulary's upper-case letters of the language whose lower-case form it also has ('' without case)."""
    return "".join(c for c in _letters(vocab, language) if c.isupper() and c.lower() != c and c.lower() in vocab)


def not_offered(vocab: list[str], language: str | None) -> str | None:
    """Why capital letters and sentence starts are not analysed for this vocabulary (one line), or None."""
    if capitals(vocab, language):
        return None
    letters = _letters(vocab, language)
    if letters and not any(c.lower() != c.upper() for c in letters):
        why = "its script has no upper and lower case"
    else:
        why = "the model's vocabulary has no capital letters (its text was lower-cased)"
    return f"Capital letters and sentence starts are not analysed: {why}."


def _starts(ids: torch.Tensor, vocab: list[str], pattern: re.Pattern) -> torch.Tensor:
    """Bool (B, S): letters at group 1 of `pattern` in each window's text."""
    out = torch.zeros(ids.shape, dtype=torch.bool)
    for b in range(ids.shape[0]):
        for m in pattern.finditer(window_text(ids[b], vocab)):
            if m.group(1).isalpha():
                out[b, m.start(1)] = True
    return out


@dataclass(frozen=True)
class CaseClass:
    """A key set over case or sentence structure, shaped like a `hypotheses.Hypothesis` over every query."""

    name: str  # "capital" or "sentence_start"
    chars: str  # the capital letters of the vocabulary
    keys: str = "class"
    has_query: bool = False
    key_class: None = None

    @property
    def detector(self) -> str:
        return self.name

    def key_positions(self, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str]) -> torch.Tensor:
        """Bool (B, S): the keys of this set in each window."""
        if self.name == "capital":
            return self.capital(ids, vocab)
        return _starts(ids, vocab, SENTENCE_END)

    def capital(self, ids: torch.Tensor, vocab: list[str]) -> torch.Tensor:
        table = torch.tensor([c in self.chars for c in vocab], dtype=torch.bool)
        return table[ids]

    def query_positions(self, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str]) -> torch.Tensor:
        return torch.ones(ids.shape, dtype=torch.bool)

    def mask(self, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str]) -> torch.Tensor:
        """Target mask (B, T, S): key j <= i is in the set."""
        T = ids.shape[1]
        causal = torch.arange(T).view(1, T) <= torch.arange(T).view(T, 1)
        return self.key_positions(ids, codes, vocab).view(-1, 1, T) & causal

    def explanations(self, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str]) -> list[torch.Tensor]:
        """The coarser key sets E (B, S) whose case- or sentence-blind reading is the simpler explanation."""
        initial = word_initial(codes) & self.letters(ids, vocab)
        if self.name == "capital":
            return [initial]
        return [initial, self.capital(ids, vocab), _starts(ids, vocab, AFTER_PUNCT)]

    @staticmethod
    def letters(ids: torch.Tensor, vocab: list[str]) -> torch.Tensor:
        return torch.tensor([len(c) == 1 and c.isalpha() for c in vocab], dtype=torch.bool)[ids]

    def structure(self, attn: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor, vocab: list[str],
                  masses: torch.Tensor | None = None) -> torch.Tensor:
        """The strictest simpler explanation (B, L, H), query means: `blind_null` of each of `explanations`.
        `masses` (B, L, H, T, 2k): the attention on each explanation's keys and on the others, computed already."""
        keys = self.key_positions(ids, codes, vocab)
        nulls = [blind_null(attn, keys, e, None if masses is None else masses[..., 2 * k:2 * k + 2])
                 for k, e in enumerate(self.explanations(ids, codes, vocab))]
        return torch.stack(nulls).amax(0)


def blind_null(attn: torch.Tensor, keys: torch.Tensor, coarse: torch.Tensor,
               mass: torch.Tensor | None = None) -> torch.Tensor:
    """Query-mean mass (B, L, H) on `keys` (B, S) of a head that reads the coarser set `coarse` (B, S) exactly as
    much as this one does but cannot tell its members apart: per query i, its mass on `coarse` keys times the share
    of those keys in [0, i] that are in `keys`, plus its mass on the other keys times their share in `keys`.
    `mass` (B, L, H, T, 2): its mass on `coarse` keys and on the others, if computed already."""
    T = keys.shape[1]
    k, e = keys.float(), coarse.float()
    if mass is None:
        mass = keys_product(attn.float(), torch.stack([e, 1 - e], -1))  # (B, L, H, T, 2)
    with torch.no_grad():
        n_e, n_o = e.cumsum(1), (1 - e).cumsum(1)  # (B, T) keys in [0, i]
        in_e, in_o = (k * e).cumsum(1), (k * (1 - e)).cumsum(1)
        share_e = torch.where(n_e > 0, in_e / n_e.clamp_min(1), torch.zeros_like(n_e))
        share_o = torch.where(n_o > 0, in_o / n_o.clamp_min(1), torch.zeros_like(n_o))
    B = keys.shape[0]
    null = mass[..., 0] * share_e.view(B, 1, 1, T) + mass[..., 1] * share_o.view(B, 1, 1, T)
    return null[..., SKIP:].mean(-1)


def case_classes(vocab: list[str], language: str | None) -> tuple[CaseClass, ...]:
    """The case key sets of a model: capital letters and sentence starts where its vocabulary has case, else none."""
    chars = capitals(vocab, language)
    return (CaseClass("capital", chars), CaseClass("sentence_start", chars)) if chars else ()
