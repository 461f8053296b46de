"""Analysis stage: for each model, capture on training and held-out windows, score, validate, summarise.

`analyze(cfg, prepared)` returns an `Analysed`: typed results per model (`results.ModelResult`),
per-window values for diffs and figure inputs. Roles are discovered on training windows and
confirmed on held-out windows; q-values come from one Benjamini–Hochberg family per split over
every model, layer, head and tested detector.
"""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import replace
from functools import partial

import numpy as np
import torch

from . import __version__
from .ablation import Ablated, CausalEvidence, ablate_model, causal_agreement, causal_evidence
from .capture import HeadScores, capture, encode, natural_probes, probe, random_probes
from .catalogue import set_hypotheses
from .checkpoint import ModelBundle
from .loader import bits as _bits, check_fit, check_script, open_checkpoint
from .classes import CLASS_NAMES, CharClasses
from .config import ModelSpec, RunConfig, display_path
from .corpora import TextSplit, bible_split, text_split
from .detectors import SKIP
from .errors import ReportgenError
from .hypotheses import check_targets
from .caseclasses import case_classes
from .caseclasses import not_offered as case_not_offered
from .modelcard import model_card
from .querychars import tables as query_char_tables
from .languages import LANGUAGE, example_inputs
from .languages import ensure as ensure_language
from .progress import make_progress, say, stage_seconds
from .results import SPLITS, CheckpointInfo, ClassMatrix, CorpusInfo, HeadResult, ModelResult, Probe, Run, Timeline
from .roles import findings, profile_fields, role_labels, summary
from .stages import Analysed, FigureInputs, ModelAnalysis, Prepared
from .stats import add_q_values, block_length, split_stats
from .seeds import measure as measure_seed, records, seed_label
from .timeline import RETRIES, early_jobs as early_points, timelines as emergence
from .workers import count as workers, run_jobs


