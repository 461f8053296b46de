"""The positional null and the explicit target masks of the content detectors.

`positional_null` scores each window's characters under a head's mean attention (what a head that attends by
position only, exactly as this head does on average, would get); `target_masks` spells every target set out as a
boolean (B, T, S) mask, the reference the fast paths in `detectors` are tested against. Shapes as in `detectors`.
"""

from __future__ import annotations

import torch

from .catalogue import NEAR
from .classes import CLASS_NAMES
from .detectors import (
    CLASS_DETECTORS,
    TARGET_DETECTORS,
    as_float,
    boundary_targets,
    class_onehot,
    class_query_means,
    is_boundary,
    query_mean,
)

ONE_KEY = ("recent_space", "word_start")  # target sets of one key per query, in `boundary_targets` order


def target_masks(ids: torch.Tensor, codes: torch.Tensor,
                 names: tuple[str, ...] = TARGET_DETECTORS) -> dict[str, torch.Tensor]:
    """Boolean key masks (B, T, S) for the target-set detectors `names`, from ids and class codes (B, T)."""
    B, T = ids.shape
    i = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    causal = j <= i  # (T, S)
    before = j < i
    boundary_query = is_boundary(codes).unsqueeze(2)  # (B, T, 1)
    recent_target, word_target = boundary_targets(codes)  # (B, T) key index, -1 if none
    recent = (j.unsqueeze(0) == recent_target.unsqueeze(2)) & (recent_target.unsqueeze(2) >= 0)  # (B, T, S)
    punct = (codes == CLASS_NAMES.index("punctuation")).unsqueeze(1)  # (B, 1, S)
    offset = i - j
    masks = {
        "recent_space": lambda: recent,
        # the current word's first character (a boundary query has no current word)
        "word_start": lambda: (j.unsqueeze(0) == word_target.unsqueeze(2)) & (word_target.unsqueeze(2) >= 0),
        # At a space, the most recent boundary is an earlier copy too; a head that reads the last boundary
        # explains that mass, so it does not count as same-character attention.
        "duplicate": lambda: (ids.unsqueeze(2) == ids.unsqueeze(1)) & before & ~(recent & boundary_query),
        # At a space, "what followed an earlier space" is a word-initial letter; a head that reads word
        # starts explains that mass, so boundary queries have no induction targets. x_{j-1} == x_i:
        "induction": lambda: ((torch.cat([torch.full((B, 1), -1, dtype=ids.dtype), ids[:, :-1]], dim=1).unsqueeze(1)
                               == ids.unsqueeze(2)) & causal & ~boundary_query),
        "punct_near": lambda: punct & (offset >= 1) & (offset <= NEAR),
        "punct_far": lambda: punct & (offset > NEAR),
    }
    return {name: masks[name]() for name in names}


def positional_null(mean_attn: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Content-detector values (W, L, H) expected from the head's mean attention (L, H, T, S) alone.

    Each window's characters are scored under the head's average pattern (renormalised rows),
    i.e. what a head that attends by position only, exactly as this head does on average, would get.
    """
    W, T = ids.shape
    rows = mean_attn / mean_attn.sum(-1, keepdim=True).clamp_min(1e-12)  # (L, H, T, S)
    out = class_query_means(torch.einsum("lhis,wsc->wlhic", rows, class_onehot(codes)))  # from (W, L, H, T, C)
    # One-key targets (the last boundary, the word's first character): the weight on that key, gathered, laid
    # out query-major as the einsum lays out its sums (W, L, H, T) with strides (LH, H, 1, W LH), so the mean over
    # queries adds the same numbers in the same order: the values the mask product gives, bit for bit (tested).
    by_key = rows.permute(2, 3, 0, 1).reshape(T * T, -1)  # (i * S + j, L * H)
    for name, target in zip(ONE_KEY, boundary_targets(codes)):
        at = (torch.arange(T) * T).view(T, 1) + target.t().clamp_min(0)  # (T, W): row i * S + key
        weight = by_key[at.reshape(-1)].view(T, W, -1) * (target.t() >= 0).unsqueeze(-1)  # (T, W, L * H)
        out[name] = query_mean(weight.permute(1, 2, 0).view(W, *rows.shape[:2], T))
    for name, mask in target_masks(ids, codes, tuple(n for n in TARGET_DETECTORS if n not in ONE_KEY)).items():
        out[name] = query_mean(torch.einsum("lhis,wis->wlhi", rows, as_float(mask)))
    return {name: out[name] for name in (*CLASS_DETECTORS, *TARGET_DETECTORS)}
