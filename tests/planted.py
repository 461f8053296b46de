"""A model with hand-set attention: one analysis of it yields known, replicated findings.

One layer, four heads, context 32. Embeddings put a one-hot position in dimensions 0..31 and a
one-hot character in 32..; the first LayerNorm keeps that structure. Query/key weights are set so
that head 0 attends to the previous character, head 1 to spaces, head 2 to vowels; head 3 has zero
queries and keys (uniform attention, no role). Head 2's values are zero, so the model cannot rely on
it. Other values, projection, MLP and unembedding keep their seeded random initialisation, so the
model is a (bad) language model whose heads can be ablated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from reportgen.checkpoint import save_checkpoint
from reportgen.model import TransformerLM
from reportgen.tokenizer import CharTokenizer

CONTEXT = 32
HEADS = 4
EMBED = 128
SILENT = 2  # the head whose value weights are zero
PLANTED = {  # head -> (detector, role) the analysis must find and replicate
    0: ("offset_1", "previous-character head (offset 1)"),
    1: ("class_space", "space head"),
    2: ("class_vowel", "vowel head"),
}
WORDS = ("in the beginning god created heaven and earth light was good day night evening morning "
         "waters under firmament seas dry land grass herb seed fruit tree kind stars great lights rule "
         "over fowl fly open whales living creature cattle creeping thing image likeness man woman").split()


def planted_text(n_chars: int = 24000, seed: int = 0) -> str:
    """Pseudo-scripture: random words, commas, full stops and line breaks (deterministic)."""
    rng = np.random.default_rng(seed)
    out, length = [], 0
    while length < n_chars:
        words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(6, 14)))]
        words[0] = words[0].capitalize()
        if rng.random() < 0.5:
            k = int(rng.integers(1, len(words) - 1))
            words[k] += ","
        line = " ".join(words) + ".\n"
        out.append(line)
        length += len(line)
    return "".join(out)


def planted_model(tok: CharTokenizer, sharpness: float = 2.0) -> TransformerLM:
    """The hand-set model for a tokenizer's vocabulary (see the module docstring)."""
    V = tok.vocab_size()
    assert CONTEXT + V <= EMBED, "vocabulary too large for the planted layout"
    torch.manual_seed(0)
    model = TransformerLM(1, HEADS, EMBED, CONTEXT, V, 4 * EMBED, with_residuals=True).eval()
    hs = EMBED // HEADS
    tokens = {c: i for i, c in enumerate(tok.vocab)}
    vowels = [tokens[c] for c in "aeiouAEIOU" if c in tokens]
    with torch.no_grad():
        model.embed.token_embeddings.weight.zero_()
        model.embed.token_embeddings.weight[:, CONTEXT:CONTEXT + V] = torch.eye(V)
        model.embed.position_embeddings.weight.zero_()
        model.embed.position_embeddings.weight[:, :CONTEXT] = torch.eye(CONTEXT)
        attn = model.layers[0].causal_attention
        for h, kqv in enumerate(attn.kqv_matrices):
            kqv.weight[: 2 * hs].zero_()  # keys and queries (chunks are k, q, v)
            kqv.bias[: 2 * hs].zero_()
        k0, q0 = attn.kqv_matrices[0].weight[:hs], attn.kqv_matrices[0].weight[hs:2 * hs]
        for p in range(CONTEXT):  # key = position p; query at p points at position p - 1
            k0[p, p] = 1.0
            if p > 0:
                q0[p - 1, p] = sharpness
        attn.kqv_matrices[2].weight[2 * hs:].zero_()  # head 2 writes nothing
        attn.kqv_matrices[2].bias[2 * hs:].zero_()
        for h, targets in ((1, [tokens[" "]]), (2, vowels)):  # constant query, key marks the target characters
            kqv = attn.kqv_matrices[h]
            for t in targets:
                kqv.weight[0, CONTEXT + t] = 1.0
            kqv.bias[hs] = 4.0 * sharpness
    return model


def write_planted(folder: Path) -> tuple[Path, Path]:
    """Save the planted checkpoint and its text into `folder`; returns (checkpoint, text file)."""
    text = planted_text()
    tok = CharTokenizer.from_text([text])
    model = planted_model(tok)
    ckpt = folder / "planted.pt"
    save_checkpoint(ckpt, model, tok, step=1, train_loss=5.0, heldout_bits_per_char=5.0,
                    corpus={"name": "planted", "language": "en"}, seed=0, history=[], dtype=torch.float32)
    path = folder / "planted.txt"
    path.write_text(text, encoding="utf-8")
    return ckpt, path


