"""The sleep-cycle flow: one cycle of a model line, each stage a Prefect task around a core stage function.

    sleepcycle cycle run [--config tiny] [--line default]     # one cycle now, through Prefect
    python flows/deploy.py                                    # the nightly and sleep-pressure deployments

The stages are those of `sleepcycle.cycle.run_cycle`, in its order; what this file adds is orchestration:

    line lock -> cycle number (a crashed cycle is resumed) -> claim the waiting wake segments
      -> snapshot -> seed -> dream -> evaluate -> gate -> register
      -> gate failed: rejected, never promoted | passed: wait for a person -> approve | reject | expire

- **Versioned stages, resume.** Every stage publishes what it made through `sleepcycle.store` (content
  addressed) and returns the manifest as a small JSON result that Prefect persists. The cache key is the
  stage's inputs: digests, the config, the seed and the store's URI (`STAGE_CACHE`), so re-running a
  crashed cycle finds its completed stages "Cached" and recomputes only from the stage that died.
  `refresh=True` recomputes everything.
- **Data-parallel training.** With ``distributed.nproc > 1`` the seed and dream stages run as a subprocess,
  ``torchrun --nproc_per_node N -m sleepcycle seed-dist|dream-dist`` (or DeepSpeed's launcher), on the
  fetched inputs (`sleepcycle.launch`): the ranks' output goes to the task log, rank 0's metrics to the
  tracker, a failed rank fails the stage with the end of the log, and the checkpoint is published like the
  in-process one. Prefect stays outside the process group.
- **One writer per line.** A global concurrency limit `sleepcycle-line-<line>` (limit 1, leased, renewed
  while the cycle runs) admits one cycle of a line at a time; a second waits `flow.lock_wait_s`, then is
  refused with the name of the cycle in the way. While a candidate awaits approval, new cycles of its line
  are skipped: every cycle starts from a decided champion.
- **Gate and approval.** The gate report becomes a Prefect markdown artifact and MLflow artifacts. A failed
  gate registers the candidate and rejects it at once; a passed one registers it (alias `candidate`) and
  waits for an `Approval` input (flows/approval.py): `suspend` (the process exits, no worker is held; the
  resumed run re-enters here and skips to the decision) or `pause` (the process waits), with a timeout
  after which the request expires.
- **Records.** The cycle record (store.records) is rewritten at every stage; MLflow gets a parent run per
  cycle and a child run per stage through the store's tracker.
"""

from __future__ import annotations

import contextvars
import logging
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, MissingContextError
from prefect.states import Completed

from flows import approval
from flows.line_lock import LineBusy, line_lock
from sleepcycle.config import Config, load_config
from sleepcycle.manifests import Manifest
from sleepcycle.store import fetch, open_registry, open_store, open_tracker, publish, queries
from sleepcycle.store.artifacts import ArtifactStore
from sleepcycle.store.checkpoints import blob_key, dream_set_digest
from sleepcycle.store.records import read_cycle_records, write_cycle_record
from sleepcycle.store.registry import CHAMPION, Registry
from sleepcycle.store.settings import check_line
from sleepcycle.store.settings import load as load_settings

# The key of a stage result: its inputs (digests, config, seed, store URI), never where it ran or how it logs.
STAGE_CACHE = INPUTS - "workdir" - "log"
RUNNING, FAILED = "running", "failed"


def _stage_task(name: str):
    return task(name=name, cache_policy=STAGE_CACHE, persist_result=True, result_serializer="json")


def _noop(_: dict) -> None:
    pass


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The task run's logger (its lines show in the Prefect UI); a plain logger when called outside a run."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("sleepcycle.flows")


def _published(store: ArtifactStore, manifest: Manifest, **extra: Any) -> dict:
    return {"manifest": publish(store, Path(manifest.uri)).model_dump(mode="json"), **extra}


# ----- the stages: each wraps one core function, reads its inputs from the store by digest ----------------


