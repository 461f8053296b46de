"""The cache of per-checkpoint analyses (`taskcache`): the timeline's points and the diff's analyses share one root and
one atomic store; a killed writer leaves nothing that is read, a damaged entry is computed again, and pruning removes
least-recently-used entries first and never a file the cache did not write."""

from __future__ import annotations

import json
import os
import time
from functools import partial

import numpy as np
import pytest
import torch

from reportgen import points, sides, taskcache
from reportgen.cli import cli

DAY = 86400


def _key(n: int) -> str:
    return f"{n:040x}"


def _numbers(run) -> str:
    """A run's results.json text without the time it was generated."""
    return json.dumps({k: v for k, v in run.to_json().items() if k != "generated"}, sort_keys=True)


def _age(path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t), follow_symlinks=False)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REPORTGEN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def checkpoint(tmp_path):
    """A tiny checkpoint and the text it is analysed on, as a diff's side."""
    from reportgen.checkpoint import save_checkpoint
    from reportgen.model import TransformerLM
    from reportgen.tokenizer import CharTokenizer

    from .planted import planted_text

    text = planted_text(8000).lower()
    (tmp_path / "t.txt").write_text(text)
    tok = CharTokenizer.from_text([text])
    torch.manual_seed(0)
    model = TransformerLM(1, 2, 16, 32, tok.vocab_size(), 32, True).eval()
    save_checkpoint(tmp_path / "a.pt", model, tok, step=1, train_loss=3.0, heldout_bits_per_char=3.0,
                    corpus={"name": "x"}, seed=0, history=[])
    return tmp_path / "a.pt", dict(language="en", text=tmp_path / "t.txt")


def test_the_timeline_and_the_diff_share_one_cache_a_damaged_entry_is_recomputed_and_a_killed_writer_leaves_none(
        cache, checkpoint, capsys, monkeypatch):
    path, options = checkpoint
    point = {"mean": np.arange(3.0), "shape": np.asarray("s")}
    points.write(_key(1), point)
    first = sides.run_data(path, **options)
    assert "reused" not in capsys.readouterr().err
    # both kinds are entries of the same root, listed (and so pruned) alike
    assert sorted((e.kind, e.temporary) for e in taskcache.entries()) == [("analysis", False), ("timeline", False)]
    assert {e.path.parent.parent for e in taskcache.entries()} == {cache}
    assert np.array_equal(points.read(_key(1))["mean"], point["mean"])

    # a damaged entry of either kind is a miss: removed, computed again, stored again
    (entry := taskcache.entry("timeline", _key(1))).write_bytes(entry.read_bytes()[:40])
    assert points.read(_key(1)) is None and not entry.exists()
    stored = [e.path for e in taskcache.entries() if e.kind == "analysis"][0]
    (stored / "results.json").write_text((stored / "results.json").read_text()[:200])
    again = sides.run_data(path, **options)
    assert "reused" not in capsys.readouterr().err and _numbers(again.run) == _numbers(first.run)
    assert json.dumps(sides.run_data(path, **options).run.to_json()) == json.dumps(again.run.to_json())  # as stored
    assert f"{path}: analysis reused from the cache" in capsys.readouterr().err

    # a writer killed half-way through a folder entry (the diff's) or a file entry (the timeline's) leaves only a
    # temporary name, which is never read
    from reportgen.outputs import OutputFolder

    key = _key(2)
    for kind, write in (("analysis", partial(sides._write, first.run, first.windows, [])),
                        ("timeline", lambda tmp: tmp.write_bytes(b"PK\x03\x04 half"))):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child dies mid-write
            monkeypatch.setattr(OutputFolder, "write_windows", lambda self, w: os._exit(9))
            taskcache.store(kind, key, lambda tmp: (write(tmp), os._exit(9)))
            os._exit(0)
        assert os.waitpid(pid, 0)[1] != 0
        assert taskcache.read(kind, key, lambda p: p) is None and not taskcache.entry(kind, key).exists()
    assert sorted(e.kind for e in taskcache.entries() if e.temporary) == ["analysis", "timeline"]


