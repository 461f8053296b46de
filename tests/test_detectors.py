"""Detectors on synthetic attention: the fast gather/matmul path agrees with explicit masks."""

from __future__ import annotations

import pytest
import torch

from reportgen.classes import CLASS_NAMES
from reportgen.detectors import SKIP, batch_stats
from reportgen.nulls import positional_null, target_masks


def random_attention(B, L, H, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(B, L, H, T, T, generator=g) * 2
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    return scores.softmax(-1)


def random_text(B, T, V=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T), generator=g)
    lookup = torch.tensor([CLASS_NAMES.index(c) for c in
                           ["other", "space", "vowel", "vowel", "consonant", "consonant", "consonant",
                            "punctuation", "newline", "consonant", "vowel", "consonant"]])
    return ids, lookup[ids], V


def _tiny_capture_inputs(repeats, heads, embed, context, hidden, seed):
    """A seeded 2-layer model on a repeated English sentence: (bundle, ids (N,), classes) for `capture`."""
    import numpy as np

    from reportgen.checkpoint import ModelBundle
    from reportgen.classes import CharClasses
    from reportgen.model import TransformerLM
    from reportgen.tokenizer import CharTokenizer

    text = "the cat sat on the mat. a dog ran in the fog, and the cat ran too!\n" * repeats
    tok = CharTokenizer.from_text([text])
    torch.manual_seed(seed)
    model = TransformerLM(2, heads, embed, context, tok.vocab_size(), hidden, True).eval()
    bundle = ModelBundle(model, tok, None, "", "en", {})
    return bundle, np.array(tok.tokenize(text)), CharClasses.for_vocab(tok.vocab, "en")


def test_fast_content_masses_equal_explicit_mask_sums():
    attn = random_attention(4, 2, 3, 24)
    ids, codes, V = random_text(4, 24)
    stats = batch_stats(attn, ids, codes, V)
    masks = target_masks(ids, codes)
    assert masks
    for name, mask in masks.items():
        per_query = (attn * mask.float().view(4, 1, 1, 24, 24)).sum(-1)[..., SKIP:].mean(-1)
        torch.testing.assert_close(stats.observed[name], per_query, atol=1e-5, rtol=0, msg=name)
        chance = (mask.float().sum(-1) / torch.arange(1, 25))[..., SKIP:].mean(-1)
        torch.testing.assert_close(stats.chance[name][:, 0, 0], chance, atol=1e-6, rtol=0, msg=name)


