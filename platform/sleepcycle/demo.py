"""The demo: a few sleep cycles end to end on the built-in world, printed as a retention table.

    sleepcycle demo [--cycles 3]        (README command 1: `make demo`)

Pretraining is cached; each cycle takes the day's wake documents, sleeps (Knowledge Seeding, then
Dreaming), evaluates the candidate against the champion, and passes the gate to a person. The demo
approves as a clearly labelled demo user; it never skips the gate, and a rejected candidate is not
promoted.

With the orchestration extra installed (what `make demo` sets up) every cycle is the production path: the
day's records go into the wake buffer of a fresh model line and `flows.sleep_cycle` runs it through Prefect
(PREFECT_API_URL, or a local server started for the demo), versioned in the store and registry; the demo
user answers the flow's approval request through `flows.approval`. Without Prefect the same stages run
in-process (`sleepcycle.cycle.run_cycle`), and the demo says so.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from sleepcycle.bench import MATRIX_KINDS, general_set, questions
from sleepcycle.config import Config
from sleepcycle.cycle import run_cycle
from sleepcycle.manifests import Manifest
from sleepcycle.pretrain import home, pretrain
from sleepcycle.replay import ReplayBuffer
from sleepcycle.routing import RoutedModel, routed_accuracy
from sleepcycle.world import World

DEMO_APPROVER = "demo-user (automatic approval in the demo; production waits for a person)"


def retention_row(cfg: Config, world: World, checkpoint: Path, cycle: int, days: int) -> list[float]:
    """The champion's closed-book accuracy on every day's probes, answered through its router."""
    answerer, tok = RoutedModel.from_config(checkpoint, cfg)
    row = []
    for j in range(days + 1):
        qs = [q for q in questions(world, j, as_of=cycle, limit=cfg.eval.probes_per_day) if q.kind in MATRIX_KINDS]
        row.append(routed_accuracy(answerer, tok, qs, max_new_tokens=cfg.eval.max_new_tokens)[0])
    return row


def _flows_available() -> bool:
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    return importlib.util.find_spec("prefect") is not None and (root / "flows" / "sleep_cycle.py").is_file()


def run_demo(
    cfg: Config,
    cycles: int = 3,
    workdir: Path | None = None,
    profile: str = "default",
    overrides: list[str] | None = None,
    orchestrated: bool | None = None,
) -> int:
    """`profile` + `overrides` must be what `cfg` was loaded from: the flow loads its config from them."""
    if orchestrated is None:
        orchestrated = _flows_available()
    if orchestrated:
        return run_demo_flow(cfg, cycles, profile, list(overrides or []))
    Console().print(
        "[yellow]Prefect is not installed[/yellow] (pip install -e '.[orchestration,tracking]'): the cycles run "
        "in-process, without the flow, store and registry."
    )
    return run_demo_inprocess(cfg, cycles, workdir)


def _intro(console: Console, cfg: Config, cycles: int):
    console.rule("[bold]sleepcycle demo")
    console.print(
        f"world seed {cfg.world.seed}: {cfg.world.base_entities} people on day 0, "
        f"{cycles} wake days of new people, new facts and updates"
    )
    console.print("pretraining the tiny model on day 0 (cached after the first run) ...")
    champion = pretrain(cfg)
    console.print(f"champion: {champion.uri} ({champion.metrics.get('parameters', 0):,} parameters)")
    return champion


def _dream_row(day: int, candidate: Manifest) -> tuple[list[str], str] | None:
    """The dreams table's row for a cycle's candidate, and what the drift budget did (empty: nothing)."""
    m = candidate.metrics
    if "dream/generated" not in m:
        return None
    note = candidate.meta.get("drift_note", "")
    if note and m.get("dream/seeded_kl_drift") == m["dream/kl_drift"]:
        note += "; every step reverted, so Dreaming left the seeded weights unchanged"
    return [
        str(day),
        str(m["dream/generated"]),
        str(m["dream/kept"]),
        f"{m['dream/reward_rate']:.2f}",
        f"{m['dream/distinct_2']:.2f}",
        # from the champion: what Seeding left, then after Dreaming (the drift budget bounds the difference)
        f"{m['dream/seeded_kl_drift']:.3f}→{m['dream/kl_drift']:.3f}"
        if "dream/seeded_kl_drift" in m
        else f"{m['dream/kl_drift']:.3f}",
        f"{m['dream/dreams_per_s']:.1f}",
    ], note


def run_demo_flow(cfg: Config, cycles: int, profile: str, overrides: list[str]) -> int:
    """Each cycle through Prefect on a fresh model line (flows.sleep_cycle.run_demo_cycle)."""
    import sys

    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:
        sys.path.insert(0, root)  # flows/ sits next to platform/ in the checkout
    from flows import server
    from flows.sleep_cycle import run_demo_cycle
    from sleepcycle.gate import GateDecision
    from sleepcycle.store import fetch, open_registry, open_store
    from sleepcycle.store.records import read_cycle_record

    console = Console()
    t0 = time.time()
    _intro(console, cfg, cycles)
    world = World(cfg.world)
    line = f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    store = open_store()
    registry = open_registry(store=store)
    console.print(f"model line [bold]{line}[/bold]; store {store.uri('')}")
    matrix, dream_rows = [], []
    with server.api(say=console.print):
        for day in range(1, cycles + 1):
            docs = world.documents(day)
            console.rule(f"cycle {day}: {len(docs)} wake documents -> wake buffer -> sleep_cycle flow")
            result = run_demo_cycle(profile, overrides, line=line, day=day, approver=DEMO_APPROVER, run_seed=day)
            rec = read_cycle_record(store, line, day)
            if day == 1:  # the line's bootstrap champion, version 1: the pretrained base
                base = fetch(store, "checkpoint", rec["champion"])
                matrix.append(retention_row(cfg, world, Path(base.uri), 0, cycles))
            timings = ", ".join(f"{k} {v:.0f}s" for k, v in rec.get("timings", {}).items())
            console.print(f"flow run {rec.get('flow_run_name')}: stages {timings}")
            if rec.get("gate"):
                console.print(GateDecision(**rec["gate"]).markdown(f"gate, cycle {day}"))
            state = result["state"] if isinstance(result, dict) else rec["state"]
            if state == "approved":
                console.print(
                    f"[green]approved[/green] by {rec.get('decision_by')}: candidate v{rec['candidate_version']} "
                    "promoted to champion"
                )
            else:
                console.print(
                    f"[red]{state}[/red] ({rec.get('decision_note', '')}): champion unchanged; its records stay "
                    f"with the cycle (`sleepcycle wake requeue {rec['cycle']} --line {line}` would give them to "
                    "the next one)"
                )
            champion = registry.champion(line)
            matrix.append(retention_row(cfg, world, Path(fetch(store, "checkpoint", champion.digest).uri), day, cycles))
            if rec.get("candidate"):
                row = _dream_row(day, fetch(store, "checkpoint", rec["candidate"]))
                if row:
                    dream_rows.append(row)
    _tables(console, matrix, dream_rows, cycles, cfg.distill.routing)
    console.print(
        f"demo finished in {time.time() - t0:.0f}s. See it: sleepcycle cycle list --line {line}; make dashboard"
    )
    return 0


def _tables(
    console: Console, matrix: list[list[float]], dream_rows: list[tuple[list[str], str]], cycles: int, routing: str
) -> None:
    table = Table(title="retention: accuracy on each snapshot's probes after each cycle (closed-book)")
    table.add_column("after cycle")
    table.add_column("base (day 0)")
    for j in range(1, cycles + 1):
        table.add_column(f"day {j}")
    for i, row in enumerate(matrix):
        table.add_row(str(i), *[f"{x:.2f}" if j <= i or j == 0 else f"({x:.2f})" for j, x in enumerate(row)])
    console.print(table)
    console.print(
        "(parenthesised: before the model met that day's documents; the experts answer "
        + ("by entity routing, distill.routing" if routing == "entity" else "all at once")
        + ")"
    )
    if dream_rows:
        dt = Table(title="dreams")
        for h in ["cycle", "generated", "kept", "reward rate", "distinct-2", "KL drift", "dreams/s"]:
            dt.add_column(h)
        for r, _ in dream_rows:
            dt.add_row(*r)
        console.print(dt)
        console.print("(KL drift from the champion: after Seeding → after Dreaming; the budget bounds the rise)")
        for r, note in dream_rows:
            if note:
                console.print(f"cycle {r[0]}: {note}")


def run_demo_inprocess(cfg: Config, cycles: int = 3, workdir: Path | None = None) -> int:
    console = Console()
    t0 = time.time()
    workdir = Path(workdir or os.environ.get("SLEEPCYCLE_DEMO_DIR", home() / "demo"))
    champion = _intro(console, cfg, cycles)
    world = World(cfg.world)
    reference = [e.prompt + e.target for e in general_set(world, cfg)]
    buffer = ReplayBuffer(cfg.train.replay_buffer, seed=0)
    buffer.add_day(0, [d.text for d in world.base_documents(cfg.pretrain.base_paraphrases)])
    history = []
    matrix = [retention_row(cfg, world, Path(champion.uri), 0, cycles)]
    dream_rows = []
    for day in range(1, cycles + 1):
        docs = world.documents(day)
        console.rule(f"cycle {day}: {len(docs)} wake documents")
        result = run_cycle(
            cfg,
            [d.record() for d in docs],
            champion,
            workdir / f"cycle-{day}",
            history=history,
            probes=[p.record() for p in world.probes(day)],
            reference=reference,
            replay=buffer.records if cfg.distill.replay else (),
            day=day,
            run_seed=day,
            log=lambda m: None,
        )
        timings = ", ".join(f"{k} {v:.0f}s" for k, v in result.timings.items())
        console.print(f"stages: {timings}")
        console.print(result.decision.markdown(f"gate, cycle {day}"))
        if result.decision.passed:
            console.print(f"[green]approved[/green] by {DEMO_APPROVER}: candidate promoted to champion")
            champion = result.candidate
        else:
            console.print("[red]rejected by the gate[/red]: champion unchanged")
        history.append(result.snapshot)
        buffer.add_day(day, [d.text for d in docs])
        matrix.append(retention_row(cfg, world, Path(champion.uri), day, cycles))
        row = _dream_row(day, result.candidate)
        if row:
            dream_rows.append(row)
    _tables(console, matrix, dream_rows, cycles, cfg.distill.routing)
    console.print(f"demo finished in {time.time() - t0:.0f}s; checkpoints under {workdir}")
    return 0