# ---- a two-layer circuit -------------------------------------------------------------------------
CIRCUIT_EMBED = 192
CIRCUIT_EDGES = {("L0H0", "L1H0")}  # the only composition edge: the induction head's keys read L0H0's write
LN_SCALE = 6.5  # a one-hot entry of the circuit's residual after LayerNorm (four unit entries in 192 dims)
CIRCUIT_ROLES = {(0, 0): "offset_1", (1, 0): "probe_random", (1, 1): "class_space"}


def planted_circuit_model(tok: CharTokenizer, sharpness: float = 2.0) -> TransformerLM:
    """Two layers of two heads with hand-set weights and no MLPs (their output weights are zero).

    Residual layout: position one-hot in 0..31, current character in T0 = 32.., previous character (written by
    L0H0) in P0 = 32 + V.., copied character (written by L1H0) in C0 = 32 + 2V... L0H0 attends to the previous
    position and writes that character's identity into P (no logit reads P: it does not copy). L0H1 has zero
    queries, keys and values (uniform, silent, no role). L1H0 is an induction head by K-composition: its query
    is the current character, its key the previous character that L0H0 wrote, so it attends to what followed an
    earlier copy of the current character; it writes that character into C, which the unembedding reads as the
    next-character prediction: it copies. L1H1 attends to spaces and writes nothing."""
    V = tok.vocab_size()
    T0, P0, C0 = CONTEXT, CONTEXT + V, CONTEXT + 2 * V
    assert C0 + V <= CIRCUIT_EMBED, "vocabulary too large for the planted circuit layout"
    torch.manual_seed(0)
    model = TransformerLM(2, 2, CIRCUIT_EMBED, CONTEXT, V, 4 * CIRCUIT_EMBED, with_residuals=True).eval()
    hs = CIRCUIT_EMBED // 2
    eye = torch.eye(V)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        for ln in [model.layer_norm] + [m for b in model.layers for m in (b.layer_norm_1, b.layer_norm_2)]:
            ln.weight.fill_(1.0)
        model.embed.token_embeddings.weight[:, T0:T0 + V] = eye
        model.embed.position_embeddings.weight[:, :CONTEXT] = torch.eye(CONTEXT)
        l0, l1 = model.layers[0].causal_attention, model.layers[1].causal_attention
        k, q, v = (l0.kqv_matrices[0].weight[i * hs:(i + 1) * hs] for i in range(3))
        for p in range(CONTEXT):  # previous-character head: key = position p, the query at p points at p - 1
            k[p, p] = 1.0
            if p > 0:
                q[p - 1, p] = sharpness
        v[:V, T0:T0 + V] = eye * 0.2  # the character it reads ...
        l0.proj.weight[P0:P0 + V, :V] = eye  # ... written into P
        k, q, v = (l1.kqv_matrices[0].weight[i * hs:(i + 1) * hs] for i in range(3))
        q[:V, T0:T0 + V] = eye * 0.6  # query: the current character
        k[:V, P0:P0 + V] = eye  # key: the character before the key position (only L0H0 puts it there)
        v[:V, T0:T0 + V] = eye * 0.2  # the character it reads ...
        l1.proj.weight[C0:C0 + V, :V] = eye  # ... written into C
        space = l1.kqv_matrices[1]
        space.weight[0, T0 + tok.vocab.index(" ")] = 1.0  # key marks spaces; constant query
        space.bias[hs] = 4.0 * sharpness
        # Logits: a bigram model of the planted text read from the current character (LayerNorm scales the
        # one-hot entries to about LN_SCALE), plus a nudge towards the copied character.
        ids = torch.tensor(tok.tokenize(planted_text()))
        pairs = torch.zeros(V, V).index_put_((ids[1:], ids[:-1]), torch.ones(len(ids) - 1), accumulate=True) + 0.1
        model.word_prediction.weight[:, T0:T0 + V] = (pairs / pairs.sum(0)).log() / LN_SCALE  # (next, current)
        model.word_prediction.weight[:, C0:C0 + V] = eye * 0.15
    return model


def write_planted_circuit(folder: Path) -> tuple[Path, Path]:
    """Save the planted circuit checkpoint and its text into `folder`; returns (checkpoint, text file)."""
    text = planted_text()
    tok = CharTokenizer.from_text([text])
    ckpt = folder / "circuit.pt"
    save_checkpoint(ckpt, planted_circuit_model(tok), tok, step=1, train_loss=5.0, heldout_bits_per_char=5.0,
                    corpus={"name": "planted circuit", "language": "en"}, seed=0, history=[], dtype=torch.float32)
    path = folder / "circuit.txt"
    path.write_text(text, encoding="utf-8")
    return ckpt, path
