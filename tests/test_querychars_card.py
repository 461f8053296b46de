"""Attention by query character recomputed by hand from attention matrices; the model card computed from a saved
checkpoint (parameters counted independently, training sequences only where recorded)."""

from __future__ import annotations

import numpy as np
import torch

from reportgen.checkpoint import load_checkpoint, save_checkpoint
from reportgen.modelcard import model_card, residuals_how, script_of
from reportgen.model import TransformerLM
from reportgen.querychars import OFFSET_BINS, accumulate, tables
from reportgen.tokenizer import CharTokenizer


def test_query_char_table_by_hand():
    rng = np.random.default_rng(5)
    B, L, H, T, V, C, skip = 3, 2, 2, 24, 6, 4, 3
    vocab = ["<PAD>", "a", "b", " ", "c", "."]
    acc = None
    batches = []
    for _ in range(2):
        raw = rng.random((B, L, H, T, T)) ** 4 * np.tril(np.ones((T, T)))
        attn = raw / raw.sum(-1, keepdims=True)
        ids = rng.choice([1, 1, 1, 2, 3, 3, 4, 5], size=(B, T))
        codes = np.array([0, 0, 1, 2, 1, 3])[ids]  # class per character
        batches.append((attn, ids, codes))
        acc = accumulate(acc, torch.tensor(attn, dtype=torch.float32), torch.tensor(ids), torch.tensor(codes), V, C,
                         skip)
    qc = tables(acc, vocab, ["w", "x", "y", "z"], [0, 1, 2, 3])
    counts = {v: sum(int((ids[:, skip:] == v).sum()) for _, ids, _ in batches) for v in range(V)}
    order = sorted((v for v in range(V) if counts[v]), key=lambda v: (-counts[v], v))
    assert qc[0][0].chars == [vocab[v] for v in order] and qc[0][0].counts == [counts[v] for v in order]
    for layer in range(L):
        for head in range(H):
            for r, v in enumerate(order):
                off, cls = np.zeros(len(OFFSET_BINS)), np.zeros(C)
                for attn, ids, codes in batches:
                    for b in range(B):
                        for i in range(skip, T):
                            if ids[b, i] != v:
                                continue
                            for j in range(i + 1):
                                w = attn[b, layer, head, i, j]
                                k = next(n for n, (lo, hi) in enumerate(OFFSET_BINS)
                                         if lo <= i - j and (hi is None or i - j <= hi))
                                off[k] += w
                                cls[codes[b, j]] += w
                got = qc[layer][head]
                np.testing.assert_allclose(got.by_offset[r], off / counts[v], rtol=1e-5, atol=1e-7)
                np.testing.assert_allclose(got.by_class[r], cls / counts[v], rtol=1e-5, atol=1e-7)
                assert abs(sum(got.by_offset[r]) - 1) < 1e-5 and abs(sum(got.by_class[r]) - 1) < 1e-5


def _model(vocab_size: int) -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(2, 2, 16, 12, vocab_size, 32, with_residuals=True).eval()


def test_model_card_from_a_checkpoint(tmp_path):
    tok = CharTokenizer.from_text(["Hello there. Who?"])
    model = _model(tok.vocab_size())
    corpus = {"name": "x", "language": "en"}
    save_checkpoint(tmp_path / "a.pt", model, tok, step=40, train_loss=1.0, heldout_bits_per_char=2.0,
                    corpus=corpus, seed=0, history=[], batch_size=8)
    save_checkpoint(tmp_path / "b.pt", model, tok, step=40, train_loss=1.0, heldout_bits_per_char=2.0,
                    corpus=corpus, seed=0, history=[])
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    card = model_card(a.model, a.tokenizer.vocab, a.metadata, None)
    V, E, M, T = tok.vocab_size(), 16, 32, 12  # counted by hand: embeddings; per layer q/k/v with biases, output
    per_layer = (3 * E * E + 3 * E) + (E * E + E) + (E * M + M) + (M * E + E) + 4 * E  # projection, MLP, 2 norms;
    assert card.parameters == V * E + T * E + 2 * per_layer + 2 * E + (E * V + V)  # final norm and unembedding
    assert (card.n_layers, card.n_heads, card.embed_size, card.context, card.mlp_hidden_size) == (2, 2, 16, 12, 32)
    assert card.residuals and card.residuals_how == "recorded in the checkpoint"
    assert (card.steps, card.batch_size, card.sequences) == (40, 8, 320) and "= 320 sequences" in card.training
    assert card.vocab_size == V and card.script == "Latin (upper and lower case)"
    other = model_card(b.model, b.tokenizer.vocab, b.metadata, None)
    assert other.sequences is None and other.training == "40 steps; sequences per step not recorded"


def test_how_residuals_were_decided_and_scripts():
    assert "props" in residuals_how({"format": "course", "recorded": ["with_residuals"]}, None)
    assert "command line" in residuals_how({"format": "course", "recorded": []}, False)
    inferred = {"chosen": False, "bits_per_char": 2.1, "other_setting_bits_per_char": 3.4}
    assert residuals_how({"format": "course", "with_residuals_inferred": inferred}, None) == \
        "inferred: this setting fits the text better (2.100 vs 3.400 bits/char with the other)"
    assert script_of(["<PAD>", " ", "א", "ב"]) == "Hebrew (no case)"
    assert script_of(["<PAD>", " ", "a", "b"]) == "Latin (lower case only)"
