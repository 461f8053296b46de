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
