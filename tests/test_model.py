"""The model: fused and explicit attention paths agree, attention is a causal distribution, course keys load."""

from __future__ import annotations

import math

import pytest
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from reportgen.model import TransformerLM


def _batch(model, B=3, N=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (B, N), generator=g)


def test_default_call_returns_logits_only(tiny_model):
    idx = _batch(tiny_model)
    out = tiny_model(idx)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (3, 20, tiny_model.config.vocab_size)


def test_fused_and_attention_paths_give_equal_logits(tiny_model):
    idx = _batch(tiny_model)
    fused = tiny_model(idx)
    logits, attn = tiny_model(idx, return_attention_weights=True)
    torch.testing.assert_close(logits, fused, atol=1e-5, rtol=0)


def test_attention_shape_rows_and_causality(tiny_model):
    idx = _batch(tiny_model, B=2, N=17)
    _, attn = tiny_model(idx, return_attention_weights=True)
    assert attn.shape == (2, 2, 4, 17, 17)  # (L, B, H, N, N)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, 4, 17))
    upper = torch.triu(torch.ones(17, 17, dtype=torch.bool), diagonal=1)
    assert torch.all(attn[..., upper] == 0)
    assert torch.all(attn[..., 0, 0] == 1)  # the first query can only see itself


def test_attention_path_matches_bruteforce_per_head_softmax(tiny_model):
    """Row = query, column = key: recompute head 1 of layer 0 by hand."""
    idx = _batch(tiny_model, B=1, N=9)
    _, attn = tiny_model(idx, return_attention_weights=True)
    block = tiny_model.layers[0]
    x = block.layer_norm_1(tiny_model.embed(idx))
    k, q, v = block.causal_attention.kqv_matrices[1](x).split(tiny_model.config.head_size, dim=-1)
    scores = q[0] @ k[0].T / math.sqrt(tiny_model.config.head_size)
    scores = scores.masked_fill(torch.triu(torch.ones(9, 9, dtype=torch.bool), 1), float("-inf"))
    torch.testing.assert_close(attn[0, 0, 1], torch.softmax(scores, -1), atol=1e-6, rtol=0)


def test_without_residuals_paths_agree():
    torch.manual_seed(3)
    model = TransformerLM(2, 2, 16, 16, 11, 32, with_residuals=False).eval()
    idx = _batch(model, N=16)
    logits, _ = model(idx, return_attention_weights=True)
    torch.testing.assert_close(logits, model(idx), atol=1e-5, rtol=0)


@pytest.mark.parametrize("residuals", [True, False])
def test_attention_only_pass_equals_the_full_forward_attention(residuals):
    """`attention()` (capture's pass: no logits, no last MLP) gives exactly the forward pass's weights."""
    torch.manual_seed(3)
    model = TransformerLM(3, 2, 16, 24, 11, 32, residuals).eval()
    idx = torch.randint(0, 11, (5, 24))
    _, full = model(idx, return_attention_weights=True)  # (L, B, H, T, S)
    fast = model.attention(idx)  # (B, L, H, T, S)
    assert fast.transpose(0, 1).is_contiguous()  # layer-major underneath: the layers were never stacked
    assert torch.equal(fast, full.permute(1, 0, 2, 3, 4))
    with model.ablate({(0, 1): "uniform"}):
        assert torch.equal(model.attention(idx), model(idx, return_attention_weights=True)[1].permute(1, 0, 2, 3, 4))


def test_too_long_sequence_is_rejected(tiny_model):
    with pytest.raises(ValueError, match="max_context_len"):
        tiny_model(torch.zeros(1, 33, dtype=torch.long))


# --- an independent implementation of the course skeleton, written the course's way ----------