@_stage_task("snapshot")
def snapshot_stage(line: str, claim: dict, store_uri: str, workdir: str, log=None) -> dict:
    from sleepcycle import wake
    from sleepcycle.snapshot import take_snapshot

    records, probes, dropped = wake.collect(line, claim)
    snapshot = take_snapshot(records, Path(workdir), probes=probes or None, day=claim["cycle"], log=log or _noop)
    return _published(open_store(), snapshot, duplicates_dropped=dropped)


@_stage_task("seed")
def seed_stage(
    config: dict,
    snapshot: str,
    champion: str,
    history: list[str],
    run_seed: int,
    store_uri: str,
    workdir: str,
    log=None,
) -> dict:
    from sleepcycle.seed import seed

    cfg, store = Config(**config), open_store()
    snap, champ = fetch(store, "snapshot", snapshot), fetch(store, "checkpoint", champion)
    replay = _replay(cfg, store, history) if cfg.distill.replay else ()
    if cfg.distributed.nproc > 1:  # data-parallel: a torchrun/deepspeed process group outside this process
        from sleepcycle.launch import seed_launched

        seeded = seed_launched(
            cfg, snap, champ, Path(workdir), log=log or _noop, replay=replay, run_seed=run_seed, say=_logger().info
        )
    else:
        seeded = seed(cfg, snap, champ, Path(workdir), log=log or _noop, replay=replay, run_seed=run_seed)
    return _published(store, seeded)


@_stage_task("dream")
def dream_stage(
    config: dict, seeded: str, snapshot: str, run_seed: int, store_uri: str, workdir: str, log=None
) -> dict:
    from sleepcycle.dream import dream

    cfg, store = Config(**config), open_store()
    local, snap = fetch(store, "checkpoint", seeded), fetch(store, "snapshot", snapshot)
    if cfg.distributed.nproc > 1:  # consolidation data-parallel, in a process group outside this process
        from sleepcycle.launch import dream_launched

        dreamed = dream_launched(
            cfg, local, snap, Path(workdir), log=log or _noop, run_seed=run_seed, say=_logger().info
        )
    else:
        dreamed = dream(cfg, local, snap, Path(workdir), log=log or _noop, run_seed=run_seed)
    return _published(store, dreamed)


@_stage_task("evaluate")
def evaluate_stage(
    config: dict, candidate: str, champion: str, snapshots: list[str], store_uri: str, workdir: str, log=None
) -> dict:
    import json

    from sleepcycle.cycle import evaluate_candidate

    cfg, store = Config(**config), open_store()
    evaluation = evaluate_candidate(
        cfg,
        fetch(store, "checkpoint", candidate),
        fetch(store, "checkpoint", champion),
        [fetch(store, "snapshot", d) for d in snapshots],
        _reference(cfg),
        Path(workdir),
        log=log or _noop,
    )
    report = json.loads((Path(evaluation.uri) / "report.json").read_text())
    return _published(store, evaluation, accuracy_row=report.get("accuracy_row", {}))


@task(name="gate")
def gate_stage(gate: dict, metrics: dict) -> dict:
    from sleepcycle.config import GateConfig
    from sleepcycle.gate import decide

    return decide(GateConfig(**gate), metrics).model_dump(mode="json")


@task(name="bootstrap", persist_result=False)
def bootstrap_stage(config: dict) -> dict:
    """The initial champion of a new line: the pretrained base (cached on disk by its config)."""
    from sleepcycle.pretrain import pretrain

    base = pretrain(Config(**config))
    return _published(open_store(), base)


def _reference(cfg: Config) -> list[str]:
    # The fixed reference set for general loss and KL drift, as the demo builds it (`sleepcycle.demo`).
    from sleepcycle.bench import general_set
    from sleepcycle.world import World

    return [e.prompt + e.target for e in general_set(World(cfg.world), cfg)]


