"""Per-window profiles behind class and word-structure roles, computed with the detectors in one pass.

`profile_stats` gives each window's attention per key character (the class-wide gate and the per-character
profile of class roles), the word-start and last-boundary masses by how far back the target is (distance
profiles), the mass on the nearest key of each class, and the word-structure null of the class detectors.
Shapes as in `detectors`; V vocabulary size, K = PROFILE_BINS offsets.
"""

from __future__ import annotations

import torch

from .classes import CLASS_NAMES
from .keysets import CLASS_C, SKIP, boundary_targets, class_onehot, keys_product, last_before, word_initial


def structure_shares(members: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The parts of the word-structure null that depend on labels only, for key sets `members` (B, T, K) (0/1
    floats): whether the most recent boundary belongs to each set (B, T, K; 0 where there is none) and each set's
    share of the keys that are neither word-initial nor that boundary (B, T, K). One formula for the class
    detectors (`structure_null`) and your hypotheses (`hypotheses._structure`)."""
    T, K = codes.shape[1], members.shape[-1]
    recent, _ = boundary_targets(codes)
    initial = word_initial(codes).float()  # (B, T)
    has_recent = (recent >= 0).float()
    recent_in = members.gather(1, recent.clamp_min(0).unsqueeze(-1).expand(-1, T, K)) * has_recent.unsqueeze(-1)
    others = (torch.arange(1, T + 1) - initial.cumsum(1) - has_recent).clamp_min(1).unsqueeze(-1)  # (B, T, 1)
    return recent_in, ((members * (1 - initial).unsqueeze(-1)).cumsum(1) - recent_in) / others


def structure_null(initial_cls: torch.Tensor, initial_mass: torch.Tensor, recent_mass: torch.Tensor,
                   codes: torch.Tensor) -> torch.Tensor:
    """Class masses (B, L, H, C), query means, explained by word structure: the head's own mass on word-initial
    characters (of the current word and of every earlier one: `initial_cls` (B, L, H, C), per query
    `initial_mass` (B, L, H, T)) and on the most recent boundary (`recent_mass` (B, L, H, T)), counted by those
    keys' classes, plus the rest of its mass spread uniformly over the other keys. A head that reads word starts
    (mostly consonants in English), the previous word's first letter or the last space is not a consonant or
    space head unless it exceeds this."""
    T = codes.shape[1]
    recent_cls, share = structure_shares(class_onehot(codes), codes)  # (B, T, C) each
    rest = 1 - initial_mass - recent_mass  # (B, L, H, T)
    per_query = (torch.einsum("blhi,bic->blhc", recent_mass[..., SKIP:], recent_cls[:, SKIP:])
                 + torch.einsum("blhi,bic->blhc", rest[..., SKIP:], share[:, SKIP:]))
    return initial_cls + per_query / (T - SKIP)


PROFILE_BINS = 6  # distance profiles: targets 0, 1, 2, 3, 4 and 5 or more characters back


def binned(values: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums (B, L, H, PROFILE_BINS) of per-query values (B, L, H, T) by their target's offset (B, T) (-1: none;
    the last bin takes every offset from PROFILE_BINS - 1 on), over valid queries, and the query counts (B, K)."""
    B, L, H, T = values.shape
    K = PROFILE_BINS
    valid = offset >= 0
    valid[:, :SKIP] = False
    bins = torch.where(valid, offset.clamp(0, K - 1), torch.full_like(offset, K))  # bin K: not counted
    sums = values.new_zeros(B, L, H, K + 1).scatter_add_(-1, bins.view(B, 1, 1, T).expand(B, L, H, T), values)
    return sums[..., :K], torch.nn.functional.one_hot(bins, K + 1)[..., :K].sum(1).float()


def profile_stats(attn: torch.Tensor, ids: torch.Tensor, codes: torch.Tensor, vocab_size: int,
                  content: dict[str, torch.Tensor], initial_mass: torch.Tensor | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per-window profiles behind class and word-structure roles, and the word-structure null of the class
    detectors ({class_<name>: (B, L, H)}).

    Profiles: `char_mass` (B, L, H, V) query-mean attention per key character (one pass over the attention:
    the mean row of valid queries, times the keys' one-hots); `ws_sum`/`ws_count` and `rs_sum`/`rs_count`:
    `binned` word-start and last-boundary masses by the target's offset (0 = a word-initial query on itself);
    `near_sum`/`near_count` (B, L, H, C, K) / (B, C, K): mass on the nearest key of each class strictly before
    the query, by its offset. `initial_mass` (B, L, H, T): the attention on word-initial keys, if computed."""
    B, L, H, T, S = attn.shape
    colmean = attn[..., SKIP:, :].sum(-2) / (T - SKIP)  # (B, L, H, S): mean attention of valid queries per key
    chars = torch.nn.functional.one_hot(ids, vocab_size).float()  # (B, S, V)
    initial = word_initial(codes)  # (B, S)
    onehot = class_onehot(codes)
    initial_cls = torch.einsum("blhs,bsc->blhc", colmean, onehot * initial.unsqueeze(-1).float())
    if initial_mass is None:  # per query, the mass on word-initial keys (B, L, H, T)
        initial_mass = keys_product(attn, initial.float().unsqueeze(-1)).squeeze(-1)
    null = structure_null(initial_cls, initial_mass, content["recent_space"], codes)
    recent, word = boundary_targets(codes)
    pos = torch.arange(T)
    out = {"char_mass": torch.einsum("blhs,bsv->blhv", colmean, chars)}
    for name, target in (("ws", word), ("rs", recent)):
        out[f"{name}_sum"], out[f"{name}_count"] = binned(content["word_start" if name == "ws" else "recent_space"],
                                                          torch.where(target >= 0, pos - target, -1))
    nearest = last_before(onehot.bool())  # (B, T, C)
    near = attn.gather(-1, nearest.clamp_min(0).view(B, 1, 1, T, CLASS_C).expand(B, L, H, T, CLASS_C))
    near = near * (nearest >= 0).view(B, 1, 1, T, CLASS_C)
    parts = [binned(near[..., c], torch.where(nearest[..., c] >= 0, pos - nearest[..., c], -1))
             for c in range(CLASS_C)]
    out["near_sum"] = torch.stack([p[0] for p in parts], -2)  # (B, L, H, C, K)
    out["near_count"] = torch.stack([p[1] for p in parts], -2)  # (B, C, K)
    return out, {f"class_{name}": null[..., c] for c, name in enumerate(CLASS_NAMES)}


def char_chance(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Per window, each character's mass (B, V) under uniform causal attention over valid queries (labels only)."""
    T = ids.shape[1]
    counts = torch.nn.functional.one_hot(ids, vocab_size).float().cumsum(1)  # (B, T, V)
    return (counts[:, SKIP:] / torch.arange(SKIP + 1, T + 1, dtype=torch.float32).view(1, -1, 1)).mean(1)
