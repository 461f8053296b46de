"""Shared fixtures: tiny seeded models and texts; nothing is downloaded."""

from __future__ import annotations

import pytest
import torch

from reportgen.model import TransformerLM
from reportgen.process import reuse_freed_memory
from reportgen.tokenizer import CharTokenizer

reuse_freed_memory()  # as a command does (`cli.main`): freed tensors' memory reused, not faulted in again

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


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/golden/* from the planted run instead of comparing against them")


@pytest.fixture(scope="session")
def planted_site(tmp_path_factory):
    """One full run (site, no PDF) of the hand-set planted model on its own text: known replicated roles."""
    from reportgen.cli import cli

    from .planted import write_planted

    root = tmp_path_factory.mktemp("planted")
    ckpt, text = write_planted(root)
    out = root / "site"
    args = ["run", "--model", str(ckpt), "--label", "Planted", "--language", "en", "--text", str(text),
            "--out", str(out), "--train-windows", "48", "--no-pdf"]
    assert cli(args) == 0
    return out, args


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Analyses cached for diffs go to a temporary folder, never the user's cache."""
    import os

    old = os.environ.get("REPORTGEN_CACHE")
    os.environ["REPORTGEN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("REPORTGEN_CACHE", None)
    else:
        os.environ["REPORTGEN_CACHE"] = old