def _replay(cfg: Config, store: ArtifactStore, history: list[str]) -> list[str]:
    # The bounded replay buffer of the demo: day 0's documents, then every earlier snapshot of the line.
    from sleepcycle.replay import ReplayBuffer
    from sleepcycle.snapshot import read_documents
    from sleepcycle.world import World

    buffer = ReplayBuffer(cfg.train.replay_buffer, seed=0)
    buffer.add_day(0, [d.text for d in World(cfg.world).base_documents(cfg.pretrain.base_paraphrases)])
    for day, digest in enumerate(history, start=1):
        buffer.add_day(day, read_documents(fetch(store, "snapshot", digest)))
    return buffer.records


# ----- the line lock (flows/line_lock.py) ----------------------------------------------------------------


def _busy(store: ArtifactStore, line: str) -> str:
    last = (read_cycle_records(store, line) or [{}])[-1]
    if last.get("state") in (RUNNING, approval.AWAITING):
        return f": cycle {last['cycle']} is {last['state']} (flow run {last.get('flow_run_name', '?')})"
    return ""


# ----- the flow ------------------------------------------------------------------------------------------


def _skip(reason: str, **data: Any) -> Completed:
    get_run_logger().info("skipped: %s", reason)
    return Completed(name="Skipped", message=reason, data={"state": "skipped", "reason": reason, **data})


@flow(name="sleep_cycle", persist_result=True, result_serializer="json")
def sleep_cycle(
    line: str | None = None,
    config: str = "default",
    overrides: list[str] | None = None,
    run_seed: int | None = None,
    refresh: bool = False,
    resume: bool = True,
) -> dict:
    """One sleep cycle of `line` (default $SLEEPCYCLE_LINE) with config profile `config` + `overrides`.

    run_seed: the stages' seed (default: the cycle number). refresh: recompute every stage even when a cached
    result exists. resume: re-run a crashed or failed cycle of the line (else abandon it: its wake records go
    back to the buffer and a new cycle starts)."""
    cfg = load_config(config, list(overrides or []))
    line = check_line(line or load_settings().line)
    run = FlowRunContext.get().flow_run
    store = open_store()
    registry = open_registry(store=store)
    try:
        with line_lock(line, cfg.flow, holder=run.id, store=store, busy=lambda: _busy(store, line)):
            return _cycle(cfg, line, run, store, registry, run_seed, refresh, resume)
    except LineBusy as busy:
        # Not a failure of this run: another cycle has the line. Prefect shows the state "Refused".
        get_run_logger().warning("refused: %s", busy)
        return Completed(
            name="Refused", message=str(busy), data={"state": "refused", "reason": str(busy), "line": line}
        )


def _cycle(cfg, line, run, store, registry, run_seed, refresh, resume) -> dict | Completed:
    from sleepcycle import wake

    log = get_run_logger()
    records = read_cycle_records(store, line)
    mine = next((r for r in records if r.get("flow_run_id") == str(run.id)), None)
    if mine and mine.get("state") == approval.AWAITING:
        log.info("cycle %d resumed: back to its approval", mine["cycle"])
        return _await_decision(cfg, line, mine["cycle"], run, store, registry)
    late = datetime.now(UTC) - run.expected_start_time if run.expected_start_time else timedelta(0)
    if run.deployment_id and late.total_seconds() > cfg.flow.max_lateness_s:
        return _skip(f"stale scheduled run: {late} late (flow.max_lateness_s={cfg.flow.max_lateness_s:.0f})")

    last = records[-1] if records else None
    if last and last.get("state") == approval.AWAITING:
        if not approval.overdue(last) and approval.settle(store, registry, line, last["cycle"]) is None:
            return _skip(
                f"cycle {last['cycle']} of line {line!r} awaits approval "
                f"(sleepcycle approve|reject {last['cycle']}); the next cycle starts from a decided champion"
            )
        if approval.overdue(last) and approval.settle(store, registry, line, last["cycle"]) is None:
            approval.expire(store, registry, line, last["cycle"])
        last = read_cycle_records(store, line)[-1]
    if last and last.get("state") in (RUNNING, FAILED) and resume:
        n = last["cycle"]
        log.info("resuming cycle %d (left %s at stage %s)", n, last["state"], last.get("stage"))
    else:
        if last and last.get("state") in (RUNNING, FAILED):
            wake.release(line, last["cycle"])
            write_cycle_record(
                store, line, last["cycle"], {**last, "state": FAILED, "error": "abandoned (resume=False)"}
            )
        n = last["cycle"] + 1 if last else 1
        if not wake.pending(line) and not (wake.buffer_dir(line) / wake.CLAIMS / f"{n:05d}.json").exists():
            return _skip(f"the wake buffer of line {line!r} is empty: nothing to sleep on")
    claim = wake.claim(line, n)
    earlier = [r for r in read_cycle_records(store, line) if r["cycle"] < n and r.get("snapshot")]
    return _run_stages(cfg, line, n, claim, earlier, run, store, registry, run_seed, refresh)


