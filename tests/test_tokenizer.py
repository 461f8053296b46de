"""CharTokenizer: the course's vocabulary and JSON layout, and out-of-vocabulary handling."""

import json

import pytest

from reportgen.errors import ReportgenError
from reportgen.tokenizer import CharTokenizer


def test_vocab_is_pad_then_sorted_characters_and_round_trips(tmp_path):
    tok = CharTokenizer.from_text(["hello world"])
    assert tok.vocab == ["<PAD>", " ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.detokenize(tok.tokenize("hello")) == "hello"
    tok.save(tmp_path / "tokenizer.json")
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    assert set(data) == {"symbols", "tokens", "vocab", "stoi"}
    assert CharTokenizer.load(tmp_path / "tokenizer.json").vocab == tok.vocab


def test_unknown_characters_are_listed_in_the_error():
    tok = CharTokenizer.from_text(["abc "])
    with pytest.raises(ReportgenError, match=r"my.txt: 2 character\(s\).*'x' 'z'"):
        tok.clean("abxcz", source="my.txt")


def test_drop_and_replace_policies_report_how_many():
    tok = CharTokenizer.from_text(["abc "])
    assert tok.clean("abxcz", policy="drop") == ("abc", 2)
    assert tok.clean("abxcz", policy="replace") == ("ab c ", 2)


def test_hebrew_characters_round_trip():
    tok = CharTokenizer.from_text(["שלום עולם"])
    assert tok.detokenize(tok.tokenize("עולם שלום")) == "עולם שלום"
