"""Checkpoints: own format round trip, course layout with inference, and safe, one-line failures."""

from __future__ import annotations

import json
import os
import pickle
import zipfile

import pytest
import torch

from reportgen.checkpoint import load_checkpoint, save_checkpoint
from reportgen.cli import cli
from reportgen.errors import ReportgenError
from reportgen.tokenizer import CharTokenizer

from .test_model import course_model


def _save_own(tmp_path, tiny_model, tokenizer):
    path = tmp_path / "model.pt"
    save_checkpoint(path, tiny_model, tokenizer, step=12, train_loss=1.5, heldout_bits_per_char=2.1,
                    corpus={"name": "tiny", "language": "en"}, seed=3, history=[[12, 2.2, 2.1]],
                    dtype=torch.float32)
    return path


def test_own_checkpoint_round_trip(tmp_path, tiny_model, tokenizer):
    path = _save_own(tmp_path, tiny_model, tokenizer)
    bundle = load_checkpoint(path)
    assert bundle.config == tiny_model.config
    assert bundle.tokenizer.vocab == tokenizer.vocab
    assert bundle.language == "en" and bundle.metadata["step"] == 12 and len(bundle.sha256) == 64
    idx = torch.randint(0, tokenizer.vocab_size(), (2, 32), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(bundle.model(idx), tiny_model(idx), atol=0, rtol=0)
    assert not bundle.model.training


def _course_folder(tmp_path, props=False, tokenizer=True):
    model = course_model()
    folder = tmp_path / "course"
    folder.mkdir()
    torch.save({"model_state_dict": model.state_dict(), "optimizer_state_dict": {}, "step": 300, "loss": 1.25},
               folder / "checkpoint_step300_loss1.25.pt")
    text = "abcdefghijkl"  # 12 characters + <PAD> = 13 = V of course_model
    if tokenizer:
        CharTokenizer.from_text([text]).save(folder / "tokenizer.json")
    if props:
        (folder / "checkpoint_step300_props.json").write_text(json.dumps({"n_layers": 3, "n_heads": 2}))
    (folder / "train.txt").write_text(text)
    return model, folder


def test_course_folder_without_props_loads_with_inferred_hyperparameters(tmp_path):
    ref, folder = _course_folder(tmp_path)
    bundle = load_checkpoint(folder)
    c = bundle.config
    assert (c.n_layers, c.n_heads, c.embed_size, c.max_context_len, c.vocab_size, c.mlp_hidden_size) == (3, 2, 24, 20, 13, 40)
    assert c.with_residuals is True
    assert "n_heads" in bundle.metadata["hyperparameters_inferred"]
    assert bundle.metadata["step"] == 300
    idx = torch.randint(0, 13, (1, 20), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(bundle.model(idx), ref(idx), atol=1e-5, rtol=0)


def test_course_props_json_is_used(tmp_path):
    _, folder = _course_folder(tmp_path, props=True)
    bundle = load_checkpoint(folder / "checkpoint_step300_loss1.25.pt")
    assert "n_heads" not in bundle.metadata["hyperparameters_inferred"]


def test_course_without_tokenizer_needs_training_text_and_checks_vocab_size(tmp_path):
    _, folder = _course_folder(tmp_path, tokenizer=False)
    with pytest.raises(ReportgenError, match="tokenizer.json"):
        load_checkpoint(folder)
    bundle = load_checkpoint(folder, train_text=folder / "train.txt")
    assert bundle.tokenizer.vocab[1:] == list("abcdefghijkl")
    (folder / "short.txt").write_text("abc")
    with pytest.raises(ReportgenError, match="short.txt.*4 symbols.*expects 13"):
        load_checkpoint(folder, train_text=folder / "short.txt")


def test_shape_mismatch_names_the_file(tmp_path):
    _, folder = _course_folder(tmp_path)
    (folder / "checkpoint_step300_props.json").write_text(json.dumps({"mlp_hidden_size": 99}))
    with pytest.raises(ReportgenError, match=r"checkpoint_step300_loss1.25.pt: recorded mlp_hidden_size = 99 but the "
                                             r"weights have 40"):  # checked before any model is built
        load_checkpoint(folder / "checkpoint_step300_loss1.25.pt")


def _exit_and_stderr(capsys, path):
    code = cli(["info", str(path)])
    err = capsys.readouterr().err
    return code, err


@pytest.mark.parametrize("kind", ["missing", "garbage", "truncated", "foreign", "directory"])
def test_bad_files_give_one_line_error_and_nonzero_exit(tmp_path, capsys, tiny_model, tokenizer, kind):
    good = _save_own(tmp_path, tiny_model, tokenizer)
    path = tmp_path / f"{kind}.pt"
    if kind == "garbage":
        path.write_bytes(b"this is not a checkpoint at all" * 10)
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "foreign":
        torch.save({"weights": [1, 2, 3], "epoch": 4}, path)
    elif kind == "directory":
        path.mkdir()
    code, err = _exit_and_stderr(capsys, path)
    assert code == 2
    assert str(path) in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_would_run_code_is_refused_and_never_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_state_dict": _Evil(marker)}, path)  # torch.save pickles it as-is
    assert zipfile.is_zipfile(path)
    code, err = _exit_and_stderr(capsys, path)
    assert code == 2 and "never unpickled" in err
    assert not marker.exists()
    raw = tmp_path / "evil.pkl"
    raw.write_bytes(pickle.dumps(_Evil(marker)))
    code, err = _exit_and_stderr(capsys, raw)
    assert code == 2 and not marker.exists()


@pytest.mark.parametrize("props, expect", [("[1, 2]", "not a table"), ('{"n_layers": 100000}', "recorded n_layers"),
                                           ('{"n_heads": 0}', "n_heads"), ('{"with_residuals": "no"}', "with_residuals")])
def test_bad_course_props_are_refused_before_building(tmp_path, props, expect):
    _, folder = _course_folder(tmp_path)
    (folder / "checkpoint_step300_props.json").write_text(props)
    with pytest.raises(ReportgenError, match=expect):
        load_checkpoint(folder / "checkpoint_step300_loss1.25.pt")
