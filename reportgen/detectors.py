"""Per-window detector statistics from attention matrices.

Every detector gives, per window and head, an observed value (the mean over valid queries
i >= SKIP of a per-query value) and its chance value under uniform causal attention (the mean
of |target set| / (i + 1)). Content detectors also get a label-swap null (the window's
attention scored against the characters of other windows in the batch) and, after the pass,
a positional null (the head's own average attention pattern scored against this window's
characters; see `nulls.positional_null`).

Shapes: B windows in a batch, L layers, H heads, T query positions, S key positions (S == T),
C character classes, K offsets. Row = query, column = key: A[..., i, j] is the attention
from query i to key j <= i; offset k = i - j (k = 1 is the previous character).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .catalogue import MAX_OFFSET, NEAR
from .classes import CLASS_NAMES
from .keysets import CLASS_C, SKIP, as_float, boundary_targets, class_onehot, is_boundary, word_initial
from .keysets import keys_product as _keys_product
from .keysets import layer_major as _layer_major
from .profiles import profile_stats

# Where entropy reads a zero weight: the smallest normal float32. A subnormal one (2 ** -149) cost ~10x per
# logarithm (~12 % of a block's weights are causal zeros; the row entropy took 2x as long), and under
# flush-to-zero (a library built with -ffast-math can set it) it read as 0, and 0 ln 0 as NaN.
_TINY = float(torch.finfo(torch.float32).tiny)

# Detector families: how each is tested and what kind of role it can support.
OFFSET_DETECTORS = tuple(f"offset_{k}" for k in range(MAX_OFFSET + 1))
ARGMAX_DETECTORS = tuple(f"argmax_{k}" for k in range(MAX_OFFSET + 1))
CLASS_DETECTORS = tuple(f"class_{c}" for c in CLASS_NAMES)
TARGET_DETECTORS = ("recent_space", "word_start", "duplicate", "induction", "punct_near", "punct_far")
CONTENT_DETECTORS = CLASS_DETECTORS + TARGET_DETECTORS
SHAPE_DETECTORS = ("sink", "entropy", "distance", "confidence")


@dataclass(frozen=True)
class BatchStats:
    """Detector values for one batch: name -> (B, L, H) tensors for observed, chance and swap nulls."""

    observed: dict[str, torch.Tensor]
    chance: dict[str, torch.Tensor]
    swap: dict[str, torch.Tensor]
    class_matrix: torch.Tensor  # (L, H, C, C) summed mass query-class x key-class over valid queries
    class_count: torch.Tensor  # (C,) valid queries per query class
    swap_partner: torch.Tensor  # (B,) the window whose characters each window's label-swap null used
    structure: dict[str, torch.Tensor]  # class detectors: (B, L, H) the word-structure null
    profiles: dict[str, torch.Tensor] = field(default_factory=dict)  # per-window profiles (`profile_stats`)


def swap_partners(B: int) -> torch.Tensor:
    """Label-swap partners (B,): window b and b + B//2 swap characters with each other (non-adjacent,
    mutual pairs, so the swap test can use independent pairs); with odd B the last window borrows
    window 0's characters one way."""
    half = B // 2
    perm = torch.zeros(B, dtype=torch.long)
    perm[:half] = torch.arange(half, 2 * half)
    perm[half:2 * half] = torch.arange(half)
    return perm


def query_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over valid queries (last dim, i >= SKIP): (..., T) -> (...)."""
    return x[..., SKIP:].mean(-1)


def _features(ids: torch.Tensor, codes: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Key features (B, S, F): class one-hot (C), char one-hot (V), previous-char one-hot (V)."""
    B, S = ids.shape
    chars = torch.nn.functional.one_hot(ids, vocab_size).float()  # (B, S, V)
    prev = torch.cat([torch.zeros(B, 1, vocab_size), chars[:, :-1]], dim=1)  # (B, S, V): x_{j-1}
    return torch.cat([class_onehot(codes), chars, prev], dim=-1)


