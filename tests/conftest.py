"""Shared fixtures: tiny seeded models and texts; nothing is downloaded."""

from __future__ import annotations

import pytest
import torch

from reportgen.model import TransformerLM
from reportgen.tokenizer import CharTokenizer

TINY_TEXT = "the cat sat on the mat. the dog ran to the log!\nhello world, hello again.\n" * 4


@pytest.fixture
def tokenizer() -> CharTokenizer:
    return CharTokenizer.from_text([TINY_TEXT])


@pytest.fixture
def tiny_model(tokenizer) -> TransformerLM:
    torch.manual_seed(0)
    model = TransformerLM(n_layers=2, n_heads=4, embed_size=32, max_context_len=32,
                          vocab_size=tokenizer.vocab_size(), mlp_hidden_size=64, with_residuals=True)
    return model.eval()
