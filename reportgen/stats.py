"""Statistics over windows: bootstrap CIs, p-values against the nulls, BH-FDR (role rules: catalogue.py).

The window is the resampling unit (positions inside a window are dependent). Windows cut from
one contiguous text (the held-out split) are dependent too, so their CIs come from a moving-block
bootstrap (`block` > 1, percentile intervals); windows spread evenly over a large text (training
discovery) are resampled one by one (BCa). The label-swap test runs on independent pairs of
windows that swapped characters with each other. Arrays are (W, K): W windows, K = flattened
(layer, head) cells.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import special  # not scipy.stats: its import alone costs ~0.5 s of every command

from .capture import HeadScores, ProbeScores
from .classwide import class_wide_fields
from .hypotheses import class_wide as hypothesis_class_wide
from .detectors import CONTENT_DETECTORS

N_BOOT = 2000
MIN_WINDOWS_BCA = 20
BLOCK = 20  # moving-block length (windows) for contiguous text; adjacent windows share context
DESCRIPTIVE = ("entropy", "distance", "confidence")  # summaries, not tested against chance


def resample_counts(n_windows: int, rng: np.random.Generator, n_boot: int = N_BOOT) -> np.ndarray:
    """Multinomial resample counts (n_boot, W): row r says how often each window appears in resample r."""
    return rng.multinomial(n_windows, np.full(n_windows, 1.0 / n_windows), size=n_boot).astype(np.float64)


def block_length(n_windows: int) -> int:
    """Moving-block length for `n_windows` contiguous windows: BLOCK, but at most a fifth of them."""
    return max(1, min(BLOCK, n_windows // 5))


def block_resample_counts(n_windows: int, rng: np.random.Generator, block: int,
                          n_boot: int = N_BOOT) -> np.ndarray:
    """Moving-block bootstrap counts (n_boot, W): blocks of `block` consecutive windows drawn with
    replacement until W windows are drawn (the last block cut short)."""
    if block <= 1:
        return resample_counts(n_windows, rng, n_boot)
    n_blocks = -(-n_windows // block)
    starts = rng.integers(0, n_windows - block + 1, size=(n_boot, n_blocks))  # (R, nb)
    idx = (starts[..., None] + np.arange(block)).reshape(n_boot, -1)[:, :n_windows]  # (R, W)
    counts = np.zeros((n_boot, n_windows))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
    return counts


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator | np.ndarray, n_boot: int = N_BOOT,
                 level: float = 0.95, bca: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CI of the mean of each column of values (W, K): BCa where stable, else percentile.

    Returns (low (K,), high (K,), bca_used (K,) bool). Resamples windows with one multinomial
    count matrix (n_boot, W) shared by every column; pass a `resample_counts` (or
    `block_resample_counts`, with bca=False: the jackknife behind BCa assumes independent
    windows) matrix instead of a generator to share the resamples across calls too.
    """
    W, K = values.shape
    counts = rng if isinstance(rng, np.ndarray) else resample_counts(W, rng, n_boot)  # (R, W)
    n_boot = counts.shape[0]
    boot = counts @ values.astype(np.float64) / W  # (R, K)
    theta = values.mean(0)  # (K,)
    tail = (1 - level) / 2
    z_lo, z_hi = special.ndtri(tail), special.ndtri(1 - tail)
    low_q = np.full(K, tail)
    high_q = np.full(K, 1 - tail)
    use_bca = np.zeros(K, dtype=bool)
    if bca and W >= MIN_WINDOWS_BCA:
        below = ((boot < theta).sum(0) + 0.5 * (boot == theta).sum(0)) / n_boot
        z0 = special.ndtri(below)
        jack = (W * theta - values) / (W - 1)  # (W, K) leave-one-out means
        dev = jack.mean(0) - jack
        denom = 6 * (dev ** 2).sum(0) ** 1.5
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(denom > 0, (dev ** 3).sum(0) / denom, np.nan)
            lo = special.ndtr(z0 + (z0 + z_lo) / (1 - a * (z0 + z_lo)))
            hi = special.ndtr(z0 + (z0 + z_hi) / (1 - a * (z0 + z_hi)))
        use_bca = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(z0) & (values.std(0) > 0)
        low_q = np.where(use_bca, lo, low_q)
        high_q = np.where(use_bca, hi, high_q)
    boot.sort(axis=0)
    pick = lambda q: boot[np.clip(np.round(q * (n_boot - 1)).astype(int), 0, n_boot - 1), np.arange(K)]
    return pick(low_q), pick(high_q), use_bca


