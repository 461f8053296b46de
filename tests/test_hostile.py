"""Hostile inputs: every bad checkpoint, setting, label, path or option is one line on stderr and exit 2,
before any heavy work, with nothing outside --out changed and an earlier output at --out intact."""

from __future__ import annotations

import json
import os
import random
import re
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


_REGEX_PROBE = """
import sys, time, torch
from reportgen.hypotheses import parse
h = parse([{"name": "h", "key_regex": sys.argv[1]}], "t.toml")[0]
text = sys.argv[2]
vocab = sorted(set(text))
ids = torch.tensor([[vocab.index(c) for c in text]] * 64)
t = time.perf_counter()
h.key_positions(ids, torch.zeros_like(ids), vocab)
print(time.perf_counter() - t)
"""


@pytest.mark.parametrize("pattern, text", [
    ("(.*)*x", "in the beginning god created the heaven and the earth. " * 4),
    ("(a+)+$", "a" * 255 + "b"),
    ("(x+x+)+y", "x" * 256),
])
def test_catastrophic_hypothesis_regexes_finish_in_linear_time(pattern, text):
    """Patterns that backtrack exponentially in Python's re (they hung the run) match in RE2, in well under a
    second for 64 windows of 256 characters; a hang fails here through the subprocess timeout."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _REGEX_PROBE, pattern, text], capture_output=True, text=True,
                          timeout=30, cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) < 5.0


@pytest.mark.parametrize("pattern, expect", [
    ("(a)\\1", "invalid escape sequence"), ("(?=a)", "invalid perl operator"), ("a(?<!b)", "invalid perl operator"),
    ("\\C", "one byte"), ("(\n", "missing )"),
])
def test_regexes_re2_cannot_run_are_refused_in_one_line(pattern, expect):
    from reportgen.errors import ReportgenError
    from reportgen.hypotheses import parse

    with pytest.raises(ReportgenError) as err:
        parse([{"name": "h", "key_regex": pattern}], "my.toml")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("my.toml: hypothesis 1 (h): bad regex") and expect in msg, msg


def test_ascii_only_word_escapes_are_refused_on_a_vocabulary_with_other_letters():
    """RE2's \\b and \\w know ASCII letters only: on Hebrew they would silently match nothing, so they are refused
    there (and work unchanged on an English vocabulary); \\pL is the way to say "a letter" in any script."""
    from reportgen.errors import ReportgenError
    from reportgen.hypotheses import check_targets, parse

    def targets(pattern, text):
        vocab = sorted(set(text))
        ids = torch.tensor([[vocab.index(c) for c in text]])
        check_targets(parse([{"name": "h", "key_regex": pattern}], "my.toml"), ids, torch.zeros_like(ids), vocab,
                      "my.toml")

    he = "בראשית ברא אלהים את השמים ואת הארץ " * 2
    for pattern in ("\\b\\w", "\\w", "[^\\W]"):
        with pytest.raises(ReportgenError, match="RE2 applies to ASCII letters only"):
            targets(pattern, he)
    targets("\\pL", he)
    targets("\\\\b|\\pL", he)  # an escaped backslash and a b: no \b
    targets("\\b\\w", "in the beginning god created the heaven and the earth " * 2)


def _train_args(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    from .conftest import TINY_TEXT

    text = tmp_path / "train.txt"
    text.write_text(TINY_TEXT * 20)
    return ["train", "--text", str(text), "--steps", "4", "--save-at", "2", "--layers", "1", "--heads", "2",
            "--embed", "16", "--context", "16", "--mlp", "32", "--batch-size", "4", "--out", str(out), *extra]


def test_train_refuses_to_overwrite_checkpoints_and_force_never_writes_through_a_link(tmp_path, capsys):
    out = tmp_path / "models"
    out.mkdir()
    (out / "step00004.pt").write_bytes(b"an earlier run's checkpoint")
    (out / "step09000.pt").write_bytes(b"another one")
    assert cli(_train_args(tmp_path, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "step00004.pt, step09000.pt" in err and "--force" in err, err
    assert (out / "step00004.pt").read_bytes() == b"an earlier run's checkpoint"
    assert sorted(p.name for p in out.iterdir()) == ["step00004.pt", "step09000.pt"]
    (tmp_path / "file").write_text("x")
    assert cli(_train_args(tmp_path, tmp_path / "file")) == 2 and "must be a folder" in capsys.readouterr().err
    # --force: the checkpoint at a symlink replaces the link itself; the file it pointed to is untouched
    precious = tmp_path / "precious.pt"
    precious.write_bytes(b"not yours")
    (out / "step00004.pt").unlink()
    (out / "step00004.pt").symlink_to(precious)
    (out / "step00004.pt.tmp").symlink_to(tmp_path / "precious2.pt")  # a stale temporary name that is a link, too
    assert cli(_train_args(tmp_path, out, "--force")) == 0
    assert precious.read_bytes() == b"not yours" and not (tmp_path / "precious2.pt").exists()
    assert not (out / "step00004.pt").is_symlink() and (out / "step00004.pt").stat().st_size > 1000
    assert (out / "step09000.pt").read_bytes() == b"another one"


def test_export_force_replaces_a_symlink_itself_never_its_target(tmp_path, tiny_model, tokenizer, capsys):
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, tiny_model, tokenizer, step=1, train_loss=1.0, heldout_bits_per_char=1.0,
                    corpus={"name": "tiny", "language": "en"}, seed=0, history=[])
    precious = tmp_path / "precious.npz"
    precious.write_bytes(b"yours")
    for name, target in (("link.npz", precious), ("dangling.npz", tmp_path / "nowhere.npz")):
        link = tmp_path / name
        link.symlink_to(target)
        args = ["export", "--model", str(ckpt), "--passage", "the cat sat on the mat", "--out", str(link)]
        assert cli(args) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--force" in err, err
        assert cli(args + ["--force"]) == 0
        capsys.readouterr()
        assert not link.is_symlink() and link.read_bytes()[:2] == b"PK"
    assert precious.read_bytes() == b"yours" and not (tmp_path / "nowhere.npz").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dangling.npz", "link.npz", "m.pt", "precious.npz"]
    assert cli(["export", "--model", str(ckpt), "--passage", "the cat", "--out", str(tmp_path / "no" / "a.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err


BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


@pytest.mark.slow  # a full run through the CLI
def test_bidi_overrides_in_user_strings_cannot_reorder_reportgen_text(world, capsys):
    """A right-to-left override in a label (or author, course, hypothesis description) once reversed reportgen's
    own sentences in the HTML and PDF ("0.931" read "139.0"): explicit bidi controls are stripped where user
    strings enter the settings, and labels with right-to-left letters are isolated in <bdi> on the pages."""
    toml = world / "bidi.toml"
    toml.write_text('train_windows = 48\nablation_windows = 0\ntimeline_windows = 0\n'
                    'author = "Ada \u202eL."\ncourse = "NLP \u2067101\u2069"\n'
                    f'[[model]]\npath = "{world / "planted.pt"}"\nlabel = "\u202eEvil \u05e2\u05d1\u05e8\u05d9\u05ea\u202c"\n'
                    f'language = "en"\ntext = "{world / "planted.txt"}"\n'
                    '[[hypothesis]]\nname = "prev"\ndescription = "reads \u202eback"\nkey_offset = 1\n')
    out = world / "bidi"
    assert cli(["run", "--config", str(toml), "--out", str(out), "--no-pdf"]) == 0, capsys.readouterr().err
    pages = {p.name: p.read_text() for p in out.glob("*.html")}
    label = "Evil \u05e2\u05d1\u05e8\u05d9\u05ea"
    html = "".join(pages.values())
    # the only controls left are reportgen's own balanced isolates (FSI ... PDI) around the label in its sentences
    assert f"\u2068{label}\u2069 predicts its held-out text" in pages["index.html"]
    assert not any(c in html.replace(f"\u2068{label}\u2069", label) for c in BIDI_CONTROLS), \
        "an explicit bidi control reached the pages"
    assert label in html and "reads back" in html
    model = next(v for k, v in pages.items() if k.startswith("model-"))
    assert "<h1><bdi>Evil \u05e2\u05d1\u05e8\u05d9\u05ea</bdi></h1>" in model
    assert re.search(r"predicts its held-out text at \d\.\d{3} bits/char, worse than uniform guessing over its 46 "
                     r"symbols \(5\.524\)", pages["index.html"])  # reportgen's numbers, in their own order
    results = (out / "results.json").read_text(encoding="utf-8")
    assert not any(c in json.loads(results)["models"][0]["label"] for c in BIDI_CONTROLS)


def test_bidi_controls_are_stripped_from_labels_author_and_course():
    from reportgen.config import ModelSpec, build_config
    from reportgen.errors import ReportgenError

    cfg = build_config(None, models=(ModelSpec(Path("m.pt"), "\u202eA\u2066B\u2069", "en"),),
                       author="\u202bAda\u202c", course="\u202dNLP")
    assert (cfg.models[0].label, cfg.author, cfg.course) == ("AB", "Ada", "NLP")
    with pytest.raises(ReportgenError, match="label"):
        build_config(None, models=(ModelSpec(Path("m.pt"), "\u202e\u202c", "en"),))


_FIGURE_PARENT = """
import sys, time
from pathlib import Path
import reportgen.figures as figures
figures.slow = lambda: time.sleep(120)
writer = figures.FigureWriter(Path(sys.argv[1]), workers=2)
for _ in range(4):
    writer.add("slow")
