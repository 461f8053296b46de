"""Role labels survive the simpler explanation. Each head below has planted attention (injected through
the capture interface, on English-like text) that a naive detector would mislabel; the statistics must
give it its true role and not the tempting one. Also: a rare-class head is found, uniform and sharp
random heads get no role, and the label-swap test is calibrated under a true null."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reportgen.capture import score_windows
from reportgen.catalogue import roles_of
from reportgen.stats import add_q_values, block_length, split_stats

from .planted import planted_text
from .test_stats import english_like_windows


def _text_windows(W: int, T: int, seed: int = 0):
    """English-like text (words, commas, full stops, line breaks) cut into W windows of T."""
    from reportgen.classes import CharClasses
    from reportgen.tokenizer import CharTokenizer

    text = planted_text(W * T + T, seed)
    tok = CharTokenizer.from_text([text])
    ids = torch.tensor(tok.tokenize(text[: W * T])).view(W, T)
    return ids, CharClasses.for_vocab(tok.vocab, "en"), tok.vocab_size(), tok


def _targets(ids: torch.Tensor, boundary_ids: list[int]):
    """Per window and query: most recent boundary strictly before i, and start of the current word (-1 if none)."""
    W, T = ids.shape
    boundary = torch.isin(ids, torch.tensor(boundary_ids))
    pos = torch.arange(T).expand(W, T)
    last = torch.where(boundary, pos, torch.full_like(pos, -1)).cummax(1).values
    recent = torch.cat([torch.full((W, 1), -1), last[:, :-1]], 1)
    start = torch.where(boundary, pos + 1, torch.zeros_like(pos)).cummax(1).values
    word = torch.where(boundary, torch.full_like(pos, -1), start)
    return boundary, recent, word


def confusion_heads(ids, tok, seed=0) -> dict[str, torch.Tensor]:
    """Attention (W, T, S) per planted head."""
    W, T = ids.shape
    i = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    causal = (j <= i).float().expand(W, T, T)
    uniform = causal / causal.sum(-1, keepdim=True)
    space, newline = tok.stoi[" "], tok.stoi["\n"]
    punct = torch.isin(ids, torch.tensor([tok.stoi[c] for c in ",." if c in tok.stoi]))
    boundary, recent, word = _targets(ids, [space, newline])

    def one_hot_at(target):  # attention on one key per query, uniform where there is none
        a = torch.nn.functional.one_hot(target.clamp_min(0), T).float()
        return torch.where((target >= 0).unsqueeze(-1), a, uniform)

    same = ((ids.unsqueeze(2) == ids.unsqueeze(1)).float() + 0.5 * torch.eye(T)) * causal  # itself a bit more
    word_initial = torch.cat([torch.zeros(W, 1, dtype=torch.bool), boundary[:, :-1]], 1) & ~boundary
    at_space = word_initial.float().unsqueeze(1) * causal + 1e-6 * causal  # word-initial keys
    prev = torch.nn.functional.one_hot((torch.arange(T) - 1).clamp_min(0), T).float().expand(W, T, T)
    g = torch.Generator().manual_seed(seed)
    heads = {
        "same_character": same,
        "recent_space": one_hot_at(recent),
        "word_start": one_hot_at(word),
        "space_query_word_initial": torch.where(boundary.unsqueeze(-1), at_space, prev),
        "all_spaces": (ids == space).float().unsqueeze(1) * causal + 1e-3 * causal,
        "rare_punctuation": causal * (1 + 3 * punct.float().unsqueeze(1)),
        "uniform": uniform,
        "sharp_random": torch.exp(6 * torch.randn(W, T, T, generator=g)) * causal,
    }
    return {k: v / v.sum(-1, keepdim=True) for k, v in heads.items()}


@pytest.fixture(scope="module")
def roles():
    W, T = 96, 64
    ids, classes, V, tok = _text_windows(W, T)
    heads = confusion_heads(ids, tok)
    attn = torch.stack(list(heads.values()), dim=1).unsqueeze(1)  # (W, L=1, H, T, S)
    batches = ((attn[lo:lo + 32], ids[lo:lo + 32]) for lo in range(0, W, 32))
    scores = score_windows(batches, ids, classes, V, np.arange(W) * T)
    s = split_stats(scores, {}, np.random.default_rng(0), block=block_length(W))
    add_q_values([s])
    return {name: [d.name for d in roles_of(s, 0, h)] for h, name in enumerate(heads)}


def test_identity_driven_self_attention_is_same_character_not_positional(roles):
    assert "duplicate" in roles["same_character"]
    assert not any(r.startswith("argmax_") for r in roles["same_character"]), roles["same_character"]


def test_a_most_recent_space_head_is_a_word_boundary_head_not_same_character_or_space(roles):
    assert "recent_space" in roles["recent_space"]
    assert "duplicate" not in roles["recent_space"] and "class_space" not in roles["recent_space"], roles


def test_a_word_start_head_is_not_a_consonant_head(roles):
    assert "word_start" in roles["word_start"]
    assert not any(r.startswith("class_") for r in roles["word_start"]), roles["word_start"]


def test_a_space_query_to_word_initial_head_is_not_induction(roles):
    assert "induction" not in roles["space_query_word_initial"], roles["space_query_word_initial"]


def test_an_all_spaces_head_is_a_space_head(roles):
    assert roles["all_spaces"][0] == "class_space", roles["all_spaces"]


def test_a_rare_class_head_is_found(roles):
    assert "class_punctuation" in roles["rare_punctuation"], roles["rare_punctuation"]


def test_uniform_and_sharp_random_heads_get_no_role(roles):
    assert roles["uniform"] == [] and roles["sharp_random"] == [], (roles["uniform"], roles["sharp_random"])


def test_label_swap_p_values_are_calibrated_under_a_true_null():
    """Content-independent attention on random text: the label-swap null is true for every detector."""
    W, T = 128, 48
    rates = []
    for seed in range(6):
        ids, classes, V = english_like_windows(W, T, seed)
        g = torch.Generator().manual_seed(seed)
        pattern = torch.exp(2 * torch.randn(1, 6, T, T, generator=g))  # six heads, fixed positional patterns
        noise = torch.exp(0.5 * torch.randn(W, 6, T, T, generator=g))  # plus window-level noise
        causal = (torch.arange(T).view(T, 1) >= torch.arange(T)).float()
        attn = (pattern * noise * causal)
        attn = (attn / attn.sum(-1, keepdim=True)).unsqueeze(1)  # (W, 1, 6, T, S)
        batches = ((attn[lo:lo + 32], ids[lo:lo + 32]) for lo in range(0, W, 32))
        s = split_stats(score_windows(batches, ids, classes, V, np.arange(W) * T), {}, np.random.default_rng(seed))
        p = np.concatenate([f["p_swap"].ravel() for f in s.values.values() if "p_swap" in f])
        p = p[np.isfinite(p)]
        assert p.size > 50
        rates.append((p < 0.05).mean())
    assert 0.02 <= float(np.mean(rates)) <= 0.08, rates
