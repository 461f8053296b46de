"""The class-wide gate of letter-class roles and the profiles reported behind class and word-structure roles.

From a split's per-window profiles (`HeadScores.profiles`, see `profiles.profile_stats`): each key character's
attention mass and its mass under uniform causal attention give, per letter class and head, the lift of the
class within letters with and without its most preferred members, and how many of its frequent members the head
prefers (the fields the catalogue's class-wide rule reads); for result heads, the typed per-character and
distance profiles. Shapes: W windows, K = L * H heads, V vocabulary, C classes, B = PROFILE_BINS offsets.
"""

from __future__ import annotations

import numpy as np

from .catalogue import LETTER_CLASSES, WIDE_DROP, WIDE_FREQUENT
from .classes import CLASS_NAMES
from .evidence import CharProfile, DistanceProfile

OFFSETS = ("0", "1", "2", "3", "4", "5+")  # distance-profile bins (`profiles.PROFILE_BINS`)


def _reference(cls: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Keys (V,) a class is compared within: the letters, or every key when the class holds every letter."""
    letters = np.isin(cls, [CLASS_NAMES.index(c) for c in LETTER_CLASSES])
    return letters if (letters & ~member).any() else np.ones_like(member)


def class_wide_fields(profiles: dict[str, np.ndarray], counts: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """class detector -> gate fields (K,) for every letter class present, from per-window `char_mass` (W, L, H, V)
    and `char_chance` (W, V), with bootstrap resample counts (R, W):

    letter_lift: the class's share of the head's mass within letters over its share by chance (ratio of sums);
    wide_lift, wide_lift_ci_low: the same without the class's WIDE_DROP members with the most mass above their
    chance (at least one kept), and its lower 95% bootstrap bound; members_above of members_frequent (members
    >= WIDE_FREQUENT of keys by chance, all if none is) above their own within-letter chance; members_share."""
    mass, chance, cls = profiles["char_mass"], profiles["char_chance"], profiles["char_class"]
    W, L, H, V = mass.shape
    mass = mass.reshape(W, L * H, V).astype(np.float64)
    chance = chance.astype(np.float64)
    M, U = mass.sum(0), chance.sum(0)  # (K, V), (V,)
    out = {}
    for c in LETTER_CLASSES:
        member = cls == CLASS_NAMES.index(c)
        if not member.any():
            continue
        ref = _reference(cls, member)
        with np.errstate(divide="ignore", invalid="ignore"):
            excess = M / M[:, ref].sum(1, keepdims=True) - U / U[ref].sum()  # (K, V) share above chance share
            lift = (M / M[:, ref].sum(1, keepdims=True)) / (U / U[ref].sum())
        frequent = member & (chance.mean(0) >= WIDE_FREQUENT)
        frequent = frequent if frequent.any() else member
        top = np.argsort(-np.where(member, np.nan_to_num(excess, nan=-np.inf), -np.inf), axis=1, kind="stable")
        dropped = np.zeros((L * H, V), dtype=bool)
        np.put_along_axis(dropped, top[:, :min(WIDE_DROP, int(member.sum()) - 1)], True, axis=1)
        sums = [np.einsum("wkv,kv->wk", mass, (member & ~dropped).astype(float)),
                np.einsum("wkv,kv->wk", mass, (ref & ~dropped).astype(float)),
                chance @ (member & ~dropped).T.astype(float), chance @ (ref & ~dropped).T.astype(float)]  # (W, K)
        ratio = lambda s: (s[0] / s[1]) / (s[2] / s[3])
        with np.errstate(divide="ignore", invalid="ignore"):
            boot = ratio([counts @ x for x in sums])  # (R, K)
            above = (lift[:, frequent] > 1).sum(1).astype(float)
            out[f"class_{c}"] = {
                "letter_lift": (M[:, member].sum(1) / M[:, ref].sum(1)) / (U[member].sum() / U[ref].sum()),
                "wide_lift": ratio([x.sum(0) for x in sums]),
                "wide_lift_ci_low": np.quantile(np.where(np.isfinite(boot), boot, -np.inf), 0.025, axis=0,
                                                method="lower"),
                "members_above": above, "members_frequent": np.full(L * H, float(frequent.sum())),
                "members_share": above / frequent.sum()}
    return out


def char_profile(profiles: dict[str, np.ndarray], vocab: list[str], detector: str, layer: int, head: int,
                 fields: dict[str, float], top: int = 6) -> CharProfile:
    """The per-character profile behind a class detector for one head on one split: its `top` characters by
    mass above chance (any class) and every frequent member of the class, each as (character, mass, chance)."""
    mass = profiles["char_mass"][:, layer, head].mean(0).astype(np.float64)  # (V,)
    chance = profiles["char_chance"].mean(0).astype(np.float64)
    member = profiles["char_class"] == CLASS_NAMES.index(detector.removeprefix("class_"))
    shown = lambda idx: [(vocab[v], float(mass[v]), float(chance[v])) for v in idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(chance > 0, mass / chance, 0.0)
    frequent = np.flatnonzero(member & (chance >= WIDE_FREQUENT))
    return CharProfile(detector, shown(np.argsort(-(mass - chance), kind="stable")[:top]),
                       shown(frequent[np.argsort(-lift[frequent], kind="stable")]),
                       fields.get("letter_lift"), fields.get("wide_lift"), fields.get("wide_lift_ci_low"),
                       fields.get("members_above"), fields.get("members_frequent"))


def distance_profile(profiles: dict[str, np.ndarray], detector: str, layer: int, head: int) -> DistanceProfile:
    """A role's mass by how far back its target is (`OFFSETS`), pooled over the split's windows: for word_start
    and recent_space their one target; for a class detector the nearest key of the class before the query."""
    if detector.startswith("class_"):
        c = CLASS_NAMES.index(detector.removeprefix("class_"))
        sums, counts = profiles["near_sum"][:, layer, head, c], profiles["near_count"][:, c]  # (W, B), (W, B)
    else:
        key = "ws" if detector == "word_start" else "rs"
        sums, counts = profiles[f"{key}_sum"][:, layer, head], profiles[f"{key}_count"]
    s, n = sums.sum(0).astype(np.float64), counts.sum(0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return DistanceProfile(detector, list(OFFSETS), list(s / n), list(n / n.sum()), list(s / s.sum()))


def head_profiles(profiles: dict[str, np.ndarray], vocab: list[str], layer: int, head: int,
                  detectors: list[str], values: dict[str, dict[str, np.ndarray]]) -> dict:
    """HeadResult fields for one head's role detectors: `char_profile` (its first class detector) and
    `distance_profiles` (word_start, recent_space and class detectors); `values`: the split's summaries (L, H)."""
    out: dict = {}
    classes = [d for d in detectors if d.startswith("class_")]
    if classes and "char_mass" in profiles:
        fields = {k: float(v[layer, head]) for k, v in values.get(classes[0], {}).items()}
        out["char_profile"] = char_profile(profiles, vocab, classes[0], layer, head, fields)
    dist = [d for d in detectors if d in ("word_start", "recent_space") or d in classes]
    if dist and "ws_sum" in profiles:
        out["distance_profiles"] = {d: distance_profile(profiles, d, layer, head) for d in dist}
    return out