def p_greater(diff: np.ndarray) -> np.ndarray:
    """One-sided p (K,) that the mean of per-window differences diff (W, K) exceeds 0 (t-test over windows).

    A column with no variance gets p = 0 if its mean is positive and 1 otherwise; NaN columns stay NaN.
    """
    W = diff.shape[0]
    mean = diff.mean(0)
    sd = diff.std(0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(W))
    p = t_sf(t, W - 1)
    flat = np.isfinite(mean) & (sd <= 1e-12 * np.maximum(1.0, np.abs(mean)))
    return np.where(flat, np.where(mean > 1e-12, 0.0, 1.0), p)


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values for the finite entries of p; NaN elsewhere."""
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = _bh_adjust(np.clip(p[ok], 0, 1))
    return q


def t_sf(t, df):
    """P(T > t) for Student's t with df degrees of freedom (what scipy.stats.t.sf computes: stdtr(df, -t))."""
    return special.stdtr(df, -np.asarray(t, dtype=float))


def normal_sf(z):
    """P(Z > z) for a standard normal (scipy.stats.norm.sf: ndtr(-z))."""
    return special.ndtr(-np.asarray(z, dtype=float))


def _bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values of a 1-D array in [0, 1]: sorted p times m / rank, then the running
    minimum from the largest down, in the original order (the arithmetic of scipy.stats.false_discovery_control,
    tested equal)."""
    m = p.size
    if m <= 1:
        return p.copy()
    order = np.argsort(p)
    ps = p[order] * (m / np.arange(1, m + 1, dtype=p.dtype))
    np.minimum.accumulate(ps[::-1], out=ps[::-1])
    out = np.empty_like(ps)
    out[order] = ps
    return np.clip(out, 0.0, 1.0)


def average_ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, tied values given their average rank; a row holding NaN is all NaN
    (scipy.stats.rankdata's defaults; ranks are half-integers, so the values are exact, tested equal)."""
    a = np.asarray(a, dtype=float)
    n = a.shape[-1]
    order = np.argsort(a, axis=-1, kind="stable")
    s = np.take_along_axis(a, order, -1)
    idx = np.broadcast_to(np.arange(n), s.shape)
    first = np.ones(s.shape, bool)
    first[..., 1:] = s[..., 1:] != s[..., :-1]
    last = np.ones(s.shape, bool)
    last[..., :-1] = s[..., :-1] != s[..., 1:]
    start = np.maximum.accumulate(np.where(first, idx, 0), axis=-1)  # first index of each value's tie group
    end = np.flip(np.minimum.accumulate(np.flip(np.where(last, idx, n - 1), -1), axis=-1), -1)  # its last index
    ranks = np.empty(s.shape)
    np.put_along_axis(ranks, order, (start + end) / 2 + 1, -1)
    return np.where(np.isnan(a).any(-1, keepdims=True), np.nan, ranks)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two 1-D arrays as scipy.stats.spearmanr computes it (Pearson's r of the
    average ranks via np.corrcoef); NaN if either holds NaN or is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.isnan(x).any() or np.isnan(y).any() or (x == x[0]).all() or (y == y[0]).all():
        return float("nan")
    ranked = np.column_stack((average_ranks(x), average_ranks(y)))
    return float(np.corrcoef(ranked, rowvar=False)[1, 0])


@dataclass(frozen=True)
class SplitStats:
    """Per detector name, arrays (L, H) of mean, chance, CI, p-values, gain and consistency for one split."""

    n_windows: int
    values: dict[str, dict[str, np.ndarray]]  # detector -> field -> (L, H)


