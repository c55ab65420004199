"""One sleep cycle in plain Python: snapshot -> seed -> dream -> evaluate -> gate.

    result = run_cycle(cfg, records, champion, workdir, history=earlier_snapshots)

Approval and promotion are not here: a passed gate makes a candidate eligible, and a person promotes it
(`sleepcycle.store` records who, when and why; the Prefect flow in flows/ waits for that decision).
The Prefect flow runs this same sequence with each stage wrapped as a task.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sleepcycle.config import Config, apply_overrides
from sleepcycle.dream import dream
from sleepcycle.evaluate import Question, kl_drift, lm_loss
from sleepcycle.gate import GateDecision, decide
from sleepcycle.generate import make_generator
from sleepcycle.manifests import Manifest, atomic_write_text
from sleepcycle.routing import RoutedModel, routed_accuracy
from sleepcycle.seed import seed
from sleepcycle.snapshot import read_documents, read_probes, take_snapshot
from sleepcycle.trainer import Example, Log, noop


@dataclass
class CycleResult:
    snapshot: Manifest
    seeded: Manifest
    candidate: Manifest
    evaluation: Manifest
    decision: GateDecision
    timings: dict[str, float] = field(default_factory=dict)


def _questions(probes: list[dict]) -> list[Question]:
    return [Question(p["question"], p["answer"], tuple(p.get("aliases", [])), p.get("kind", "fact")) for p in probes]


def evaluate_candidate(
    cfg: Config,
    candidate: Manifest,
    champion: Manifest,
    snapshots: Sequence[Manifest],
    reference: Sequence[str],
    workdir: Path,
    log: Log = noop,
) -> Manifest:
    """Score the candidate against the champion: acquisition of the newest snapshot, retention on the
    earlier ones (candidate minus champion), general LM loss and KL drift on the reference texts.

    Snapshots without probes count as unmeasured (None) rather than guessed. Both models answer the probes
    through their experts' router (`distill.routing`); the LM loss and drift read every expert."""
    answerer, tok = RoutedModel.from_config(Path(candidate.uri), cfg)
    champ_answerer, _ = RoutedModel.from_config(Path(champion.uri), cfg)
    cand, champ = answerer.all, champ_answerer.all
    ec = cfg.eval
    gen = make_generator(cfg.generation, tok.eos_token_id, tok.pad_token_id, vocab=len(tok))
    row, champ_row = {}, {}
    for snap in snapshots:
        qs = [q for q in _questions(read_probes(snap)) if q.kind in ("fact", "update")]
        if not qs:
            continue
        kwargs = {"max_new_tokens": ec.max_new_tokens, "generator": gen}
        row[snap.digest] = routed_accuracy(answerer, tok, qs, **kwargs)[0]
        champ_row[snap.digest] = routed_accuracy(champ_answerer, tok, qs, **kwargs)[0]
    newest = snapshots[-1].digest
    earlier = [d for d in row if d != newest]
    ref = [Example("", t) for t in reference]
    general = lm_loss(cand, tok, ref) if ref else float("nan")
    general_before = lm_loss(champ, tok, ref) if ref else float("nan")
    report = {
        "acquisition": row.get(newest, float("nan")),
        "acquisition_before": champ_row.get(newest, float("nan")),
        "retention_delta": (sum(row[d] - champ_row[d] for d in earlier) / len(earlier)) if earlier else 0.0,
        "general_loss": general,
        "general_loss_delta": general - general_before if ref else 0.0,
        "kl_drift": kl_drift(cand, champ, tok, ref) if ref else 0.0,
        "accuracy_row": row,
    }
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    manifest = Manifest.of_directory(
        out,
        "evaluation",
        parents={"candidate": candidate.digest, "champion": champion.digest},
        metrics={k: v for k, v in report.items() if isinstance(v, float)},
    )
    manifest.write(out)
    log({f"eval/{k}": v for k, v in manifest.metrics.items()})
    return manifest