def _champion(cfg: Config, line: str, store: ArtifactStore, registry: Registry):
    """The line's champion version; a new line starts from the pretrained base, approved as its bootstrap."""
    mv = registry.champion(line)
    if mv is None:
        base = Manifest.model_validate(bootstrap_stage(cfg.model_dump(mode="json", exclude={"flow"}))["manifest"])
        version = registry.register(line, base.digest, cycle=0, metrics=base.metrics, tags={"origin": "pretrain"})
        registry.approve(line, version, who="sleepcycle (bootstrap)", note="pretrained starting point of the line")
        mv = registry.get(line, version)
    return mv


def _run_stages(cfg, line, n, claim, earlier, run, store, registry, run_seed, refresh) -> dict:
    log = get_run_logger()
    home = load_settings().home / "work"
    work = home / line / f"cycle-{n:05d}"
    seed_ = n if run_seed is None else run_seed
    # What the stages compute from: neither the orchestration settings nor the gate's thresholds change a
    # stage's output, so a re-run with other thresholds still finds its stages cached.
    config = cfg.model_dump(mode="json", exclude={"flow", "gate"})
    champion = _champion(cfg, line, store, registry)
    rec: dict[str, Any] = {
        "state": RUNNING,
        "stage": "start",
        "flow_run_id": str(run.id),
        "flow_run_name": run.name,
        "profile": cfg.profile,
        "run_seed": seed_,
        "champion": champion.digest,
        "parent_version": champion.version,
        "wake_segments": len(claim["segments"]),
        "timings": {},
        "cached": [],
    }
    tracker = open_tracker(store=store)
    retries = cfg.flow.stage_retries

    def save() -> None:
        write_cycle_record(store, line, n, rec)

    def stage(name: str, fn, **kwargs) -> dict:
        rec["stage"] = name
        save()
        t0 = time.time()
        with tracker.stage(name):
            state = fn.with_options(refresh_cache=refresh, retries=retries)(
                **kwargs, store_uri=store.uri(), log=tracker.log_metrics, return_state=True
            )
            out = state.result()
            if state.name == "Cached":  # nothing ran: put the stored metrics on this run's stage too
                rec["cached"].append(name)
                tracker.log_metrics(out["manifest"].get("metrics", {}))
        rec["timings"][name] = round(time.time() - t0, 3)
        log.info("%s: %s (%.1fs)", name, "cached" if name in rec["cached"] else "done", rec["timings"][name])
        return out

    save()
    try:
        with tracker.cycle(
            line, n, params=cfg.model_dump(mode="json"), tags={"sleepcycle.flow_run": str(run.id)}
        ) as run_id:
            rec["run_id"] = run_id
            tracker.link(parent_version=champion.version)
            out = stage("snapshot", snapshot_stage, line=line, claim=claim, workdir=str(home / "snapshots"))
            snapshot = Manifest.model_validate(out["manifest"])
            rec.update(snapshot=snapshot.digest, duplicates_dropped=out["duplicates_dropped"])
            tracker.link(snapshot=snapshot.digest)
            tracker.log_input("wake_snapshot", snapshot.digest, kind="snapshot")
            history = [r["snapshot"] for r in earlier]
            out = stage(
                "seed",
                seed_stage,
                config=config,
                snapshot=snapshot.digest,
                champion=champion.digest,
                history=history,
                run_seed=seed_,
                workdir=str(work / "seeded"),
            )
            candidate = seeded = Manifest.model_validate(out["manifest"])
            rec["seeded"] = seeded.digest
            if cfg.dream.enabled:
                out = stage(
                    "dream",
                    dream_stage,
                    config=config,
                    seeded=seeded.digest,
                    snapshot=snapshot.digest,
                    run_seed=seed_,
                    workdir=str(work / "dreamed"),
                )
                candidate = Manifest.model_validate(out["manifest"])
            rec.update(candidate=candidate.digest, checkpoint_uri=candidate.uri, dreams=dream_set_digest(candidate))
            if rec["dreams"]:
                tracker.log_input("dream_set", rec["dreams"], kind="dreams", uri=store.uri(blob_key(rec["dreams"])))
            out = stage(
                "evaluate",
                evaluate_stage,
                config=config,
                candidate=candidate.digest,
                champion=champion.digest,
                snapshots=[*history, snapshot.digest],
                workdir=str(work / "evaluation"),
            )
            rec.update(metrics=out["manifest"]["metrics"], accuracy_row=out["accuracy_row"])
            rec["stage"] = "gate"
            decision = gate_stage(cfg.gate.model_dump(mode="json"), out["manifest"]["metrics"])
            rec["gate"] = decision
            markdown = _gate_markdown(line, n, decision)
            create_markdown_artifact(markdown, key=f"gate-{_slug(line)}-{n}", description=f"gate of cycle {n}")
            tracker.log_gate(decision, markdown)
            version = _register(registry, line, n, candidate, rec, run_id)
            rec["candidate_version"] = version
            tracker.link(checkpoint_uri=candidate.uri, candidate_version=version)
            save()
            tracker.log_accuracy_matrix(queries.accuracy_matrix(line, store=store))
    except Exception as exc:
        rec.update(state=FAILED, error=f"{type(exc).__name__}: {exc}"[:2000])
        save()
        raise
    if not decision["passed"]:
        reasons = "; ".join(_reasons(decision))
        registry.reject(line, version, who="sleepcycle (gate)", note=f"gate failed: {reasons}")
        rec.update(state="gate_failed", stage="done", decision_by="sleepcycle (gate)", decision_note=reasons)
        save()
        log.info(
            "cycle %d: gate failed (%s); candidate v%d rejected, champion unchanged "
            "(sleepcycle wake requeue %d gives its wake records to the next cycle)",
            n,
            reasons,
            version,
            n,
        )
        return _result(line, n, rec, registry)
    deadline = datetime.now(UTC) + timedelta(seconds=cfg.flow.approval_timeout_s)
    rec.update(state=approval.AWAITING, stage="approval", approval_deadline=deadline.isoformat())
    save()
    log.info(
        "cycle %d: gate passed; candidate v%d awaits approval until %s: sleepcycle approve|reject %d --note ...",
        n,
        version,
        rec["approval_deadline"],
        n,
    )
    return _await_decision(cfg, line, n, run, store, registry)