class CourseAttention(nn.Module):
    def __init__(self, D, H, ctx):
        super().__init__()
        self.H = H
        self.kqv_matrices = nn.ModuleList([nn.Linear(D, 3 * D // H) for _ in range(H)])
        self.register_buffer("mask", torch.tril(torch.ones(ctx, ctx)).unsqueeze(0))
        self.proj = nn.Linear(D, D)

    def forward(self, x):
        B, N, D = x.shape
        outs = []
        for kqv in self.kqv_matrices:
            k, q, v = torch.split(kqv(x), D // self.H, dim=2)
            att = q @ k.transpose(1, 2) / math.sqrt(k.shape[-1])
            att = att.masked_fill(self.mask[:, :N, :N] == 0, float("-inf"))
            outs.append(F.softmax(att, dim=-1) @ v)
        return self.proj(torch.cat(outs, dim=2))


class CourseMLP(nn.Module):
    def __init__(self, D, hidden):
        super().__init__()
        self.i2h, self.h2o = nn.Linear(D, hidden), nn.Linear(hidden, D)

    def forward(self, x):
        return self.h2o(F.gelu(self.i2h(x)))


class CourseBlock(nn.Module):
    def __init__(self, D, H, ctx, hidden):
        super().__init__()
        self.layer_norm_1 = nn.LayerNorm(D)
        self.causal_attention = CourseAttention(D, H, ctx)
        self.layer_norm_2 = nn.LayerNorm(D)
        self.mlp = CourseMLP(D, hidden)

    def forward(self, x):
        x = x + self.causal_attention(self.layer_norm_1(x))
        return x + self.mlp(self.layer_norm_2(x))


class CourseEmbed(nn.Module):
    def __init__(self, V, D, ctx):
        super().__init__()
        self.token_embeddings = nn.Embedding(V, D)
        self.position_embeddings = nn.Embedding(ctx, D)

    def forward(self, x):
        return self.token_embeddings(x) + self.position_embeddings(torch.arange(x.shape[1]))


class CourseLM(nn.Module):
    def __init__(self, L, H, D, ctx, V, hidden):
        super().__init__()
        self.embed = CourseEmbed(V, D, ctx)
        self.layers = nn.ModuleList([CourseBlock(D, H, ctx, hidden) for _ in range(L)])
        self.layer_norm = nn.LayerNorm(D)
        self.word_prediction = nn.Linear(D, V)

    def forward(self, x):
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.word_prediction(self.layer_norm(x))


def course_model(seed=7):
    torch.manual_seed(seed)
    model = CourseLM(L=3, H=2, D=24, ctx=20, V=13, hidden=40).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_course_state_dict_loads_strictly_and_gives_same_logits():
    ref = course_model()
    ours = TransformerLM(3, 2, 24, 20, 13, 40, with_residuals=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    idx = torch.randint(0, 13, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), ref(idx), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours(idx, return_attention_weights=True)[0], ref(idx), atol=1e-5, rtol=0)


def test_ablation_changes_output_inside_and_restores_it_bit_identically(tiny_model):
    idx = _batch(tiny_model)
    before = tiny_model(idx).clone()
    weights = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    for mode in ("zero", "uniform", "mean"):
        means = {(0, 1): torch.zeros(tiny_model.config.head_size) + 0.3}
        with tiny_model.ablate({(0, 1): mode}, means=means):
            inside = tiny_model(idx)
        assert not torch.equal(inside, before), mode
        assert torch.equal(tiny_model(idx), before), mode
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, weights[k])


def test_ablation_state_is_cleared_after_an_exception(tiny_model):
    idx = _batch(tiny_model)
    before = tiny_model(idx).clone()
    with pytest.raises(RuntimeError):
        with tiny_model.ablate({(1, 0): "zero"}):
            raise RuntimeError("boom")
    assert torch.equal(tiny_model(idx), before)


def test_uniform_ablation_sets_attention_to_uniform_prefix(tiny_model):
    idx = _batch(tiny_model, B=1, N=6)
    with tiny_model.ablate({(1, 2): "uniform"}):
        _, attn = tiny_model(idx, return_attention_weights=True)
    expected = torch.tril(torch.ones(6, 6)) / torch.arange(1, 7).unsqueeze(1)
    torch.testing.assert_close(attn[1, 0, 2], expected)


def test_ablation_rejects_unknown_head_and_mode(tiny_model):
    with pytest.raises(ValueError, match="no head"):
        with tiny_model.ablate({(5, 0): "zero"}):
            pass
    with pytest.raises(ValueError, match="unknown ablation mode"):
        with tiny_model.ablate({(0, 0): "scramble"}):
            pass


def test_generate_is_deterministic_for_a_seed_and_respects_top_k(tiny_model):
    prefix = torch.tensor([1, 2, 3])
    a = tiny_model.generate(prefix, 40, temperature=0.8, top_k=3, generator=torch.Generator().manual_seed(5))
    b = tiny_model.generate(prefix, 40, temperature=0.8, top_k=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (43,)
    greedy = tiny_model.generate(prefix, 5, temperature=0)
    assert torch.equal(greedy, tiny_model.generate(prefix, 5, temperature=0))


@pytest.mark.parametrize("residuals", [True, False])
def test_a_forward_pass_resumed_at_an_ablated_heads_layer_gives_the_full_pass_bit_for_bit(residuals):
    """Ablation scores resume each pass at the ablated head's layer from the stored residual stream; every mode
    at every layer must give exactly the losses of the full pass (a change that breaks this changes results)."""
    from reportgen.ablation import head_means, layer_inputs, nll_bits

    torch.manual_seed(0)
    model = TransformerLM(3, 2, 16, 24, 11, 32, residuals).eval()
    windows = torch.randint(0, 11, (70, 25))  # two batches of nll_bits, the second short
    stored = layer_inputs(model, windows)
    assert stored is not None and len(stored) == 2 and len(stored[0]) == 3
    means = head_means(model, windows)
    checked = 0
    for mode in ("zero", "mean", "uniform"):
        for layer in range(3):
            with model.ablate({(layer, 1): mode}, means=means):
                full = nll_bits(model, windows)
                resumed = nll_bits(model, windows, resume=(layer, stored))
            assert torch.equal(full, resumed), (mode, layer)
            assert not torch.equal(full, nll_bits(model, windows))  # the ablation did change the losses
            checked += 1
    assert checked == 9


@pytest.mark.parametrize("residuals", [True, False])
def test_an_ablation_pass_with_the_layers_other_heads_patched_in_gives_the_full_pass_bit_for_bit(residuals):
    """A resumed ablation pass that patches in the layer's clean head outputs (and the ablated head's zero, mean or
    rolled resample) attends to nothing at that layer; its losses must equal the full ablated pass's exactly."""
    from reportgen.ablation import _ablated, clean_heads, head_means, layer_inputs, nll_bits

    torch.manual_seed(1)
    model = TransformerLM(3, 2, 16, 24, 11, 32, residuals).eval()
    windows = torch.randint(0, 11, (70, 25))
    inputs = layer_inputs(model, windows)
    heads = clean_heads(model, inputs)
    assert heads is not None and heads[0][0].shape == (35, 2, 24, 8)
    means = head_means(model, windows)
    for mode in ("zero", "mean", "resample"):
        for layer in range(3):
            for head in range(2):
                full = 0.0
                for shift in (1, 2) if mode == "resample" else (1,):
                    with model.ablate({(layer, head): mode}, means=means, shift=shift):
                        full = full + nll_bits(model, windows).numpy()
                full = full / (2 if mode == "resample" else 1)
                draws = 2 if mode == "resample" else 1
                patched = _ablated(model, (layer, head), mode, windows, (inputs, heads), means, draws)
                assert np.array_equal(full, patched), (mode, layer, head)
                assert not np.array_equal(full, nll_bits(model, windows).numpy())


def test_attention_weights_keep_their_gradient():
    """Outside no_grad the weights are stacked, not written into a buffer (out= has no gradient), and a
    uniform-ablated head's weights are a copy: the course's training code can still backpropagate through them."""
    torch.manual_seed(5)
    model = TransformerLM(2, 2, 16, 12, 9, 32, True)
    idx = torch.randint(0, 9, (3, 12))
    logits, attn = model(idx, return_attention_weights=True)
    (logits.sum() + attn.pow(2).sum()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with torch.no_grad():
        assert torch.equal(model(idx, return_attention_weights=True)[1], attn.detach())
    model.zero_grad()
    with model.ablate({(1, 0): "uniform"}):
        logits, attn = model(idx, return_attention_weights=True)
        attn.sum().backward()
