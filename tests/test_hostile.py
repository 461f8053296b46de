"""Hostile inputs: every bad checkpoint, setting, label, path or option is one line on stderr and exit 2,
before any heavy work, with nothing outside --out changed and an earlier output at --out intact."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import pytest
import torch

from reportgen.checkpoint import save_checkpoint
from reportgen.cli import cli
from reportgen.tokenizer import CharTokenizer

from .planted import planted_model, planted_text


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file() and ".reportgen-lock" not in p.name}


@pytest.fixture
def world(planted_site, tmp_path):
    """A copy of the planted run's inputs and output in a fresh folder."""
    out, args = planted_site
    root = tmp_path / "world"
    shutil.copytree(out.parent, root, ignore=shutil.ignore_patterns(".site.*"))
    return root


def _args(root: Path, **change) -> list[str]:
    args = {"--model": str(root / "planted.pt"), "--label": "Planted", "--language": "en",
            "--text": str(root / "planted.txt"), "--out": str(root / "site"), "--train-windows": "48"}
    args.update({k: v for k, v in change.items() if v is not None})
    out = ["run", "--no-pdf"]
    for k, v in args.items():
        out += [k, v] if v != "" else []
    return out


def _refused(capsys, args: list[str], root: Path, *expect: str) -> str:
    """Run the CLI; assert exit 2, one stderr line naming `expect`, no traceback, nothing written."""
    before = _snapshot(root)
    code = cli(args)
    err = capsys.readouterr().err.strip()
    assert code == 2, (args, err)
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for e in expect:
        assert e in err, (e, err)
    assert _snapshot(root) == before, "a refused run changed files"
    return err


def test_bad_settings_are_one_line_errors_naming_the_key(world, capsys):
    for key, value in [("train_windows", -1), ("train_windows", 0), ("train_windows", 2.5), ("train_windows", '"x"'),
                       ("heldout_windows", 1), ("n_probes", 100000000), ("batch_size", 0), ("seed", -3),
                       ("ablation_windows", -1), ("control_windows", 1), ("timeline_windows", "true"),
                       ("oov", '"maybe"'), ("out", 5), ("class_overrides", '{ ab = "vowel" }'),
                       ("class_overrides", '{ a = "noun" }')]:
        toml = world / "bad.toml"
        toml.write_text(f"{key} = {value}\n")
        _refused(capsys, _args(world, **{"--train-windows": ""}) + ["--config", str(toml)], world, key)
    toml.write_text('pdf = "no"\n')  # (run --no-pdf would override it; analyze still checks it)
    _refused(capsys, ["analyze"] + _args(world)[2:] + ["--config", str(toml)], world, "pdf")


def test_bad_model_tables_and_options_are_refused(world, capsys):
    toml = world / "bad.toml"
    for body, expect in [('[[model]]\nlabel = "x"\n', "needs a path"),
                         (f'[[model]]\npath = "{world / "planted.pt"}"\nwith_residuals = "no"\n', "with_residuals"),
                         (f'[[model]]\npath = "{world / "planted.pt"}"\ncolour = "red"\n', "colour"),
                         ('model = 3\n', "[[model]]")]:
        toml.write_text(body)
        _refused(capsys, ["run", "--config", str(toml), "--out", str(world / "site")], world, expect)
    _refused(capsys, ["run", "--model", str(world / "planted.pt"), "--heldout", str(world / "planted.txt"),
                      "--out", str(world / "site")], world, "--heldout needs --text")
    _refused(capsys, _args(world) + ["--label", "Second"], world, "--label")
    _refused(capsys, _args(world, **{"--language": "he"}), world, "no Hebrew letters")
    _refused(capsys, _args(world) + ["--no-residuals"], world, "apply to course checkpoints")
    _refused(capsys, _args(world) + ["--train-text", str(world / "planted.txt")], world, "--train-text")


def test_special_files_and_markup_in_paths(world, capsys):
    fifo = world / "pipe.txt"
    os.mkfifo(fifo)
    _refused(capsys, _args(world, **{"--text": str(fifo)}), world, "not a regular file")
    odd = world / "[bold red]x[/].pt"
    err = _refused(capsys, _args(world, **{"--model": str(odd)}), world)
    assert str(odd) in err


def _checkpoint(root: Path, name: str, mutate) -> Path:
    text = planted_text(4000)
    tok = CharTokenizer.from_text([text])
    model = planted_model(tok)
    path = root / name
    save_checkpoint(path, model, tok, step=1, train_loss=5.0, heldout_bits_per_char=5.0,
                    corpus={"name": "planted", "language": "en"}, seed=0, history=[], dtype=torch.float32)
    payload = torch.load(path, weights_only=True)
    mutate(payload)
    torch.save(payload, path)
    return path


def test_corrupt_checkpoints_are_refused_before_anything_is_built(world, capsys):
    def repeat_symbol(p):
        p["vocab"][-1] = p["vocab"][-2]

    def nan_weight(p):
        p["model_state_dict"]["layer_norm.weight"][0] = float("nan")

    def huge(p):
        p["config"]["n_layers"] = 100000

    def zero_heads(p):
        p["config"]["n_heads"] = 0

    def config_list(p):
        p["config"] = [1, 2]

    for mutate, expect in [(repeat_symbol, "more than once"), (nan_weight, "NaN"), (huge, "n_layers"),
                           (zero_heads, "n_heads"), (config_list, "not a table"),
                           (lambda p: p.pop("vocab"), "no vocabulary"),
                           (lambda p: p.pop("model_state_dict"), "model_state_dict")]:
        bad = _checkpoint(world, f"bad-{mutate.__name__}.pt", mutate)
        _refused(capsys, _args(world, **{"--model": str(bad)}), world, bad.name, expect)
        bad.unlink()


