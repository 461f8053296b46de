"""The output folder and the cache: every input class changes the cache key; a deleted output file
forces a rebuild; `reportgen clean` removes exactly what reportgen wrote."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from reportgen.cli import cli
from reportgen.outputs import FIGURES, JOURNAL, RESULTS, STATUS, OutputFolder
from reportgen.pipeline import analysis_key, render_key


def _config(args: list[str]):
    """The RunConfig the CLI would build from `args`."""
    from reportgen.cli import _run_config, build_parser

    return _run_config(build_parser().parse_args(args))


def test_every_input_class_changes_the_cache_key(planted_site, tmp_path, monkeypatch):
    _, args = planted_site
    cfg = _config(args)
    spec = cfg.models[0]
    base = analysis_key(cfg)
    copy = tmp_path / "copy.txt"
    copy.write_text(spec.text.read_text() + "x\n")
    ckpt = tmp_path / "planted.pt"
    ckpt.write_bytes(spec.path.read_bytes()[:-1] + b"\0")
    variants = {
        "text": dataclasses.replace(cfg, models=(dataclasses.replace(spec, text=copy),)),
        "heldout": dataclasses.replace(cfg, models=(dataclasses.replace(spec, heldout=copy),)),
        "checkpoint": dataclasses.replace(cfg, models=(dataclasses.replace(spec, path=ckpt),)),
        "language": dataclasses.replace(cfg, models=(dataclasses.replace(spec, language="he"),)),
        "residuals": dataclasses.replace(cfg, models=(dataclasses.replace(spec, with_residuals=False),)),
        "seed": dataclasses.replace(cfg, seed=1),
        "windows": dataclasses.replace(cfg, train_windows=47),
        "classes": dataclasses.replace(cfg, class_overrides={"y": "vowel"}),
    }
    keys = {name: analysis_key(c) for name, c in variants.items()}
    assert all(k != base for k in keys.values()), [n for n, k in keys.items() if k == base]
    assert len(set(keys.values())) == len(keys)
    assert analysis_key(cfg) == base  # and it is stable
    rkey = render_key(cfg, base)
    assert render_key(dataclasses.replace(cfg, pdf=not cfg.pdf), base) != rkey
    relabelled = dataclasses.replace(cfg, models=(dataclasses.replace(spec, label="Other", slug="other"),))
    assert analysis_key(relabelled) == base and render_key(relabelled, base) != rkey  # a label changes no number
    templates = tmp_path / "templates"
    shutil.copytree(Path(__file__).parent.parent / "templates", templates)
    monkeypatch.setattr("reportgen.pipeline.template_dir", lambda: templates)
    assert render_key(cfg, base) == rkey
    (templates / "style.css").write_text((templates / "style.css").read_text() + "\n/* changed */\n")
    assert render_key(cfg, base) != rkey


@pytest.fixture
def site_copy(planted_site, tmp_path):
    out, args = planted_site
    copy = tmp_path / "site"
    shutil.copytree(out, copy)
    i = args.index("--out")
    return copy, args[:i + 1] + [str(copy)] + args[i + 2:]


def test_inventory_lists_what_the_run_wrote(site_copy):
    copy, _ = site_copy
    folder = OutputFolder(copy)
    files = folder.inventory()
    assert RESULTS in files and "index.html" in files and STATUS not in files
    assert any(f.startswith(f"{FIGURES}/") for f in files)
    assert folder.complete([RESULTS])
    assert sorted(files) == sorted(str(p.relative_to(copy)) for p in copy.rglob("*")
                                   if p.is_file() and p.relative_to(copy).as_posix() != STATUS)


def test_deleting_an_output_file_forces_a_rebuild(site_copy, capsys):
    copy, args = site_copy
    assert cli(args) == 0
    assert "up to date" in capsys.readouterr().err
    (copy / "head-planted-L0H2.html").unlink()
    shutil.rmtree(copy / FIGURES)
    assert cli(args) == 0
    err = capsys.readouterr().err
    assert "up to date" not in err and "analysis unchanged; rendering again" in err
    assert (copy / "head-planted-L0H2.html").exists() and OutputFolder(copy).complete()
    (copy / RESULTS).unlink()
    assert cli(args) == 0
    err = capsys.readouterr().err
    assert "analysis unchanged" not in err and (copy / RESULTS).exists()


@pytest.mark.slow  # a full run through the CLI
def test_clean_removes_exactly_the_inventory(site_copy, capsys):
    copy, args = site_copy
    (copy / "notes.txt").write_text("mine")
    (copy / FIGURES / "mine.png").write_bytes(b"not reportgen's")
    assert cli(["clean", "--out", str(copy)]) == 0
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == [
        f"{FIGURES}/mine.png", "notes.txt"]
    assert cli(["clean", "--out", str(copy)]) == 2  # nothing of reportgen's left: a one-line error
    assert "holds no reportgen output" in capsys.readouterr().err
    assert cli(args) == 2  # a folder holding only someone else's files is not an output folder
    assert "notes.txt" in capsys.readouterr().err
    (copy / "notes.txt").unlink()
    (copy / FIGURES / "mine.png").unlink()
    assert cli(args) == 0  # `make clean && make report` works
    assert OutputFolder(copy).complete(["index.html"])


def test_out_holding_someone_elses_files_is_refused_and_nothing_is_deleted(planted_site, tmp_path, capsys):
    _, args = planted_site
    demo = tmp_path / "demo"
    (demo / "sub").mkdir(parents=True)
    for name, data in (("notes.txt", b"notes"), ("photo.jpg", b"\xff\xd8"), ("sub/data.csv", b"a,b\n")):
        (demo / name).write_bytes(data)
    before = {p: p.read_bytes() for p in demo.rglob("*") if p.is_file()}
    i = args.index("--out")
    assert cli(args[:i + 1] + [str(demo)] + args[i + 2:]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "did not write" in err and str(demo) in err
    assert {p: p.read_bytes() for p in demo.rglob("*") if p.is_file()} == before
    assert not list(tmp_path.glob(".demo.*"))


@pytest.mark.slow  # a full run through the CLI
def test_user_files_beside_an_output_survive_a_rebuild_and_clashes_are_refused(site_copy, capsys):
    copy, args = site_copy
    (copy / "notes.txt").write_text("mine")
    assert cli(args + ["--force"]) == 0
    assert (copy / "notes.txt").read_text() == "mine" and OutputFolder(copy).complete(["index.html"])
    (copy / "extra.html").write_text("<p>mine</p>")
    assert cli(args + ["--force"]) == 2
    assert "extra.html" in capsys.readouterr().err
    assert (copy / "extra.html").read_text() == "<p>mine</p>"


@pytest.mark.slow  # a full run through the CLI
def test_a_live_lock_stops_a_second_run_and_a_dead_one_is_taken_over(site_copy, capsys):
    import subprocess

    copy, args = site_copy
    lock = copy.with_name(f".{copy.name}.reportgen-lock")
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        lock.write_text(str(sleeper.pid))
        assert cli(args + ["--force"]) == 2
        assert "another reportgen run" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    stale = copy.with_name(f".{copy.name}.staging-{sleeper.pid}")  # a dead run's staging folder
    stale.mkdir()
    assert cli(args + ["--force"]) == 0  # the dead process's lock is taken over
    assert not lock.exists() and not stale.exists()


@pytest.mark.slow
def test_a_killed_run_leaves_a_complete_site_and_the_next_run_cleans_up(site_copy):
    import re
    import signal
    import subprocess
    import sys
    import time

    copy, args = site_copy
    command = [sys.executable, "-m", "reportgen", *args, "--force"]
    for delay in (1.0, 2.0, 3.0, 3.5, 4.0, 5.0):
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        pages = list(copy.glob("*.html"))
        assert (copy / "index.html").exists() and (copy / RESULTS).exists(), delay
        for page in pages:
            for ref in re.findall(r'(?:href|src)="([^"#:]+)"', page.read_text(encoding="utf-8")):
                assert (copy / ref).exists(), (delay, page.name, ref)
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert OutputFolder(copy).complete(["index.html"])
    assert not list(copy.parent.glob(f".{copy.name}.staging-*")) and not (copy / JOURNAL).exists()


def test_an_edited_output_file_is_not_up_to_date(site_copy, capsys):
    copy, args = site_copy
    assert cli(args) == 0 and "up to date" in capsys.readouterr().err
    (copy / "index.html").write_text((copy / "index.html").read_text() + "<!-- edited -->")
    assert cli(args) == 0
    assert "up to date" not in capsys.readouterr().err
    assert "edited" not in (copy / "index.html").read_text()


@pytest.mark.slow  # a full run through the CLI
def test_an_output_of_an_older_reportgen_is_replaced_and_user_files_kept(site_copy):
    copy, args = site_copy
    status = json.loads((copy / STATUS).read_text())
    (copy / STATUS).write_text(json.dumps({k: v for k, v in status.items() if k != "files"}))  # older format
    (copy / "notes.txt").write_text("mine")
    assert cli(args + ["--force"]) == 0
    assert (copy / "notes.txt").read_text() == "mine" and OutputFolder(copy).complete(["index.html"])


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c_and_leaves_the_previous_output_whole(site_copy):
    """SIGTERM (what `kill` and process managers send) once killed a run outright, leaving its staging folder and
    lock; now it unwinds like Ctrl-C: exit 143, one line, nothing staged left, the previous site complete."""
    import re
    import signal
    import subprocess
    import sys
    import time

    copy, args = site_copy
    for delay in (2.0, 1.0, 3.0, 0.5):  # past start-up, inside the work (a planted run takes ~8 s here); another
        proc = subprocess.Popen([sys.executable, "-m", "reportgen", *args, "--force"],  # delay only if the run
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # finished first
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            break
    assert proc.returncode == 143 and "terminated" in err.splitlines() and "Traceback" not in err
    assert not list(copy.parent.glob(f".{copy.name}.staging-*")) and not (copy.parent / f".{copy.name}.reportgen-lock").exists()
    # before the install step the previous site is untouched; a signal inside it leaves old and new pages, each
    # complete (the install journal's design): either way every page and every file it links to is there
    assert OutputFolder(copy).complete(["index.html"])
    for page in copy.glob("*.html"):
        for ref in re.findall(r'(?:href|src)="([^"#:]+)"', page.read_text(encoding="utf-8")):
            assert (copy / ref).exists(), (page.name, ref)


def _site(folder: Path, pages: dict[str, list[str]], figures=()) -> None:
    """A tiny output: pages linking to other pages, figures, and its status file (what a run records)."""
    folder.mkdir(parents=True)
    for name, links in pages.items():
        (folder / name).write_text("".join(f'<a href="{x}">x</a>' for x in links), encoding="utf-8")
    for f in figures:
        (folder / FIGURES).mkdir(exist_ok=True)
        (folder / FIGURES / f).write_bytes(b"png")
    OutputFolder(folder).record(key="k")


def _links_hold(out: Path) -> None:
    import re

    for page in out.glob("*.html"):
        for ref in re.findall(r'href="([^"]+)"', page.read_text(encoding="utf-8")):
            assert (out / ref).exists(), (page.name, ref)


OLD = {"index.html": ["model-a.html", "gallery.html"], "gallery.html": ["model-a.html"], "model-a.html": ["index.html"]}
NEW = {"index.html": ["model-b.html", "gallery.html"], "gallery.html": ["model-b.html", "figures/b.png"],
       "model-b.html": ["index.html", "figures/b.png"]}


def test_a_kill_at_every_install_step_leaves_every_link_whole_and_the_next_run_finishes(tmp_path, monkeypatch):
    """A label change renames pages. The install moves new names first, then the names the old output has,
    index.html last and the status file after everything: killed after any number of moves, every page in the
    folder links only to files that are there; the next run's recovery finishes the install."""
    import os

    from reportgen import outputs

    moves = len(NEW) + 1  # every file of the new output (pages and the figure)
    for k in range(moves + 1):
        out, staging = tmp_path / f"out{k}", tmp_path / f".out{k}.staging-1"
        _site(tmp_path / "first", OLD)
        outputs.install(tmp_path / "first", out)  # the previous output
        shutil.rmtree(tmp_path / "first")
        _site(staging, NEW, ["b.png"])
        done, real = [], os.replace

        def replace(src, dst, k=k, staging=staging):
            if Path(src).is_relative_to(staging):  # a move out of staging (not the journal's own atomic write)
                if len(done) == k:
                    raise KeyboardInterrupt  # the kill
                done.append(Path(dst).name)
            real(src, dst)

        with monkeypatch.context() as m:
            m.setattr(outputs.os, "replace", replace)
            with pytest.raises(KeyboardInterrupt):
                outputs.install(staging, out)
        _links_hold(out)
        if k == moves:  # all files moved, killed before the status file: the new pages are complete
            assert done[-1] == "index.html" and done[0] == "b.png"
        outputs.recover(out)
        assert sorted(p.name for p in out.glob("*.html")) == sorted(NEW) and not (out / JOURNAL).exists()
        _links_hold(out)


