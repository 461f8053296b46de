"""Every stage fits the model's context: end-to-end runs of context-16 and context-64 models (lowercase-only
vocabulary, so the built-in capitalised examples do not apply) produce a complete site."""

from __future__ import annotations

import json

import pytest
import torch

from reportgen.checkpoint import save_checkpoint
from reportgen.cli import cli
from reportgen.model import TransformerLM
from reportgen.tokenizer import CharTokenizer

from .planted import planted_text


@pytest.mark.slow  # full runs through the CLI
@pytest.mark.parametrize("context", [16, 64])
def test_small_context_models_run_end_to_end(tmp_path, context):
    text = planted_text(12000).lower()
    (tmp_path / "text.txt").write_text(text)
    tok = CharTokenizer.from_text([text])
    torch.manual_seed(0)
    model = TransformerLM(2, 2, 32, context, tok.vocab_size(), 64, True).eval()
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, model, tok, step=1, train_loss=3.0, heldout_bits_per_char=3.0,
                    corpus={"name": "lower", "language": "en"}, seed=0, history=[])
    out = tmp_path / "site"
    assert cli(["run", "--model", str(ckpt), "--text", str(tmp_path / "text.txt"), "--out", str(out),
                "--train-windows", "32", "--no-pdf"]) == 0
    (m,) = json.loads((out / "results.json").read_text())["models"]
    assert m["corpus"]["window_length"] == context and m["ablation"]
    assert (out / "index.html").exists() and len(list(out.glob("head-*.html"))) == 4
    for effect in m["role_effects"]:
        assert len(effect["passage"]) <= context


def test_each_model_reads_its_own_text(tmp_path, capsys):
    paths = []
    for n, seed in enumerate((1, 2)):
        text = planted_text(8000, seed)
        (tmp_path / f"t{n}.txt").write_text(text)
        tok = CharTokenizer.from_text([text])
        torch.manual_seed(n)
        model = TransformerLM(1, 2, 16, 32, tok.vocab_size(), 32, True).eval()
        save_checkpoint(tmp_path / f"m{n}.pt", model, tok, step=1, train_loss=3.0, heldout_bits_per_char=3.0,
                        corpus={"name": "x", "language": "en"}, seed=0, history=[])
        paths.append(n)
    args = ["analyze", "--model", str(tmp_path / "m0.pt"), "--model", str(tmp_path / "m1.pt"),
            "--text", str(tmp_path / "t0.txt"), "--text", str(tmp_path / "t1.txt"), "--out", str(tmp_path / "out"),
            "--train-windows", "16"]
    assert cli(args) == 0
    models = json.loads((tmp_path / "out" / "results.json").read_text())["models"]
    assert [m["corpus"]["description"].split(" ")[0].split("/")[-1] for m in models] == ["t0.txt", "t1.txt"]
    assert cli(args[:5] + ["--text", str(tmp_path / "t0.txt")] * 3 + ["--out", str(tmp_path / "o2")]) == 2
    assert "3 --text values for 2 --model" in capsys.readouterr().err


def test_diff_of_checkpoints_on_a_users_text(tmp_path, capsys):
    text = planted_text(8000).lower()
    (tmp_path / "t.txt").write_text(text)
    tok = CharTokenizer.from_text([text])
    torch.manual_seed(0)
    model = TransformerLM(1, 2, 16, 32, tok.vocab_size(), 32, True).eval()
    for name in ("a", "b"):
        save_checkpoint(tmp_path / f"{name}.pt", model, tok, step=1, train_loss=3.0, heldout_bits_per_char=3.0,
                        corpus={"name": "x"}, seed=0, history=[])
    code = cli(["diff", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--text", str(tmp_path / "t.txt"),
                "--language", "en", "--out", str(tmp_path / "d"), "--no-pdf", "--fail-on-change"])
    err = capsys.readouterr().err
    assert code == 0, err
    # the two sides told apart by their file names: each side's progress lines by its label (one after the other),
    # or both sides analysed side by side in quiet worker processes (where there are cores for it)
    assert ("English a: capture" in err and "English b: capture" in err
            or f"{tmp_path / 'a.pt'} and {tmp_path / 'b.pt'}: analysed side by side" in err)
    assert json.loads((tmp_path / "d" / "diff.json").read_text())["significant"] == 0
    first = json.loads((tmp_path / "d" / "diff.json").read_text())
    assert cli(["diff", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--text", str(tmp_path / "t.txt"),
                "--language", "en", "--out", str(tmp_path / "d"), "--no-pdf"]) == 0
    assert capsys.readouterr().err.count("analysis reused from the cache") == 2  # a re-diff reuses both analyses
    assert json.loads((tmp_path / "d" / "diff.json").read_text())["models"] == first["models"]


def test_a_language_without_a_record_gets_classes_from_its_script(tmp_path, capsys):
    import random

    random.seed(0)
    words = "в начале сотворил бог небо и землю земля же была безвидна и пуста".split()
    text = "".join(" ".join(random.choice(words) for _ in range(10)).capitalize() + ".\n" for _ in range(300))
    (tmp_path / "ru.txt").write_text(text)
    tok = CharTokenizer.from_text([text + "abc"])  # a few Latin letters in the vocabulary too
    torch.manual_seed(0)
    model = TransformerLM(1, 2, 16, 32, tok.vocab_size(), 32, True).eval()
    save_checkpoint(tmp_path / "ru.pt", model, tok, step=1, train_loss=3.0, heldout_bits_per_char=3.0,
                    corpus={"name": "ru"}, seed=0, history=[])
    base = ["analyze", "--model", str(tmp_path / "ru.pt"), "--language", "ru", "--text", str(tmp_path / "ru.txt"),
            "--train-windows", "16"]
    assert cli(base + ["--out", str(tmp_path / "a")]) == 0
    classes = json.loads((tmp_path / "a" / "results.json").read_text())["models"][0]["classes"]
    assert "vowel" not in classes and "б" in classes["letter"] and "a" not in classes["letter"]  # Latin: other
    (tmp_path / "v.toml").write_text('vowels = { ru = "аеиоуыэюя" }\n')
    assert cli(base + ["--config", str(tmp_path / "v.toml"), "--out", str(tmp_path / "b")]) == 0
    classes = json.loads((tmp_path / "b" / "results.json").read_text())["models"][0]["classes"]
    assert set(classes["vowel"]) >= set("аеиоуыя") and "И" in classes["vowel"] and "б" in classes["consonant"]
    assert cli(["analyze", "--model", str(tmp_path / "ru.pt"), "--language", "ru", "--out", str(tmp_path / "c")]) == 2
    assert "no default corpus" in capsys.readouterr().err