def test_prune_removes_least_recently_used_entries_first_and_never_a_file_it_did_not_write(cache, tmp_path, capsys):
    for n, days in ((0, 4), (1, 3), (2, 2), (3, 1)):
        assert taskcache.store("timeline", _key(n), lambda tmp: tmp.write_bytes(b"x" * 1000))
        _age(taskcache.entry("timeline", _key(n)), days)
    assert taskcache.store("analysis", _key(4), lambda tmp: [(tmp / f).write_bytes(b"y" * 500) for f in "ab"])
    _age(taskcache.entry("analysis", _key(4)), 5)
    assert taskcache.read("timeline", _key(0), lambda p: p.read_bytes()) == b"x" * 1000  # a hit: now the newest
    stale = cache / "timeline" / f".{_key(5)}.npz.123-deadbeef.tmp"  # a killed writer's, two hours ago
    fresh = cache / "timeline" / f".{_key(6)}.npz.124-deadbeef.tmp"  # a write in progress
    for tmp in (stale, fresh):
        tmp.write_bytes(b"t" * 10)
    _age(stale, 2 / 24)
    outside = tmp_path / "outside.bin"  # reached only through links, which are never followed
    outside.write_bytes(b"o" * 10_000)
    (tmp_path / "elsewhere" / _key(7)).mkdir(parents=True)
    foreign = [cache / "notes.txt", cache / "timeline" / "notes.txt", cache / "timeline" / f"{_key(8)}.npz.bak",
               cache / "analysis" / "mine" / "results.json", cache / "analysis" / f"{_key(9)}.npz"]
    for f in foreign:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("mine")
        _age(f, 30)
    (link := cache / "timeline" / f"{_key(10)}.npz").symlink_to(outside)
    (cache / "diff").symlink_to(tmp_path / "elsewhere")

    assert cli(["cache"]) == 0
    out = capsys.readouterr().out
    assert "timeline       4 entries    4.02 kB" in out and "analysis       1 entries       1 kB" in out
    assert cli(["cache", "prune", "--max-size", "2.5kB"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" ")[1] for line in out[:-1]] == [f"analysis/{_key(4)}", f"timeline/{_key(1)}.npz",
                                                         f"timeline/{_key(2)}.npz", f"timeline/{stale.name}"]
    assert out[-1].startswith("pruned 4 entries (3.01 kB); 2.01 kB left")
    def left() -> list[str]:
        return sorted(e.path.name for e in taskcache.entries())

    assert left() == sorted([fresh.name, f"{_key(0)}.npz", f"{_key(3)}.npz"])
    assert [e.path.name for e in taskcache.prune(older_than=0.5)] == [f"{_key(3)}.npz"]
    assert left() == sorted([fresh.name, f"{_key(0)}.npz"])
    assert taskcache.prune(max_size=0) and left() == [fresh.name]  # a write in progress is never removed
    assert all(f.read_text() == "mine" for f in foreign) and link.is_symlink() and outside.stat().st_size == 10_000
    assert (tmp_path / "elsewhere" / _key(7)).is_dir()


@pytest.mark.parametrize("args, message", [
    (["--max-size", "2 parsecs"], "--max-size '2 parsecs': expected a size such as 500MB"),
    (["--max-size=-1GB"], "--max-size '-1GB': expected a size"),
    (["--older-than", "soon"], "--older-than 'soon': expected a number of days"),
    ([], "cache prune needs --max-size SIZE"),
])
def test_bad_prune_options_are_one_line_errors(cache, capsys, args, message):
    assert cli(["cache", "prune", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1


def test_sizes_are_read_as_people_write_them():
    assert [taskcache.parse_size(s) for s in ("500MB", "2GB", "2gb", "1.5GiB", "800k", "1000", "0")] == \
        [500 * 10**6, 2 * 10**9, 2 * 10**9, 3 * 2**29, 800_000, 1000, 0]
