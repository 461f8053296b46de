"""End-to-end analysis on a tiny model and user text: results.json content, determinism, bad input."""

from __future__ import annotations

import json
import sys

import pytest

from reportgen.catalogue import DETECTOR
from reportgen.checkpoint import save_checkpoint
from reportgen.cli import cli

from .conftest import TINY_TEXT


@pytest.fixture
def tiny_run(tmp_path, tiny_model, tokenizer):
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_model, tokenizer, step=1, train_loss=3.0, heldout_bits_per_char=3.0,
                    corpus={"name": "tiny", "language": "en"}, seed=0, history=[])
    text = tmp_path / "text.txt"
    text.write_text(TINY_TEXT * 6)
    return ckpt, text


def _analyze(ckpt, text, out, *extra):
    return cli(["analyze", "--model", str(ckpt), "--label", "Tiny", "--text", str(text), "--out", str(out),
                "--train-windows", "24", *extra])


def test_results_list_every_detector_for_every_head_on_both_splits(tiny_run, tmp_path):
    ckpt, text = tiny_run
    assert _analyze(ckpt, text, tmp_path / "site") == 0
    results = json.loads((tmp_path / "site" / "results.json").read_text())
    assert results["schema_version"] == 3
    (model,) = results["models"]
    assert model["checkpoint"]["sha256"] and model["corpus"]["windows"]["heldout"] >= 2
    assert len(model["heads"]) == 2 * 4
    # every detector; capital letters and sentence starts only where the vocabulary has case (not this one's)
    expected = {name for name, d in DETECTOR.items() if d.kind != "case"}
    assert {"capital", "sentence_start"} & set(DETECTOR) and not {"capital", "sentence_start"} & expected
    for head in model["heads"]:
        assert set(head["detectors"]) == expected
        for name, splits in head["detectors"].items():
            assert set(splits) == {"train", "heldout"}
            for block in splits.values():
                assert {"mean", "chance", "ci_low", "ci_high"} <= set(block)
    # (a random tiny model may have no findings; their structure is specified on the planted run)


def test_same_inputs_and_seed_give_identical_results(tiny_run, tmp_path):
    ckpt, text = tiny_run
    docs = []
    for name in ("a", "b"):
        assert _analyze(ckpt, text, tmp_path / name) == 0
        doc = json.loads((tmp_path / name / "results.json").read_text())
        doc.pop("generated")
        docs.append(doc)
    assert docs[0] == docs[1]


@pytest.mark.parametrize("content,message", [
    ("the cat sat ZQ#", "not in the model's vocabulary"),
    ("   \n", "text is empty"),
    ("the cat sat on the mat\n" * 2, "shorter than two windows"),
])
def test_bad_text_gives_one_line_error_naming_the_file(tiny_run, tmp_path, capsys, content, message):
    ckpt, _ = tiny_run
    bad = tmp_path / "bad.txt"
    bad.write_text(content * (1 if "ZQ" not in content else 20))
    code = _analyze(ckpt, bad, tmp_path / "site")
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "bad.txt" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "site" / "results.json").exists()


def test_out_of_vocabulary_characters_can_be_dropped(tiny_run, tmp_path):
    ckpt, text = tiny_run
    noisy = tmp_path / "noisy.txt"
    noisy.write_text(text.read_text().replace("cat", "cZt"))
    assert _analyze(ckpt, noisy, tmp_path / "site", "--oov", "drop") == 0


