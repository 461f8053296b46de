"""Statistics over windows: bootstrap CIs, p-values against three nulls, BH-FDR, role rules.

The window is the resampling unit (positions inside a window are dependent). Arrays are
(W, K): W windows, K = flattened (layer, head) cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special, stats

from .capture import HeadScores, ProbeScores
from .detectors import ARGMAX_DETECTORS, CONTENT_DETECTORS, MAX_OFFSET, OFFSET_DETECTORS

ALPHA = 0.05
N_BOOT = 2000
MIN_WINDOWS_BCA = 20
DESCRIPTIVE = ("entropy", "distance", "confidence")  # summaries, not tested against chance
PROBES = ("probe_random", "probe_natural")


def resample_counts(n_windows: int, rng: np.random.Generator, n_boot: int = N_BOOT) -> np.ndarray:
    """Multinomial resample counts (n_boot, W): row r says how often each window appears in resample r."""
    return rng.multinomial(n_windows, np.full(n_windows, 1.0 / n_windows), size=n_boot).astype(np.float64)


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator | np.ndarray, n_boot: int = N_BOOT,
                 level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CI of the mean of each column of values (W, K): BCa where stable, else percentile.

    Returns (low (K,), high (K,), bca_used (K,) bool). Resamples windows with one multinomial
    count matrix (n_boot, W) shared by every column; pass a `resample_counts` matrix instead of
    a generator to share the resamples across calls too.
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
    if W >= MIN_WINDOWS_BCA:
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
    p = stats.t.sf(t, df=W - 1)
    flat = np.isfinite(mean) & (sd <= 1e-12 * np.maximum(1.0, np.abs(mean)))
    return np.where(flat, np.where(mean > 1e-12, 0.0, 1.0), p)


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg q-values for the finite entries of p; NaN elsewhere."""
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(np.clip(p[ok], 0, 1), method="bh")
    return q


@dataclass(frozen=True)
class SplitStats:
    """Per detector name, arrays (L, H) of mean, chance, CI, p-values, gain and consistency for one split."""

    n_windows: int
    values: dict[str, dict[str, np.ndarray]]  # detector -> field -> (L, H)


def _fields(obs: np.ndarray, chance: np.ndarray, nulls: list[np.ndarray], rng: np.random.Generator | np.ndarray,
            tested: bool) -> dict[str, np.ndarray]:
    """Summary arrays (K,) for one detector from per-window arrays (W, K)."""
    low, high, bca = bootstrap_ci(obs, rng)
    out = {"mean": obs.mean(0), "chance": chance.mean(0), "ci_low": low, "ci_high": high,
           "bca": bca.astype(float)}
    with np.errstate(divide="ignore", invalid="ignore"):
        out["times_chance"] = obs.sum(0) / chance.sum(0)  # ratio of sums, not mean of ratios
    if not tested:
        return out
    out["p_uniform"] = p_greater(obs - chance)
    strictest = chance
    p = out["p_uniform"]
    for label, null in zip(("positional", "swap"), nulls):
        out[label] = null.mean(0)
        out[f"p_{label}"] = p_greater(obs - null)
        p = np.fmax(p, out[f"p_{label}"])  # every null must be rejected (intersection-union test)
        strictest = np.fmax(strictest, null)
    out["p"] = p
    out["consistency"] = (obs > strictest).mean(0)
    if nulls:
        gain = obs - np.fmax(*nulls) if len(nulls) == 2 else obs - nulls[0]
        g_low, g_high, _ = bootstrap_ci(gain, rng)
        out.update(gain=gain.mean(0), gain_ci_low=g_low, gain_ci_high=g_high)
    return out


def split_stats(scores: HeadScores, probes: dict[str, ProbeScores], rng: np.random.Generator) -> SplitStats:
    """All detector summaries for one model on one split (probes may be empty)."""
    L, H = scores.mean_attn.shape[:2]
    counts = resample_counts(scores.n_windows, rng)
    flat = lambda a: a.reshape(a.shape[0], L * H)
    values: dict[str, dict[str, np.ndarray]] = {}
    for name, obs in scores.observed.items():
        nulls = [flat(scores.positional[name]), flat(scores.swap[name])] if name in CONTENT_DETECTORS else []
        values[name] = _fields(flat(obs), flat(scores.chance[name]), nulls, counts, name not in DESCRIPTIVE)
    for name, pr in probes.items():
        values[name] = _fields(flat(pr.observed), flat(pr.chance), [flat(pr.positional)], rng, True)
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


