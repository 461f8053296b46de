"""Methods tables: repeated rows merged (offset_2 … offset_8 as offset_k; identical class rules as one row)."""

from __future__ import annotations

from reportgen.rowgroups import group_rows


def test_numbered_detectors_with_the_same_rule_but_for_their_number_become_one_row():
    rows = [("previous-character head (offset 1)", "offset_1", "mass on i-1 > 0.5 (cf. Clark et al. 2019)"),
            ("current-character head", "offset_0", "mass on i-0 > 0.5, q < 0.05"),
            ("offset-2 head", "offset_2", "mass on i-2 > 0.5, q < 0.05"),
            ("offset-3 head", "offset_3", "mass on i-3 > 0.5, q < 0.05"),
            ("offset-5 head", "offset_5", "mass on i-5 > 0.5, q < 0.05")]
    assert group_rows(rows, 1, (2,)) == [
        rows[0], rows[1],  # another rule; another role (offset_0 is not an "offset-k head")
        ("offset-k head", "offset_k (k = 2, 3, 5)", "mass on i-k > 0.5, q < 0.05")]  # 0.5 and 0.05 untouched


def test_rows_with_identical_rules_are_joined_and_order_is_kept():
    rows = [("vowel head", "class_vowel", "rule A"), ("consonant head", "class_consonant", "rule A"),
            ("space head", "class_space", "rule B"), ("sink head", "sink", "rule A")]
    assert group_rows(rows, 1, (2,)) == [("vowel head, consonant head", "class_vowel, class_consonant", "rule A"),
                                         rows[2], rows[3]]  # only neighbours merge
    detectors = [("argmax_1", "share of queries whose strongest key is 1 back", "positional"),
                 ("argmax_2", "share of queries whose strongest key is 2 back", "positional")]
    assert group_rows(detectors, 0, (1,)) == [("argmax_k (k = 1–2)", "share of queries whose strongest key is k back",
                                               "positional")]
