"""The continual-learning bench: one runner, several methods, one JSON shape that later tools read.

Each method starts from the same pretrained champion, meets the same wake days and may spend the same
training-token budget per day (`train.tokens_per_day`, recorded in the JSON). After every day the model
is probed on every snapshot, which fills the accuracy matrix (see `sleepcycle.evaluate`).

    sleepcycle bench --method sft-replay --days 5 --json bench/results/sft-replay.json

Methods
- ``in-context``: no training; the documents seen so far (most recent first) go in the prompt,
  truncated to the context window. Strong on what fits, blind to what does not.
- ``sft``: fine-tune on each day's wake documents.
- ``sft-replay``: the same, half of every batch drawn from the bounded replay buffer.
- the sleep methods (``sleep-nodream``, ``sleep`` and their ablations) run the real stage functions.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sleepcycle import models
from sleepcycle.config import Config
from sleepcycle.evaluate import Question, accuracy, continual_metrics, kl_drift, lm_loss
from sleepcycle.manifests import Manifest
from sleepcycle.pretrain import Corpus, pretrain
from sleepcycle.replay import ReplayBuffer
from sleepcycle.routing import RoutedModel, routed_accuracy
from sleepcycle.trainer import Example, Log, batches, encode, noop, train
from sleepcycle.world import DOC_PREFIX, Document, World, documents_about

MATRIX_KINDS = ("fact", "update")  # what the accuracy matrix R scores; heldout and multihop separately
PROBE_KINDS = {"matrix": MATRIX_KINDS, "heldout": ("heldout",), "multihop": ("multihop",)}
"""How the bench groups probes: the matrix R, and the two kinds scored beside it (each row and each ceiling)."""


@dataclass
class Run:
    """The state of one bench run: the world, the current model, and what it has seen."""

    cfg: Config
    world: World
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    champion0: PreTrainedModel
    seed: int
    workdir: Path
    buffer: ReplayBuffer
    champion_manifest: Manifest | None = None
    answerer: RoutedModel | None = None
    """How the sleep methods' champion answers closed-book probes (`distill.routing`); None: `model`."""
    routed_rows: int = 0
    """Rows that `answerer` routed (the bench then reports every expert's row beside them)."""
    seen_docs: list[str] = field(default_factory=list)
    stats: list[dict] = field(default_factory=list)
    log: Log = noop


def questions(world: World, day: int, as_of: int, limit: int | None) -> list[Question]:
    docs = world.documents(day) if day > 0 else []
    return [
        Question(p.question, p.answer, p.aliases, p.kind, documents_about(docs, p.subject))
        for p in world.probes(day, as_of=as_of, limit=limit)
    ]


def general_set(run_or_world: World, cfg: Config) -> list[Example]:
    """A fixed reference set (fresh-people documents and questions) for general loss and KL drift."""
    corpus = Corpus(run_or_world, cfg)
    rng = random.Random(f"general-{cfg.world.seed}")
    return [corpus.sample(rng) for _ in range(cfg.eval.general_examples)]


# ----- methods ------------------------------------------------------------------------------------


def learn_nothing(run: Run, day: int, docs: list[Document]) -> dict:
    return {"tokens": 0}


def learn_sft(run: Run, day: int, docs: list[Document], replay: bool = False) -> dict:
    tc = run.cfg.train
    day_examples = [Example("", d.text) for d in docs]
    rng_seed = run.seed * 1000 + day
    if not (replay and len(run.buffer)):
        return train(
            run.model,
            run.tokenizer,
            day_examples,
            token_budget=tc.tokens_per_day,
            batch_size=tc.batch_size,
            lr=tc.lr,
            seed=rng_seed,
            log=run.log,
            desc=f"sft day {day}",
        )
    max_len = run.model.config.max_position_embeddings
    new = encode(run.tokenizer, day_examples, max_len)
    old = encode(run.tokenizer, [Example("", t) for t in run.buffer.records], max_len)
    n_old = max(1, round(tc.batch_size * tc.replay_ratio))

    def mixed(rng: random.Random):
        a = _forever(new, tc.batch_size - n_old, rng)
        b = _forever(old, n_old, rng)
        while True:
            yield next(a) + next(b)

    return train(
        run.model,
        run.tokenizer,
        [],
        token_budget=tc.tokens_per_day,
        batch_size=tc.batch_size,
        lr=tc.lr,
        seed=rng_seed,
        log=run.log,
        desc=f"sft-replay day {day}",
        batch_source=mixed,
    )