def swap_units(diff: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Independent test units (n_pairs, K) for the label-swap null: for every pair of windows that
    swapped characters with each other, the sum of their observed-minus-swapped differences.

    Consecutive one-way swaps (window b scored with b-1's characters) reuse each window's characters
    with opposite signs, so their differences are negatively correlated and a t-test over them is
    far too conservative; a pair sum involves only its own two windows.
    """
    idx = np.arange(len(partner))
    first = (partner > idx) & (partner[np.clip(partner, 0, len(partner) - 1)] == idx)
    return diff[idx[first]] + diff[partner[first]]


TIE = 1e-6  # per-window differences this small are float32 rounding (summation order), not attention: ties


def excess(obs: np.ndarray, null: np.ndarray) -> np.ndarray:
    """obs - null per window, with rounding-sized differences set to exactly 0. A head that matches a null
    exactly (a uniform head against uniform chance) then gets p = 1 and consistency 0 on every machine and
    device, instead of a p-value of rounding noise that flips with the order of a sum."""
    d = obs - null
    return np.where(np.abs(d) <= TIE, 0.0, d)


def block_means(x: np.ndarray, block: int) -> np.ndarray:
    """Means (n_blocks, K) of consecutive non-overlapping blocks of rows of x (W, K); the last may be short."""
    if block <= 1:
        return x
    edges = np.arange(0, len(x), block)
    return np.add.reduceat(x, edges, axis=0) / np.diff(np.append(edges, len(x)))[:, None]


def _fields(obs: np.ndarray, chance: np.ndarray, nulls: list[np.ndarray], counts: np.ndarray,
            tested: bool, bca: bool = True, partner: np.ndarray | None = None, block: int = 1) -> dict[str, np.ndarray]:
    """Summary arrays (K,) for one detector from per-window arrays (W, K).

    `nulls` are [positional], [positional, label-swap] or [positional, label-swap, word-structure];
    `partner` (W,) says whose characters each window's label-swap null used (for the paired test). With
    `block` > 1 (contiguous windows) the t-tests run on block means, which are close to independent.
    """
    low, high, used = bootstrap_ci(obs, counts, bca=bca)
    out = {"mean": obs.mean(0), "chance": chance.mean(0), "ci_low": low, "ci_high": high,
           "bca": used.astype(float)}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["times_chance"] = obs.sum(0) / chance.sum(0)  # ratio of sums, not mean of ratios
    if not tested:
        return out
    out["p_uniform"] = p_greater(block_means(excess(obs, chance), block))
    strictest = chance
    p = out["p_uniform"]
    for label, null in zip(("positional", "swap", "structure"), nulls):
        out[label] = null.mean(0)
        diff = excess(obs, null)
        if label == "swap" and partner is not None:
            units = block_means(swap_units(diff, partner), block)
            out["p_swap"] = p_greater(units) if len(units) >= 2 else np.full(diff.shape[1], np.nan)
        else:
            out[f"p_{label}"] = p_greater(block_means(diff, block))
        p = np.fmax(p, out[f"p_{label}"])  # every null must be rejected (intersection-union test)
        strictest = np.fmax(strictest, null)
    out["p"] = p
    out["consistency"] = (excess(obs, strictest) > 0).mean(0)
    if nulls:
        null = functools.reduce(np.fmax, nulls)  # the strictest null, window by window
        g_low, g_high, _ = bootstrap_ci(obs - null, counts, bca=bca)
        out.update(gain=(obs - null).mean(0), gain_ci_low=g_low, gain_ci_high=g_high)
        with np.errstate(divide="ignore", invalid="ignore"):  # lift: ratio of sums over the stricter null
            boot = (counts @ obs) / (counts @ null)  # (R, K)
            out["lift"] = obs.sum(0) / null.sum(0)
        finite = np.where(np.isfinite(boot), boot, np.inf)  # an undefined resample counts as unbounded
        out["lift_ci_low"] = np.quantile(finite, 0.025, axis=0, method="lower")
    return out


def split_stats(scores: HeadScores, probes: dict[str, ProbeScores], rng: np.random.Generator,
                block: int = 1) -> SplitStats:
    """All detector summaries for one model on one split (probes may be empty).

    `block` > 1: the windows are contiguous text; CIs come from a moving-block bootstrap.
    """
    L, H = scores.mean_attn.shape[:2]
    counts = block_resample_counts(scores.n_windows, rng, block)
    flat = lambda a: a.reshape(a.shape[0], L * H)
    values: dict[str, dict[str, np.ndarray]] = {}
    for name, obs in scores.observed.items():
        content = name in CONTENT_DETECTORS or name in scores.positional  # built-in or hypothesis
        nulls = [flat(scores.positional[name]), flat(scores.swap[name])] if content else []
        if name in scores.structure:
            nulls.append(flat(scores.structure[name]))
        values[name] = _fields(flat(obs), flat(scores.chance[name]), nulls, counts, name not in DESCRIPTIVE,
                               bca=block <= 1, partner=scores.swap_partner, block=block)
    if "char_mass" in scores.profiles:  # letter classes: the class-wide gate's fields
        for name, fields in class_wide_fields(scores.profiles, counts).items():
            values[name].update(fields)
        for name, fields in hypothesis_class_wide(scores.profiles, counts).items():  # your letter-class hypotheses
            values[name].update(fields)
    for name, pr in probes.items():  # probe sequences are independent draws: resampled one by one
        values[name] = _fields(flat(pr.observed), flat(pr.chance), [flat(pr.positional)],
                               resample_counts(len(pr.observed), rng), True)
    values = {name: {f: v.reshape(L, H) for f, v in fields.items()} for name, fields in values.items()}
    return SplitStats(scores.n_windows, values)


def add_q_values(all_stats: list[SplitStats]) -> None:
    """BH over every model x layer x head x tested detector of one split; writes 'q' in place."""
    cells = [(s, name) for s in all_stats for name, f in s.values.items() if "p" in f]
    if not cells:
        return
    flat = np.concatenate([s.values[name]["p"].ravel() for s, name in cells])
    q = bh(flat)
    at = 0
    for s, name in cells:
        p = s.values[name]["p"]
        s.values[name]["q"] = q[at:at + p.size].reshape(p.shape)
        at += p.size