def test_the_lock_is_taken_before_any_work_and_an_empty_young_lock_is_held(site_copy, capsys, monkeypatch):
    import os
    import time

    from reportgen import analyze

    copy, args = site_copy

    def no_work(*a, **k):
        raise AssertionError("the analysis started although another run holds the lock")

    monkeypatch.setattr(analyze, "prepare", no_work)
    lock = copy.with_name(f".{copy.name}.reportgen-lock")
    lock.write_text("")  # another run between creating its lock and writing its PID
    assert cli(args + ["--force"]) == 2
    assert "a process starting up" in capsys.readouterr().err and lock.exists()
    old = time.time() - 600
    os.utime(lock, (old, old))  # an empty lock ten minutes old: its run died before writing; taken over
    assert cli(args + ["--force"]) == 2  # now the run starts (and meets the stubbed analysis)
    assert "the analysis started" in capsys.readouterr().err and not lock.exists()


def test_up_to_date_reruns_and_clean_remove_what_killed_runs_left(site_copy, capsys):
    import subprocess

    copy, args = site_copy
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = copy.with_name(f".{copy.name}.staging-{dead.pid}")
    lock = copy.with_name(f".{copy.name}.reportgen-lock")
    for run in (args, ["clean", "--out", str(copy)]):
        stale.mkdir()
        lock.write_text(str(dead.pid))
        assert cli(run) == 0
        assert not stale.exists() and not lock.exists()
    assert "up to date" in capsys.readouterr().err
