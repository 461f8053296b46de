"""Class roles must be class-wide, and word-structure roles are resolved by distance.

Planted attention (injected through the capture interface on English-like text, as in test_confusions): a head
that prefers two consonants and avoids spaces, and a head that reads the previous word's first letter, get no
class role; a genuine vowel head keeps its vowel role (here and in the planted model, tests/planted.py head 2);
the distance profile of a word-start head whose reach ends two characters into the word is the one computed
straight from the text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from reportgen.capture import capture, encode, score_windows
from reportgen.catalogue import roles_of
from reportgen.checkpoint import ModelBundle
from reportgen.classes import CharClasses
from reportgen.classwide import distance_profile, head_profiles
from reportgen.stats import add_q_values, block_length, split_stats

from .planted import planted_model, planted_text
from .test_confusions import _targets, _text_windows

W, T = 96, 64


def _heads(ids, tok) -> dict[str, torch.Tensor]:
    """Attention (W, T, S) per planted head."""
    n, T = ids.shape
    i, j = torch.arange(T).view(T, 1), torch.arange(T).view(1, T)
    causal = (j <= i).float().expand(n, T, T)
    uniform = causal / causal.sum(-1, keepdim=True)
    boundary, recent, word = _targets(ids, [tok.stoi[" "], tok.stoi["\n"]])
    chars = [tok.vocab[k] for k in range(tok.vocab_size())]
    def weight(per_char):  # key weights (W, 1, S) from a character -> weight rule
        w = torch.tensor([per_char(c) for c in chars])
        return w[ids].unsqueeze(1)
    prev_start = torch.full_like(word, -1)  # first character of the previous word: the word start before this one
    for b in range(n):
        starts = [int(s) for s in word[b].unique() if s >= 0]
        for q in range(T):
            if word[b, q] >= 0:
                earlier = [s for s in starts if s < word[b, q]]
                prev_start[b, q] = earlier[-1] if earlier else -1
    onto = lambda target: torch.where((target >= 0).unsqueeze(-1),
                                      torch.nn.functional.one_hot(target.clamp_min(0), T).float(), uniform)
    near_word = onto(torch.where((i.view(1, T) - word <= 2) & (word >= 0), word, -1))  # word start up to 2 in
    heads = {
        "two_consonants": causal * weight(lambda c: 6.0 if c in "ls" else 0.05 if c in " \n" else 1.0),
        "previous_word_initial": onto(prev_start),
        "vowels": causal * weight(lambda c: 4.0 if c in "aeiou" else 1.0),
        "word_start_near": near_word,
    }
    return {k: v / v.sum(-1, keepdim=True) for k, v in heads.items()}, word


@pytest.fixture(scope="module")
def planted():
    ids, classes, V, tok = _text_windows(W, T)
    heads, word = _heads(ids, tok)
    attn = torch.stack(list(heads.values()), dim=1).unsqueeze(1)  # (W, L=1, H, T, S)
    scores = score_windows(((attn[lo:lo + 32], ids[lo:lo + 32]) for lo in range(0, W, 32)), ids, classes, V,
                           np.arange(W) * T)
    s = split_stats(scores, {}, np.random.default_rng(0), block=block_length(W))
    add_q_values([s])
    roles = {name: [d.name for d in roles_of(s, 0, h)] for h, name in enumerate(heads)}
    return roles, scores, s, heads, word, tok


def test_a_head_preferring_two_consonants_and_avoiding_spaces_is_no_consonant_head(planted):
    roles, _, s, heads, _, _ = planted
    h = list(heads).index("two_consonants")
    assert not any(r.startswith("class_") and r != "class_punctuation" for r in roles["two_consonants"]), roles
    f = {k: float(v[0, h]) for k, v in s.values["class_consonant"].items()}
    assert f["gain_ci_low"] >= 0.10  # the mass rule alone would call it a consonant head: the gate stops it
    assert f["members_share"] < 0.5 and f["wide_lift_ci_low"] <= 1.0, f


def test_a_head_reading_the_previous_words_first_letter_gets_no_class_role(planted):
    roles, scores, _, heads, _, _ = planted
    assert not any(r.startswith("class_") for r in roles["previous_word_initial"]), roles["previous_word_initial"]
    h = list(heads).index("previous_word_initial")  # the word-structure null explains its class masses
    for name in ("class_consonant", "class_vowel"):
        assert np.allclose(scores.structure[name][:, 0, h], scores.observed[name][:, 0, h], atol=1e-5)


def test_a_genuine_vowel_head_keeps_its_vowel_role(planted):
    roles, _, s, heads, _, tok = planted
    assert "class_vowel" in roles["vowels"], roles["vowels"]
    profile = head_profiles(planted[1].profiles, tok.vocab, 0, list(heads).index("vowels"), ["class_vowel"],
                            s.values)["char_profile"]
    assert {c for c, _, _ in profile.members} == {"a", "e", "i", "o", "u"}
    assert all(m > c for _, m, c in profile.members) and profile.members_above == profile.members_frequent == 5


def test_the_distance_profile_of_a_word_start_head(planted):
    _, scores, _, heads, word, _ = planted
    h = list(heads).index("word_start_near")
    p = distance_profile(scores.profiles, "word_start", 0, h)
    attn = heads["word_start_near"]  # straight from the text: mass on the word start by the query's offset
    q = torch.arange(T).expand(W, T)
    valid = (word >= 0) & (q >= 8)
    mass = attn.gather(-1, word.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    offset = (q - word).clamp(max=5)
    expected = [float(mass[valid & (offset == d)].mean()) for d in range(6)]
    assert p.offsets == ["0", "1", "2", "3", "4", "5+"]
    assert np.allclose(p.mass, expected, atol=1e-5), (p.mass, expected)
    assert np.allclose(p.mass[:3], 1.0, atol=1e-5) and max(p.mass[3:]) < 0.2
    counts = [int((valid & (offset == d)).sum()) for d in range(6)]
    assert np.allclose(p.queries, np.array(counts) / sum(counts))
    assert abs(sum(p.share) - 1) < 1e-6


def test_the_planted_models_vowel_head_keeps_its_vowel_role():
    from reportgen.tokenizer import CharTokenizer

    text = planted_text(40000)
    tok = CharTokenizer.from_text([text])
    model = planted_model(tok)
    bundle = ModelBundle(model=model, tokenizer=tok, path=Path("planted"), sha256="", language="en")
    classes = CharClasses.for_vocab(tok.vocab, "en")
    scores = capture(bundle, encode(bundle, text, "planted"), classes, n_samples=0)
    s = split_stats(scores, {}, np.random.default_rng(0))
    add_q_values([s])
    assert "class_vowel" in [d.name for d in roles_of(s, 0, 2)]
    assert "class_space" in [d.name for d in roles_of(s, 0, 1)]  # one character: no class-wide gate
