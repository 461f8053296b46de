"""Attention averaged by query character: what does every 'e' read?

While capture scores the held-out windows, `accumulate` sums, per head and per query character, the attention of
every valid query (i >= SKIP) by how far back its key is (`OFFSET_BINS`) and by the key's character class, and
counts the queries. `tables` turns the sums into means for the `TOP` most frequent query characters (a
`QueryChars` per head, stored in results.json), which the head pages show as a table shaded by value. Float64 sums
in window order: deterministic. Shapes: B windows, L layers, H heads, T queries, S keys, V vocabulary, K offset bins, C classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOP = 12  # query characters shown: the most frequent in the held-out text
OFFSET_BINS = ((0, 0), (1, 1), (2, 2), (3, 3), (4, 7), (8, 15), (16, None))  # offset i - j ranges (inclusive)
OFFSET_LABELS = tuple(f"{a}" if a == b else (f"{a}+" if b is None else f"{a}–{b}") for a, b in OFFSET_BINS)


@dataclass(frozen=True)
class QueryChars:
    """One head's mean attention by query character on held-out text: per character (the `TOP` most frequent
    queries, most frequent first) its mass by offset bin (rows sum to 1) and by key class (rows sum to 1)."""

    chars: list[str]
    counts: list[int]  # valid queries (i >= SKIP) with that character
    offsets: list[str]  # offset bin labels (characters back)
    by_offset: list[list[float]]  # (chars, offsets)
    classes: list[str]  # key class display names (classes some key has)
    by_class: list[list[float]]  # (chars, classes)


def by_offset(attn, skip: int):
    """Each valid query's attention mass in each offset bin, (B, L, H, T', K), from attention (B, L, H, T, S): the
    diagonals A[i, i - k] summed over each bin's offsets, the open last bin as the row's mass minus the others'."""
    import torch

    from .detectors import diagonals

    diags = diagonals(attn, max(hi for _, hi in OFFSET_BINS if hi is not None))[..., skip:]  # (D, B, L, H, T')
    return torch.stack([diags[lo:hi + 1].sum(0) if hi is not None else attn[..., skip:, :].sum(-1) - diags[:lo].sum(0)
                        for lo, hi in OFFSET_BINS], -1)


def accumulate(acc: dict | None, attn, ids, codes, vocab_size: int, n_classes: int, skip: int) -> dict:
    """Add one batch's sums to `acc` (None to start): 'offset' (L, H, V, K), 'cls' (L, H, V, C) and 'count' (V,),
    float64 numpy, from attention (B, L, H, T, S), ids and class codes (B, T). By key class, one matrix product
    (`keysets.keys_product`, the detectors' own); by offset, the diagonals (`by_offset`): one pass over the
    attention each, not a product with a (T, S, K) mask."""
    import torch

    from .keysets import keys_product

    q = torch.nn.functional.one_hot(ids[:, skip:], vocab_size).double()  # (B, T', V) query characters
    offsets = by_offset(attn.float(), skip)  # (B, L, H, T', K)
    by_cls = keys_product(attn.float(), torch.nn.functional.one_hot(codes, n_classes).float())[..., skip:, :]
    new = {"offset": torch.einsum("blhtk,btv->lhvk", offsets.double(), q).numpy(),
           "cls": torch.einsum("blhtc,btv->lhvc", by_cls.double(), q).numpy(), "count": q.sum((0, 1)).numpy()}
    return new if acc is None else {k: acc[k] + new[k] for k in acc}


def tables(acc: dict, vocab: list[str], class_labels: list[str], present: list[int]) -> list[list[QueryChars]]:
    """Per layer and head, the `QueryChars` of the `TOP` most frequent query characters (ties: vocabulary order);
    `present`: the class codes shown (those some key has), `class_labels` their display names."""
    count = acc["count"]
    order = [v for v in np.argsort(-count, kind="stable") if count[v] > 0 and len(vocab[v]) == 1][:TOP]
    L, H = acc["offset"].shape[:2]
    n = count[order][:, None]
    return [[QueryChars([vocab[v] for v in order], [int(c) for c in count[order]], list(OFFSET_LABELS),
                        (acc["offset"][l, h][order] / n).tolist(), list(class_labels),
                        (acc["cls"][l, h][order][:, present] / n).tolist()) for h in range(H)] for l in range(L)]