def test_emergence_timeline_covers_every_sibling_checkpoint(tmp_path, tiny_model, tokenizer):
    import torch

    folder = tmp_path / "ckpts"
    for step in (10, 100, 1000):
        with torch.no_grad():
            for p in tiny_model.parameters():
                p.mul_(1.05)  # a different model at each step, same shape and vocabulary
        save_checkpoint(folder / f"step{step:05d}.pt", tiny_model, tokenizer, step=step, train_loss=3.0,
                        heldout_bits_per_char=3.0 - step / 1000, corpus={"name": "tiny", "language": "en"},
                        seed=0, history=[], dtype=torch.float32)
    text = tmp_path / "text.txt"
    text.write_text(TINY_TEXT * 6)
    computed = []
    from reportgen import timeline as tl

    original = tl.job
    tl.job = lambda task, *args: computed.append(task.path.name) or original(task, *args)
    try:
        assert _analyze(folder / "step01000.pt", text, tmp_path / "site", "--workers", "1") == 0
        assert sorted(computed) == ["step00010.pt", "step00100.pt", "step01000.pt"]
        (model,) = json.loads((tmp_path / "site" / "results.json").read_text())["models"]
        timeline = model["timeline"]
        assert timeline["steps"] == [10, 100, 1000]
        assert timeline["heldout_bits_per_char"] == [2.99, 2.9, 2.0]
        assert timeline["series"] and all(len(s["mean"]) == 3 for s in timeline["series"])
        for s in timeline["series"]:
            assert all(lo <= m <= hi for lo, m, hi in zip(s["ci_low"], s["mean"], s["ci_high"]))
            assert 0 < s["chance"] < 1
        assert len(timeline["icl"]) == len(timeline["bits_per_char"]) == 3
        # Another run over the same checkpoints (another output folder: its analysis is not reused) computes no
        # point again: every one comes from the timeline cache, with the same numbers.
        computed.clear()
        assert _analyze(folder / "step01000.pt", text, tmp_path / "fresh", "--workers", "1") == 0
        assert computed == []
    finally:
        tl.job = original
    (fresh,) = json.loads((tmp_path / "fresh" / "results.json").read_text())["models"]
    assert fresh["timeline"] == timeline


def test_character_classes_can_be_overridden_from_the_config(tiny_run, tmp_path):
    ckpt, text = tiny_run
    toml = tmp_path / "run.toml"
    toml.write_text(f'train_windows = 24\nablation_windows = 0\ntimeline_windows = 0\n'
                    f'[[model]]\npath = "{ckpt}"\nlabel = "Tiny"\nlanguage = "en"\ntext = "{text}"\n'
                    f'[class_overrides]\n"t" = "vowel"\n"!" = "other"\n')
    assert cli(["analyze", "--config", str(toml), "--out", str(tmp_path / "site")]) == 0
    (model,) = json.loads((tmp_path / "site" / "results.json").read_text())["models"]
    assert "t" in model["classes"]["vowel"] and "t" not in model["classes"]["consonant"]
    assert "!" in model["classes"]["other"]
    assert model["ablation"] == [] and model["timeline"] is None