def _forever(encoded: list, size: int, rng: random.Random):
    while True:
        yield from batches(encoded, size, rng)


def context_window_docs(run: Run, question_tokens: int = 48) -> tuple[str, ...]:
    """The most recent documents that fit in the context window beside a question (oldest first)."""
    budget = run.model.config.max_position_embeddings - question_tokens
    kept: list[str] = []
    for text in reversed(run.seen_docs):
        n = len(run.tokenizer(DOC_PREFIX.format(d=text), add_special_tokens=False)["input_ids"])
        if n > budget:
            break
        budget -= n
        kept.append(text)
    return tuple(reversed(kept))


Learner = Callable[[Run, int, list[Document]], dict]
METHODS: dict[str, Learner] = {
    "in-context": learn_nothing,
    "sft": learn_sft,
    "sft-replay": lambda run, day, docs: learn_sft(run, day, docs, replay=True),
}


def _sleep_methods() -> dict[str, Learner]:
    """The sleep methods live with the cycle (imported lazily: they pull in the seeding code)."""
    try:
        from sleepcycle.cycle import BENCH_METHODS
    except ImportError:
        return {}
    return BENCH_METHODS


def all_methods() -> dict[str, Learner]:
    return {**METHODS, **_sleep_methods()}


# ----- the runner ---------------------------------------------------------------------------------


def answering(run: Run, in_context: bool) -> tuple[tuple[str, ...], RoutedModel | None, dict]:
    """Who answers a closed-book probe, and how: the documents an in-context run puts in every prompt
    (empty otherwise), the router when the champion routes its experts (never beside such a window), and
    the decoding arguments. `evaluate_row` and `evaluate_full` both answer through it."""
    window = context_window_docs(run) if in_context and run.seen_docs else ()
    routed = run.answerer if run.answerer is not None and run.answerer.routes and not window else None
    return window, routed, {"max_new_tokens": run.cfg.eval.max_new_tokens, "batch_size": run.cfg.eval.batch_size}


def evaluate_row(run: Run, cycle: int, days: int, in_context: bool) -> dict[str, list[float]]:
    """Accuracy on every snapshot's probes after `cycle`, per probe kind. A champion that routes its experts
    (`run.answerer`) answers closed-book through the router, and the row also holds every expert's answers
    under ``all/<kind>`` (the paper's row: training is the same, only who answers differs)."""
    limit = run.cfg.eval.probes_per_day
    window, routed, kwargs = answering(run, in_context)
    run.routed_rows += routed is not None
    row: dict[str, list[float]] = {key: [] for key in PROBE_KINDS}
    for j in range(days + 1):
        qs = questions(run.world, j, as_of=cycle, limit=limit)
        if window:
            qs = [Question(q.question, q.answer, q.aliases, q.kind, window) for q in qs]
        for key, kinds in PROBE_KINDS.items():
            sel = [q for q in qs if q.kind in kinds]
            every = accuracy(run.model, run.tokenizer, sel, with_docs=bool(window), **kwargs)[0]
            row.setdefault(f"all/{key}", []).append(every)
            row[key].append(routed_accuracy(routed, run.tokenizer, sel, **kwargs)[0] if routed else every)
    return row


FULL_KINDS = ("heldout", "multihop")


def evaluate_full(run: Run, days: int, in_context: bool) -> dict[str, dict]:
    """The last model's accuracy on every held-out and multi-hop probe of every wake day (`World.every_probe`:
    about 2x the held-out and 3x the multi-hop probes of a row), pooled over days and answered as
    `evaluate_row` answers. A sharper reading of the same two quantities; the rows stay the reference.
    ``by_template``: [right, asked] per question wording (the subject as ``{s}``)."""
    window, routed, kwargs = answering(run, in_context)
    probes = [p for j in range(1, days + 1) for p in run.world.every_probe(j, as_of=days)]
    out = {}
    for kind in FULL_KINDS:
        sel = [p for p in probes if p.kind == kind]
        qs = [Question(p.question, p.answer, p.aliases, p.kind, window) for p in sel]
        if routed:
            acc, hits = routed_accuracy(routed, run.tokenizer, qs, **kwargs)
        else:
            acc, hits = accuracy(run.model, run.tokenizer, qs, with_docs=bool(window), **kwargs)
        by_template: dict[str, list[int]] = {}
        for p, hit in zip(sel, hits):
            tally = by_template.setdefault(p.template, [0, 0])
            tally[0] += hit
            tally[1] += 1
        out[kind] = {"ACC": acc, "n": len(qs), "by_template": by_template}
    return out