@torch.no_grad()
def example_attention(bundle: ModelBundle, language: str, heldout: str,
                      own_text: bool = False) -> tuple[tuple[str, str, np.ndarray], ...]:
    """Attention on short illustrative inputs (the language's own, or with `own_text` the first words of the held-out
    text: languages.example_inputs) and a held-out passage, skipping inputs outside the vocabulary."""
    T = bundle.config.max_context_len
    n, k = min(24, T), min(12, T // 2)  # short enough for legible character ticks; fits the model's context
    inputs = [(f"input: {t}", t) for t in example_inputs(language, heldout if own_text else None)]
    inputs.append(("held-out passage", heldout[:n]))
    inputs.append((f"the same {k} characters twice", heldout[n:n + k] * 2))  # shows copying / induction
    out = []
    for caption, text in inputs:
        if not text or bundle.tokenizer.unknown_chars(text) or len(text) > T:
            continue
        idx = torch.tensor([bundle.tokenizer.tokenize(text)])
        _, attn = bundle.model(idx, return_attention_weights=True)  # (L, 1, H, T, T)
        out.append((caption, text, attn[:, 0].numpy()))
    return tuple(out)


def contiguous_block(starts: np.ndarray, length: int) -> int:
    """Moving-block length for windows cut back to back from one text (1 if they are spread out)."""
    return block_length(len(starts)) if len(starts) > 1 and np.all(np.diff(starts) == length) else 1


def load_text(spec: ModelSpec, language: str | None) -> TextSplit:
    """The model's text: the user's file(s), or the default corpus of its language."""
    if spec.text is not None:
        return text_split(spec.text, language or "en", spec.heldout)
    if language is None:
        raise ReportgenError(f"{spec.path}: checkpoint does not record its language; give a language or --text")
    if language in LANGUAGE and not LANGUAGE[language].corpus_loader:
        raise ReportgenError(f"{spec.path}: reportgen has no default corpus for language {language!r}; give --text")
    return bible_split(language)


def js_distance(samples: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Mean Jensen–Shannon distance (base 2) between heads' attention rows over sample windows: (K, K)."""
    mats = np.stack([a for _, a in samples]).astype(np.float64)  # (N, L, H, T, S)
    N, L, H, T, S = mats.shape
    rows = mats[..., SKIP:, :].reshape(N, L * H, T - SKIP, S)
    causal = np.tril(np.ones((T, S), dtype=bool))[SKIP:]  # (T', S)
    rows = np.where(causal, rows + 1e-3, 0.0)  # smooth within the visible prefix only
    rows /= rows.sum(-1, keepdims=True)
    logs = np.log2(np.where(rows > 0, rows, 1.0))
    K = L * H
    dist = np.zeros((K, K))
    for a in range(K - 1):  # each pair once (the divergence is symmetric), against the heads after a
        r, lg = rows[:, a + 1:], logs[:, a + 1:]
        m = 0.5 * (rows[:, a:a + 1] + r)  # (N, K - a - 1, T', S)
        log_m = np.log2(np.where(m > 0, m, 1.0))
        js = 0.5 * (rows[:, a:a + 1] * (logs[:, a:a + 1] - log_m)).sum(-1) + 0.5 * (r * (lg - log_m)).sum(-1)
        dist[a, a + 1:] = np.sqrt(np.clip(js, 0, 1)).mean((0, 2))
    return dist + dist.T


def cluster_heads(dist: np.ndarray, n_heads: int, threshold: float = 0.5) -> list[list[str]]:
    """Average-linkage clusters of heads whose JS distance is below `threshold`; labels 'L0H1'."""
    names = [f"L{k // n_heads}H{k % n_heads}" for k in range(len(dist))]
    root = list(range(len(names)))  # union-find over heads: merges within the threshold join their clusters

    def find(k):
        while root[k] != k:
            k = root[k]
        return k

    for x, y, height in _average_linkage(dist):
        if height <= threshold:  # average linkage never merges below a child's height: cutting here is fcluster's
            root[find(y)] = find(x)
    groups: dict[int, list[str]] = {}
    for k, name in enumerate(names):
        groups.setdefault(find(k), []).append(name)
    return sorted(groups.values(), key=lambda g: (-len(g), g))


def _average_linkage(dist: np.ndarray) -> list[tuple[int, int, float]]:
    """The merges (x, y, height) of average linkage (UPGMA) on a square distance matrix, found by the nearest-
    neighbour chain as scipy's `linkage(..., "average")` finds them (the same ties broken the same way, the same
    updates in the same floating-point order): its flat clusters equal scipy's (tested), without importing
    scipy.cluster (~0.1 s of every command). Clusters live at the index of their larger member."""
    n = len(dist)
    d = [[float(v) for v in row] for row in dist]
    size = [1] * n
    chain: list[int] = []
    merges = []
    for _ in range(n - 1):
        if not chain:
            chain = [next(i for i in range(n) if size[i] > 0)]
        while True:
            x = chain[-1]
            y, current = (chain[-2], d[x][chain[-2]]) if len(chain) > 1 else (-1, float("inf"))
            for i in range(n):
                if size[i] and i != x and d[x][i] < current:
                    current, y = d[x][i], i
            if y < 0:  # no comparable neighbour left (NaN distances): no further merges
                return merges
            if len(chain) > 1 and y == chain[-2]:
                break
            chain.append(y)
        del chain[-2:]
        x, y = min(x, y), max(x, y)
        nx, ny = size[x], size[y]
        merges.append((x, y, current))
        size[x], size[y] = 0, nx + ny
        for i in range(n):
            if size[i] and i != y:
                d[i][y] = d[y][i] = (nx * d[i][x] + ny * d[i][y]) / (nx + ny)
    return merges


def prepare(spec: ModelSpec, cfg: RunConfig, split: TextSplit | None = None, encoded: tuple | None = None) -> Prepared:
    """Load the checkpoint and text and check every input before any work starts (errors are one line); other
    seeds of the recipe (`spec.seeds`) are loaded the same way on the same text (`encoded`: (vocabulary, ids,
    shares) of the first seed, reused by a seed with the same vocabulary)."""
    bundle = open_checkpoint(spec.path, with_residuals=spec.with_residuals, train_text=spec.train_text,
                             language=spec.language, meta=spec.meta, device=cfg.torch_device())
    vowels = cfg.vowels.get(spec.language or bundle.language or "", "")
    missing = sorted(set(vowels) - set(bundle.tokenizer.vocab))
    if vowels and len(missing) == len(set(vowels)):  # the vowel class would be silently empty
        raise ReportgenError(f"{spec.path}: none of vowels.{spec.language or bundle.language} "
                             f"({', '.join(map(repr, missing))}) is in the model's vocabulary; list the vowel letters "
                             f"the model reads")
    if missing:
        say(f"{spec.path}: vowels.{spec.language or bundle.language} lists {', '.join(map(repr, missing))}, not in the "
            f"model's vocabulary (ignored)")
    ensure_language(spec.language or bundle.language, bundle.tokenizer.vocab, vowels)
    check_script(bundle, spec.language)
    split = split or load_text(spec, spec.language or bundle.language)
    classes = CharClasses.for_vocab(bundle.tokenizer.vocab, split.language).with_overrides(cfg.class_overrides)
    sources = {"train": str(spec.text or f"{split.name} (training books)"),
               "heldout": str(spec.heldout or spec.text or f"{split.name} (held-out books)")}
    texts = {"train": split.train, "heldout": split.heldout}
    if encoded is not None and encoded[0] == bundle.tokenizer.vocab:
        ids, shares = encoded[1], encoded[2]
    else:
        shares: dict[str, dict[str, float]] = {s: {} for s in SPLITS}
        ids = {s: encode(bundle, texts[s], sources[s], cfg.oov, shares[s]) for s in SPLITS}
    oov_share = {s: v for s in SPLITS for v in shares[s].values()}
    T = bundle.config.max_context_len
    for s in SPLITS:
        if len(ids[s]) // T < 2:
            raise ReportgenError(f"{sources[s]}: {s} text has {len(ids[s])} characters, shorter than two "
                                 f"windows of {T} (the model's context); windows are the unit of every statistic")
    bundle = check_fit(bundle, spec.with_residuals, ids["heldout"], sources["heldout"])
    if cfg.hypotheses:  # an empty target set is a mistake in the hypothesis, found before any work
        sample = torch.as_tensor(ids["train"][: (len(ids["train"]) // T) * T].reshape(-1, T)[:64])
        check_targets(cfg.hypotheses, sample, torch.as_tensor(classes.lookup())[sample], bundle.tokenizer.vocab,
                      sources["train"])
    seeds = []
    for k, path in enumerate(spec.seeds):
        other = prepare(replace(spec, path=path, seeds=(), label=f"{spec.label} (seed {k + 1})"), cfg, split,
                        (bundle.tokenizer.vocab, ids, shares))
        if (other.bundle.config.n_layers, other.bundle.config.n_heads) != (bundle.config.n_layers,
                                                                           bundle.config.n_heads):
            raise ReportgenError(f"{other.bundle.path}: {other.bundle.config.n_layers} layers x "
                                 f"{other.bundle.config.n_heads} heads, but {bundle.path} has "
                                 f"{bundle.config.n_layers} x {bundle.config.n_heads}: not a seed of the same recipe")
        seeds.append(other)
    return Prepared(spec, bundle, split, classes, ids, sources, tuple(seeds), oov_share)


def analyze_model(prep: Prepared, cfg: RunConfig, index: int, progress, stage: str = "") -> ModelAnalysis:
    """Capture both splits and probes, and compute per-split statistics (q-values come later). `stage` prefixes
    the progress tasks' stage names ("seeds: " for extra seeds, which draw no figures)."""
    spec, bundle, classes, ids = prep.spec, prep.bundle, prep.classes, prep.ids
    T = bundle.config.max_context_len
    limits = {"train": cfg.train_windows, "heldout": cfg.heldout_windows}
    # capital letters and sentence starts are classes shown on the drawn model's pages, not roles: another seed's
    # would be computed, tested and never read (and would only widen the run's FDR family)
    hypotheses = cfg.hypotheses + (() if stage else case_classes(bundle.tokenizer.vocab, prep.split.language))
    scores: dict[str, HeadScores] = {}
    for s in SPLITS:
        n = len(ids[s]) // T
        n = min(n, limits[s]) if limits[s] else n
        task = progress.add_task(f"{spec.label}: {stage}capture {s} ({n} windows)", total=n)
        scores[s] = capture(bundle, ids[s], classes, limit=limits[s], batch_size=cfg.batch_size, n_samples=8,
                            source=prep.sources[s], on_batch=lambda k, t=task: progress.advance(t, k),
                            hypotheses=hypotheses,
                            query_chars=s == "heldout" and not stage)  # the head pages' table: drawn seed, held out
    # Probes per split: fresh random sequences, and repeated passages from that split's own text, so a
    # probe-based role found on training text is confirmed on sequences it never saw.
    task = progress.add_task(f"{spec.label}: {stage}repeated-sequence probes", total=2 * len(SPLITS))
    split_probes = {}
    for k, s in enumerate(SPLITS):
        rand, period = random_probes(classes, cfg.n_probes, T, np.random.default_rng([cfg.seed, index, 7, k]))
        split_probes[s] = {"probe_random": probe(bundle, rand, period, "random", scores["train"].mean_attn)}
        progress.advance(task)
        nat, period = natural_probes(ids[s], cfg.n_probes, T)
        split_probes[s]["probe_natural"] = probe(bundle, nat, period, "natural", scores["train"].mean_attn)
        progress.advance(task)
    probes = split_probes["heldout"]
    task = progress.add_task(f"{spec.label}: {stage}bootstrap and tests", total=2)
    stats = {}
    for k, s in enumerate(SPLITS):
        stats[s] = split_stats(scores[s], split_probes[s], np.random.default_rng([cfg.seed, index, k]),
                               block=contiguous_block(scores[s].window_starts, T))
        progress.advance(task)
    if stage:  # an extra seed: no head-similarity map or example figures
        return ModelAnalysis(prep, scores, probes, stats, np.zeros((0, 0)), [], ())
    dist = js_distance(scores["heldout"].samples)
    return ModelAnalysis(prep, scores, probes, stats, dist, cluster_heads(dist.copy(), bundle.config.n_heads),
                         example_attention(bundle, prep.split.language, prep.heldout_start(200),
                                           own_text=prep.spec.text is not None))


def model_result(a: ModelAnalysis, causal: CausalEvidence | None, timeline: Timeline | None,
                 seed: int = 0, seeds: list = ()) -> ModelResult:
    """The typed results of one model."""
    prep, cfg = a.prep, a.prep.bundle.config
    vocab, acc = prep.bundle.tokenizer.vocab, a.scores["heldout"].query_chars
    present = sorted({int(c) for c in prep.classes.lookup()[np.unique(prep.ids["heldout"])]})  # key classes in the text
    qchars = query_char_tables(acc, vocab, [prep.classes.label(CLASS_NAMES[c]) for c in present], present) \
        if acc is not None else None
    heads = [HeadResult(layer, head,
                        {name: {s: summary(a.stats[s], name, layer, head) for s in SPLITS}
                         for name in a.stats["train"].values},
                        {k: [role_name(r, prep.split.language) for r in v]
                         for k, v in role_labels(a.stats, layer, head).items()},
                        **profile_fields(a.stats, a.scores["heldout"].profiles, prep.bundle.tokenizer.vocab, layer, head),
                        query_chars=qchars[layer][head] if qchars else None)
             for layer in range(cfg.n_layers) for head in range(cfg.n_heads)]
    probes = {name: Probe(p.period, int(len(p.observed)), p.example, float(p.loss_first.mean()),
                          float(p.loss_repeat.mean())) for name, p in a.probes.items()}
    meta = prep.bundle.metadata
    split = prep.split
    causal_fields = {} if causal is None else dict(
        ablation_mode=causal.mode, ablation_windows=causal.windows, baseline_bits_per_char=causal.baseline,
        baseline_ci_low=causal.baseline_ci[0], baseline_ci_high=causal.baseline_ci[1],
        ablation=causal.heads, controls=causal.controls, generation=causal.generation,
        role_effects=causal.role_effects, writes=causal.writes, circuit=causal.circuit,
        causal_agreement=causal_agreement(a.findings, causal.heads, seed))
    return ModelResult(
        label=prep.spec.label, language=split.language,
        checkpoint=CheckpointInfo(display_path(prep.bundle.path), prep.bundle.sha256, meta.get("format"),
                                  meta.get("step"), meta.get("heldout_bits_per_char"), meta.get("history")),
        hyperparameters=cfg.to_dict(),
        corpus=CorpusInfo(split.name, split.description, split.sha256, len(split.train), len(split.heldout),
                          list(split.heldout_books), {s: a.scores[s].n_windows for s in SPLITS},
                          cfg.max_context_len, dict(prep.oov_share)),
        classes={prep.classes.label(n): chars for n, chars in prep.classes.members().items() if chars},
        heads=heads, findings=a.findings, probes=probes,
        class_matrix={s: ClassMatrix(list(CLASS_NAMES), a.scores[s].class_matrix, a.scores[s].class_chance,
                                     a.scores[s].class_count) for s in SPLITS},
        offset_profile={s: _offset_profile(a.scores[s].mean_attn) for s in SPLITS},
        head_distance=a.head_distance, clusters=a.clusters, timeline=timeline, slug=prep.spec.slug,
        unigram_bits_per_char=unigram_bits(prep.ids["heldout"]),
        measured_bits_per_char=causal.baseline if causal is not None else _bits(prep.bundle.model, prep.ids["heldout"]),
        seeds=list(seeds), card=model_card(prep.bundle.model, vocab, meta, prep.spec.with_residuals),
        case_note=case_not_offered(vocab, split.language), **causal_fields)


def unigram_bits(ids: np.ndarray) -> float:
    """Bits/char of a unigram model of a text fitted to it: the plug-in entropy of its character distribution
    (ids (N,) -> -sum p log2 p). A model no better than this has not learned to use context."""
    p = np.bincount(ids) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def role_name(role: str, language: str) -> str:
    """A role label in the language's own terms: where letters are not split into vowels and consonants (a
    language without a record and without `vowels`), a "consonant head" is a "letter head"."""
    lang = LANGUAGE.get(language)
    return role.replace("consonant head", "letter head") if lang and lang.class_label("consonant") == "letter" else role


def with_books(f, a: ModelAnalysis):
    """A replicated finding with, per held-out book, the share of that book's windows above its strictest null."""
    split, scores = a.prep.split, a.scores["heldout"]
    if not f.replicated or len(split.heldout_books) < 2 or f.pattern not in scores.observed:
        return f
    at = (slice(None), f.layer, f.head)
    null = scores.chance[f.pattern][at]
    for nulls in (scores.positional, scores.swap, scores.structure):
        if f.pattern in nulls:
            null = np.fmax(null, nulls[f.pattern][at])
    above = scores.observed[f.pattern][at] > null
    book = np.searchsorted(np.asarray(split.heldout_offsets), scores.window_starts, side="right") - 1
    return replace(f, by_book={name: float(above[book == k].mean()) for k, name in enumerate(split.heldout_books)
                               if (book == k).any()})


def window_values(a: ModelAnalysis) -> dict[str, np.ndarray]:
    """Held-out per-window values of every detector and probe, and the window starts (for paired diffs)."""
    values = dict(a.scores["heldout"].observed)
    values.update({name: pr.observed for name, pr in a.probes.items()})  # rebuilt identically per text/seed
    values["__starts__"] = a.scores["heldout"].window_starts
    return values


def figure_inputs(a: ModelAnalysis) -> FigureInputs:
    """The arrays a model's figures need beyond its results."""
    h = a.scores["heldout"]
    return FigureInputs(a.prep.spec.label, a.prep.split.language, a.examples, h.mean_attn, h.class_matrix,
                        h.class_chance, h.class_count)


def _offset_profile(mean_attn: np.ndarray, max_offset: int = 32) -> np.ndarray:
    """Mean attention at offsets 0..max_offset over valid queries: (L, H, K)."""
    L, H, T, _ = mean_attn.shape
    K = min(max_offset, T - SKIP - 1) + 1
    return np.stack([np.diagonal(mean_attn, offset=-k, axis1=-2, axis2=-1)[..., SKIP - k if k <= SKIP else 0:].mean(-1)
                     for k in range(K)], axis=-1)


def analyze(cfg: RunConfig, prepared: list[Prepared] | None = None, meanwhile=None) -> Analysed:
    """Run the analysis for every model: capture and statistics, FDR over all models, causal stage, timeline.
    The models and seeds of each stage run side by side in worker processes where there are cores for it
    (`workers.run_jobs`; `meanwhile` as there); the numbers are the same either way."""
    torch.manual_seed(cfg.seed)
    set_hypotheses(cfg.hypotheses)
    prepared = prepared if prepared is not None else [prepare(spec, cfg) for spec in cfg.models]
    device = cfg.torch_device()
    with make_progress() as progress:
        # Seeds share their model's random streams (the same probes, resamples and donors: paired comparisons).
        preps = [(i, p, "") for i, p in enumerate(prepared)] + \
            [(i, sp, "seeds: ") for i, p in enumerate(prepared) for sp in p.seeds]
        jobs = [partial(_measured, p, cfg, i, stage=stage) for i, p, stage in preps]
        early = early_points(prepared, cfg, progress)  # the timeline's points need no roles: in the same pool
        more = early.jobs() if early else []
        finished = run_jobs(jobs + more, progress, workers(device, len(jobs) + len(more), cfg.workers), RETRIES,
                            on_done=lambda j, x: early.done(j - len(jobs), x) if j >= len(jobs) else None,
                            meanwhile=meanwhile)
        done = [replace(x, prep=p) for (x, _), (_, p, _) in zip(finished, preps)]
        ablated = [first for _, first in finished[:len(preps)]]
        for s in SPLITS:  # one BH family per split: every model, seed, layer, head and tested detector
            add_q_values([x.stats[s] for x in done])
        analyses = [_with_findings(a) for a in done[:len(prepared)]]
        extra = [(i, _with_findings(x)) for (i, _, _), x in zip(preps[len(prepared):], done[len(prepared):])]
        jobs = []  # the rest of the causal stage needs the roles (after FDR): a job per model, then its seeds
        for i, a in enumerate(analyses):
            seeds = [partial(measure_seed, x, cfg, i, *seed_label(x, 1 + sum(j == i for j, _ in extra[:k])),
                             unigram_bits(x.prep.ids["heldout"]), first=ablated[len(prepared) + k])
                     for k, (j, x) in enumerate(extra) if j == i]
            causal = partial(causal_evidence, a, cfg, i, first=ablated[i]) if cfg.ablation_windows else None
            jobs.append(partial(_second_stage, causal, seeds))
        got = run_jobs(jobs, progress, workers(device, len(jobs), cfg.workers))
        timelines = emergence(analyses, cfg, progress, early)  # the points computed above (or on a dask cluster)
        models = []
        for i, a in enumerate(analyses):
            causal, measured = got[i]
            seeds = records(a, causal, measured, cfg.seed, unigram_bits(a.prep.ids["heldout"])) if measured else []
            models.append(model_result(a, causal, timelines[i], cfg.seed, seeds))
    return Analysed(models, {a.prep.spec.label: window_values(a) for a in analyses},
                    [figure_inputs(a) for a in analyses], stage_seconds(progress))


def _measured(prep: Prepared, cfg: RunConfig, index: int, progress, stage: str = "") -> tuple[ModelAnalysis, Ablated | None]:
    """`analyze_model` without its `Prepared` (a worker hands back numbers, not the model), and the part of the
    causal stage that needs no roles (`ablation.ablate_model`: every head ablated, and a drawn model's controls)."""
    a = analyze_model(prep, cfg, index, progress, stage)
    first = ablate_model(prep, a.stats, cfg, index, progress, seed=bool(stage)) if cfg.ablation_windows else None
    return replace(a, prep=None), first


def _second_stage(causal, seeds: list, progress) -> tuple:
    """A model's causal evidence (None without `causal`) and its other seeds' summaries, in one job (a job per seed's
    short summary cost each its share of the pool's hand-over gaps)."""
    return causal(progress) if causal else None, [measure(progress) for measure in seeds]


def _with_findings(a: ModelAnalysis) -> ModelAnalysis:
    """The analysis with its roles (after the FDR step), in the language's own terms, with per-book shares."""
    cfg = a.prep.bundle.config
    return replace(a, findings=[with_books(replace(f, role=role_name(f.role, a.prep.split.language)), a)
                                for f in findings(a.stats, cfg.n_layers, cfg.n_heads)])


def new_run(cfg: RunConfig, models: list[ModelResult]) -> Run:
    """A `Run` of analysed models, stamped with the time, versions and settings."""
    return Run(generated=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               reportgen_version=__version__,
               environment={"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
               settings=cfg.fingerprint(), skip_queries=SKIP, models=models)
