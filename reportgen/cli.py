"""Command line: `reportgen train | info | analyze | run | diff | clean | cache`. User mistakes exit 2 with one line."""

from __future__ import annotations

import argparse
import errno
import sys
from pathlib import Path

from .errors import ReportgenError
from .languages import LANGUAGE_CODES
from .process import one_blas_thread, reuse_freed_memory
from .progress import say
from .taskcache import add_command as _add_cache_command


def _language(text: str) -> str:
    """A language code: one with a record (en, he) or any ISO 639 code (a generic record is built for it)."""
    from .languages import CODE

    if text in LANGUAGE_CODES or CODE.match(text):
        return text
    raise argparse.ArgumentTypeError(f"expected a language code such as {', '.join(LANGUAGE_CODES)} or ru, not {text!r}")


def _ints(text: str) -> tuple[int, ...]:
    """Parse '250,1000,5000' into a tuple of ints."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _cmd_train(args: argparse.Namespace) -> int:
    """Train a model and save checkpoints."""
    from .corpora import bible_split, text_split
    from .train import TrainConfig, check_out, train

    cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                      save_at=args.save_at, save_every=args.save_every, n_layers=args.layers, n_heads=args.heads,
                      embed_size=args.embed, max_context_len=args.context, mlp_hidden_size=args.mlp,
                      with_residuals=not args.no_residuals, threads=args.threads, out=Path(args.out),
                      device=args.device or "auto", force=args.force)
    check_out(cfg)  # before the corpus is read
    split = text_split(args.text, args.language) if args.text else bible_split(args.language)
    for path in train(split, cfg):
        print(path)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    """Load a checkpoint and print what it holds."""
    import json

    from .loader import load

    bundle = load(args.checkpoint, text=Path(args.text) if args.text else None, with_residuals=_residuals(args),
                  train_text=args.train_text, language=args.language, meta=args.meta, decide=False)
    meta = {k: v for k, v in bundle.metadata.items() if k != "history"}
    config = bundle.config.to_dict()
    if "with_residuals_inferred" in meta and meta["with_residuals_inferred"] is None:
        config["with_residuals"] = None  # not recorded, and no text to infer it on
        say(f"{bundle.path}: whether it was trained with residual connections is not recorded; give --text FILE to "
            f"infer it, or --residuals / --no-residuals")
    print(json.dumps({"path": str(bundle.path), "sha256": bundle.sha256, "language": bundle.language,
                      "config": config, "vocab_size": bundle.tokenizer.vocab_size(),
                      "metadata": meta}, indent=2, ensure_ascii=False, default=str))
    return 0


def _residuals(args: argparse.Namespace) -> bool | None:
    """--residuals / --no-residuals as the loader takes them: None when neither is given (recorded or inferred)."""
    return False if args.no_residuals else True if args.residuals else None


def _per_model(option: str, values: list[str] | None, models: list[str] | None) -> list[Path | None]:
    """One value for all models, or one per --model in the same order."""
    n = len(models or [])
    if not values:
        return [None] * n
    if len(values) == 1:
        return [Path(values[0])] * n
    if len(values) != n:
        raise ReportgenError(f"{len(values)} {option} values for {n} --model: give one for all, or one per --model")
    return [Path(v) for v in values]


def _run_config(args: argparse.Namespace):
    """RunConfig from --config TOML and command-line options."""
    from .config import DEFAULT_TOML, ModelSpec, build_config, family
    from .layouts import run_name

    models = None
    for option, values in (("--label", args.label), ("--language", args.language)):
        if values and len(values) > len(args.model or []):
            raise ReportgenError(f"{len(values)} {option} value(s) for {len(args.model or [])} --model: each "
                                 f"{option} belongs to the --model in the same position")
    if args.heldout and not args.text:
        raise ReportgenError("--heldout needs --text (the text it is held out from)")
    texts, heldouts = _per_model("--text", args.text, args.model), _per_model("--heldout", args.heldout, args.model)
    if args.model:
        labels = list(args.label or [])
        languages = list(args.language or [])
        models = tuple(
            ModelSpec(family(Path(m))[0], labels[i] if i < len(labels) else run_name(Path(m)),
                      languages[i] if i < len(languages) else None,
                      texts[i], heldouts[i],
                      False if args.no_residuals else True if args.residuals else None,
                      Path(args.train_text) if args.train_text else None,
                      meta=Path(args.meta) if args.meta else None, seeds=family(Path(m))[1])
            for i, m in enumerate(args.model))
    elif args.text:
        raise ReportgenError("--text needs --model: say which model should read it")
    toml = Path(args.config) if args.config else (DEFAULT_TOML if DEFAULT_TOML.exists() else None)
    return build_config(toml, models=models, out=Path(args.out) if args.out else None, seed=args.seed,
                        oov=args.oov, train_windows=args.train_windows, heldout_windows=args.heldout_windows,
                        pdf=False if getattr(args, "no_pdf", False) else None,
                        author=getattr(args, "author", None), course=getattr(args, "course", None),
                        device=args.device, workers=args.workers, scheduler=args.scheduler)


def _cmd_analyze(args: argparse.Namespace) -> int:
    """Analyse the models and write results.json (no pages, no PDF)."""
    from .pipeline import build

    build(_run_config(args), analyze_only=True, force=args.force)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    """The whole report: analysis, site and PDF."""
    from .pipeline import build

    build(_run_config(args), force=args.force)
    return 0


def _cmd_diff(args: argparse.Namespace) -> int:
    """Compare two runs or checkpoints; exit 1 with --fail-on-change if any role changed significantly."""
    from .diff import check_out, compare, mean_attention, print_summary, render
    from .sides import both_sides

    check_out(Path(args.out))  # before any analysis
    if args.heldout and not args.text:
        raise ReportgenError("--heldout needs --text (the text it is held out from)")
    options = dict(language=args.language, text=Path(args.text) if args.text else None,
                   heldout=Path(args.heldout) if args.heldout else None,
                   toml=Path(args.config) if args.config else None, device=args.device, causal=args.causal)
    a, b = both_sides(Path(args.a), Path(args.b), **options)
    doc = compare(a, b, force=args.force)
    render(doc, Path(args.out), pdf=not args.no_pdf, mean_attn=mean_attention(doc, a, b))
    print_summary(doc)
    say(f"wrote {Path(args.out) / 'diff.html'}")
    roles_changed = any(c["status"] in ("appeared", "vanished") for m in doc["models"] for c in m["changes"])
    return 1 if args.fail_on_change and (roles_changed or doc["significant"]) else 0


def _cmd_export(args: argparse.Namespace) -> int:
    """Write attention matrices of chosen passages (with text, ids and classes) to an .npz file."""
    from . import api
    from .corpora import read_text

    if not args.passage and not args.text:
        raise ReportgenError("export needs --passage TEXT or --text FILE")
    if not 1 <= args.windows <= MAX_EXPORT_WINDOWS:
        raise ReportgenError(f"--windows must be between 1 and {MAX_EXPORT_WINDOWS}, not {args.windows}")
    if len(args.passage or []) > MAX_EXPORT_WINDOWS:
        raise ReportgenError(f"at most {MAX_EXPORT_WINDOWS} passages, not {len(args.passage)}")
    # the residual setting of a course checkpoint is inferred as the run infers it: on --text's held-out part,
    # else on the passages themselves
    model = api.load(args.model, text=Path(args.text) if args.text else "".join(args.passage),
                     with_residuals=_residuals(args), train_text=args.train_text, meta=args.meta,
                     language=args.language, device=args.device or "auto", oov="drop")
    T = model.config.max_context_len
    passages = list(args.passage or [])
    if args.text:
        text = read_text(args.text)
        passages += [text[k * T:(k + 1) * T] for k in range(args.windows) if text[k * T:(k + 1) * T]]
    out = Path(args.out)
    if out.exists() and not out.is_file():
        raise ReportgenError(f"{out}: exists and is not a file")
    if out.suffix != ".npz":
        raise ReportgenError(f"{out}: the export is an .npz file; name it *.npz")
    if not out.parent.is_dir():
        raise ReportgenError(f"{out}: the folder {out.parent} does not exist")
    if (out.exists() or out.is_symlink()) and not args.force:
        raise ReportgenError(f"{out}: exists; pass --force to replace it (a symbolic link is replaced itself, never "
                             f"the file it points to)")
    api.export(model, passages, out, args.language)
    say(f"wrote {out}: attention (layers, heads, N, N) for {len(passages)} passage(s)")
    return 0


def _cmd_clean(args: argparse.Namespace) -> int:
    """Remove the files a previous run wrote into the output folder (and nothing else)."""
    from .outputs import OutputFolder

    folder = OutputFolder(Path(args.out))
    with OutputFolder.locked(folder.path):  # refused while a run writes there; clears what killed runs left
        if not folder.status():
            raise ReportgenError(f"{folder.path}: holds no reportgen output (no status file); nothing removed")
        removed = folder.clean()
    say(f"{folder.path}: removed {len(removed)} file(s) reportgen wrote")
    return 0


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by analyze and run."""
    p.add_argument("--model", action="append", help="checkpoint file or folder (repeatable; default: shipped models)")
    p.add_argument("--label", action="append", help="display label for each --model, in order")
    p.add_argument("--language", action="append", type=_language,
                   help=f"language of each --model, in order: {', '.join(LANGUAGE_CODES)} (with notes and default "
                        f"corpora) or any ISO 639 code (classes from the vocabulary's script; vowels from the "
                        f"`vowels` setting)")
    p.add_argument("--text", action="append",
                   help="text file or folder to analyse (split into training / held-out as documented); one for all "
                        "models or one per --model, in order")
    p.add_argument("--heldout", action="append",
                   help="held-out text to use with --text instead of splitting it; one for all or one per --model")
    p.add_argument("--out", help="output folder (default site/)")
    p.add_argument("--config", help="TOML settings file (default inputs/reportgen.toml)")
    p.add_argument("--seed", type=int, help="random seed for resampling and probes (default 0)")
    p.add_argument("--oov", choices=("error", "drop", "replace"),
                   help="characters outside the vocabulary: stop with an error (default), drop or replace them")
    p.add_argument("--train-windows", type=int, help="training windows to sample for discovery (default 256)")
    p.add_argument("--heldout-windows", type=int, help="cap on held-out windows (default: all)")
    p.add_argument("--force", action="store_true", help="rebuild even if the inputs are unchanged")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes for the analysis and the timeline's checkpoints (default: the cores)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the timeline's per-checkpoint tasks on this dask.distributed scheduler (tcp://host:8786; "
                        "needs pip install -e '.[cluster]')")
    _add_device_option(p)
    _add_checkpoint_options(p)


