"""A researcher's workbench (issue 24): one loader for every entry point, and the Python API's activations,
ablation and patching, direct logit attribution, hypothesis tests and notebook explorer.

The course checkpoint here is trained for a few dozen steps without residual connections and saved the course's
way (no props JSON, so the setting is not recorded): the run infers it from the text, and export, info and
`api.load` must build the same model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reportgen import api
from reportgen.cli import cli
from reportgen.errors import ReportgenError
from reportgen.model import TransformerLM
from reportgen.tokenizer import CharTokenizer

from .planted import planted_text


@pytest.fixture(scope="module")
def course_run(tmp_path_factory):
    """(root, run folder, text file): a no-residual course checkpoint with tokenizer.json and its text."""
    root = tmp_path_factory.mktemp("course")
    text = planted_text(12000)
    (root / "text.txt").write_text(text)
    tok = CharTokenizer.from_text([text])
    folder = root / "run"
    folder.mkdir()
    tok.save(folder / "tokenizer.json")
    torch.manual_seed(0)
    model = TransformerLM(2, 2, 32, 32, tok.vocab_size(), 64, with_residuals=False)
    ids = torch.tensor(tok.tokenize(text))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        starts = torch.randint(0, len(ids) - 33, (32,), generator=g)
        batch = ids[starts[:, None] + torch.arange(33)]
        loss = F.cross_entropy(model(batch[:, :-1]).transpose(1, 2), batch[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save({"model_state_dict": model.state_dict(), "step": 60, "loss": float(loss.detach())},
               folder / f"checkpoint_step60_loss{float(loss.detach()):.2f}.pt")
    return root, folder, root / "text.txt"


def _run_bundle(folder: Path, text: Path):
    """The model `reportgen run` analyses: its own preparation step (load, text, inferred residual setting)."""
    from reportgen.analyze import prepare
    from reportgen.config import ModelSpec, build_config

    spec = ModelSpec(folder, "course", "en", text)
    return prepare(spec, build_config(None, models=(spec,), out=folder.parent / "unused")).bundle


def test_export_info_and_api_build_the_runs_model_from_a_no_residual_course_checkpoint(course_run, capsys):
    root, folder, text = course_run
    run = _run_bundle(folder, text)
    assert run.config.with_residuals is False  # inferred by the run from its text
    passage = text.read_text()[:32]
    want = api.attention(run, passage)

    model = api.load(folder, text=text)
    assert model.config == run.config and model.tokenizer.vocab == run.tokenizer.vocab
    np.testing.assert_array_equal(api.attention(model, passage), want)
    assert model.metadata["with_residuals_inferred"] == run.metadata["with_residuals_inferred"]

    out = root / "a.npz"
    assert cli(["export", "--model", str(folder), "--text", str(text), "--windows", "1", "--out", str(out)]) == 0
    with np.load(out) as d:
        np.testing.assert_array_equal(d["attention_0"], want)
    assert cli(["export", "--model", str(folder), "--passage", passage, "--out", str(out), "--force"]) == 0
    with np.load(out) as d:  # passages only: the setting is inferred on them
        np.testing.assert_array_equal(d["attention_0"], want)

    capsys.readouterr()
    assert cli(["info", str(folder), "--text", str(text)]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["with_residuals"] is False
    assert cli(["info", str(folder)]) == 0  # no text: said to be unknown, not guessed
    captured = capsys.readouterr()
    assert json.loads(captured.out)["config"]["with_residuals"] is None
    assert len(captured.err.strip().splitlines()) == 1 and "--text" in captured.err


def test_without_a_text_an_undecided_course_checkpoint_is_a_one_line_error_and_flags_are_checked(course_run, capsys):
    root, folder, text = course_run
    with pytest.raises(ReportgenError, match="does not record whether it was trained with residual") as err:
        api.load(folder)
    assert "\n" not in str(err.value)
    forced = api.load(folder, with_residuals=False)  # said, not inferred: the same model
    np.testing.assert_array_equal(api.attention(forced, "the cat"), api.attention(api.load(folder, text=text),
                                                                                  "the cat"))
    capsys.readouterr()
    assert cli(["export", "--model", str(folder), "--passage", "the cat", "--out", str(root / "b.npz")]) == 0
    reportgen_ckpt = Path(__file__).parent.parent / "inputs" / "models" / "en" / "step00250.pt"
    with pytest.raises(ReportgenError, match="apply to course checkpoints"):
        api.load(reportgen_ckpt, with_residuals=False)
