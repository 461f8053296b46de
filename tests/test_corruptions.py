"""Property: random corruptions of checkpoints, tokenizers, props, nanoGPT metadata and TOML files each end in
exit 0 or one error line with exit 2, within a time and memory bound, never in a traceback.

Every corruption is drawn from a seeded generator (byte flips, truncation, junk, emptied files, JSON values of
the wrong type, size or depth, plain-data pickles of the wrong shape, TOML edits), so a failure is reproducible
by its case name. The cases run in one child process (tests/corrupt_harness.py) under a 3 GiB address-space
limit and 20 s per case; the analysis is stubbed to stop once every input is loaded and checked.
"""

from __future__ import annotations

import json
import pickle
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reportgen.checkpoint import save_checkpoint
from reportgen.tokenizer import CharTokenizer

from .planted import planted_model, planted_text
from .test_model import course_model
from .test_nanogpt import GPT

ROOT = Path(__file__).resolve().parent.parent
PER_KIND = 26  # cases per kind of input; five kinds


def _bytes(rng: random.Random, data: bytes) -> bytes:
    """One random byte-level corruption."""
    op = rng.choice(["flip", "flip", "truncate", "junk", "zero", "empty", "random"])
    b = bytearray(data)
    if op == "flip" and b:
        for _ in range(rng.randint(1, 16)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif op == "truncate":
        b = b[:rng.randrange(len(b) + 1)]
    elif op == "junk":
        b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 4096)))
    elif op == "zero" and b:
        i = rng.randrange(len(b))
        b[i:i + rng.randint(1, 2048)] = bytes(len(b[i:i + 2048]))
    elif op == "empty":
        b = bytearray()
    elif op == "random":
        b = bytearray(rng.randrange(256) for _ in range(rng.randint(1, 8192)))
    return bytes(b)


def _value(rng: random.Random):
    """A JSON value of a random wrong kind."""
    deep: list = []
    for _ in range(rng.choice([2, 200, 5000])):
        deep = [deep]
    return rng.choice([None, -1, 0, 10 ** 12, 3.5, True, "x" * rng.choice([1, 10 ** 6]), [], {}, deep,
                       {"a": [1, 2]}, ["<PAD>"] * 3, list("abc") * 1000])


def _json(rng: random.Random, doc) -> bytes:
    """A random JSON-level corruption of a document (or a byte-level one)."""
    if rng.random() < 0.3:
        return _bytes(rng, json.dumps(doc).encode())
    doc = json.loads(json.dumps(doc))
    if isinstance(doc, dict) and doc:
        key = rng.choice(sorted(doc))
        if rng.random() < 0.3:
            del doc[key]
        else:
            doc[key] = _value(rng)
    elif isinstance(doc, list) and doc:
        doc[rng.randrange(len(doc))] = _value(rng)
    else:
        doc = _value(rng)
    return json.dumps(doc).encode()


