"""Diffs: a model against itself changes nothing; a copy with one last-layer head altered flags only
that head; bad pairings are one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from reportgen.checkpoint import save_checkpoint
from reportgen.cli import cli
from reportgen.results import SCHEMA_VERSION

from .conftest import TINY_TEXT

pytestmark = pytest.mark.slow  # end-to-end: two analyses through the CLI


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from reportgen.model import TransformerLM
    from reportgen.tokenizer import CharTokenizer

    root = tmp_path_factory.mktemp("diff")
    text = root / "text.txt"
    text.write_text(TINY_TEXT * 10)
    heldout = root / "heldout.txt"
    heldout.write_text(TINY_TEXT * 25)
    tok = CharTokenizer.from_text([TINY_TEXT])
    torch.manual_seed(0)
    model = TransformerLM(2, 2, 32, 32, tok.vocab_size(), 64, True).eval()
    paths = {}
    for name in ("a", "b"):
        if name == "b":  # sharpen the last layer's head 0: only its attention pattern can change
            with torch.no_grad():
                w = model.layers[1].causal_attention.kqv_matrices[0].weight
                hs = model.config.head_size
                w[hs:2 * hs] *= 40.0  # query rows (chunks are k, q, v)
        ckpt = root / f"{name}.pt"
        save_checkpoint(ckpt, model, tok, step=1 if name == "a" else 2, train_loss=3.0, heldout_bits_per_char=3.0,
                        corpus={"name": "tiny", "language": "en"}, seed=0, history=[], dtype=torch.float32)
        out = root / f"site-{name}"
        assert cli(["analyze", "--model", str(ckpt), "--label", "Tiny", "--text", str(text), "--heldout", str(heldout),
                    "--out", str(out), "--train-windows", "24"]) == 0
        paths[name] = out
    return root, paths


def _diff(root, a, b, *extra):
    out = root / "diffout"
    code = cli(["diff", str(a), str(b), "--out", str(out), "--no-pdf", *extra])
    doc = json.loads((out / "diff.json").read_text()) if (out / "diff.json").exists() else None
    return code, doc


def test_model_against_itself_has_no_significant_change(runs):
    root, paths = runs
    code, doc = _diff(root, paths["a"], paths["a"], "--fail-on-change")
    assert code == 0
    assert doc["significant"] == 0
    assert all(c["change"] == 0 for m in doc["models"] for c in m["changes"])
    assert doc["models"][0]["paired"] is True


def test_altered_head_and_only_it_is_flagged(runs):
    root, paths = runs
    code, doc = _diff(root, paths["a"], paths["b"], "--fail-on-change")
    flagged = [c for m in doc["models"] for c in m["changes"] if c["status"] != "unchanged"]
    assert flagged, "the sharpened head should change"
    assert {c["head_name"] for c in flagged} == {"L1H0"}
    assert code == 1
    # Consistent with the change: a sharper head is more confident (argmax shares rise somewhere).
    assert any(c["change"] > 0 for c in flagged)
    # The page shows that head side by side (A | B | B - A), and only that head.
    heatmaps = doc["models"][0]["heatmaps"]
    assert [h["head_name"] for h in heatmaps] == ["L1H0"]
    figure = root / "diffout" / heatmaps[0]["figure"]
    assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert heatmaps[0]["figure"] in (root / "diffout" / "diff.html").read_text()
    # Diffing again with nothing changed replaces the figures it wrote; none pile up.
    _diff(root, paths["a"], paths["a"])
    assert not list((root / "diffout" / "figures").glob("*.png"))


def test_bad_pairings_give_one_line_errors(runs, tmp_path, capsys):
    root, paths = runs
    code = cli(["diff", str(paths["a"]), str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "missing" in err and len(err.strip().splitlines()) == 1
    old = tmp_path / "old"
    old.mkdir()
    doc = json.loads((paths["a"] / "results.json").read_text())
    doc["schema_version"] = 1
    (old / "results.json").write_text(json.dumps(doc))
    code = cli(["diff", str(old), str(paths["a"]), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "schema version 1 is incompatible" in err
    other = tmp_path / "other"
    other.mkdir()
    doc["schema_version"] = SCHEMA_VERSION
    doc["models"][0]["corpus"]["sha256"] = "0" * 64
    (other / "results.json").write_text(json.dumps(doc))
    code = cli(["diff", str(other), str(paths["a"]), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "different texts" in err and len(err.strip().splitlines()) == 1


def test_diff_page_has_no_broken_local_links(runs):
    import re

    root, paths = runs
    _diff(root, paths["a"], paths["b"])
    page = root / "diffout" / "diff.html"
    refs = re.findall(r'(?:href|src)="([^"#]+)"', page.read_text())
    assert refs
    for ref in refs:
        assert (page.parent / ref).exists(), ref


def _two_checkpoints(tmp_path):
    """Two different small checkpoints and the text they are analysed on."""
    from reportgen.checkpoint import save_checkpoint
    from reportgen.model import TransformerLM
    from reportgen.tokenizer import CharTokenizer

    from .planted import planted_text

    text = planted_text(8000).lower()
    (tmp_path / "t.txt").write_text(text)
    tok = CharTokenizer.from_text([text])
    for seed, name in ((0, "a"), (1, "b")):
        torch.manual_seed(seed)
        model = TransformerLM(1, 2, 16, 32, tok.vocab_size(), 32, True).eval()
        save_checkpoint(tmp_path / f"{name}.pt", model, tok, step=seed + 1, train_loss=3.0,
                        heldout_bits_per_char=3.0, corpus={"name": "x"}, seed=0, history=[])
    return tmp_path / "a.pt", tmp_path / "b.pt", dict(language="en", text=tmp_path / "t.txt")


def test_both_sides_alongside_give_the_numbers_of_one_after_the_other(tmp_path, monkeypatch, capsys):
    """Both sides analysed in two forked workers (`workers.run_jobs`, as the timeline's tasks run) give exactly what
    analysing them one after the other gives, print nothing themselves and fill the cache a re-diff reads; a failed
    worker costs only time (the parent says which side failed and analyses it itself)."""
    import os

    from reportgen import sides
    from reportgen.diff import compare

    a, b, options = _two_checkpoints(tmp_path)
    # two workers, whatever torch's thread count in this test process (an earlier test may set it to 1)
    monkeypatch.setattr("reportgen.workers.count", lambda device, jobs, limit=None: min(jobs, 2))
    monkeypatch.setenv("REPORTGEN_CACHE", str(tmp_path / "alongside"))
    alongside = compare(*sides.both_sides(a, b, **options))
    err = capsys.readouterr().err
    assert f"{a} and {b}: analysed side by side in 2 worker processes" in err
    assert "capture" not in err and "reused" not in err  # the workers print nothing; their results come back
    again = compare(*sides.both_sides(a, b, **options))  # a re-diff reads both analyses the workers stored
    err = capsys.readouterr().err
    assert f"{a}: analysis reused from the cache" in err and f"{b}: analysis reused from the cache" in err
    assert "side by side" not in err and again["models"] == alongside["models"]

    monkeypatch.setenv("REPORTGEN_CACHE", str(tmp_path / "child-fails"))
    parent, real = os.getpid(), sides.run_data

    def b_fails_in_a_worker(path, **kw):
        if os.getpid() != parent and path == b:
            raise RuntimeError("the worker fails")
        return real(path, **kw)

    monkeypatch.setattr(sides, "run_data", b_fails_in_a_worker)
    recovered = compare(*sides.both_sides(a, b, **options))
    err = capsys.readouterr().err
    assert f"{b}: analysis in a worker process failed (RuntimeError: the worker fails); analysing it here" in err
    assert "English b: capture" in err and "English a: capture" not in err  # A's worker went on

    monkeypatch.setenv("REPORTGEN_CACHE", str(tmp_path / "in-turn"))
    monkeypatch.setattr("reportgen.workers.count", lambda device, jobs, limit=None: 1)
    in_turn = compare(*sides.both_sides(a, b, **options))
    assert in_turn["models"] and alongside["models"] == in_turn["models"] == recovered["models"]


def test_a_bad_side_b_is_reported_before_side_a_is_analysed(tmp_path, monkeypatch, capsys):
    a, b, options = _two_checkpoints(tmp_path)
    b.write_bytes(b"not a checkpoint")
    monkeypatch.setenv("REPORTGEN_CACHE", str(tmp_path / "cache"))
    code = cli(["diff", str(a), str(b), "--text", str(options["text"]), "--language", "en",
                "--out", str(tmp_path / "d"), "--no-pdf"])
    err = capsys.readouterr().err
    assert code == 2 and str(b) in err and len([l for l in err.splitlines() if l.startswith("error:")]) == 1
    assert "capture" not in err and not (tmp_path / "cache").exists()  # A was never analysed
    assert not (tmp_path / "d").exists()  # nothing half-written


def test_paired_changes_in_chunks_equal_one_comparison_at_a_time():
    """The diff bootstraps every paired comparison of one window count through one resample matrix in chunks of
    256 columns; each CI, mean and p must be what that comparison alone gives (two window counts, > 256 each)."""
    import numpy as np

    from reportgen.diff import _paired_changes
    from reportgen.stats import block_length, block_resample_counts, bootstrap_ci, t_sf

    rng = np.random.default_rng(0)
    diffs = [rng.normal(0.01 * (k % 7), 0.1, size=90 if k % 3 else 60) for k in range(700)]
    diffs[5] = np.zeros(90)  # no change at all: p = 1
    got = _paired_changes(diffs, seed=3)
    for k in (0, 1, 5, 255, 256, 257, 511, 699):
        d = diffs[k]
        counts = block_resample_counts(len(d), np.random.default_rng([3, len(d)]), block_length(len(d)))
        low, high, _ = bootstrap_ci(d[:, None], counts, bca=False)
        p = 1.0 if d.std(ddof=1) == 0 else 2 * t_sf(abs(d.mean()) / (d.std(ddof=1) / np.sqrt(len(d))), len(d) - 1)
        np.testing.assert_allclose(got[k], (d.mean(), low[0], high[0], p), rtol=1e-12, atol=0, err_msg=str(k))
    assert got[5][3] == 1.0 and len(got) == 700


def test_the_summary_counts_the_role_list_and_the_loss_is_always_compared(runs):
    """The summary once said '1 vanished' beside a list of 3 lost roles (it counted statistics, not roles), and
    compared no loss without --causal; now its role totals are the list's and both sides' held-out loss is shown."""
    import re

    root, paths = runs
    _, doc = _diff(root, paths["a"], paths["b"])
    m = doc["models"][0]
    lost = sum(len(r["lost"]) for r in m["role_changes"])
    gained = sum(len(r["gained"]) for r in m["role_changes"])
    assert (doc["summary"]["roles_lost"], doc["summary"]["roles_gained"]) == (lost, gained)
    page = re.sub(r"\s+", " ", (root / "diffout" / "diff.html").read_text())
    assert f"Roles: {lost} lost and {gained} gained" in page
    bpc = m["heldout_bits_per_char"]
    assert bpc["a"] is not None and bpc["b"] is not None and bpc["change"] == pytest.approx(bpc["b"] - bpc["a"])
