"""The demo: a few sleep cycles end to end on the built-in world, printed as a retention table.

    sleepcycle demo [--cycles 3]        (README command 1: `make demo`)

Pretraining is cached; each cycle takes the day's wake documents, sleeps (Knowledge Seeding, then
Dreaming), evaluates the candidate against the champion, and passes the gate to a person. The demo
approves as a clearly labelled demo user; it never skips the gate, and a rejected candidate is not
promoted.
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
from sleepcycle.evaluate import accuracy
from sleepcycle.experts import load_for_inference
from sleepcycle.pretrain import home, pretrain
from sleepcycle.replay import ReplayBuffer
from sleepcycle.world import World

DEMO_APPROVER = "demo-user (automatic approval in the demo; production waits for a person)"


def retention_row(cfg: Config, world: World, checkpoint: Path, cycle: int, days: int) -> list[float]:
    model, tok = load_for_inference(checkpoint)
    row = []
    for j in range(days + 1):
        qs = [q for q in questions(world, j, as_of=cycle, limit=cfg.eval.probes_per_day) if q.kind in MATRIX_KINDS]
        row.append(accuracy(model, tok, qs, max_new_tokens=cfg.eval.max_new_tokens)[0])
    return row


def run_demo(cfg: Config, cycles: int = 3, workdir: Path | None = None) -> int:
    console = Console()
    t0 = time.time()
    workdir = Path(workdir or os.environ.get("SLEEPCYCLE_DEMO_DIR", home() / "demo"))
    console.rule("[bold]sleepcycle demo")
    console.print(
        f"world seed {cfg.world.seed}: {cfg.world.base_entities} people on day 0, "
        f"{cycles} wake days of new people, new facts and updates"
    )
    console.print("pretraining the tiny model on day 0 (cached after the first run) ...")
    champion = pretrain(cfg)
    console.print(f"champion: {champion.uri} ({champion.metrics.get('parameters', 0):,} parameters)")
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
        m = result.candidate.metrics
        if "dream/generated" in m:
            dream_rows.append(
                [
                    str(day),
                    str(m["dream/generated"]),
                    str(m["dream/kept"]),
                    f"{m['dream/reward_rate']:.2f}",
                    f"{m['dream/distinct_2']:.2f}",
                    f"{m['dream/kl_drift']:.4f}",
                    f"{m['dream/dreams_per_s']:.1f}",
                ]
            )
    table = Table(title="retention: accuracy on each snapshot's probes after each cycle (closed-book)")
    table.add_column("after cycle")
    table.add_column("base (day 0)")
    for j in range(1, cycles + 1):
        table.add_column(f"day {j}")
    for i, row in enumerate(matrix):
        table.add_row(str(i), *[f"{x:.2f}" if j <= i or j == 0 else f"({x:.2f})" for j, x in enumerate(row)])
    console.print(table)
    console.print("(parenthesised: before the model met that day's documents)")
    if dream_rows:
        dt = Table(title="dreams")
        for h in ["cycle", "generated", "kept", "reward rate", "distinct-2", "KL drift", "dreams/s"]:
            dt.add_column(h)
        for r in dream_rows:
            dt.add_row(*r)
        console.print(dt)
    console.print(f"demo finished in {time.time() - t0:.0f}s; checkpoints under {workdir}")
    return 0
