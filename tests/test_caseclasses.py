"""Capital letters and sentence starts: offered only with case, key sets by hand, the simpler-explanation null by
hand, and planted heads through the run's statistics (a sentence-start head passes; word-start and capital heads
are explained by the simpler reading)."""

from __future__ import annotations

import numpy as np
import torch

from reportgen.capture import score_windows
from reportgen.caseclasses import CaseClass, blind_null, capitals, case_classes, not_offered
from reportgen.classes import CharClasses
from reportgen.keysets import SKIP
from reportgen.stats import add_q_values, split_stats
from reportgen.tokenizer import CharTokenizer

from .planted import planted_text


def test_offered_only_where_the_vocabulary_has_case():
    en = CharTokenizer.from_text(["And the LORD said, go. Who?"]).vocab
    assert set(capitals(en, "en")) == {"A", "D", "O"}  # L, R, W have no lower-case form in this vocabulary
    lower = CharTokenizer.from_text(["and the lord said, go."]).vocab
    he = CharTokenizer.from_text(["בראשית ברא אלהים."]).vocab
    assert case_classes(lower, "en") == () and case_classes(he, "he") == ()
    assert "lower-cased" in not_offered(lower, "en") and "no upper and lower case" in not_offered(he, "he")
    assert not_offered(en, "en") is None
    assert [c.name for c in case_classes(en, "en")] == ["capital", "sentence_start"]


def test_sentence_starts_by_hand():
    text = 'and so. Then he went! "Who?" she said.\nAnd i. 3 men, Yes'
    tok = CharTokenizer.from_text([text])
    ids = torch.tensor([[tok.stoi[c] for c in text]])
    got = CaseClass("sentence_start", capitals(tok.vocab, "en")).key_positions(ids, None, tok.vocab)[0]
    want = [text.index("Then"), text.index('Who') , text.index("she"), text.index("And")]
    # 'W' follows '! "' (an opening quote), 'she' follows '?"' (closing quote), 'And' follows '.\n'; '3' is no
    # letter, 'Yes' follows a comma, the window's first letter is not counted
    assert torch.nonzero(got).flatten().tolist() == sorted(want)


def test_blind_null_by_hand():
    rng = np.random.default_rng(3)
    B, L, H, T = 2, 1, 2, 14
    raw = rng.random((B, L, H, T, T)) * np.tril(np.ones((T, T)))
    attn = raw / raw.sum(-1, keepdims=True)
    keys = rng.random((B, T)) < 0.3
    coarse = keys | (rng.random((B, T)) < 0.3)
    keys[0, 5] = True  # a key outside the coarse set
    coarse[0, 5] = False
    got = blind_null(torch.tensor(attn, dtype=torch.float32), torch.tensor(keys), torch.tensor(coarse)).numpy()
    want = np.zeros((B, L, H))
    for b in range(B):
        for h in range(H):
            vals = []
            for i in range(SKIP, T):
                total = 0.0
                for group in (coarse[b, :i + 1], ~coarse[b, :i + 1]):
                    n = group.sum()
                    if n:
                        mass = attn[b, 0, h, i, :i + 1][group].sum()
                        total += mass * (keys[b, :i + 1] & group).sum() / n
                vals.append(total)
            want[b, 0, h] = np.mean(vals)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def _planted_heads(windows: torch.Tensor, vocab: list[str]) -> torch.Tensor:
    """Attention (W, 1, 3, T, S): head 0 spread over the sentence starts in view, head 1 over word-initial letters,
    head 2 over capitals (each on position 0 where it has none)."""
    W, T = windows.shape
    lookup = torch.as_tensor(CharClasses.for_vocab(vocab, "en").lookup())
    cc = CaseClass("sentence_start", capitals(vocab, "en"))
    sets = [cc.key_positions(windows, lookup[windows], vocab)] + cc.explanations(windows, lookup[windows], vocab)[:2]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    heads = []
    for keys in sets:
        m = (keys.view(W, 1, T) & causal).float()
        m[..., 0] += (m.sum(-1) == 0).float()
        heads.append(m / m.sum(-1, keepdim=True))
    return torch.stack(heads, 1).unsqueeze(1)


def test_planted_heads_through_the_run_statistics():
    # capitalised sentences ending '.' on their own lines, commas inside, names capitalised mid-sentence; windows of
    # 128 characters (a shipped model's context), so most hold a sentence start, a comma and a name
    text = planted_text(14000).replace(" god", " God").replace(" man", " Man")
    tok = CharTokenizer.from_text([text])
    ids = torch.tensor([tok.stoi[c] for c in text])
    windows = ids[: 96 * 128].view(96, 128)
    attn = _planted_heads(windows, tok.vocab)
    extra = case_classes(tok.vocab, "en")
    s = score_windows(iter([(attn[lo:lo + 32], windows[lo:lo + 32]) for lo in range(0, 96, 32)]), windows,
                      CharClasses.for_vocab(tok.vocab, "en"), tok.vocab_size(), np.arange(96) * 128,
                      hypotheses=extra, vocab=tok.vocab)
    for name in ("capital", "sentence_start"):
        assert all(name in getattr(s, f) for f in ("observed", "chance", "swap", "positional", "structure"))
    stats = split_stats(s, {}, np.random.default_rng(0))
    add_q_values([stats])
    ss = stats.values["sentence_start"]
    assert ss["mean"][0, 0] > 0.7 and ss["q"][0, 0] < 0.05 and ss["gain_ci_low"][0, 0] > 0.05  # the real thing
    # (what the strictest simpler reading leaves: in windows without a comma, reading every letter after punctuation
    # explains it all)
    # a word-start head and a capital head put mass on sentence starts, but no more than their reading explains
    assert ss["mean"][0, 1] > 2 * ss["chance"][0, 1] and ss["gain"][0, 1] < 0.02
    assert ss["mean"][0, 2] > 0.2 and ss["gain"][0, 2] < 0.02
    cap = stats.values["capital"]  # a word-start head is no capital head
    assert cap["mean"][0, 1] > cap["chance"][0, 1] and cap["gain"][0, 1] < 0.02
    assert cap["gain_ci_low"][0, 2] > 0.1  # the capital head is
