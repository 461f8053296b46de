"""Causal ablation: a head that carries the signal costs more than an idle head, with separated CIs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reportgen.ablation import ablate_heads
from reportgen.checkpoint import ModelBundle
from reportgen.classes import CharClasses
from reportgen.model import TransformerLM
from reportgen.tokenizer import CharTokenizer

pytestmark = pytest.mark.slow  # trains a model


def paired_text(n, seed=0):
    """Random letters each written twice ('ggkkaa...'): the second of a pair needs the previous character."""
    rng = np.random.default_rng(seed)
    return "".join(c * 2 for c in rng.choice(list("abcdefgh"), size=n // 2))


def trained_one_working_head():
    """A 1-layer, 2-head model trained with head 1 frozen at zero: head 0 must do the copying."""
    torch.manual_seed(0)
    text = paired_text(20000)
    tok = CharTokenizer.from_text([text])
    model = TransformerLM(1, 2, 32, 32, tok.vocab_size(), 64, with_residuals=True)
    idle = model.layers[0].causal_attention.kqv_matrices[1]
    with torch.no_grad():
        idle.weight.zero_()
        idle.bias.zero_()
    idle.weight.requires_grad_(False)
    idle.bias.requires_grad_(False)
    ids = torch.tensor(tok.tokenize(text))
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        starts = torch.randint(0, len(ids) - 33, (32,), generator=g)
        batch = ids[starts[:, None] + torch.arange(33)]
        loss = F.cross_entropy(model(batch[:, :-1]).transpose(1, 2), batch[:, 1:])
        optim.zero_grad()
        loss.backward()
        optim.step()
    return ModelBundle(model.eval(), tok, path=None, sha256="", language="en"), ids


def test_ablating_the_working_head_costs_more_than_the_idle_head_with_separate_cis():
    bundle, ids = trained_one_working_head()
    windows = ids[: 40 * 33].view(40, 33)
    probes = ids[: 8 * 32].view(8, 32)
    classes = CharClasses.for_vocab(bundle.tokenizer.vocab, "en")
    before = bundle.model(windows[:, :-1]).clone()
    baseline, heads = ablate_heads(bundle, windows, probes, 16, classes, np.random.default_rng(0), mode="mean")
    working, idle = heads
    assert working.delta_bits_per_char > 0.3, working
    assert working.ci_low > idle.ci_high
    assert abs(idle.delta_bits_per_char) < 1e-4
    for mode in ("zero", "uniform"):
        _, (w, i) = ablate_heads(bundle, windows, probes, 16, classes, np.random.default_rng(0), mode=mode)
        assert w.ci_low > i.ci_high, mode
    assert torch.equal(bundle.model(windows[:, :-1]), before)  # outputs bit-identical afterwards