def in_context_ceilings(run: Run, day: int) -> dict[str, float]:
    """The teacher's ceiling on day `day`, per probe kind: the current model with each probe's own documents in
    the prompt. ``matrix`` is what acquisition is read against. A held-out probe asks in a wording no training
    text uses, so its ceiling says how far the model maps an unseen wording onto the document it reads; a
    multi-hop probe gets the new person's bio (which names the mentor) and must recall the mentor's fact."""
    qs = questions(run.world, day, as_of=day, limit=run.cfg.eval.probes_per_day)
    out = {}
    for key, kinds in PROBE_KINDS.items():
        sel = [q for q in qs if q.kind in kinds]
        out[key], _ = accuracy(
            run.model, run.tokenizer, sel, with_docs=True, max_new_tokens=run.cfg.eval.max_new_tokens
        )
    return out


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16")
"""Vector instruction sets worth recording: a VM can move to a host without them between two runs (it
did on 2026-11-27, from AVX-512 to AVX2 only; bench/README.md), and the model name says "AMD EPYC" on both."""


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU's model name, family/model and vector instruction sets (Linux), so results can be traced
    to the hardware: the same config pretrained on another CPU gives a different base model, and
    different bench numbers (bench/README.md)."""
    info: dict = {"cpu_model": platform.processor() or platform.machine(), "cpu_family_model": None, "cpu_isa": []}
    try:
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in cpuinfo.read_text().splitlines())
        )
    except OSError:
        return info
    info["cpu_model"] = fields.get("model name", info["cpu_model"])
    if "cpu family" in fields and "model" in fields:
        info["cpu_family_model"] = f"{fields['cpu family']}/{fields['model']}"
    flags = set(fields.get("flags", "").split())
    info["cpu_isa"] = [f for f in ISA_FLAGS if f in flags]
    return info


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        **cpu_info(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def default_workdir(cfg: Config, method: str, seed: int) -> Path:
    """Where a run keeps its checkpoints unless told: ``$TMPDIR/sleepcycle-bench-METHOD-SEED-CONFIG``, the last
    part a digest of the whole config, so that runs of one method and seed with different ``--set`` never
    overwrite each other's checkpoints (before stop 36 they did, and an analysis of the earlier run read the
    later one's weights). The result records it (``workdir``); `run_workdir` finds it again."""
    digest = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:10]
    return _legacy_workdir(method, seed).with_name(f"{_legacy_workdir(method, seed).name}-{digest}")


def run_workdir(run: dict) -> Path:
    """The checkpoints of a bench result: the ``workdir`` it recorded, or for a result written before stop 36
    (which recorded none) where those runs kept them."""
    return Path(run["workdir"]) if run.get("workdir") else _legacy_workdir(run["method"], run["seed"])


def _legacy_workdir(method: str, seed: int) -> Path:
    """``$TMPDIR/sleepcycle-bench-METHOD-SEED``: every run's default workdir before stop 36."""
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"sleepcycle-bench-{method}-{seed}"