writer.run()
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_figure_workers_die_with_a_killed_run(tmp_path):
    """A run killed (SIGKILL) while figures render once left its two pool workers alive and deadlocked."""
    import signal
    import subprocess
    import sys
    import time

    def children(pid: int) -> list[int]:
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(stat.parent.name))
        return out

    parent = subprocess.Popen([sys.executable, "-c", _FIGURE_PARENT, str(tmp_path / "figs")],
                              cwd=Path(__file__).parent.parent)
    try:
        deadline = time.monotonic() + 30
        while len(workers := children(parent.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) >= 2, "the figure pool did not start"
        time.sleep(1.0)  # the workers are inside a job
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    deadline = time.monotonic() + 10
    while (alive := [w for w in workers if running(w)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for w in alive:  # never leave them behind, even when the test fails
        try:
            os.kill(w, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not alive, f"figure workers {alive} outlived the killed run"


def test_train_numbers_and_api_export_arguments_are_checked(tmp_path):
    """`train --steps 0` / `--batch-size 0` and `api.export("text")` (one passage per character) once passed
    silently; each is now one ReportgenError naming the setting."""
    from reportgen import api
    from reportgen.cli import cli
    from reportgen.errors import ReportgenError
    from reportgen.train import TrainConfig

    for kw, flag in (({"steps": 0}, "--steps"), ({"batch_size": 0}, "--batch-size"), ({"lr": 0.0}, "--lr"),
                     ({"embed_size": 130}, "--embed"), ({"save_at": (7000,)}, "--save-at")):
        with pytest.raises(ReportgenError, match=flag):
            TrainConfig(**kw)
    assert cli(["train", "--steps", "0", "--out", str(tmp_path / "m")]) == 2
    assert not (tmp_path / "m").exists()
    model = api.load("inputs/models/en/step05000.pt")
    with pytest.raises(ReportgenError, match="list of strings"):
        api.export(model, "In the beginning", tmp_path / "a.npz")
    assert not (tmp_path / "a.npz").exists()


def test_a_text_mostly_outside_the_vocabulary_is_refused_even_with_oov_replace(world, capsys, tmp_path):
    """English on a Hebrew-like vocabulary: --oov replace would leave a text of spaces; refused in one line with
    the share, before any analysis. A text with a few unknown characters goes through, its share said."""
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("שלום עולם זה טקסט בעברית ולא באנגלית כלל\n" * 400, encoding="utf-8")
    for policy in ("replace", "drop"):
        err = _refused(capsys, _args(world, **{"--text": str(foreign), "--oov": policy}), world,
                       "foreign.txt", "outside the model's vocabulary", f"--oov {policy}")
        assert "%" in err


def test_oov_share_is_counted_and_bounded():
    from reportgen.capture import encode
    from reportgen.checkpoint import ModelBundle
    from reportgen.errors import ReportgenError

    tok = CharTokenizer.from_text(["abc "])
    bundle = ModelBundle.__new__(ModelBundle)
    object.__setattr__(bundle, "tokenizer", tok)
    shares: dict = {}
    ids = encode(bundle, "abc " * 99 + "xyzw", "t.txt", "replace", shares)  # 4 of 400 characters
    assert shares == {"t.txt": 0.01} and len(ids) == 400
    with pytest.raises(ReportgenError, match=r"t.txt: 40 of 400 characters \(10.0%\)"):
        encode(bundle, "abc " * 90 + "xyzw" * 10, "t.txt", "drop")
    with pytest.raises(ReportgenError, match="no character of the text"):
        encode(bundle, "xyz", "t.txt", "replace", max_share=1.0)


def test_a_device_name_with_a_trailing_newline_is_refused(world, capsys):
    _refused(capsys, _args(world, **{"--device": "cpu\n"}), world, "device must be")


def test_vowels_outside_the_vocabulary_or_for_a_recorded_language_are_refused(world, capsys):
    """[vowels] that the model's vocabulary lacks would leave the vowel class silently empty; vowels for en or he
    would be ignored silently; both are one line before analysis."""
    toml = world / "bad.toml"
    for body, expect in [('[vowels]\nxx = "аеиоу"\n', "is in the model's vocabulary"),
                         ('[vowels]\nen = "aeiou"\n', "own vowel record"),
                         ('[vowels]\nxx = "a1"\n', "must be letters")]:
        toml.write_text(body)
        _refused(capsys, _args(world, **{"--language": "xx"}) + ["--config", str(toml)], world, expect)


def test_outputs_this_machine_cannot_write_are_refused_before_analysis(world, capsys, monkeypatch):
    """--out ., a dangling link, a name too long for the staging folder beside it and an unwritable parent are
    one line each before any work; a disk that fills up during the run is named as such, not as a bug."""
    monkeypatch.chdir(world)
    _refused(capsys, _args(world, **{"--out": "."}), world, "--out must name a folder")
    (world / "dangling").symlink_to(world / "nowhere")
    _refused(capsys, _args(world, **{"--out": str(world / "dangling")}), world, "does not exist")
    _refused(capsys, _args(world, **{"--out": str(world / ("x" * 245))}), world, "too long")
    import errno
    import tempfile

    def read_only(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as m:
        m.setattr(tempfile, "mkdtemp", read_only)
        _refused(capsys, _args(world, **{"--out": str(world / "new")}), world, "Read-only file system")

    from reportgen.outputs import OutputFolder

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "results.json"))

    monkeypatch.setattr(OutputFolder, "write_run", full)
    before = _snapshot(world)
    assert cli(_args(world) + ["--force"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "No space left on device" in err and "unexpected" not in err and "results.json" in err
    assert _snapshot(world) == before  # the earlier output is intact


def _limited(args: list[str], gib: float = 3.0, seconds: int = 60):
    """The CLI in a child process under an address-space limit and a timeout."""
    import resource
    import subprocess
    import sys

    def limit():
        cap = int(gib * 2 ** 30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    return subprocess.run([sys.executable, "-m", "reportgen", *args], capture_output=True, text=True,
                          timeout=seconds, preexec_fn=limit, cwd=Path(__file__).parent.parent)


def _planted_payload():
    text = planted_text()
    tok = CharTokenizer.from_text([text])
    return planted_model(tok), tok


def test_checkpoints_built_to_exhaust_memory_are_refused_within_bounds(tmp_path):
    """Each loads under weights_only, yet would take gigabytes: nested shared metadata (a 'billion laughs'), a
    zero-stride position table of 60,000 rows, an archive member that inflates a thousandfold, a context of
    20,000 positions. Each is one line and exit 2 within 60 s under a 3 GiB address-space limit."""
    import zipfile

    model, tok = _planted_payload()
    cases = {}
    laughs: list = ["lol"]
    for _ in range(40):
        laughs = [laughs] * 10
    path = tmp_path / "laughs.pt"
    save_checkpoint(path, model, tok, step=1, train_loss=1.0, heldout_bits_per_char=1.0, corpus={"language": "en"},
                    seed=0, history=laughs, dtype=torch.float32)
    cases[path] = "metadata nests"
    for name, rows, expect in (("strided.pt", 60_000, "strides"), ("long.pt", 20_000, "context")):
        state = {k: v.clone() for k, v in model.state_dict().items()}
        table = state["embed.position_embeddings.weight"]
        state["embed.position_embeddings.weight"] = (table[:1].expand(rows, -1) if name == "strided.pt"
                                                     else torch.zeros(rows, table.shape[1]))
        torch.save({"model_state_dict": state}, tmp_path / name)
        cases[tmp_path / name] = expect
    bomb = tmp_path / "bomb.pt"
    shutil.copy(next(iter(cases)), bomb)
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("laughs/extra", b"\0" * (64 * 2 ** 20))
    cases[bomb] = "inflates"
    for path, expect in cases.items():
        for command in (["info", str(path)], ["analyze", "--model", str(path), "--language", "en",
                                               "--out", str(tmp_path / "site")]):
            done = _limited(command)
            err = done.stderr.strip()
            assert done.returncode == 2 and len(err.splitlines()) == 1, (path.name, command[0], err[-400:])
            assert expect in err and "unexpected" not in err, (path.name, err)
    assert not (tmp_path / "site").exists()


def test_api_arguments_are_checked_in_one_error(tmp_path):
    """A wrong model argument or language through the Python API is one ReportgenError, never an AttributeError
    or a silently accepted language whose letters the model does not have."""
    from reportgen import api
    from reportgen.errors import ReportgenError

    model = api.load("inputs/models/en/step05000.pt")
    for call in (lambda: api.export(123, ["abc"], tmp_path / "x.npz"), lambda: api.attention("model", "abc"),
                 lambda: api.loss(None, "abc"), lambda: api.test(api.Hypothesis("h", "", key_offset=1), 3, "x")):
        with pytest.raises(ReportgenError, match="must be a model from reportgen.api.load"):
            call()
    with pytest.raises(ReportgenError, match="no Hebrew letters"):
        api.load("inputs/models/en/step05000.pt", language="he")
    with pytest.raises(ReportgenError, match="language must be a language code"):
        api.load("inputs/models/en/step05000.pt", language="English!")
    with pytest.raises(ReportgenError, match="language must be a language code"):
        api.test(api.Hypothesis("h", "", key_offset=1), model, "abc " * 300, language="??")
    assert api.loss(model, "in the beginning") > 0


def test_export_checks_its_language(tmp_path, capsys):
    out = tmp_path / "a.npz"
    assert cli(["export", "--model", "inputs/models/en/step05000.pt", "--passage", "in the beginning", "--out",
                str(out), "--language", "he"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no Hebrew letters" in err and not out.exists()


def test_export_windows_are_bounded(tmp_path, capsys):
    for n in ("0", "10000000000000"):
        assert cli(["export", "--model", "inputs/models/en/step05000.pt", "--text", "inputs/reportgen.toml",
                    "--windows", n, "--out", str(tmp_path / "a.npz")]) == 2
        assert "--windows must be between 1 and" in capsys.readouterr().err


def test_a_right_to_left_label_is_isolated_in_reportgen_s_own_sentences(planted_site):
    """A Hebrew label next to a number in a generated sentence would carry the number into its direction
    ("מודל 3 / 4" read as "4 / 3 מודל"); quoted in isolates it cannot. Latin labels are printed as they are."""
    from dataclasses import replace as dc_replace

    from reportgen.results import read_run
    from reportgen.synthesis import key_questions, limitations

    out, _ = planted_site
    m = read_run(out).models[0]
    hebrew = dc_replace(m, label="מודל")
    text = " ".join(a for q in key_questions([hebrew]) for a in q.a) + " ".join(limitations([hebrew]))
    assert "\u2068מודל\u2069" in text and "מודל" not in text.replace("\u2068מודל\u2069", "")
    plain = " ".join(a for q in key_questions([m]) for a in q.a)
    assert "\u2068" not in plain and m.label in plain


@pytest.mark.parametrize("kind", ["folder", "deep", "props-deep"])
def test_a_tokenizer_or_props_json_that_is_a_folder_or_nested_too_deep_is_one_line(tmp_path, capsys, kind):
    from .test_model import course_model

    torch.save({"model_state_dict": course_model().state_dict()}, tmp_path / "checkpoint_step300_loss1.25.pt")
    CharTokenizer.from_text(["abcdefghijkl"]).save(tmp_path / "tokenizer.json")
    if kind == "folder":
        (tmp_path / "tokenizer.json").unlink()
        (tmp_path / "tokenizer.json").mkdir()
    else:
        name = "tokenizer.json" if kind == "deep" else "checkpoint_step300_props.json"
        (tmp_path / name).write_text("[" * 100_000 + "]" * 100_000)
    assert cli(["info", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unexpected" not in err
    assert ("is a folder" if kind == "folder" else "nested too deeply") in err


def test_a_file_size_limit_is_named_as_such_and_the_earlier_output_kept(world):
    """`ulimit -f`: a write past the limit fails with EFBIG (Python ignores SIGXFSZ); the run says so in one line,
    exit 2, and the earlier output is untouched."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))

    before = _snapshot(world / "site")
    done = subprocess.run([sys.executable, "-m", "reportgen", *_args(world), "--force"], capture_output=True,
                          text=True, timeout=600, preexec_fn=limit, cwd=Path(__file__).parent.parent)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and last.startswith("error:") and "File too large" in last, done.stderr[-500:]
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr
    assert _snapshot(world / "site") == before
