"""Planted synthetic attention patterns get exactly the roles they should; null data stays at FDR."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from reportgen.capture import score_windows
from reportgen.catalogue import roles_of
from reportgen.classes import CharClasses
from reportgen.stats import add_q_values, bootstrap_ci, split_stats

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def english_like_windows(W, T, seed=0):
    """Random words of 1-7 letters separated by spaces, with occasional punctuation."""
    rng = np.random.default_rng(seed)
    vocab = ["<PAD>", " ", ",", "."] + list(LETTERS)
    stoi = {c: i for i, c in enumerate(vocab)}
    text = []
    while len(text) < W * T:
        text += list(rng.choice(list(LETTERS), size=rng.integers(1, 8)))
        text += [rng.choice([" ", " ", " ", " ", ", ", ". "])]
    chars = "".join(text)[: W * T]
    ids = torch.tensor([stoi[c] for c in chars]).view(W, T)
    return ids, CharClasses.for_vocab(vocab, "en"), len(vocab)


def planted(ids, kind, seed=0):
    """Attention (W, T, S) for one head with a planted pattern."""
    W, T = ids.shape
    i = torch.arange(T).view(T, 1)
    j = torch.arange(T).view(1, T)
    causal = (j <= i).float()
    if kind == "previous":
        a = (j == (i - 1).clamp_min(0)).float().expand(W, T, T)
    elif kind == "offset2":
        a = (j == (i - 2).clamp_min(0)).float().expand(W, T, T)
    elif kind == "uniform":
        a = (causal / causal.sum(-1, keepdim=True)).expand(W, T, T)
    elif kind == "recency":
        a = (torch.exp(-(i - j).clamp_min(0) / 3.0) * causal).expand(W, T, T)
    elif kind == "space":  # attends to every space in its prefix, by content, wherever it is
        is_space = (ids == 1).float().view(W, 1, T)
        a = is_space * causal + 1e-3 * causal
    elif kind == "random":
        g = torch.Generator().manual_seed(seed)
        a = torch.exp(torch.randn(W, T, T, generator=g)) * causal
    else:
        raise ValueError(kind)
    return a / a.sum(-1, keepdim=True)


def scores_for(kinds, W=48, T=64, seed=0):
    ids, classes, V = english_like_windows(W, T, seed)
    heads = [planted(ids, k, seed=seed + n) for n, k in enumerate(kinds)]
    attn = torch.stack(heads, dim=1).unsqueeze(1)  # (W, L=1, H, T, S)
    batches = ((attn[lo:lo + 16], ids[lo:lo + 16]) for lo in range(0, W, 16))
    return score_windows(batches, ids, classes, V, np.arange(W) * T)


@pytest.fixture(scope="module")
def planted_stats():
    kinds = ["previous", "uniform", "space", "recency", "offset2"]
    s = split_stats(scores_for(kinds), {}, np.random.default_rng(0))
    add_q_values([s])
    return {k: (s, h) for h, k in enumerate(kinds)}


def role_names(planted_stats, kind):
    s, h = planted_stats[kind]
    return {d.name for d in roles_of(s, 0, h)}


def test_exact_previous_character_head_scores_one_with_tight_ci_and_is_labelled(planted_stats):
    s, h = planted_stats["previous"]
    f = s.values["offset_1"]
    assert f["mean"][0, h] == pytest.approx(1.0)
    assert f["ci_low"][0, h] > 0.99 and f["ci_high"][0, h] <= 1.0 + 1e-9
    assert s.values["offset_0"]["mean"][0, h] == pytest.approx(0.0)  # direction: i-1, never i or i+1
    assert "offset_1" in role_names(planted_stats, "previous")


def test_offset_direction_distinguishes_two_back_from_one_back(planted_stats):
    names = role_names(planted_stats, "offset2")
    assert "offset_2" in names and "offset_1" not in names


def test_uniform_head_gets_no_role(planted_stats):
    assert role_names(planted_stats, "uniform") == set()


def test_content_space_head_is_labelled_space_not_positional(planted_stats):
    names = role_names(planted_stats, "space")
    assert "class_space" in names
    assert not any(n.startswith(("argmax_", "offset_")) for n in names)


def test_pure_recency_head_is_positional_not_space(planted_stats):
    names = role_names(planted_stats, "recency")
    assert "argmax_0" in names
    assert not names & {"class_space", "recent_space", "word_start"}
    s, h = planted_stats["recency"]
    # It beats uniform chance on spaces? Irrelevant: the positional null explains its space mass.
    assert s.values["class_space"]["gain_ci_low"][0, h] < 0.1


def test_null_attention_discoveries_stay_within_the_fdr_level():
    all_stats = [split_stats(scores_for(["random"] * 6, W=32, T=48, seed=s), {}, np.random.default_rng(s))
                 for s in range(4)]
    add_q_values(all_stats)
    q = np.concatenate([f["q"].ravel() for s in all_stats for f in s.values.values() if "q" in f])
    assert q.size > 500
    assert (q < 0.05).mean() <= 0.05
    roles = [r for s in all_stats for h in range(6) for r in roles_of(s, 0, h)]
    assert roles == []


def test_bootstrap_ci_covers_the_mean_and_is_percentile_for_constant_columns():
    rng = np.random.default_rng(0)
    values = np.column_stack([rng.normal(0.3, 0.1, 50), np.full(50, 0.7)])
    low, high, bca = bootstrap_ci(values, np.random.default_rng(1))
    assert low[0] < 0.3 < high[0] and high[0] - low[0] < 0.1
    assert low[1] == pytest.approx(0.7) and high[1] == pytest.approx(0.7)
    assert not bca[1] and bca[0]


def test_a_head_equal_to_its_null_up_to_rounding_is_not_significant():
    """float32 summation order leaves differences of ~1e-8 between a uniform head and uniform chance; they must
    not become a significant effect (or flip with the order of a sum on another machine or device)."""
    from reportgen.stats import TIE, _fields, excess, resample_counts

    rng = np.random.default_rng(0)
    chance = rng.uniform(0.1, 0.2, size=(64, 2))
    obs = chance + np.abs(rng.normal(0, 1e-8, size=chance.shape))  # systematically "above" chance by rounding
    obs[:, 1] += 0.01  # a real effect stays one
    out = _fields(obs, chance, [chance], resample_counts(64, rng), tested=True)
    assert out["p_uniform"][0] == 1.0 and out["consistency"][0] == 0.0
    assert out["p_uniform"][1] < 1e-6 and out["consistency"][1] == 1.0
    assert (excess(chance + TIE / 2, chance) == 0).all() and (excess(chance + 10 * TIE, chance) > 0).all()


def test_tail_probabilities_and_bh_equal_scipy_stats_exactly():
    """reportgen computes these without importing scipy.stats (half a second of every command); the numbers must
    be scipy.stats' own, bit for bit, ties, NaN and infinities included."""
    from scipy import stats as sstats

    from reportgen.stats import _bh_adjust, normal_sf, t_sf

    rng = np.random.default_rng(0)
    t = np.concatenate([rng.normal(0, 3, 500), [0.0, np.inf, -np.inf, np.nan, 1e-300, 40.0]])
    for df in (1, 7, 63, 1362):
        assert np.array_equal(t_sf(t, df), sstats.t.sf(t, df), equal_nan=True)
    assert np.array_equal(normal_sf(t), sstats.norm.sf(t), equal_nan=True)
    checked = 0
    for n in (1, 2, 17, 1000):
        p = rng.uniform(0, 1, n) ** 3
        p[: n // 4] = p[0]  # ties
        assert np.array_equal(_bh_adjust(p), sstats.false_discovery_control(p, method="bh"))
        checked += 1
    assert checked == 4


def test_ranks_and_spearman_equal_scipy_stats_exactly():
    """The causal agreement's ranks and Spearman ρ, computed without scipy.stats, are scipy's bit for bit."""
    from scipy import stats as sstats

    from reportgen.stats import average_ranks, spearman

    rng = np.random.default_rng(1)
    rows = np.round(rng.normal(0, 1, (300, 16)), 1)  # many ties
    rows[5, 3] = np.nan
    assert np.array_equal(average_ranks(rows), sstats.rankdata(rows, axis=1), equal_nan=True)
    checked = 0
    for k in range(50):
        x, y = np.round(rng.normal(0, 1, 16), 1), rng.normal(0, 1, 16) + k / 10
        x[: k % 5] = 0.0  # heads with no role share the value 0
        assert spearman(x, y) == sstats.spearmanr(x, y).statistic
        checked += 1
    assert checked == 50
    assert np.isnan(spearman(np.ones(5), np.arange(5.0))) and np.isnan(spearman(np.array([1.0, np.nan, 2]), np.arange(3.0)))



def test_commands_run_openblas_on_one_thread_unless_the_user_chose(monkeypatch):
    """With a thread per core OpenBLAS splits the bootstrap's sums by the core count (its CIs then differ between
    machines in their last bits), so the command line pins one thread before numpy loads; a user's own
    OPENBLAS_NUM_THREADS stays."""
    import os
    import subprocess
    import sys

    from reportgen.process import one_blas_thread

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    one_blas_thread()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    one_blas_thread()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"
    # the CLI does it before anything imports numpy (otherwise the setting would come too late)
    code = "import sys; import reportgen.cli; sys.exit('numpy' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    assert subprocess.run([sys.executable, "-c", code], env=env).returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_commands_keep_freed_memory_for_the_next_batch_unless_the_user_set_malloc():
    """Each batch frees and allocates tensors of tens of MB; glibc hands such blocks back to the system, and every
    batch faulted them in again (a forward pass 15-25 % slower). After `reuse_freed_memory` a loop of 40 MB
    tensors faults its pages in once, not every time; with the user's own MALLOC_ variable it is left alone."""
    import os
    import subprocess
    from pathlib import Path

    code = ("import resource, sys, torch\nfrom reportgen.process import reuse_freed_memory\n"
            "took = reuse_freed_memory() if sys.argv[1] == 'set' else None\n"
            "torch.ones(10 << 20)\nbefore = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(50):\n    torch.ones(10 << 20)\n"  # 40 MB, freed at once
            "print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.is_file() and "[always]" in thp.read_text():
        pytest.skip("transparent huge pages always on: a 40 MB tensor is a few faults either way")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def faults(arg: str, **extra) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", code, arg], env={**env, **extra}, capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0], int(out[1])

    took, kept = faults("set")
    _, default = faults("default")
    user_took, user = faults("set", MALLOC_ARENA_MAX="2")
    assert took == "True" and user_took == "False"
    assert default > 50 * 9000  # every 40 MB tensor faulted in again (10^4 pages of 4 KiB)
    assert kept < default / 3 and user > 50 * 9000
