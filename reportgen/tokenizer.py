"""Character tokenizer compatible with the course's `CharTokenizer` (same JSON keys)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from .errors import ReportgenError

PAD = "<PAD>"
OOV_POLICIES = ("error", "drop", "replace")


MAX_JSON_BYTES = 16 * 2 ** 20  # a tokenizer or props file of a character model is a few KB


def read_json(path: Path, what: str):
    """A small JSON file (tokenizer, props); every way it can be wrong is one ReportgenError naming it: a folder, a
    file too large, not UTF-8, not JSON, nested too deeply to read, unreadable."""
    if path.is_dir():
        raise ReportgenError(f"{path}: is a folder, not a {what} JSON file")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise ReportgenError(f"{path}: {path.stat().st_size:,} bytes, too large for a {what} JSON file")
        return json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ReportgenError(f"{path}: not a valid {what} JSON (nested too deeply to read)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportgenError(f"{path}: not a valid {what} JSON ({exc})") from None
    except OSError as exc:
        raise ReportgenError(f"{path}: cannot read the {what} JSON ({exc.strerror or exc})") from None


class CharTokenizer:
    """Vocabulary = ["<PAD>"] + sorted characters of the training text."""

    def __init__(self, vocab: list[str] | None = None):
        self.symbols = [PAD]
        self.vocab = list(vocab) if vocab is not None else list(self.symbols)
        self.tokens = {s for s in self.vocab if len(s) == 1}  # characters; "<PAD>" and placeholders are not
        self.stoi = {s: i for i, s in enumerate(self.vocab)}

    @classmethod
    def from_text(cls, texts: Iterable[str]) -> "CharTokenizer":
        """Build the vocabulary the course's way from training text(s)."""
        chars: set[str] = set()
        for text in texts:
            chars.update(text)
        return cls([PAD] + sorted(chars))

    def vocab_size(self) -> int:
        """Number of symbols including <PAD>."""
        return len(self.vocab)

    def __len__(self) -> int:
        return len(self.vocab)

    def unknown_chars(self, text: str) -> list[str]:
        """Characters of `text` that are not in the vocabulary, sorted."""
        return sorted(set(text) - self.tokens)

    def clean(self, text: str, policy: str = "error", replacement: str = " ", source: str = "text") -> tuple[str, int]:
        """Apply the out-of-vocabulary policy; return (text, number of characters dropped or replaced)."""
        if policy not in OOV_POLICIES:
            raise ValueError(f"unknown OOV policy {policy!r}; choose one of {OOV_POLICIES}")
        unknown = self.unknown_chars(text)
        if not unknown:
            return text, 0
        if policy == "error":
            shown = " ".join(repr(c) for c in unknown[:20]) + (" ..." if len(unknown) > 20 else "")
            raise ReportgenError(
                f"{source}: {len(unknown)} character(s) not in the model's vocabulary: {shown} "
                "(use --oov drop or --oov replace to skip them)"
            )
        bad = set(unknown)
        count = sum(1 for c in text if c in bad)
        if policy == "drop":
            return "".join(c for c in text if c not in bad), count
        if replacement not in self.stoi:
            raise ReportgenError(f"{source}: replacement character {replacement!r} is not in the vocabulary")
        return "".join(replacement if c in bad else c for c in text), count

    def tokenize(self, text: str) -> list[int]:
        """Map text to token ids; raises ReportgenError on unknown characters."""
        self.clean(text)
        return [self.stoi[c] for c in text]

    def detokenize(self, ids: Iterable[int]) -> str:
        """Map token ids back to text."""
        return "".join(self.vocab[int(i)] for i in ids)

    def to_dict(self) -> dict:
        """The course's JSON layout."""
        return {"symbols": self.symbols, "tokens": sorted(self.tokens), "vocab": self.vocab, "stoi": self.stoi}

    def save(self, path: str | Path) -> None:
        """Write tokenizer.json."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "CharTokenizer":
        """Read a course-style tokenizer.json."""
        path = Path(path)
        if not path.exists() and not path.is_symlink():
            raise ReportgenError(f"{path}: tokenizer file not found")
        data = read_json(path, "tokenizer")
        if not isinstance(data, dict):
            raise ReportgenError(f"{path}: tokenizer JSON is not an object")
        if isinstance(data.get("vocab"), list):
            vocab = data["vocab"]
        elif isinstance(data.get("stoi"), dict):
            stoi = data["stoi"]
            vocab = [s for s, _ in sorted(stoi.items(), key=lambda kv: kv[1])]
        else:
            raise ReportgenError(f"{path}: tokenizer JSON has neither 'vocab' nor 'stoi'")
        if not all(isinstance(s, str) for s in vocab) or len(set(vocab)) != len(vocab):
            raise ReportgenError(f"{path}: tokenizer vocabulary must be distinct strings")
        return cls(vocab)
