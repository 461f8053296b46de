"""Training: deterministic for a seed, checkpoints at the chosen steps, loadable and self-describing."""

import pytest
import torch

from reportgen.checkpoint import load_checkpoint
from reportgen.cli import cli

from .conftest import TINY_TEXT

pytestmark = pytest.mark.slow  # trains models through the CLI


def _train(tmp_path, name, seed="0"):
    text = tmp_path / "text.txt"
    text.write_text(TINY_TEXT * 20)
    out = tmp_path / name
    assert cli(["train", "--text", str(text), "--steps", "6", "--save-at", "3", "--layers", "1", "--heads", "2",
                "--embed", "16", "--context", "16", "--mlp", "32", "--batch-size", "4", "--seed", seed,
                "--out", str(out)]) == 0
    return out


def test_training_is_deterministic_and_checkpoints_at_chosen_steps(tmp_path):
    a, b = _train(tmp_path, "a"), _train(tmp_path, "b")
    assert sorted(p.name for p in a.glob("*.pt")) == ["step00003.pt", "step00006.pt"]
    for name in ("step00003.pt", "step00006.pt"):
        sa, sb = (load_checkpoint(d / name).model.state_dict() for d in (a, b))
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    bundle = load_checkpoint(a / "step00006.pt")
    assert bundle.metadata["step"] == 6 and bundle.metadata["seed"] == 0
    assert bundle.metadata["history"][-1][0] == 6
    c = _train(tmp_path, "c", seed="1")
    sc = load_checkpoint(c / "step00006.pt").model.state_dict()
    sa = load_checkpoint(a / "step00006.pt").model.state_dict()
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_save_every_writes_a_dense_series_read_in_step_order(tmp_path):
    """--save-every 2 over 5 steps: checkpoints at 2, 4 and the last step (5), each recording its own step, and the
    folder reads as a series in numeric step order; a negative interval is a one-line error."""
    from reportgen.errors import ReportgenError
    from reportgen.layouts import series
    from reportgen.train import TrainConfig

    text = tmp_path / "text.txt"
    text.write_text(TINY_TEXT * 20)
    out = tmp_path / "dense"
    assert cli(["train", "--text", str(text), "--steps", "5", "--save-every", "2", "--save-at", "3", "--layers", "1",
                "--heads", "2", "--embed", "16", "--context", "16", "--mlp", "32", "--batch-size", "4",
                "--out", str(out)]) == 0
    names = sorted(p.name for p in out.glob("*.pt"))
    assert names == ["step00002.pt", "step00003.pt", "step00004.pt", "step00005.pt"]
    assert [load_checkpoint(p).metadata["step"] for p in series(out / "step00005.pt")] == [2, 3, 4, 5]
    with pytest.raises(ReportgenError, match="--save-every"):
        TrainConfig(steps=5, save_every=-1)