def test_unknown_setting_in_config_is_a_one_line_error(tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text("sede = 3\n")
    assert cli(["analyze", "--config", str(toml)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "sede" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("seed", range(6))
def test_head_clusters_equal_scipy_average_linkage(seed):
    """`cluster_heads` cuts an average-linkage tree at the threshold without importing scipy.cluster; its groups
    must be scipy's fcluster groups, on random distances, on clustered ones and on ones full of exact ties."""
    import numpy as np
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    from reportgen.analyze import cluster_heads

    rng = np.random.default_rng(seed)
    n_heads = [1, 2, 4, 4, 8, 8][seed]
    K = n_heads * [2, 2, 4, 3, 6, 8][seed]
    centres = rng.random((rng.integers(1, K + 1), 3))
    points = centres[rng.integers(0, len(centres), K)] + rng.normal(0, 0.08, (K, 3))
    noise = rng.random((K, K))
    cases = [np.sqrt(((points[:, None] - points[None]) ** 2).sum(-1)),  # clustered
             (noise + noise.T) / 2]  # unstructured
    cases.append(np.round(cases[0] * 4) / 4)  # exact ties, some at the threshold itself
    for dist in cases:
        np.fill_diagonal(dist, 0.0)
        labels = hierarchy.fcluster(hierarchy.linkage(squareform(dist, checks=False), "average"), 0.5, "distance")
        names = [f"L{k // n_heads}H{k % n_heads}" for k in range(K)]
        expected = {frozenset(n for n, lab in zip(names, labels) if lab == x) for x in set(labels)}
        got = cluster_heads(dist.copy(), n_heads)
        assert sorted(name for group in got for name in group) == sorted(names)
        assert {frozenset(g) for g in got} == expected


@pytest.mark.slow
def test_models_analysed_side_by_side_in_workers_give_the_numbers_analysed_in_turn(tiny_run, tmp_path, monkeypatch):
    """Two models, one with a second seed, analysed by two forked workers and in turn: the same results.json (every
    label, role and count equal; numbers to 1e-4 relative: a worker runs torch on one thread, and a sum split
    over two threads may differ in the seventh digit)."""
    import shutil

    from .test_golden import _close

    ckpt, text = tiny_run
    shutil.copy(ckpt, tmp_path / "seed.pt")
    (tmp_path / "two.toml").write_text(
        f'train_windows = 24\nablation_windows = 8\ncontrol_draws = 2\n'
        f'[[model]]\npath = "{ckpt}"\nlabel = "A"\nlanguage = "en"\ntext = "{text}"\nseeds = ["{tmp_path / "seed.pt"}"]\n'
        f'[[model]]\npath = "{ckpt}"\nlabel = "B"\nlanguage = "en"\ntext = "{text}"\n')
    docs, used = [], []
    for name, n in (("turn", 1), ("workers", 2)):
        monkeypatch.setattr("reportgen.analyze.workers", lambda *args, n=n: used.append(n) or n)
        assert cli(["analyze", "--config", str(tmp_path / "two.toml"), "--out", str(tmp_path / name)]) == 0
        doc = json.loads((tmp_path / name / "results.json").read_text())
        doc.pop("generated")
        docs.append(doc)
    assert used == [1, 1, 2, 2]  # both stages of each run
    assert len(docs[0]["models"]) == 2 and len(docs[0]["models"][0]["seeds"]) == 2
    assert _close(docs[0], docs[1]) == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers run on Linux only")
def test_a_failing_job_is_reported_even_when_a_stopped_worker_held_the_progress_queue():
    """When a job fails the other workers are stopped; one stopped while sending a progress message holds the
    queue's write lock for good, and the relay's stop message could never be sent: the run hung instead of
    printing the error (seen once in this suite). The error must come back within seconds."""
    import subprocess

    code = """
import time
from functools import partial
from reportgen import workers
from reportgen.errors import ReportgenError
from reportgen.progress import make_progress

def hold(progress):  # as if stopped mid-message: the queue's write lock taken, never given back
    workers._QUEUE._wlock.acquire()
    time.sleep(600)

def bad(progress):
    time.sleep(1)
    raise ReportgenError("x.pt: broken")

with make_progress() as progress:
    try:
        workers.run_jobs([hold, bad], progress, 2)
    except ReportgenError as e:
        print("error:", e)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "error: x.pt: broken" in done.stdout, done.stderr[-2000:]


def test_run_jobs_relays_progress_and_keeps_order():
    """Jobs in forked workers: results in the jobs' order, every task's progress on the parent's bars, and a
    job's exception raised in the parent."""
    from functools import partial

    from reportgen.errors import ReportgenError
    from reportgen.progress import make_progress
    from reportgen.workers import run_jobs

    def job(k, progress):
        task = progress.add_task(f"job {k}: count", total=k + 1)
        for _ in range(k + 1):
            progress.advance(task)
        return [k] * k

    with make_progress() as progress:
        assert run_jobs([partial(job, k) for k in range(5)], progress, 2) == [[k] * k for k in range(5)]
    done = {t.description: (t.completed, t.total) for t in progress.tasks}
    assert done == {f"job {k}: count": (k + 1, k + 1) for k in range(5)}

    def bad(progress):
        raise ReportgenError("x.pt: broken")

    with make_progress() as progress, pytest.raises(ReportgenError, match="x.pt: broken"):
        run_jobs([partial(job, 1), bad], progress, 2)