def run_cycle(
    cfg: Config,
    records: list[dict],
    champion: Manifest,
    workdir: Path,
    history: Sequence[Manifest] = (),
    probes: list[dict] | None = None,
    reference: Sequence[str] = (),
    replay: Sequence[str] = (),
    day: int | None = None,
    run_seed: int = 0,
    log: Log = noop,
) -> CycleResult:
    """The whole sleep cycle, one screen of code: every stage reads and writes local directories."""
    workdir = Path(workdir)
    timings: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.time()
        out = fn(*args, **kwargs)
        timings[name] = time.time() - t0
        return out

    snapshot = timed("snapshot", take_snapshot, records, workdir.parent / "snapshots", probes=probes, day=day, log=log)
    seeding, dreaming = seed, dream
    if cfg.distributed.nproc > 1:  # data-parallel: launcher-started process groups, as the flow's stages do
        from sleepcycle.launch import dream_launched as dreaming
        from sleepcycle.launch import seed_launched as seeding
    seeded = timed(
        "seed", seeding, cfg, snapshot, champion, workdir / "seeded", log=log, replay=replay, run_seed=run_seed
    )
    candidate = seeded
    if cfg.dream.enabled:
        candidate = timed("dream", dreaming, cfg, seeded, snapshot, workdir / "dreamed", log=log, run_seed=run_seed)
    evaluation = timed(
        "evaluate",
        evaluate_candidate,
        cfg,
        candidate,
        champion,
        [*history, snapshot],
        reference,
        workdir / "evaluation",
        log=log,
    )
    decision = decide(cfg.gate, {**evaluation.metrics})
    atomic_write_text(workdir / "gate.json", decision.model_dump_json(indent=2))
    return CycleResult(snapshot, seeded, candidate, evaluation, decision, timings)


# ----- the sleep methods of the bench ----------------------------------------------------------------

# name -> config overrides on top of the profile; "-x" names are ablations of the full method
# ("sleep-nodream" is the paper's "-Dreaming" ablation), "+x" a part of the paper's method that our
# defaults leave out because it did worse here.
SLEEP_METHODS: dict[str, list[str]] = {
    "sleep": [],
    "sleep-nodream": ["dream.enabled=false"],
    "sleep-nodream-lti": ["dream.enabled=false", "distill.lti=false"],
    "sleep-nodream-expansion": ["dream.enabled=false", "distill.expansion=full"],
    "sleep-nodream-replay": ["dream.enabled=false", "distill.replay=false"],
    "sleep-nodream-fast": ["dream.enabled=false", "distill.memory=fast_weights"],
    "sleep-nodream-anchor": ["dream.enabled=false", "distill.anchor=20"],
    "sleep-importance": ["dream.importance=random"],
    "sleep+random-expert": ["dream.random_expert=true"],
    "sleep-restem": ["dream.restem_rounds=0"],
    "sleep-curriculum": ["dream.curriculum=false"],
}


def _sleep_learner(overrides: list[str]):
    def learn(run, day: int, docs) -> dict:
        cfg = Config(**apply_overrides(run.cfg.model_dump(mode="json"), overrides))
        champion = run.champion_manifest
        records = [d.record() for d in docs]
        snapshot = take_snapshot(records, run.workdir / "snapshots", day=day)
        budget = cfg.train.tokens_per_day  # seeding and dreaming share one day's budget
        seed_budget = int(budget * (1 - cfg.dream.budget_share)) if cfg.dream.enabled else budget
        seeded = seed(
            cfg,
            snapshot,
            champion,
            run.workdir / f"cycle-{day}" / "seeded",
            log=run.log,
            replay=run.buffer.records if cfg.distill.replay else (),
            token_budget=seed_budget,
            run_seed=run.seed * 1000 + day,
        )
        candidate = seeded
        stats = dict(seeded.metrics)
        if cfg.dream.enabled:
            candidate = dream(
                cfg,
                seeded,
                snapshot,
                run.workdir / f"cycle-{day}" / "dreamed",
                log=run.log,
                run_seed=run.seed * 1000 + day,
                token_budget=budget - int(seeded.metrics["seed/tokens"]),
            )
            stats.update(candidate.metrics)
        run.champion_manifest = candidate  # the bench promotes every candidate: it measures the method
        run.answerer, run.tokenizer = RoutedModel.from_config(Path(candidate.uri), cfg)
        run.model = run.answerer.all
        stats["tokens"] = stats.get("seed/tokens", 0) + stats.get("dream/tokens", 0)
        return stats

    return learn


BENCH_METHODS = {name: _sleep_learner(ov) for name, ov in SLEEP_METHODS.items()}


def documents_of(snapshot: Manifest) -> list[str]:
    return read_documents(snapshot)
