"""Every training layout in the README's table, built file by file: the latest checkpoint by step number, the series
in numeric order, the vocabulary and hyperparameters found where the layout keeps them, and the recorded loss."""

from __future__ import annotations

import json
import math
import pickle
import re
from pathlib import Path

import pytest
import torch

from reportgen.checkpoint import load_checkpoint, save_checkpoint
from reportgen.config import family
from reportgen.errors import ReportgenError
from reportgen.layouts import resolve, run_files, series
from reportgen.model import TransformerLM
from reportgen.timeline import recorded_loss
from reportgen.tokenizer import CharTokenizer

from .test_nanogpt import GPT

README = Path(__file__).parent.parent / "README.md"
TEXT = "abcdefghijkl"  # 12 characters + <PAD> = 13 symbols
CHARS = "\n abcdefghi"  # a nanoGPT vocabulary of 11


def _course(seed: int) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(2, 2, 16, 12, 13, 32, with_residuals=True).eval()


def _course_save(path: Path, step: int, loss: float, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": _course(seed).state_dict(), "step": step, "loss": loss}, path)


def _nano_save(path: Path, step: int, loss: float, seed: int) -> None:
    torch.manual_seed(seed)
    torch.save({"model": GPT().state_dict(), "model_args": dict(n_layer=2, n_head=2, n_embd=16, block_size=12,
                                                               vocab_size=11, bias=True, dropout=0.0),
                "config": {"dataset": "tiny"}, "iter_num": step, "best_val_loss": torch.tensor(loss)}, path)


def _meta(folder: Path) -> None:
    with (folder / "meta.pkl").open("wb") as fh:
        pickle.dump({"vocab_size": 11, "itos": dict(enumerate(CHARS)), "stoi": {c: i for i, c in enumerate(CHARS)}}, fh)


# Each builder makes its layout under `root` and returns (the --model path, [(checkpoint, step, recorded bits)] in
# step order); the last one is what the folder means. Steps are chosen so that names sort differently from numbers.
def reportgen_layout(root: Path):
    run = root / "run"
    tok = CharTokenizer.from_text([TEXT])
    out = []
    for step, bits in ((250, 3.0), (1000, 2.5), (5000, 2.0)):
        path = run / f"step{step}.pt"  # step250 > step1000 > step5000 by name
        save_checkpoint(path, _course(step), tok, step=step, train_loss=1.0, heldout_bits_per_char=bits,
                        corpus={"name": "tiny", "language": "en"}, seed=0, history=[], dtype=torch.float32)
        out.append((path, step, None))
    return run, out


def course_flat(root: Path):
    run = root / "run"
    out = []
    for step, loss in ((50, 2.10), (100, 1.70), (400, 1.30)):
        path = run / f"checkpoint_step{step}_loss{loss:.2f}.pt"
        _course_save(path, step, loss, step)
        out.append((path, step, loss / math.log(2)))
    CharTokenizer.from_text([TEXT]).save(run / "tokenizer.json")
    (run / "checkpoint_step400_props.json").write_text(json.dumps({"with_residuals": False}))
    return run, out


def course_nested(root: Path):
    run = root / "checkpoints"
    out = []
    for step, loss in ((500, 2.0), (1000, 1.5), (1500, 1.25)):
        path = run / f"english_step_{step}" / "model.pt"
        _course_save(path, step, loss, step)
        out.append((path, step, loss / math.log(2)))
    CharTokenizer.from_text([TEXT]).save(run / "tokenizer.json")  # above the step folders ...
    CharTokenizer.from_text([TEXT]).save(run / "english_step_1500" / "tokenizer.json")  # ... and in one of them
    (run / "props.json").write_text(json.dumps({"with_residuals": False}))
    return run, out


def nanogpt_snapshots(root: Path):
    run = root / "out"
    run.mkdir()
    _meta(run)
    out = []
    for step, loss in ((750, 1.8), (1000, 1.6), (1250, 1.5)):  # ckpt_iter750 sorts after ckpt_iter1250 by name
        path = run / f"ckpt_iter{step}.pt"
        _nano_save(path, step, loss, step)
        out.append((path, step, loss / math.log(2)))
    return run, out


def nanogpt(root: Path):
    run = root / "out"
    data = root / "data" / "tiny"
    data.mkdir(parents=True)
    run.mkdir()
    _meta(data)
    _nano_save(run / "ckpt.pt", 600, 1.4, 0)
    return run, [(run / "ckpt.pt", 600, 1.4 / math.log(2))]


BUILDERS = {"reportgen": reportgen_layout, "course, flat": course_flat, "course main.py, nested": course_nested,
            "nanoGPT snapshots": nanogpt_snapshots, "nanoGPT": nanogpt}


def test_the_readme_table_lists_exactly_the_tested_layouts():
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| layout | `--model` |"):].split("\n\n")[0]
    rows = [re.match(r"\s*\| ([^|]+?) \|", line)[1] for line in table.splitlines()[2:]]
    assert rows == list(BUILDERS)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_each_layout_resolves_to_its_highest_step_and_reads_as_a_numeric_series(tmp_path, name):
    model_path, expected = BUILDERS[name](tmp_path)
    latest = expected[-1][0]
    assert resolve(model_path) == latest
    assert series(latest) == ([p for p, _, _ in expected] if len(expected) > 1 else [])
    for path, step, bits in expected:
        bundle = load_checkpoint(path)
        assert bundle.metadata["step"] == step
        value, kind = recorded_loss(bundle.metadata)
        assert (value is None) == (bits is None) and (bits is None or value == pytest.approx(bits))
        assert (kind is None) == (bits is None)
    bundle = load_checkpoint(model_path)
    assert bundle.path == latest
    if name.startswith("course"):  # props beside the checkpoint, or above the step folders
        assert bundle.config.with_residuals is False and bundle.metadata["recorded"] == ["with_residuals"]
    assert set(run_files(model_path)) >= {p for p, _, _ in expected}


def test_a_nested_step_folder_with_props_and_tokenizer_beside_it(tmp_path):
    run = tmp_path / "checkpoints"
    _course_save(run / "step_20" / "checkpoint_step20_loss1.50.pt", 20, 1.5, 0)
    _course_save(run / "step_3" / "checkpoint_step3_loss2.50.pt", 3, 2.5, 1)
    for folder in ("step_20", "step_3"):
        CharTokenizer.from_text([TEXT]).save(run / folder / "tokenizer.json")
    (run / "step_20" / "checkpoint_step20_props.json").write_text(json.dumps({"n_heads": 2}))
    bundle = load_checkpoint(run)
    assert bundle.path.parent.name == "step_20" and bundle.metadata["recorded"] == ["n_heads"]
    assert [p.parent.name for p in series(bundle.path)] == ["step_3", "step_20"]
    assert bundle.metadata["train_loss"] == 1.5


def test_two_runs_in_one_checkpoints_folder_are_refused_in_one_line(tmp_path):
    run = tmp_path / "checkpoints"
    for lang in ("english", "hebrew"):
        for step in (100, 200):
            _course_save(run / f"{lang}_step_{step}" / "model.pt", step, 1.0, step)
    with pytest.raises(ReportgenError) as err:
        resolve(run)
    assert str(err.value).startswith(f"{run}: holds the step folders of 2 runs (english_step_*, hebrew_step_*)")
    assert "\n" not in str(err.value)
    picked = run / "hebrew_step_100" / "model.pt"  # one run's step folder: its siblings of that run only
    assert [p.parent.name for p in series(picked)] == ["hebrew_step_100", "hebrew_step_200"]


def test_seed_folders_are_seeds_never_steps(tmp_path):
    root = tmp_path / "family"
    for seed in (1, 2):
        for step in (10, 30):
            _course_save(root / f"seed{seed}" / f"run_step_{step}" / "model.pt", step, 1.0, seed * step)
        CharTokenizer.from_text([TEXT]).save(root / f"seed{seed}" / "tokenizer.json")
    drawn, others = family(root)
    assert drawn == root / "seed1" and others == (root / "seed2",)
    assert resolve(drawn) == root / "seed1" / "run_step_30" / "model.pt"
    with pytest.raises(ReportgenError, match="folder holds no .pt checkpoint"):
        resolve(root)  # seed1/ and seed2/ are not a series of steps
    assert load_checkpoint(drawn).metadata["step"] == 30


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["course main.py, nested", "nanoGPT snapshots"])
def test_a_run_on_the_layout_gets_a_timeline_in_numeric_order_with_recorded_losses(tmp_path, layout):
    from reportgen.cli import cli

    from .planted import planted_model, planted_text

    text = planted_text()
    (tmp_path / "text.txt").write_text(text)
    tok = CharTokenizer.from_text([text])
    steps, losses = (500, 1000, 1500), (4.6, 4.5, 4.4)  # nats; english_step_1000 < _1500 < _500 by name
    if layout == "nanoGPT snapshots":
        steps = (750, 1000, 1250)
        run = tmp_path / "out-planted"
        run.mkdir()
        chars = sorted(set(text))
        with (run / "meta.pkl").open("wb") as fh:
            pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)),
                         "stoi": {c: i for i, c in enumerate(chars)}}, fh)
        for step, loss in zip(steps, losses):
            torch.manual_seed(step)
            gpt = GPT(L=1, H=2, D=32, ctx=32, V=len(chars))
            torch.save({"model": gpt.state_dict(), "model_args": dict(n_layer=1, n_head=2, n_embd=32, block_size=32,
                                                                     vocab_size=len(chars), bias=True, dropout=0.0),
                        "iter_num": step, "best_val_loss": loss}, run / f"ckpt_iter{step}.pt")
        extra = []
    else:
        run = tmp_path / "checkpoints"
        for step, loss, sharpness in zip(steps, losses, (0.5, 1.0, 2.0)):
            (run / f"english_step_{step}").mkdir(parents=True)
            torch.save({"model_state_dict": planted_model(tok, sharpness).state_dict(), "step": step, "loss": loss},
                       run / f"english_step_{step}" / "model.pt")
        tok.save(run / "tokenizer.json")
        extra = ["--residuals"]
    out = tmp_path / "site"
    assert cli(["run", "--model", str(run), *extra, "--language", "en", "--text", str(tmp_path / "text.txt"),
                "--out", str(out), "--train-windows", "48", "--no-pdf"]) == 0
    (m,) = json.loads((out / "results.json").read_text())["models"]
    assert m["label"] == run.name  # the run's folder name, not the file's ("model", "ckpt_iter1250")
    assert m["checkpoint"]["step"] == steps[-1]
    t = m["timeline"]
    assert t["steps"] == list(steps)
    assert t["recorded_bits_per_char"] == pytest.approx([x / math.log(2) for x in losses], rel=1e-5)
    assert t["recorded"] == ("training loss" if layout.startswith("course") else "validation loss (best so far)")
    page = (out / f"model-{m['slug']}.html").read_text()
    table = page[page.index('<table class="timeline">'):].split("</table>")[0]  # a row per checkpoint
    assert f"<th>{t['recorded']} recorded" in table and "n/a" not in table
    rows = table.split("<tbody>")[1].split("</tr>")[:-1]
    assert [r.split("<td>")[1].split("</td>")[0] for r in rows] == [str(s) for s in steps]