# ---- roles ------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoleRule:
    """A role and the effect-size rule that decides it, stated for the report."""

    role: str
    detector: str
    family: str
    rule: str

    def holds(self, f: dict[str, float]) -> bool:
        """Whether the rule holds for one head's summary fields on one split."""
        if self.detector.startswith("argmax_"):
            return f["mean"] >= 0.9
        if self.detector in OFFSET_DETECTORS or self.detector == "sink":
            return f["ci_low"] > 0.5 and f["q"] < ALPHA
        if self.detector in PROBES:
            return f["q"] < ALPHA and f["ci_low"] > 0.3 and f["gain_ci_low"] >= 0.1
        return f["q"] < ALPHA and f["gain_ci_low"] >= 0.1  # content detectors


FAMILIES = {
    "previous character": ("offset_1",),
    "fixed offset": tuple(d for d in OFFSET_DETECTORS if d != "offset_1"),
    "positional": ARGMAX_DETECTORS,
    "word boundary": ("class_space", "class_newline", "recent_space", "word_start"),
    "vowel / consonant": ("class_vowel", "class_consonant", "class_final"),
    "punctuation": ("class_punctuation", "punct_near", "punct_far"),
    "repetition": ("duplicate", "induction") + PROBES,
    "sink": ("sink",),
    "other class": ("class_digit", "class_other"),
}
FAMILY_OF = {d: fam for fam, ds in FAMILIES.items() for d in ds}


def _rules() -> tuple[RoleRule, ...]:
    """The role table; its `rule` texts are printed in results.json and the report."""
    rules = [RoleRule("previous-character head", "offset_1", "previous character",
                      "lower 95% CI bound of the mass on i-1 > 0.5 and q < 0.05 (cf. Clark et al. 2019)")]
    rules += [RoleRule("current-character head" if k == 0 else f"offset-{k} head", f"offset_{k}", "fixed offset",
                       f"lower 95% CI bound of the mass on i-{k} > 0.5 and q < 0.05")
              for k in range(MAX_OFFSET + 1) if k != 1]
    rules += [RoleRule(f"positional head (offset {k})", f"argmax_{k}", "positional",
                       f"the strongest key sits at i-{k} for >= 90% of queries (Voita et al. 2019)")
              for k in range(MAX_OFFSET + 1)]
    content_rule = ("q < 0.05 against uniform, positional and label-swap nulls, and the lower 95% CI bound "
                    "of the mass above the stricter of the positional and label-swap nulls >= 0.10")
    labels = {"class_space": "space head", "class_newline": "line-break head", "recent_space": "word-boundary head",
              "word_start": "word-start head", "class_vowel": "vowel head", "class_consonant": "consonant head",
              "class_final": "final-letter head", "class_punctuation": "punctuation head",
              "punct_near": "near-punctuation head", "punct_far": "far-punctuation head",
              "duplicate": "same-character head", "induction": "induction head (natural text)",
              "class_digit": "digit head", "class_other": "other-symbol head"}
    rules += [RoleRule(labels[d], d, FAMILY_OF[d], content_rule) for d in CONTENT_DETECTORS]
    rules += [RoleRule(f"induction head ({'random' if d == 'probe_random' else 'repeated passages'})", d,
                       "repetition", "mass on the token after the earlier copy: lower 95% CI bound > 0.3, q < 0.05, "
                       "and >= 0.10 above the head's positional null (Olsson et al. 2022)") for d in PROBES]
    rules.append(RoleRule("sink head", "sink", "sink", "lower 95% CI bound of the mass on position 0 > 0.5, q < 0.05"))
    return tuple(rules)


ROLE_RULES = _rules()


def head_fields(split: SplitStats, detector: str, layer: int, head: int) -> dict[str, float]:
    """One head's summary fields for one detector as plain floats (NaN kept as NaN)."""
    return {k: float(v[layer, head]) for k, v in split.values[detector].items()}


def roles_of(split: SplitStats, layer: int, head: int) -> list[RoleRule]:
    """Every rule that holds for a head on a split."""
    return [r for r in ROLE_RULES if r.detector in split.values and r.holds(head_fields(split, r.detector, layer, head))]

