"""--device: checked before any work, CPU unchanged, accelerator results equal to the CPU's where one exists."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reportgen.checkpoint import save_checkpoint
from reportgen.cli import cli
from reportgen.config import build_config
from reportgen.device import CPU, _to, device_of, place, resolve
from reportgen.errors import ReportgenError

from .conftest import TINY_TEXT


@pytest.mark.parametrize("name, expect", [("tpu", "must be auto, cpu, cuda, cuda:N or mps"),
                                          ("cuda:x", "must be auto"), ("", "must be auto")])
def test_unknown_device_names_are_one_line_errors(name, expect):
    with pytest.raises(ReportgenError, match=expect):
        resolve(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_this_machine_lacks_stops_before_any_work(tmp_path, capsys):
    assert resolve("auto") == CPU
    out = tmp_path / "site"
    assert cli(["run", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "device cuda: torch sees no CUDA GPU" in err[0], err
    assert not out.exists()
    assert cli(["train", "--device", "cuda:1", "--steps", "1", "--out", str(tmp_path / "ck")]) == 2
    assert not (tmp_path / "ck").exists()


def test_device_in_toml_is_checked_and_named(tmp_path):
    toml = tmp_path / "r.toml"
    toml.write_text('device = "gpu"\n')
    with pytest.raises(ReportgenError, match=f"{toml}: device must be"):
        build_config(toml)


def test_cpu_runs_keep_their_settings_fingerprint():
    """CPU results are cached and compared exactly as before the option existed."""
    assert "device" not in build_config(device="cpu").fingerprint()
    if not torch.cuda.is_available():
        assert build_config().fingerprint() == build_config(device="cpu").fingerprint()


def test_moving_nested_outputs_keeps_structure():
    x = (torch.ones(2), [torch.zeros(1), 3], {"a": torch.ones(1)})
    y = _to(x, CPU)
    assert isinstance(y, tuple) and isinstance(y[1], list) and y[1][1] == 3 and isinstance(y[2], dict)


def test_placing_on_the_cpu_changes_nothing(tiny_model, tokenizer):
    ids = torch.tensor([tokenizer.tokenize(TINY_TEXT[:32])])
    before = tiny_model(ids, return_attention_weights=True)[1]
    placed = place(tiny_model, CPU)
    assert placed is tiny_model and device_of(placed) == CPU
    assert not placed._forward_hooks and not placed._forward_pre_hooks
    assert torch.equal(before, placed(ids, return_attention_weights=True)[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_gpu_forward_takes_and_returns_cpu_tensors_and_matches_the_cpu(tiny_model, tokenizer, tmp_path):
    from reportgen import api

    ids = torch.tensor([tokenizer.tokenize(TINY_TEXT[:32])])
    cpu_logits, cpu_attn = tiny_model(ids, return_attention_weights=True)
    path = tmp_path / "m.pt"
    save_checkpoint(path, tiny_model, tokenizer, step=1, train_loss=1.0, heldout_bits_per_char=1.0,
                    corpus={"language": "en"}, seed=0, history=[])
    gpu = api.load(path, device="cuda")
    assert device_of(gpu.model).type == "cuda"
    logits, attn = gpu.model(ids, return_attention_weights=True)
    assert logits.device == CPU and attn.device == CPU
    np.testing.assert_allclose(attn.numpy(), cpu_attn.numpy(), atol=1e-4)
    np.testing.assert_allclose(api.attention(gpu, TINY_TEXT[:20]), api.attention(api.load(path, device="cpu"),
                                                                              TINY_TEXT[:20]), atol=1e-4)