def _char_masks(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-window key masks (B, T, S) from the labels `ids`: x_j == x_i (same character; attention is zero
    above the diagonal) and x_{j-1} == x_i (the key follows an earlier copy of the query character)."""
    B = ids.shape[0]
    prev_ids = torch.cat([torch.full((B, 1), -1, dtype=ids.dtype), ids[:, :-1]], dim=1)  # x_{j-1}
    return ids.unsqueeze(2) == ids.unsqueeze(1), prev_ids.unsqueeze(1) == ids.unsqueeze(2)


def _row_masses(attn: torch.Tensor, masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per query, attention on the keys each per-window mask (B, T, S) selects -> each (B, L, H, T).
    One permuted copy of the attention and one batched product for every mask together, block by block over the
    causal keys (`_causal_blocks`; rows below SKIP in one block of their own): the same sums bit for bit (tested
    on both shipped models)."""
    B, L, H, T = attn.shape[:4]
    M = len(masks)
    parts = []
    for lo, hi in [(0, SKIP), *_causal_blocks(T)]:  # each block's causal keys only: 40 % less to copy at T = 128
        t = hi - lo
        rows = attn[..., lo:hi, :hi].permute(0, 3, 1, 2, 4).reshape(B * t, L * H, hi)  # (B*t, L*H, hi)
        cols = torch.empty(B, t, hi, M, dtype=attn.dtype, device=attn.device)
        for m, mask in enumerate(masks):
            cols[..., m] = as_float(mask[:, lo:hi, :hi])
        parts.append(torch.bmm(rows, cols.view(B * t, hi, M)).view(B, t, L, H, M))
    return list(torch.cat(parts, 1).permute(4, 0, 2, 3, 1).unbind(0))  # M of (B, L, H, T)


def _causal_blocks(T: int, block: int = 32) -> list[tuple[int, int]]:
    """Query ranges [lo, hi) covering SKIP..T, each ending at a multiple of `block`: the rows of a block need the
    keys up to hi only (the rest are causal zeros), ~40 % of a context-128 matrix skipped."""
    out, lo = [], SKIP
    while lo < T:
        hi = min(T, (lo // block + 1) * block)
        out.append((lo, hi))
        lo = hi
    return out


def _row_entropy(attn: torch.Tensor) -> torch.Tensor:
    """-sum_j A[i, j] ln A[i, j] for queries i >= SKIP: (B, L, H, T, S) -> (B, L, H, T - SKIP), over each block's
    causal keys only (`_causal_blocks`): the same sums bit for bit as whole rows (tested).

    The logarithm is torch's vectorised one, ~2.5x faster here than `torch.special.entr` (a scalar libm `logf` per
    weight); the two logarithms differ by one unit in the last place for ~0.02 % of weights, so a row entropy
    may differ from `entr`'s in its 7th significant digit (tested to 1e-6 relative). A zero weight is read as the
    smallest normal float (`_TINY`): 0 * ln(tiny) adds nothing, as 0 ln 0 = 0 (a subnormal weight, < 1.2e-38,
    adds < 1e-36 either way); NaN stays NaN."""
    parts = []
    for lo, hi in _causal_blocks(attn.shape[-2]):
        block = attn[..., lo:hi, :hi]
        terms = block.clamp_min(_TINY).log_().mul_(block)  # A ln A, one temporary
        parts.append(terms.sum(-1).neg_())
    return torch.cat(parts, -1)


def _row_max(attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest weight and its key index per query i >= SKIP, (B, L, H, T - SKIP) each, over each block's causal
    keys only: the same values and indices as `max` over whole rows (the skipped keys are zeros after the
    row's positive maximum; tested)."""
    parts = [attn[..., lo:hi, :hi].max(-1) for lo, hi in _causal_blocks(attn.shape[-2])]
    return torch.cat([p.values for p in parts], -1), torch.cat([p.indices for p in parts], -1)


def _far_max(attn: torch.Tensor) -> torch.Tensor:
    """max_{j < i - MAX_OFFSET} A[i, j] per query i >= SKIP -> (B, L, H, T - SKIP); 0 where there is no such key.

    Read block by block (`_causal_blocks`) through a skewed view of each causal (T, T) matrix: row i of a block
    [lo, hi) holds A[i, i - hi + 1 .. i - MAX_OFFSET - 1]; its first keys, j < 0, fall on row i - 1 past its
    diagonal, which are causal zeros (so each block reads only as far back as its last row needs)."""
    *batch, T, S = attn.shape
    parts = []
    for lo, hi in _causal_blocks(T):
        width = hi - MAX_OFFSET - 1
        if width <= 0:
            parts.append(attn.new_zeros(*batch, hi - lo))
            continue
        skewed = attn.as_strided((*batch, hi - lo, width), (*attn.stride()[:-2], S + 1, 1),
                                 attn.storage_offset() + lo * (S + 1) - (hi - 1))
        parts.append(skewed.amax(-1))
    return torch.cat(parts, -1)


def _argmax_offsets(attn: torch.Tensor, diags: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query i >= SKIP: the largest weight (B, L, H, T - SKIP) and, for k = 0..MAX_OFFSET, whether the row's
    first largest key (`max`'s index: ties go to the lowest key) is i - k, as floats (MAX_OFFSET + 1, B, L, H,
    T - SKIP); `diags` are the diagonals (`diagonals`).

    `max` with indices costs ~4x `amax`; the indicators follow from the maximum alone: offset k is the
    argmax when A[i, i - k] is the maximum and no earlier key (k' > k nearby, or any key beyond MAX_OFFSET)
    reaches it. Rows that are not causal softmax rows (a maximum of 0 or NaN) take `max` itself."""
    T, S = attn.shape[-2:]
    if S != T or attn.stride(-1) != 1 or attn.stride(-2) != S:
        return _indicators_from_max(attn)
    far = _far_max(attn)
    near = diags[:MAX_OFFSET + 1, ..., SKIP:].amax(0)  # keys i - MAX_OFFSET .. i
    top = torch.maximum(far, near)  # the row's maximum over its causal keys (a maximum has no rounding)
    if not bool((top > 0).all()):
        return _indicators_from_max(attn)
    hits = diags[:MAX_OFFSET + 1, ..., SKIP:] == top  # (K, B, L, H, T')
    first = torch.empty_like(hits)
    earlier = far == top  # a key before i - MAX_OFFSET ties the maximum
    for k in range(MAX_OFFSET, -1, -1):
        torch.logical_and(hits[k], ~earlier, out=first[k])
        earlier |= hits[k]
    return top, as_float(first)


def _indicators_from_max(attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_argmax_offsets` by `max` with indices (any attention)."""
    top, argmax = _row_max(attn)
    offset = torch.arange(SKIP, attn.shape[-2]) - argmax  # (B, L, H, T')
    return top, as_float(offset == torch.arange(MAX_OFFSET + 1).view(-1, *[1] * offset.dim()))


def diagonals(attn: torch.Tensor, last: int | None = None) -> torch.Tensor:
    """A[i, i - k] for k = 0..`last` (default max(MAX_OFFSET, NEAR)), zero where i < k: (K, B, L, H, T), one tensor."""
    B, L, H, T, _ = attn.shape
    out = attn.new_zeros((max(MAX_OFFSET, NEAR) if last is None else last) + 1, B, L, H, T)
    for k in range(min(len(out), T)):
        out[k, ..., k:] = attn.diagonal(offset=-k, dim1=-2, dim2=-1)
    return out


def _content(attn: torch.Tensor, diags: torch.Tensor, prod: torch.Tensor, ids: torch.Tensor,
             codes: torch.Tensor, same_mass: torch.Tensor, follows_mass: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-query masses (B, L, H, T) of every target-set content detector (the class detectors' are `prod` itself).

    `prod` (B, L, H, T, C) is attention times the key classes of the labels being scored (the window's
    own, or another window's for the label-swap null); ids and codes (B, T) are those labels;
    `same_mass` and `follows_mass` (B, L, H, T) the attention on their `_char_masks`.
    """
    B, L, H, T, S = attn.shape
    out: dict[str, torch.Tensor] = {}
    self_mass = diags[0]  # (B, L, H, T): A[i, i]
    recent, word = boundary_targets(codes)
    for name, target in (("recent_space", recent), ("word_start", word)):
        idx = target.clamp_min(0).view(B, 1, 1, T, 1).expand(B, L, H, T, 1)
        out[name] = attn.gather(-1, idx).squeeze(-1) * (target >= 0).view(B, 1, 1, T)
    boundary = is_boundary(codes)  # (B, T)
    recent_same = boundary & (recent >= 0) & (ids.gather(1, recent.clamp_min(0)) == ids)  # (B, T)
    out["duplicate"] = (same_mass - self_mass
                        - out["recent_space"] * recent_same.view(B, 1, 1, T))  # see nulls.target_masks
    out["induction"] = follows_mass * (~boundary).view(B, 1, 1, T)
    punct = (codes == CLASS_NAMES.index("punctuation")).float()  # (B, T)
    near = torch.zeros_like(self_mass)
    for k in range(1, NEAR + 1):
        shifted = torch.cat([torch.zeros(B, k), punct[:, :-k]], dim=1)  # punct[i - k]
        near = near + diags[k] * shifted.view(B, 1, 1, T)
    out["punct_near"] = near
    out["punct_far"] = prod[..., CLASS_NAMES.index("punctuation")] - near - self_mass * punct.view(B, 1, 1, T)
    return out


def class_query_means(classes: torch.Tensor) -> dict[str, torch.Tensor]:
    """`query_mean` of per-query class masses (..., T, C) for every class detector, in one reduction: the same sums
    as one class at a time (tested), ~7x faster than eight strided ones."""
    by_class = classes[..., SKIP:, :].mean(-2)  # (..., C)
    return {f"class_{name}": by_class[..., c] for c, name in enumerate(CLASS_NAMES)}


def _query_means(values: dict[str, torch.Tensor], classes: torch.Tensor) -> dict[str, torch.Tensor]:
    """`class_query_means` of `classes` (B, L, H, T, C), then `query_mean` of the other `values` (B, L, H, T)."""
    return {**class_query_means(classes), **{name: query_mean(v) for name, v in values.items()}}


def _content_chance(ids: torch.Tensor, codes: torch.Tensor, vocab_size: int) -> dict[str, torch.Tensor]:
    """Per-query chance masses (B, T) under uniform causal attention: |target set| / (i + 1)."""
    B, T = ids.shape
    uniform = 1.0 / torch.arange(1, T + 1, dtype=torch.float32)  # (T,)
    feats = _features(ids, codes, vocab_size).cumsum(1)  # (B, T, F): counts of each feature in [0, i]
    out = {f"class_{name}": feats[..., c] * uniform for c, name in enumerate(CLASS_NAMES)}
    q = ids.unsqueeze(-1)
    recent, word = boundary_targets(codes)
    boundary = is_boundary(codes)
    recent_same = (boundary & (recent >= 0) & (ids.gather(1, recent.clamp_min(0)) == ids)).float()
    out["duplicate"] = (feats[..., CLASS_C:CLASS_C + vocab_size].gather(-1, q).squeeze(-1) - 1 - recent_same) * uniform
    out["induction"] = feats[..., CLASS_C + vocab_size:].gather(-1, q).squeeze(-1) * uniform * (~boundary).float()
    out["recent_space"] = (recent >= 0).float() * uniform
    out["word_start"] = (word >= 0).float() * uniform
    punct = (codes == CLASS_NAMES.index("punctuation")).float()
    before = torch.cat([torch.zeros(B, 1), punct.cumsum(1)[:, :-1]], dim=1)  # punct in [0, i-1]
    behind_near = torch.cat([torch.zeros(B, NEAR + 1), punct.cumsum(1)[:, :-(NEAR + 1)]], dim=1)  # in [0, i-NEAR-1]
    out["punct_near"] = (before - behind_near) * uniform
    out["punct_far"] = behind_near * uniform
    return out


def content_chance(ids: torch.Tensor, codes: torch.Tensor, vocab_size: int) -> dict[str, torch.Tensor]:
    """Chance value (B,) of every content detector per window: labels only, so capture takes it for all windows
    at once after the pass (the same numbers as per batch)."""
    return {name: query_mean(v) for name, v in _content_chance(ids, codes, vocab_size).items()}


def batch_stats(attn: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor, vocab_size: int,
                partner_labels: tuple[torch.Tensor, torch.Tensor] | None = None,
                with_content_chance: bool = True) -> BatchStats:
    """All detectors on one batch of attention (B, L, H, T, S) with ids and class codes (B, T).

    The label-swap null scores each window's attention against another window's characters: by default its
    `swap_partners` in this batch; `partner_labels` (ids, codes) (B, T) gives them explicitly, so a batch can be
    scored in pieces with the pairing of the whole batch (then `swap_partner` in the result is empty). Without
    `with_content_chance` the content detectors have no chance values here (see `content_chance`)."""
    B, L, H, T, S = attn.shape
    if T <= SKIP:
        raise ValueError(f"windows of {T} characters are too short: the first {SKIP} queries are skipped")
    attn = attn.float()
    if attn.is_contiguous():
        attn = attn.view(attn.shape)  # standard strides: a size-1 dim (one layer, one window) may carry any stride,
        # and a matmul on such a tensor takes another path with other roundings
    elif not _layer_major(attn):
        attn = attn.contiguous()  # matmuls on a permuted view are several times slower
    positions = torch.arange(T, dtype=torch.float32)
    chance_row = query_mean(1.0 / (positions + 1))  # scalar: mean of 1/(i+1)
    obs: dict[str, torch.Tensor] = {}
    chance: dict[str, torch.Tensor] = {}

    def put(name, observed, expected):
        obs[name] = observed
        chance[name] = expected.expand(B, L, H)

    # Fixed offsets: mass A[i, i-k] (zero-padded for i < k) and argmax rate.
    diags = diagonals(attn)  # (K, B, L, H, T)
    top, at_offset = _argmax_offsets(attn, diags)  # (B, L, H, T - SKIP), (MAX_OFFSET + 1, B, L, H, T - SKIP)
    offset_mass, argmax_rate = query_mean(diags[:MAX_OFFSET + 1]), at_offset.mean(-1)  # (MAX_OFFSET + 1, B, L, H)
    for k in range(MAX_OFFSET + 1):
        put(f"offset_{k}", offset_mass[k], chance_row)
        put(f"argmax_{k}", argmax_rate[k], chance_row)

    # Content: one matmul of attention with the keys' class one-hots, gathers, and row-wise masks.
    onehot = class_onehot(codes)  # (B, S, C)
    partner = torch.zeros(0, dtype=torch.long)  # pairing given from outside: none of this batch's own
    if partner_labels is None:
        partner = swap_partners(B)
        partner_labels = (ids[partner], codes[partner]) if B > 1 else None
    # The window's own key classes and its label-swap partner's in one product (the same numbers as two)
    # and whether each key starts a word (the word-structure null), in one product (the same numbers as three)
    own = [onehot] if partner_labels is None else [onehot, class_onehot(partner_labels[1])]
    both = _keys_product(attn, torch.cat([*own, word_initial(codes).float().unsqueeze(-1)], -1))  # (.., C or 2C + 1)
    prod, prod_r, initial_mass = both[..., :CLASS_C], both[..., CLASS_C:-1], both[..., -1]
    masses = _row_masses(attn, [*_char_masks(ids), *(_char_masks(partner_labels[0]) if partner_labels else ())])
    content = _content(attn, diags, prod, ids, codes, masses[0], masses[1])
    chances = content_chance(ids, codes, vocab_size) if with_content_chance else {}
    for name, value in _query_means(content, prod).items():
        if with_content_chance:
            put(name, value, chances[name].view(B, 1, 1))
        else:
            obs[name] = value
    profiles, structure = profile_stats(attn, ids, codes, vocab_size, content, initial_mass)
    # Label swap: this window's attention scored against its partner window's characters.
    if partner_labels is not None:
        p_ids, p_codes = partner_labels
        swap = _query_means(_content(attn, diags, prod_r, p_ids, p_codes, masses[2], masses[3]), prod_r)
    else:
        swap = {k: torch.full_like(obs[k], float("nan")) for k in CONTENT_DETECTORS}

    # Shape of the distribution.
    put("sink", query_mean(attn[..., 0]), chance_row)
    entropy = _row_entropy(attn) / (positions[SKIP:] + 1).log()  # (B, L, H, T') normalised: query i has i+1 keys
    put("entropy", entropy.mean(-1), torch.ones(()))
    # sum_j A[i, j] (i - j), (B, L, H, T): a matrix-vector product per row, in the contiguous order (no copy)
    weighted = (attn.transpose(0, 1) @ positions).transpose(0, 1) if _layer_major(attn) else attn @ positions
    distance = positions - weighted
    put("distance", query_mean(distance), query_mean(positions / 2))
    put("confidence", top.mean(-1), chance_row)

    valid = onehot[:, SKIP:]  # (B, T', C) query classes of valid queries
    # summed in float64: a float32 sum over windows and queries differs with the thread count in its 7th digit
    class_matrix = torch.einsum("blhic,biq->lhqc", prod[..., SKIP:, :].double(), valid.double())  # (L, H, Cq, Ck)
    return BatchStats(obs, chance, swap, class_matrix, valid.sum((0, 1)), partner, structure, profiles)
