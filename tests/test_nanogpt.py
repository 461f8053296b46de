"""nanoGPT checkpoints load into the course layout with identical logits; meta.pkl never runs code."""

from __future__ import annotations

import json
import math
import os
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from reportgen.checkpoint import load_checkpoint
from reportgen.errors import ReportgenError


class Block(nn.Module):
    """nanoGPT's block, written independently: fused c_attn with q, k, v blocks."""

    def __init__(self, D, H, bias):
        super().__init__()
        self.H = H
        self.ln_1, self.ln_2 = nn.LayerNorm(D, bias=bias), nn.LayerNorm(D, bias=bias)
        self.attn = nn.Module()
        self.attn.c_attn, self.attn.c_proj = nn.Linear(D, 3 * D, bias=bias), nn.Linear(D, D, bias=bias)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(D, 4 * D, bias=bias), nn.Linear(4 * D, D, bias=bias)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, self.H, D // self.H).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(D // self.H)
        att = att.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf")).softmax(-1)
        x = x + self.attn.c_proj((att @ v).transpose(1, 2).reshape(B, T, D))
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, L=2, H=2, D=16, ctx=12, V=11, bias=True):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(wte=nn.Embedding(V, D), wpe=nn.Embedding(ctx, D),
                                              h=nn.ModuleList(Block(D, H, bias) for _ in range(L)),
                                              ln_f=nn.LayerNorm(D, bias=bias)))
        self.lm_head = nn.Linear(D, V, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in nanoGPT

    def forward(self, idx):
        x = self.transformer.wte(idx) + self.transformer.wpe(torch.arange(idx.shape[1]))
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))


@pytest.mark.parametrize("bias", [True, False])
def test_nanogpt_checkpoint_gives_identical_logits(tmp_path, bias):
    torch.manual_seed(0)
    gpt = GPT(bias=bias).eval()
    with torch.no_grad():
        for p in gpt.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = {f"_orig_mod.{k}": v for k, v in gpt.state_dict().items()}
    torch.save({"model": state, "model_args": dict(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=11,
                                                   bias=bias, dropout=0.0),
                "config": {"dataset": "tiny"}, "iter_num": 500, "best_val_loss": 1.5}, tmp_path / "ckpt.pt")
    chars = "\n abcdefghi"
    with (tmp_path / "meta.pkl").open("wb") as fh:
        pickle.dump({"vocab_size": 11, "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}, fh)
    bundle = load_checkpoint(tmp_path)
    assert bundle.metadata["format"] == "nanogpt" and bundle.metadata["step"] == 500
    assert bundle.tokenizer.vocab == list(chars)
    assert bundle.tokenizer.tokenize("a\nb") == [2, 0, 3]  # no <PAD>: the first symbol is a real character
    idx = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(idx), gpt(idx), atol=1e-5, rtol=0)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_meta_pkl_with_code_is_refused(tmp_path):
    gpt = GPT()
    torch.save({"model": gpt.state_dict(), "model_args": dict(n_layer=2, n_head=2, n_embd=16, block_size=12,
                                                               vocab_size=11)}, tmp_path / "ckpt.pt")
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"itos": {0: "a"}, "x": _Evil()}))
    with pytest.raises(ReportgenError, match="meta.pkl: not a plain-data meta.pkl"):
        load_checkpoint(tmp_path / "ckpt.pt")


def test_nanogpt_layout_finds_meta_in_data_dataset_and_info_prints_tensor_metadata(tmp_path, capsys):
    """nanoGPT keeps meta.pkl in data/<dataset>/ and best_val_loss as a tensor; --meta points anywhere."""
    from reportgen.cli import cli

    torch.manual_seed(0)
    gpt = GPT(bias=False).eval()
    run = tmp_path / "out-tiny"
    run.mkdir()
    torch.save({"model": gpt.state_dict(), "model_args": dict(n_layer=2, n_head=2, n_embd=16, block_size=12,
                                                             vocab_size=11, bias=False, dropout=0.0),
                "config": {"dataset": "tiny_chars"}, "iter_num": torch.tensor(250),
                "best_val_loss": torch.tensor(1.25)}, run / "ckpt.pt")
    chars = "\n abcdefghi"
    data = tmp_path / "data" / "tiny_chars"
    data.mkdir(parents=True)
    with (data / "meta.pkl").open("wb") as fh:
        pickle.dump({"vocab_size": 11, "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}, fh)
    assert cli(["info", str(run / "ckpt.pt")]) == 0
    meta = json.loads(capsys.readouterr().out)["metadata"]
    assert meta["best_val_loss"] == 1.25 and meta["step"] == 250
    moved = tmp_path / "elsewhere.pkl"
    (data / "meta.pkl").rename(moved)
    assert cli(["info", str(run / "ckpt.pt")]) == 2
    assert "--meta" in capsys.readouterr().err
    assert cli(["info", str(run / "ckpt.pt"), "--meta", str(moved)]) == 0


@pytest.mark.parametrize("wrong", [dict(n_layer=1), dict(n_layer=3), dict(n_embd=32), dict(block_size=24),
                                   dict(vocab_size=12), dict(n_head=3)])
def test_model_args_that_disagree_with_the_weights_are_refused(tmp_path, wrong):
    """model_args were trusted over the tensors (a smaller n_layer silently dropped layers); now each disagreement
    is one line naming the argument and what the weights say."""
    gpt = GPT()
    args = dict(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=11, bias=True, dropout=0.0) | wrong
    torch.save({"model": gpt.state_dict(), "model_args": args}, tmp_path / "ckpt.pt")
    chars = "\n abcdefghi"
    with (tmp_path / "meta.pkl").open("wb") as fh:
        pickle.dump({"vocab_size": 11, "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}, fh)
    with pytest.raises(ReportgenError, match=f"model_args {next(iter(wrong))} = |n_head = 3"):
        load_checkpoint(tmp_path)
