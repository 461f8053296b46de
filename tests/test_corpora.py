"""Default corpora: parallel books, consonantal Hebrew, whole-book held-out split; user text."""

import pytest

from reportgen.corpora import HELDOUT_BOOKS, bible_split, consonantal, text_split
from reportgen.errors import ReportgenError


def test_consonantal_strips_niqqud_and_cantillation_but_keeps_maqaf_and_sof_pasuq():
    assert consonantal("בְּרֵאשִׁ֖ית בָּרָ֣א") == "בראשית ברא"
    assert consonantal("עַל־פְּנֵ֣י הָאָֽרֶץ׃") == "על־פני הארץ׃"


@pytest.mark.parametrize("language", ["en", "he"])
def test_default_split_holds_out_the_same_whole_books(language):
    split = bible_split(language)
    assert split.heldout_books == HELDOUT_BOOKS
    assert not set(split.train_books) & set(HELDOUT_BOOKS)
    share = len(split.heldout) / (len(split.train) + len(split.heldout))
    assert share >= 0.05
    assert len(split.train_books) + len(HELDOUT_BOOKS) == 39


def test_hebrew_corpus_has_no_marks_and_english_starts_with_genesis():
    he, en = bible_split("he"), bible_split("en")
    assert en.train.startswith("In the beginning God created the heaven and the earth.\n")
    assert he.train.startswith("בראשית ברא אלהים את השמים ואת הארץ׃\n")
    assert not any("\u0591" <= c <= "\u05c7" and c not in "\u05be\u05c0\u05c3\u05c6" for c in he.train[:100000])


def test_user_text_is_split_at_a_line_and_errors_name_the_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    split = text_split(path, "en")
    assert split.heldout.startswith("line ") and split.train.endswith("\n")
    assert split.train + split.heldout == path.read_text()
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(ReportgenError, match="empty.txt: text is empty"):
        text_split(empty, "en")
    with pytest.raises(ReportgenError, match="nope.txt: text file not found"):
        text_split(tmp_path / "nope.txt", "en")