def test_positional_null_of_a_window_own_attention_equals_its_observed_value():
    attn = random_attention(1, 1, 2, 20, seed=3)
    ids, codes, V = random_text(2, 20, seed=4)
    stats = batch_stats(attn.expand(2, -1, -1, -1, -1), ids, codes, V)
    null = positional_null(attn[0], ids, codes)
    assert null
    for name, value in null.items():
        torch.testing.assert_close(value, stats.observed[name], atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("L, H, T, W", [(1, 1, 9, 1), (2, 3, 24, 5), (4, 4, 128, 40)])
def test_positional_null_of_one_key_targets_equals_the_mask_product_bit_for_bit(L, H, T, W):
    """The last boundary and the word's first character are gathered, not multiplied by a mask: the values (and
    the order of the mean over queries) must be those of the explicit mask product exactly."""
    from reportgen.detectors import query_mean

    mean = random_attention(1, L, H, T, seed=T)[0] * 0.7  # rows not summing to one: renormalised inside
    ids, codes, _ = random_text(W, T, seed=W)
    null = positional_null(mean, ids, codes)
    rows = mean / mean.sum(-1, keepdim=True).clamp_min(1e-12)
    for name, mask in target_masks(ids, codes, ("recent_space", "word_start")).items():
        assert bool(mask.any())
        assert torch.equal(null[name], query_mean(torch.einsum("lhis,wis->wlhi", rows, mask.float()))), name


def test_uniform_attention_has_normalised_entropy_one():
    T = 24
    causal = torch.tril(torch.ones(T, T))
    attn = (causal / causal.sum(-1, keepdim=True)).view(1, 1, 1, T, T)
    ids, codes, V = random_text(1, T)
    stats = batch_stats(attn, ids, codes, V)
    torch.testing.assert_close(stats.observed["entropy"], torch.ones(1, 1, 1))


def test_scoring_a_batch_in_pieces_gives_the_same_values():
    """Capture scores each batch in cache-sized pieces; per-window values, the label-swap pairing and the sums
    must be those of scoring the whole batch at once (odd batches and a lone last window included)."""
    import numpy as np

    from reportgen.capture import score_windows
    from reportgen.classes import CharClasses

    W, T = 11, 24  # batches of 5, 5 and a lone window
    attn = random_attention(W, 2, 3, T, seed=5)
    ids, codes, V = random_text(W, T, seed=6)
    vocab = ["?", " ", "a", "e", "b", "c", "d", ".", "\n", "f", "i", "g"]
    classes = CharClasses.for_vocab(vocab, "en")
    whole = score_windows(((attn[lo:lo + 5], ids[lo:lo + 5]) for lo in range(0, W, 5)), ids, classes, V,
                          np.arange(W) * T)
    split = score_windows(((iter([attn[lo:lo + 2], attn[lo + 2:lo + 5]][: 1 if lo + 2 >= W else 2]), ids[lo:lo + 5])
                           for lo in range(0, W, 5)), ids, classes, V, np.arange(W) * T)
    assert whole.n_windows == split.n_windows == W
    np.testing.assert_array_equal(whole.swap_partner, split.swap_partner)
    for field in ("observed", "chance", "swap", "structure"):
        for name, value in getattr(whole, field).items():
            np.testing.assert_allclose(getattr(split, field)[name], value, atol=1e-6, rtol=0, err_msg=name)
    np.testing.assert_allclose(split.mean_attn, whole.mean_attn, atol=1e-6)
    np.testing.assert_allclose(split.class_matrix, whole.class_matrix, atol=1e-6)


@pytest.mark.parametrize("T", [9, 16, 33, 100, 128, 256])
def test_row_entropy_in_blocks_equals_the_full_rows_bit_for_bit(T):
    """Entropy skips the causal zeros by taking rows in blocks; the sums must be those of whole rows exactly
    (entropy values and p-values of the shipped results depend on it)."""
    from reportgen.detectors import _row_entropy

    torch.manual_seed(T)
    scores = torch.randn(3, 2, 2, T, T) * 3
    attn = torch.softmax(scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf")), -1)
    full = -(attn * attn.clamp_min(torch.finfo(torch.float32).tiny).log()).sum(-1)
    blocked = _row_entropy(attn)
    assert blocked.shape == full[..., SKIP:].shape == (3, 2, 2, T - SKIP)
    assert torch.equal(blocked, full[..., SKIP:])
    # the vectorised logarithm differs from libm's (`entr`) in the last place for a few weights: 1e-6 relative
    torch.testing.assert_close(blocked, torch.special.entr(attn).sum(-1)[..., SKIP:], rtol=1e-6, atol=0)


def test_row_entropy_of_one_hot_rows_is_zero_and_nan_stays_nan():
    """Zero weights add nothing (0 ln 0 = 0): a row with all its mass on one key has entropy exactly 0; a NaN row
    stays NaN (a broken model is not reported as a sharp head)."""
    from reportgen.detectors import _row_entropy

    T = 40
    attn = torch.zeros(1, 1, 2, T, T)
    attn[0, 0, 0, torch.arange(T), torch.arange(T)] = 1.0  # each query on itself
    attn[0, 0, 1] = float("nan")
    ent = _row_entropy(attn)
    assert torch.equal(ent[0, 0, 0], torch.zeros(T - SKIP))
    assert bool(ent[0, 0, 1].isnan().all())
    if torch.set_flush_denormal(True):  # flush-to-zero (a -ffast-math library may set it): still 0, not NaN
        try:
            flushed = _row_entropy(attn)
        finally:
            torch.set_flush_denormal(False)
        assert torch.equal(flushed[0, 0, 0], torch.zeros(T - SKIP))


def test_capture_gives_the_same_numbers_at_one_and_two_threads():
    """A diff analyses its sides at one thread each, a run at two: per-window values must be identical and the
    class matrices (sums over every window) equal far below their printed digits."""
    import numpy as np

    from reportgen.capture import capture

    bundle, ids, classes = _tiny_capture_inputs(40, heads=4, embed=32, context=48, hidden=64, seed=0)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two = capture(bundle, ids, classes)
        torch.set_num_threads(1)
        one = capture(bundle, ids, classes)
    finally:
        torch.set_num_threads(threads)
    checked = 0
    for field in ("observed", "chance", "swap", "structure", "positional"):
        a, b = getattr(one, field), getattr(two, field)
        assert a.keys() == b.keys() and a
        for name in a:
            assert np.array_equal(a[name], b[name], equal_nan=True), (field, name)
            checked += 1
    assert checked > 50 and np.array_equal(one.mean_attn, two.mean_attn)
    np.testing.assert_allclose(one.class_matrix, two.class_matrix, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(one.class_chance, two.class_chance, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("layers", [1, 3])
def test_layer_major_attention_gives_the_same_values_bit_for_bit(layers):
    """`TransformerLM.attention` returns a (B, L, H, T, S) view of layer-major memory (the layers are never
    stacked); every detector value must equal scoring the same attention laid out batch-major. With one layer the
    view counts as contiguous but keeps an odd stride on that dim (a matmul on it rounds differently)."""
    from reportgen.model import TransformerLM

    torch.manual_seed(11)
    model = TransformerLM(layers, 2, 16, 24, 12, 32, True).eval()
    ids, codes, V = random_text(6, 24, seed=12)
    attn = model.attention(ids)
    assert attn.transpose(0, 1).is_contiguous() and attn.is_contiguous() == (layers == 1)
    batch_major = attn.clone(memory_format=torch.contiguous_format)
    assert batch_major.stride() != attn.stride()
    viewed, copied = batch_stats(attn, ids, codes, V), batch_stats(batch_major, ids, codes, V)
    for field in ("observed", "chance", "swap", "structure"):
        assert getattr(copied, field)
        for name, value in getattr(copied, field).items():
            assert torch.equal(getattr(viewed, field)[name], value), (field, name)
    assert torch.equal(viewed.class_matrix, copied.class_matrix)


@pytest.mark.parametrize("T", [9, 10, 24, 40, 128])
def test_argmax_offsets_from_the_maximum_equal_max_with_indices(T):
    """The argmax detectors read the maximum (`amax`) and decide ties as `max` does (lowest key first); on rows
    full of exact ties (integer scores, uniform rows, a far key tying a near one) they must give `max`'s answer."""
    from reportgen.catalogue import MAX_OFFSET
    from reportgen.detectors import _argmax_offsets, _indicators_from_max, diagonals

    g = torch.Generator().manual_seed(T)
    scores = torch.randint(0, 3, (4, 2, 3, T, T), generator=g).float()  # few distinct values: ties everywhere
    scores[0, 0, 0] = 0.0  # uniform rows
    scores[1, 0, 0, :, :] = 0.0
    scores[1, 0, 0, :, 0] = 5.0  # the first key ties... itself only: the far argmax
    scores[1, 0, 1, :, :] = 0.0
    scores[1, 0, 1, torch.arange(T), torch.arange(T)] = 5.0  # the diagonal (offset 0) wins
    scores[1, 0, 1, T - 1, 0] = 5.0  # ...except in the last row, where a far key ties it and comes first
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)
    attn = torch.softmax(scores.masked_fill(causal, float("-inf")), -1)
    layer_major = attn.transpose(0, 1).contiguous().transpose(0, 1)
    for a in (attn, layer_major):
        top, fast = _argmax_offsets(a, diagonals(a))
        top_ref, ref = _indicators_from_max(a)
        assert torch.equal(top, top_ref)
        assert len(fast) == len(ref) == MAX_OFFSET + 1
        for k in range(MAX_OFFSET + 1):
            assert torch.equal(fast[k], ref[k]), k
        assert sum(r.sum() for r in ref) > 0  # some rows do have their argmax nearby


def test_capture_through_one_reused_buffer_equals_scoring_fresh_attention():
    """Capture writes every piece's attention into one buffer and pairs a lone last window with the previous
    window (kept as a copy); the values must be those of scoring freshly computed attention batch by batch."""
    import numpy as np

    from reportgen import capture as capture_module
    from reportgen.capture import capture, score_windows, window_starts

    bundle, ids, classes = _tiny_capture_inputs(30, heads=2, embed=16, context=24, hidden=32, seed=2)
    model, tok = bundle.model, bundle.tokenizer
    starts = window_starts(len(ids), 24, 9, "text")  # batches of 4, 4 and a lone window
    windows = torch.as_tensor(np.stack([ids[s:s + 24] for s in starts]))
    with torch.no_grad():
        fresh = score_windows(((model.attention(windows[lo:lo + 4]).clone(), windows[lo:lo + 4])
                               for lo in range(0, 9, 4)), windows, classes, tok.vocab_size(), starts, sum_unit=1)
    old = capture_module.SUM_FLOATS, capture_module.PIECE_FLOATS
    try:  # sums of one window, pieces of two: the buffer is overwritten five times
        capture_module.SUM_FLOATS, capture_module.PIECE_FLOATS = 2 * 2 * 24 * 24, 2 * 2 * 2 * 24 * 24
        reused = capture(bundle, ids, classes, limit=9, batch_size=4)
    finally:
        capture_module.SUM_FLOATS, capture_module.PIECE_FLOATS = old
    assert reused.n_windows == fresh.n_windows == 9
    np.testing.assert_array_equal(reused.swap_partner, fresh.swap_partner)
    compared = 0
    for field in ("observed", "chance", "swap", "structure", "positional"):
        for name, value in getattr(fresh, field).items():
            np.testing.assert_allclose(getattr(reused, field)[name], value, rtol=0, atol=1e-6, err_msg=name)
            compared += 1
    assert compared > 50
    np.testing.assert_allclose(reused.mean_attn, fresh.mean_attn, rtol=0, atol=1e-6)


@pytest.mark.parametrize("T", [9, 33, 128])
def test_class_means_in_one_reduction_equal_one_class_at_a_time(T):
    """Class masses are averaged over queries in one call; the sums must be those of one class at a time, for a
    tensor of its own, a slice of a wider one (the own and label-swap classes share one product) and the
    positional null's einsum output (its own strides)."""
    from reportgen.detectors import CLASS_C, _query_means, query_mean

    g = torch.Generator().manual_seed(T)
    wide = torch.rand(3, 2, 2, T, 2 * CLASS_C, generator=g)
    keys = torch.nn.functional.one_hot(torch.randint(0, CLASS_C, (3, T), generator=g), CLASS_C).float()
    positional = torch.einsum("lhis,wsc->wlhic", torch.rand(2, 2, T, T, generator=g), keys)  # the null's layout
    for classes in (wide[..., :CLASS_C], wide[..., CLASS_C:], wide[..., :CLASS_C].contiguous(), positional):
        extra = classes[..., 0] * 3
        means = _query_means({"other": extra}, classes)
        assert list(means)[-1] == "other" and len(means) == CLASS_C + 1
        for c, name in enumerate(CLASS_NAMES):
            assert torch.equal(means[f"class_{name}"], query_mean(classes[..., c])), name
        assert torch.equal(means["other"], query_mean(extra))