def _add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="where forward passes run: auto (default: cuda when torch sees a GPU, else "
                                    "cpu), cpu, cuda, cuda:N or mps; statistics are computed on the CPU either way")


def _add_checkpoint_options(p: argparse.ArgumentParser) -> None:
    """Options for checkpoints whose hyperparameters or vocabulary are not stored with them."""
    residuals = p.add_mutually_exclusive_group()
    residuals.add_argument("--no-residuals", action="store_true",
                           help="course checkpoints: the model was trained without residual connections (default: "
                                "recorded, else inferred by evaluating both settings on the text, as every command does)")
    residuals.add_argument("--residuals", action="store_true",
                           help="course checkpoints: the model was trained with residual connections")
    p.add_argument("--train-text", help="course checkpoints without tokenizer.json: rebuild the vocabulary from this text")
    p.add_argument("--meta", help="nanoGPT checkpoints: the dataset's meta.pkl (default: beside the checkpoint or in "
                                  "data/<dataset>/ above it)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="reportgen", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show a traceback for unexpected errors")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a character-level TransformerLM")
    t.add_argument("--language", choices=LANGUAGE_CODES, default="en", help="default corpus language (default en)")
    t.add_argument("--text", help="train on this text file or folder instead of the default corpus")
    t.add_argument("--steps", type=int, default=6000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--save-at", type=_ints, default=(), help="extra steps to checkpoint, e.g. 250,1000")
    t.add_argument("--save-every", type=int, default=0, metavar="N",
                   help="also checkpoint every N steps (a dense series for the emergence timeline)")
    t.add_argument("--layers", type=int, default=4)
    t.add_argument("--heads", type=int, default=4)
    t.add_argument("--embed", type=int, default=128)
    t.add_argument("--context", type=int, default=128)
    t.add_argument("--mlp", type=int, default=512)
    t.add_argument("--no-residuals", action="store_true")
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    _add_device_option(t)
    t.add_argument("--out", default="checkpoints", help="output folder (default checkpoints/)")
    t.add_argument("--force", action="store_true",
                   help="overwrite checkpoints (stepNNNNN.pt) already in --out; a symbolic link is replaced "
                        "itself, never the file it points to")
    t.set_defaults(func=_cmd_train)

    i = sub.add_parser("info", help="load a checkpoint and print its hyperparameters and metadata")
    i.add_argument("checkpoint", help="a .pt file, or a folder of course checkpoints (latest step is used)")
    i.add_argument("--text", help="course checkpoints: infer the residual setting on this text, as `run` does")
    i.add_argument("--language", type=_language, help="the checkpoint's language, if it does not record it (its "
                                                      "default corpus is then the text for the residual setting)")
    _add_checkpoint_options(i)
    i.set_defaults(func=_cmd_info)

    a = sub.add_parser("analyze", help="analyse attention heads and write results.json")
    _add_run_options(a)
    a.set_defaults(func=_cmd_analyze)

    r = sub.add_parser("run", help="the whole report: analysis, static site and PDF")
    _add_run_options(r)
    r.add_argument("--no-pdf", action="store_true", help="skip the PDF")
    r.add_argument("--author", help="author(s) for the PDF's title page")
    r.add_argument("--course", help="course or assignment for the PDF's title page")
    r.set_defaults(func=_cmd_run)

    d = sub.add_parser("diff", help="what changed in each head between two runs or checkpoints")
    d.add_argument("a", help="results folder, results.json or checkpoint (before)")
    d.add_argument("b", help="results folder, results.json or checkpoint (after)")
    d.add_argument("--out", default="site/diff", help="output folder (default site/diff)")
    d.add_argument("--force", action="store_true", help="compare even if the runs used different texts")
    d.add_argument("--no-pdf", action="store_true", help="skip diff.pdf")
    d.add_argument("--fail-on-change", action="store_true", help="exit 1 if anything changed significantly")
    d.add_argument("--language", type=_language, help="checkpoints: their language, if they do not record it")
    d.add_argument("--text", help="checkpoints: analyse both on this text (default: their language's corpus)")
    d.add_argument("--heldout", help="checkpoints: held-out text to use with --text")
    d.add_argument("--config", help="checkpoints: TOML settings for their analysis")
    d.add_argument("--causal", action="store_true",
                   help="checkpoints: also ablate every head (and run the controls) so ablation effects and the "
                        "measured held-out loss with its CI are compared; slower")
    _add_device_option(d)
    d.set_defaults(func=_cmd_diff)

    e = sub.add_parser("export", help="write attention matrices of passages to an .npz file")
    e.add_argument("--model", required=True, help="checkpoint file or folder")
    e.add_argument("--passage", action="append", help="a passage to export (repeatable)")
    e.add_argument("--text", help="export the first --windows context-length windows of this text")
    e.add_argument("--windows", type=int, default=4, help="windows to take from --text (default 4)")
    e.add_argument("--language", type=_language, help="language for the character classes")
    e.add_argument("--out", required=True, help="output .npz file")
    e.add_argument("--force", action="store_true",
                   help="replace an existing output file (a symbolic link itself, never the file it points to)")
    _add_device_option(e)
    _add_checkpoint_options(e)
    e.set_defaults(func=_cmd_export)

    c = sub.add_parser("clean", help="remove the files a previous run wrote into an output folder")
    c.add_argument("--out", default="site", help="output folder (default site/)")
    c.set_defaults(func=_cmd_clean)
    _add_cache_command(sub)
    return parser


def cli(args: list[str] | None = None) -> int:
    """Entry point; returns the exit status (tests call it directly). Every failure is one line on stderr."""
    parser = build_parser()
    ns = parser.parse_args(args)
    try:
        return ns.func(ns)
    except ReportgenError as exc:
        say("error: " + " ".join(str(exc).split()))
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see `main`): staging folders and locks are cleaned up
        say("terminated" if isinstance(exc, Terminated) else "interrupted")
        return 143 if isinstance(exc, Terminated) else 130
    except OSError as exc:  # the environment (disk full, file size limit, read-only, permissions): name it
        if ns.debug or exc.errno not in ENVIRONMENT_ERRNOS:
            if ns.debug:
                raise
            return _unexpected(exc)
        from .config import display_path

        where = display_path(exc.filename) if exc.filename else "writing the output"
        say(f"error: {where}: {exc.strerror or exc} (a problem of this machine's disk or permissions, not of "
            f"the inputs; nothing was installed)")
        return 2
    except Exception as exc:  # a bug, not a user mistake: still one line unless --debug
        if ns.debug:
            raise
        return _unexpected(exc)


def _unexpected(exc: Exception) -> int:
    say(f"error: unexpected {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (a reportgen bug; "
        f"rerun with --debug for the traceback)")
    return 2


MAX_EXPORT_WINDOWS = 4096  # attention of every head on this many windows is what export writes (GBs beyond)
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                      errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE, errno.EIO}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is so that it unwinds exactly as after Ctrl-C: the staged output is removed,
    the lock released and the previous output left whole."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main() -> None:
    """Console-script entry point."""
    import signal

    one_blas_thread()  # before anything imports numpy
    reuse_freed_memory()  # before the first large tensor
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        sys.exit(cli())
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        sys.stderr.close()
        sys.exit(0)