@pytest.mark.slow  # a full run through the CLI
def test_labels_that_collide_or_are_odd_get_their_own_pages(world, capsys):
    long = "A" * 300
    toml = world / "labels.toml"
    body = "train_windows = 48\nablation_windows = 0\ntimeline_windows = 0\n"
    for label in ("Model A", "model-a", "$x^$ {{ 7*7 }}", long):
        body += (f'[[model]]\npath = "{world / "planted.pt"}"\nlabel = "{label}"\nlanguage = "en"\n'
                 f'text = "{world / "planted.txt"}"\n')
    toml.write_text(body)
    out = world / "labels"
    assert cli(["run", "--config", str(toml), "--out", str(out), "--no-pdf"]) == 0
    pages = sorted(p.name for p in out.glob("model-*.html"))
    assert len(pages) == 4 and all(len(p) < 60 for p in pages), pages
    html = "".join(p.read_text() for p in out.glob("*.html"))
    assert "$x^$ {{ 7*7 }}" in html and long in html and "49" not in html.split("$x^$")[1][:20]


@pytest.mark.slow
def test_random_corruption_never_escapes_as_a_traceback(world, capsys):
    """Property-style: random truncations of the checkpoint, random values in settings and in recorded
    hyperparameters. Each run ends in exit 2 with one line, or exit 0; nothing outside --out changes and a
    refused run leaves the earlier output intact."""
    rng = random.Random(0)
    good = (world / "planted.pt").read_bytes()
    values = [-1, 0, 1, 2.5, True, "x", [], {}, None, 10 ** 12, "", [1, "a"]]
    keys = ["seed", "train_windows", "heldout_windows", "n_probes", "ablation_windows", "control_windows",
            "timeline_windows", "batch_size", "oov", "pdf", "class_overrides", "out"]
    for trial in range(30):
        ckpt = world / "fuzz.pt"
        if trial % 3 == 0:
            ckpt.write_bytes(good[: rng.randrange(len(good))])
        elif trial % 3 == 1:
            key, value = rng.choice(["n_layers", "n_heads", "embed_size", "vocab_size", "with_residuals",
                                     "dropout"]), rng.choice(values)
            ckpt = _checkpoint(world, "fuzz.pt", lambda p: p["config"].__setitem__(key, value))
        else:
            ckpt.write_bytes(good)
        toml = world / "fuzz.toml"
        key = rng.choice(keys)
        value = rng.choice(values)
        toml.write_text(f"{key} = {json.dumps(value) if value is not None else '[]'}\n" if trial % 3 == 2 else "")
        outside = {k: v for k, v in _snapshot(world).items() if not k.startswith("site/")}
        inside = _snapshot(world / "site")
        code = cli(_args(world, **{"--model": str(ckpt)}) + ["--config", str(toml)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code in (0, 2), (trial, code)
        if code == 2:
            assert len(err) == 1 and "Traceback" not in err[0] and "unexpected" not in err[0], (trial, err)
            assert _snapshot(world / "site") == inside
        after = {k: v for k, v in _snapshot(world).items() if not k.startswith("site/")}
        assert {k: v for k, v in after.items() if k not in ("fuzz.pt", "fuzz.toml")} == \
            {k: v for k, v in outside.items() if k not in ("fuzz.pt", "fuzz.toml")}


def test_diff_counts_architecture_vocabulary_and_loss_changes(planted_site, tmp_path, capsys):
    out, _ = planted_site
    assert cli(["diff", str(out), str(out), "--out", str(tmp_path / "same"), "--no-pdf", "--fail-on-change"]) == 0
    for name, change, expect in [
        ("arch", lambda m: m["hyperparameters"].__setitem__("n_heads", 2), "architecture: n_heads 4 -> 2"),
        ("vocab", lambda m: m["hyperparameters"].__setitem__("vocab_size", 99), "vocabulary"),
        ("loss", lambda m: m.update(baseline_bits_per_char=m["baseline_bits_per_char"] + 1,
                                    baseline_ci_low=m["baseline_ci_high"] + 0.5,
                                    baseline_ci_high=m["baseline_ci_high"] + 1.5), "held-out bits/char")]:
        other = tmp_path / name
        other.mkdir()
        doc = json.loads((out / "results.json").read_text())
        change(doc["models"][0])
        (other / "results.json").write_text(json.dumps(doc))
        capsys.readouterr()
        code = cli(["diff", str(out), str(other), "--out", str(tmp_path / f"d-{name}"), "--no-pdf", "--fail-on-change"])
        assert code == 1, name
        assert expect in capsys.readouterr().out, name


def test_diff_refuses_an_out_folder_holding_other_files(planted_site, tmp_path, capsys):
    out, _ = planted_site
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    assert cli(["diff", str(out), str(out), "--out", str(mine), "--no-pdf"]) == 2
    assert "did not write" in capsys.readouterr().err and (mine / "notes.txt").read_text() == "x"
    figs = tmp_path / "figs"
    (figs / "figures").mkdir(parents=True)
    (figs / "figures" / "plan.txt").write_text("mine")
    assert cli(["diff", str(out), str(out), "--out", str(figs), "--no-pdf"]) == 2
    assert "not a folder of diff figures" in capsys.readouterr().err
    assert (figs / "figures" / "plan.txt").read_text() == "mine" and not (figs / "diff.json").exists()