def _toml(rng: random.Random, text: str) -> bytes:
    lines = text.splitlines()
    op = rng.choice(["drop", "dup", "value", "char", "unicode", "bytes"])
    i = rng.randrange(len(lines))
    if op == "drop":
        del lines[i]
    elif op == "dup":
        lines.insert(i, lines[i])
    elif op == "value" and "=" in lines[i]:
        key = lines[i].split("=")[0]
        value = rng.choice(["-1", "0", "1e400", "[]", "{}", "true", '""', '"x"', "99999999999", "[1,[2]]"])
        lines[i] = f"{key}= {value}"
    elif op == "char" and lines[i]:
        j = rng.randrange(len(lines[i]))
        lines[i] = lines[i][:j] + lines[i][j + 1:]
    elif op == "unicode":
        lines[i] += rng.choice(["\u202e", "\x00", "\ud7ff", "é", "\t", " = 1", "]]", "[[model]]"])
    else:
        return _bytes(rng, text.encode())
    return "\n".join(lines).encode()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """One sound input of each kind: a reportgen checkpoint and its text, a course folder (checkpoint, tokenizer,
    props), a nanoGPT run (ckpt.pt and data/<dataset>/meta.pkl), a TOML file naming the reportgen checkpoint."""
    root = tmp_path_factory.mktemp("sound")
    text = planted_text(6000)
    tok = CharTokenizer.from_text([text])
    save_checkpoint(root / "own.pt", planted_model(tok), tok, step=1, train_loss=1.0, heldout_bits_per_char=5.0,
                    corpus={"name": "planted", "language": "en"}, seed=0, history=[[1, 5.0, 5.0]],
                    dtype=torch.float32)
    (root / "text.txt").write_text(text)
    course = root / "course"
    course.mkdir()
    torch.save({"model_state_dict": course_model().state_dict(), "step": 300, "loss": 1.25},
               course / "checkpoint_step300_loss1.25.pt")
    CharTokenizer.from_text(["abcdefghijkl"]).save(course / "tokenizer.json")
    (course / "checkpoint_step300_props.json").write_text(json.dumps({"n_layers": 3, "n_heads": 2}))
    (course / "train.txt").write_text("abcdefghijkl " * 400)
    torch.manual_seed(0)
    run = root / "out-tiny"
    run.mkdir()
    torch.save({"model": GPT(bias=False).state_dict(), "model_args": dict(n_layer=2, n_head=2, n_embd=16,
                                                                          block_size=12, vocab_size=11, bias=False),
                "config": {"dataset": "tiny_chars"}, "iter_num": 250, "best_val_loss": 1.25}, run / "ckpt.pt")
    data = root / "data" / "tiny_chars"
    data.mkdir(parents=True)
    chars = "\n abcdefghi"
    with (data / "meta.pkl").open("wb") as fh:
        pickle.dump({"vocab_size": 11, "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}, fh)
    (root / "run.toml").write_text(
        f'seed = 0\ntrain_windows = 8\nheldout_windows = 8\nn_probes = 4\nablation_windows = 0\noov = "replace"\n'
        f'[[model]]\npath = "{root / "own.pt"}"\nlabel = "Own"\nlanguage = "en"\ntext = "{root / "text.txt"}"\n'
        f'[[hypothesis]]\nname = "h"\nkey_offset = 2\n')
    return root


def _cases(root: Path, work: Path) -> list[dict]:
    rng = random.Random(2026)
    cases = []

    def add(name, args):
        cases.append({"name": name, "args": args})

    for k in range(PER_KIND):  # reportgen checkpoints: loading and, where it loads, the run's checks
        f = work / f"own{k}.pt"
        f.write_bytes(_bytes(rng, (root / "own.pt").read_bytes()))
        add(f"own{k}", ["info", str(f)] if k % 2 else
            ["analyze", "--model", str(f), "--language", "en", "--text", str(root / "text.txt"),
             "--out", str(work / f"o-own{k}")])
    for k in range(PER_KIND):  # course tokenizer.json and props
        folder = work / f"course{k}"
        folder.mkdir()
        for p in (root / "course").iterdir():
            (folder / p.name).write_bytes(p.read_bytes())
        target = "tokenizer.json" if k % 2 else "checkpoint_step300_props.json"
        doc = json.loads((folder / target).read_text())
        (folder / target).write_bytes(_json(rng, doc))
        add(f"course{k}-{target}", ["info", str(folder)] if k % 3 == 0 else
            ["analyze", "--model", str(folder), "--language", "en", "--text", str(folder / "train.txt"),
             "--out", str(work / f"o-course{k}")])
    for k in range(PER_KIND):  # nanoGPT: meta.pkl and the checkpoint itself
        run = work / f"nano{k}" / "out-tiny"
        data = work / f"nano{k}" / "data" / "tiny_chars"
        run.mkdir(parents=True)
        data.mkdir(parents=True)
        ckpt, meta = (root / "out-tiny" / "ckpt.pt").read_bytes(), (root / "data" / "tiny_chars" / "meta.pkl").read_bytes()
        if k % 2:
            plain = rng.choice([{"vocab_size": 11}, {"itos": [1, 2]}, {"itos": {0: "ab"}, "vocab_size": 11}, [1, 2],
                                {"itos": {i: chr(97 + i) for i in range(30)}, "vocab_size": 30}, None, "x"])
            meta = _bytes(rng, meta) if rng.random() < 0.5 else pickle.dumps(plain)
        else:
            ckpt = _bytes(rng, ckpt)
        (run / "ckpt.pt").write_bytes(ckpt)
        (data / "meta.pkl").write_bytes(meta)
        add(f"nano{k}", ["info", str(run / "ckpt.pt")])
    for k in range(PER_KIND):  # TOML settings
        f = work / f"run{k}.toml"
        f.write_bytes(_toml(rng, (root / "run.toml").read_text()))
        add(f"toml{k}", ["analyze", "--config", str(f), "--out", str(work / f"o-toml{k}")])
    for k in range(PER_KIND):  # course checkpoints themselves
        folder = work / f"ccourse{k}"
        folder.mkdir()
        for p in (root / "course").iterdir():
            data = p.read_bytes()
            (folder / p.name).write_bytes(_bytes(rng, data) if p.suffix == ".pt" else data)
        add(f"ccourse{k}", ["info", str(folder)])
    return cases


@pytest.mark.slow  # ~130 cases in one child process
def test_random_corruptions_end_in_exit_0_or_one_error_line(inputs, tmp_path):
    cases = _cases(inputs, tmp_path)
    assert len(cases) >= 100
    spec = tmp_path / "cases.json"
    spec.write_text(json.dumps(cases))
    done = subprocess.run([sys.executable, "-m", "tests.corrupt_harness", str(spec), "3", "20"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(records) == len(cases), done.stderr[-2000:]
    bad = []
    for r in records:
        lines = [x for x in r["stderr"].splitlines() if x.strip()]
        errors = [x for x in lines if x.startswith("error:")]
        ok = r["code"] == 0 or (r["code"] == 2 and len(errors) == 1 and lines[-1] == errors[0])
        if not ok or "Traceback" in r["stderr"] or "unexpected" in r["stderr"]:
            bad.append((r["name"], r["code"], r["stderr"][-300:]))
    assert bad == [], bad
    codes = [r["code"] for r in records]
    print({kind: sorted(r["code"] for r in records if r["name"].startswith(kind)) for kind in
           ("own", "course", "nano", "toml", "ccourse")}, max(r["seconds"] for r in records))
    assert codes.count(2) >= len(cases) // 2  # most corruptions are caught, not absorbed