def run_bench(
    cfg: Config,
    method: str,
    days: int | None = None,
    seed: int = 0,
    workdir: Path | None = None,
    log: Log = noop,
    say: Callable[[str], None] = lambda s: None,
) -> dict:
    methods = all_methods()
    if method not in methods:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(sorted(methods))})")
    days = days or cfg.world.days
    if days > cfg.world.days:
        cfg = cfg.model_copy(update={"world": cfg.world.model_copy(update={"days": days})})
    t0 = time.time()
    champion = pretrain(cfg)
    model, tok = models.load(champion.uri)
    champion0, _ = models.load(champion.uri)
    world = World(cfg.world)
    workdir = Path(workdir or default_workdir(cfg, method, seed))
    run = Run(
        cfg,
        world,
        model,
        tok,
        champion0,
        seed,
        workdir,
        ReplayBuffer(cfg.train.replay_buffer, seed),
        champion_manifest=champion,
        log=log,
    )
    run.buffer.add_day(0, [d.text for d in world.base_documents(cfg.pretrain.base_paraphrases)])
    general = general_set(world, cfg)
    in_context = method == "in-context"
    learn = methods[method]
    torch.manual_seed(seed)

    rows = [evaluate_row(run, 0, days, in_context=False)]
    ceilings, day_stats = [], []
    for day in range(1, days + 1):
        docs = world.documents(day)
        ceilings.append(in_context_ceilings(run, day))
        t_day = time.time()
        stats = learn(run, day, docs) or {}
        stats = {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}
        stats["wall_clock_s"] = time.time() - t_day
        day_stats.append(stats)
        run.seen_docs += [d.text for d in docs]
        run.buffer.add_day(day, [d.text for d in docs])
        rows.append(evaluate_row(run, day, days, in_context))
        say(
            f"day {day}/{days}: acquired {rows[-1]['matrix'][day]:.2f}, base {rows[-1]['matrix'][0]:.2f} "
            f"({stats['wall_clock_s']:.0f}s)"
        )
    matrix = [r["matrix"] for r in rows]
    by_kind = {key: [c[key] for c in ceilings] for key in PROBE_KINDS}
    metrics = _accuracy_metrics(rows, by_kind)
    full = evaluate_full(run, days, in_context)
    metrics.update(
        {
            **{f"{kind}_full_ACC": v["ACC"] for kind, v in full.items()},
            "general_loss": lm_loss(run.model, tok, general),
            "general_loss_before": lm_loss(champion0, tok, general),
            "kl_drift": kl_drift(run.model, champion0, tok, general),
        }
    )
    routed = run.routed_rows > 0
    every = [{k: r[f"all/{k}"] for k in PROBE_KINDS} for r in rows]
    return {
        "method": method,
        "days": days,
        "seed": seed,
        "config": cfg.model_dump(mode="json"),
        "matrix": matrix,
        "matrices": {
            "heldout": [r["heldout"] for r in rows],
            "multihop": [r["multihop"] for r in rows],
            **({"all_experts": {k: [r[k] for r in every] for k in PROBE_KINDS}} if routed else {}),
        },
        "metrics": metrics,
        **({"metrics_all_experts": _accuracy_metrics(every, by_kind)} if routed else {}),
        "routing": {"mode": cfg.distill.routing, "routed_rows": run.routed_rows},
        "full_probes": {kind: v["n"] for kind, v in full.items()},
        "full_by_template": {kind: v["by_template"] for kind, v in full.items()},
        "in_context_ceilings": by_kind["matrix"],
        "in_context_ceilings_by_kind": by_kind,
        "budget": {"tokens_per_day": cfg.train.tokens_per_day, "days": day_stats},
        "champion": {"digest": champion.digest, "uri": champion.uri},
        "workdir": str(workdir),
        "wall_clock_s": time.time() - t0,
        "machine": machine(),
    }


def _accuracy_metrics(rows: list[dict[str, list[float]]], by_kind: dict[str, list[float]]) -> dict:
    """ACC, BWT, ... of the matrix rows, the held-out and multi-hop accuracy of the last row, and the
    ceilings they are read against."""
    metrics = continual_metrics([r["matrix"] for r in rows])
    metrics.update(
        {
            "in_context_ceiling": sum(by_kind["matrix"]) / len(by_kind["matrix"]),
            "heldout_ACC": _mean_wake(rows[-1]["heldout"]),
            "heldout_ceiling": _mean_known(by_kind["heldout"]),
            "multihop_ACC": _mean_wake(rows[-1]["multihop"]),
            "multihop_ceiling": _mean_known(by_kind["multihop"]),
        }
    )
    metrics["acquisition_vs_ceiling"] = metrics["acquisition"] / max(1e-9, metrics["in_context_ceiling"])
    return metrics


def _mean_wake(values: list[float]) -> float:
    return _mean_known(values[1:])


def _mean_known(values: list[float]) -> float:
    """Mean over the days that had probes of the kind (a day without any scores NaN)."""
    vals = [v for v in values if v == v]
    return sum(vals) / len(vals) if vals else float("nan")


def write_result(result: dict, path: Path) -> Path:
    from sleepcycle.manifests import atomic_write_text

    return atomic_write_text(Path(path), json.dumps(result, indent=2, default=float))
