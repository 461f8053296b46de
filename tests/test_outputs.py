"""The output folder and the cache: every input class changes the cache key; a deleted output file
forces a rebuild; `reportgen clean` removes exactly what reportgen wrote."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from reportgen.cli import cli
from reportgen.config import build_config
from reportgen.outputs import FIGURES, RESULTS, STATUS, OutputFolder
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
        "label": dataclasses.replace(cfg, models=(dataclasses.replace(spec, label="Other"),)),
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
    assert sorted(files) == sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file() and p.name != STATUS)


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


def test_clean_removes_exactly_the_inventory(site_copy, capsys):
    copy, args = site_copy
    (copy / "notes.txt").write_text("mine")
    (copy / FIGURES / "mine.png").write_bytes(b"not reportgen's")
    assert cli(["clean", "--out", str(copy)]) == 0
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == [
        f"{FIGURES}/mine.png", "notes.txt"]
    assert cli(["clean", "--out", str(copy)]) == 2  # nothing of reportgen's left: a one-line error
    assert "holds no reportgen output" in capsys.readouterr().err
    assert cli(args) == 0  # `make clean && make report` works
    assert OutputFolder(copy).complete(["index.html"])