def _register(registry: Registry, line: str, n: int, candidate: Manifest, rec: dict, run_id: str | None) -> int:
    # A re-run after a crash past this point finds its version instead of registering a second one.
    for v in registry.versions(line):
        if v.cycle == n and v.digest == candidate.digest:
            return v.version
    tags = {"gate": "passed" if rec["gate"]["passed"] else "failed", "snapshot": rec["snapshot"]}
    return registry.register(line, candidate.digest, cycle=n, metrics=rec["metrics"], tags=tags, run_id=run_id)


def _await_decision(cfg: Config, line: str, n: int, run, store, registry) -> dict:
    """Wait for the person (suspended or paused), then promote, reject or expire."""
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    log = get_run_logger()
    settled = approval.settle(store, registry, line, n)  # decided while no run waited
    if settled is None:
        deadline = datetime.fromisoformat(read_record(store, line, n)["approval_deadline"])
        timeout = int((deadline - datetime.now(UTC)).total_seconds())
        mode = cfg.flow.approval
        if mode == "auto":
            mode = "suspend" if run.deployment_id else "pause"
        answer = None
        if timeout > 0:
            try:
                if mode == "suspend":
                    answer = suspend_flow_run(wait_for_input=approval.Approval, timeout=timeout, key=f"approval-{n}")
                else:
                    poll = max(1, min(5, timeout // 20))
                    answer = pause_flow_run(
                        wait_for_input=approval.Approval, timeout=timeout, poll_interval=poll, key=f"approval-{n}"
                    )
            except FlowPauseTimeout:
                answer = None
        settled = approval.settle(store, registry, line, n)  # a decision taken directly meanwhile wins
        if settled is None and answer is not None:
            approval.apply(store, registry, line, n, answer.approve, answer.who, answer.note, via="prefect")
        elif settled is None:
            approval.expire(store, registry, line, n)
    final = read_record(store, line, n)
    log.info("cycle %d: %s by %s (%s)", n, final["state"], final.get("decision_by"), final.get("decision_note", ""))
    return _result(line, n, final, registry)


def read_record(store: ArtifactStore, line: str, n: int) -> dict:
    from sleepcycle.store.records import read_cycle_record

    return read_cycle_record(store, line, n)


def _result(line: str, n: int, rec: dict, registry: Registry) -> dict:
    return {
        "line": line,
        "cycle": n,
        "state": rec["state"],
        "candidate": rec.get("candidate"),
        "candidate_version": rec.get("candidate_version"),
        "champion_version": registry.alias(line, CHAMPION),
        "gate_passed": (rec.get("gate") or {}).get("passed"),
        "decision_by": rec.get("decision_by"),
        "cached": rec.get("cached", []),
        "flow_run_id": rec.get("flow_run_id"),
    }


def _reasons(decision: dict) -> list[str]:
    from sleepcycle.gate import GateDecision

    return GateDecision(**decision).reasons


def _gate_markdown(line: str, n: int, decision: dict) -> str:
    from sleepcycle.gate import GateDecision

    return GateDecision(**decision).markdown(f"Gate report: line {line}, cycle {n}")


def _slug(line: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", line.lower()).strip("-") or "line"


# ----- one demo cycle, approved by a labelled demo user (for sleepcycle.demo) ----------------------------


def run_demo_cycle(
    config: str = "default",
    overrides: list[str] | None = None,
    line: str = "demo",
    day: int = 1,
    approver: str = "demo-user (automatic approval in the demo; production waits for a person)",
    run_seed: int | None = None,
) -> dict:
    """One cycle of the built-in world's wake day `day` through Prefect (PREFECT_API_URL, or a local server):
    the day's documents and probes go into the wake buffer, the flow runs, and if the gate passes the
    clearly labelled demo `approver` approves through flows.approval, the same path as a person. It never
    skips the gate: a failed gate ends the cycle rejected. Returns the flow's result."""
    from flows import server
    from sleepcycle import wake
    from sleepcycle.world import World

    cfg = load_config(config, list(overrides or []))
    world = World(cfg.world)
    wake.add_records([d.record() for d in world.documents(day)], line, [p.record() for p in world.probes(day)])
    done = threading.Event()

    def approve_when_asked() -> None:
        store = open_store()
        while not done.wait(1.0):
            records = read_cycle_records(store, line)
            if records and records[-1].get("state") == approval.AWAITING:
                n = records[-1]["cycle"]
                approval.decide(line, n, approve=True, who=approver, note=f"demo: day {day} approved automatically")
                return

    with server.api():
        # In this context: Prefect's settings (the API URL of server.api) live in context variables, which a
        # plain thread does not inherit; without them the approver would start a temporary server of its own.
        approver_thread = threading.Thread(
            target=contextvars.copy_context().run, args=(approve_when_asked,), daemon=True
        )
        approver_thread.start()
        try:
            # pause, not suspend: the demo's process is the one that waits and carries on.
            return sleep_cycle(
                line=line, config=config, overrides=[*(overrides or []), "flow.approval=pause"], run_seed=run_seed
            )
        finally:
            done.set()
            approver_thread.join(timeout=5)
