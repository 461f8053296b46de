"""A course-layout folder of checkpoints trained without residual connections, analysed without saying so:
the residual setting is inferred from the text, the emergence timeline covers the series (latest by
step number, not by name), and a gross mismatch with the recorded loss stops the run."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from reportgen.cli import cli
from reportgen.model import TransformerLM
from reportgen.tokenizer import CharTokenizer

from .planted import planted_text

pytestmark = pytest.mark.slow  # trains a small model


@pytest.fixture(scope="module")
def course_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    text = planted_text(30000)
    (root / "text.txt").write_text(text)
    tok = CharTokenizer.from_text([text])
    folder = root / "run"
    folder.mkdir()
    tok.save(folder / "tokenizer.json")
    torch.manual_seed(0)
    model = TransformerLM(2, 2, 32, 32, tok.vocab_size(), 64, with_residuals=False)
    ids = torch.tensor(tok.tokenize(text))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(1, 401):
        starts = torch.randint(0, len(ids) - 33, (32,), generator=g)
        batch = ids[starts[:, None] + torch.arange(33)]
        loss = F.cross_entropy(model(batch[:, :-1]).transpose(1, 2), batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in (50, 100, 400):  # names sort 100 < 400 < 50: latest must be chosen by number
            torch.save({"model_state_dict": model.state_dict(), "step": step, "loss": float(loss.detach())},
                       folder / f"checkpoint_step{step}_loss{float(loss.detach()):.2f}.pt")
    return root, folder


def test_residual_setting_is_inferred_and_the_series_gets_a_timeline(course_folder, capsys):
    root, folder = course_folder
    out = root / "site"
    assert cli(["run", "--model", str(folder), "--text", str(root / "text.txt"), "--language", "en",
                "--out", str(out), "--train-windows", "32", "--no-pdf"]) == 0
    assert "without residual connections fits the text better" in capsys.readouterr().err
    (m,) = json.loads((out / "results.json").read_text())["models"]
    assert m["hyperparameters"]["with_residuals"] is False
    assert m["checkpoint"]["step"] == 400
    assert m["timeline"] and m["timeline"]["steps"] == [50, 100, 400]
    assert m["baseline_bits_per_char"] < math.log2(m["hyperparameters"]["vocab_size"]) - 1


def test_forcing_the_wrong_setting_is_a_one_line_error_or_warning(course_folder, capsys):
    root, folder = course_folder
    code = cli(["analyze", "--model", str(folder), "--residuals", "--text", str(root / "text.txt"),
                "--language", "en", "--out", str(root / "wrong"), "--train-windows", "32"])
    err = capsys.readouterr().err
    assert "wrong architecture flags" in err
    if code == 2:
        assert len(err.strip().splitlines()) == 1
