"""The `sleepcycle` command: one subcommand, one function.

    sleepcycle world export --out DIR        the built-in world as wake/probe JSONL
    sleepcycle pretrain                      tokenizer + tiny model on day 0 (cached)
    sleepcycle eval --model PATH --probes F  closed-book accuracy of a checkpoint on a probe file
    sleepcycle bench --method M --days N     one method over the day stream, matrix + metrics
    sleepcycle demo                          a few sleep cycles end to end on the built-in world
    torchrun --nproc_per_node N -m sleepcycle seed-dist --snapshot S --champion C --out DIR
                                             Knowledge Seeding data-parallel under DeepSpeed (ZeRO-1/2/3)
    torchrun --nproc_per_node N -m sleepcycle dream-dist --seeded S --snapshot P --out DIR
                                             Dreaming, its consolidation data-parallel under DeepSpeed
    sleepcycle wake add FILE [--probes P]    validate wake records into the wake buffer (bad lines quarantined)
    sleepcycle wake status                   records waiting for the next sleep, sleep pressure
    sleepcycle wake requeue N                a rejected cycle's records wait again for the next sleep
    sleepcycle cycle run                     one sleep cycle through Prefect (a local server if none is set)
    sleepcycle cycle list                    the line's cycles with their state
    sleepcycle approve|reject CYCLE --note   decide on a gate-passed candidate (resumes the waiting run)
    sleepcycle rollback --note ...           champion back to the previous one, audited

Every subcommand takes ``--config PROFILE`` and ``--set section.key=value`` overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from sleepcycle.config import ConfigError, load_config

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


class UserError(Exception):
    """An error the user can fix; printed as one line, no traceback."""


def command(name: str):
    def wrap(fn):
        COMMANDS[name] = fn
        return fn

    return wrap


def _config(args: argparse.Namespace):
    return load_config(args.config, args.set)


def _print_table(rows: list[list[str]], header: list[str], title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None)
    for h in header:
        table.add_column(h, justify="right")
    for r in rows:
        table.add_row(*r)
    Console(width=max(100, Console().width)).print(table)


def print_bench(result: dict) -> None:
    m = result["matrix"]
    header = ["after cycle"] + ["base"] + [f"day {j}" for j in range(1, len(m))]
    rows = [[str(i)] + [f"{x:.2f}" for x in row] for i, row in enumerate(m)]
    _print_table(rows, header, title=f"{result['method']}: accuracy matrix (rows: after cycle i)")
    metrics = result["metrics"]
    # one row a metric: fourteen columns do not fit a terminal; the probe kinds read against their ceilings
    ceilings = {
        "acquisition": "in_context_ceiling",
        "heldout_ACC": "heldout_ceiling",
        "multihop_ACC": "multihop_ceiling",
    }
    keys = ["ACC", "BWT", "FWT", "forgetting", "FUAR", "acquisition", "heldout_ACC", "multihop_ACC"]
    keys += ["heldout_full_ACC", "multihop_full_ACC", "base_retention", "general_loss", "kl_drift"]

    def fmt(x) -> str:
        return f"{x:.3f}" if isinstance(x, float) else ("" if x is None else str(x))

    rows = []
    for k in keys:
        ceiling = metrics.get(ceilings.get(k, ""))
        of = f"{metrics[k] / ceiling:.2f}" if isinstance(ceiling, float) and ceiling > 0 else ""
        rows.append([k, fmt(metrics.get(k)), fmt(ceiling), of])
    _print_table(
        rows,
        ["metric", "value", "in-context ceiling", "of ceiling"],
        title=f"metrics ({result['wall_clock_s']:.0f}s wall-clock)",
    )


@command("world-export")
def world_export(args: argparse.Namespace) -> int:
    from sleepcycle.records import write_jsonl
    from sleepcycle.world import World

    cfg = _config(args)
    world = World(cfg.world)
    out = Path(args.out)
    for day in range(0, cfg.world.days + 1):
        docs = world.documents(day) if day else world.base_documents(1)
        write_jsonl(out / f"day{day}.wake.jsonl", [d.record() for d in docs])
        write_jsonl(out / f"day{day}.probes.jsonl", [p.record() for p in world.probes(day)])
    print(f"wrote {cfg.world.days + 1} days of wake records and probes to {out}")
    return 0


@command("pretrain")
def pretrain_cmd(args: argparse.Namespace) -> int:
    from sleepcycle.pretrain import pretrain

    cfg = _config(args)
    manifest = pretrain(cfg, force=args.force)
    print(json.dumps({"checkpoint": manifest.uri, "digest": manifest.digest, **manifest.metrics}, indent=2))
    return 0


@command("eval")
def eval_cmd(args: argparse.Namespace) -> int:
    from sleepcycle.evaluate import Question
    from sleepcycle.records import read
    from sleepcycle.routing import RoutedModel, routed_accuracy

    loaded = read(args.probes, "probe")
    for r in loaded.rejected:
        print(f"skipped {r}", file=sys.stderr)
    if not loaded.records:
        raise UserError(f"{args.probes}: no valid probes")
    docs: tuple[str, ...] = ()
    if args.docs:
        docs = tuple(r["text"] for r in read(args.docs, "wake").records)
    answerer, tok = RoutedModel.from_config(Path(args.model), _config(args))
    qs = [
        Question(r["question"], r["answer"], tuple(r.get("aliases", [])), r.get("kind", "fact"), docs)
        for r in loaded.records
    ]
    acc, hits = routed_accuracy(answerer, tok, qs, with_docs=bool(docs))
    by_kind: dict[str, list[bool]] = {}
    for q, h in zip(qs, hits):
        by_kind.setdefault(q.kind, []).append(h)
    result = {"accuracy": acc, "n": len(qs), "by_kind": {k: sum(v) / len(v) for k, v in by_kind.items()}}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(
            [[k, str(len(v)), f"{sum(v) / len(v):.3f}"] for k, v in by_kind.items()]
            + [["all", str(len(qs)), f"{acc:.3f}"]],
            ["kind", "n", "accuracy"],
            title=str(args.model),
        )
    return 0


@command("bench")
def bench_cmd(args: argparse.Namespace) -> int:
    cfg = _config(args)
    from sleepcycle.bench import all_methods, run_bench, write_result

    if args.method not in all_methods():
        raise UserError(f"unknown method {args.method!r}; choose from: {', '.join(sorted(all_methods()))}")
    result = run_bench(cfg, args.method, days=args.days, seed=args.seed, say=lambda s: print(s, flush=True))
    print_bench(result)
    if args.json:
        write_result(result, Path(args.json))
        print(f"wrote {args.json}")
    return 0


@command("demo")
def demo_cmd(args: argparse.Namespace) -> int:
    from sleepcycle.demo import run_demo

    orchestrated = {"flow": True, "inprocess": False, "auto": None}[args.via]
    return run_demo(
        _config(args), cycles=args.cycles, profile=args.config, overrides=args.set, orchestrated=orchestrated
    )


def _manifest_dir(path: str, what: str):
    from sleepcycle.manifests import Manifest

    root = Path(path)
    if not (root / "manifest.json").is_file():
        raise UserError(f"{what} {root}: no manifest.json (pass the directory a stage wrote)")
    return Manifest.read(root).model_copy(update={"uri": str(root)})


def _no_log(_: dict) -> None:
    pass


def _jsonl_log(path: Path) -> Callable[[dict], None]:
    """A `log` that appends each metrics dict as one JSON line (read by the launching stage as it runs)."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(metrics: dict) -> None:
        with path.open("a") as f:
            f.write(json.dumps(metrics, default=float) + "\n")

    return log


def _run_rank(args: argparse.Namespace, stage, *inputs, **kwargs) -> int:
    """One rank of a data-parallel stage (`seed-dist`, `dream-dist`): run it, tear the process group down
    whatever happens, and print the manifest as JSON on rank 0 (the launcher reads it)."""
    import torch.distributed as dist

    from sleepcycle.distributed import DistributedError

    rank = int(os.environ.get("RANK", "0"))
    try:
        manifest = stage(
            _config(args),
            *inputs,
            Path(args.out),
            deepspeed_config=args.deepspeed,
            log=_jsonl_log(Path(args.metrics)) if args.metrics and rank == 0 else _no_log,
            token_budget=args.token_budget,
            run_seed=args.seed,
            trace=Path(args.trace) if args.trace else None,
            **kwargs,
        )
    except DistributedError as e:
        raise UserError(str(e)) from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        print(json.dumps({"checkpoint": manifest.uri, "digest": manifest.digest, **manifest.metrics}, indent=2))
    return 0


@command("seed-dist")
def seed_dist_cmd(args: argparse.Namespace) -> int:
    from sleepcycle.distributed import seed_distributed
    from sleepcycle.records import read

    snapshot, champion = _manifest_dir(args.snapshot, "snapshot"), _manifest_dir(args.champion, "champion")
    replay: list[str] = []
    if args.replay:
        loaded = read(args.replay, "wake")
        if loaded.rejected:  # a silently shorter replay arm would change the result
            raise UserError(f"replay records: {loaded.rejected[0]}")
        replay = [r["text"] for r in loaded.records]
    return _run_rank(args, seed_distributed, snapshot, champion, replay=replay)


@command("dream-dist")
def dream_dist_cmd(args: argparse.Namespace) -> int:
    from sleepcycle.distributed import dream_distributed

    seeded, snapshot = _manifest_dir(args.seeded, "seeded checkpoint"), _manifest_dir(args.snapshot, "snapshot")
    return _run_rank(args, dream_distributed, seeded, snapshot)


# ----- wake buffer, sleep cycles and approvals (Prefect lives in flows/, imported only by these commands) -----


def _line(args: argparse.Namespace) -> str:
    from sleepcycle.store.settings import check_line
    from sleepcycle.store.settings import load as load_settings

    return check_line(args.line or load_settings().line)


def _who(args: argparse.Namespace) -> str:
    import getpass

    who = args.who or os.environ.get("USER") or getpass.getuser()
    if not who.strip():
        raise UserError("say who decides: --who NAME")
    return who


def _flows():
    """Make the repository's flows/ importable (it sits next to platform/, not inside the package)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "flows" / "sleep_cycle.py").is_file():
        raise UserError(f"flows/ not found next to {root / 'platform'}: run from a source checkout")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import importlib.util

    if importlib.util.find_spec("prefect") is None:
        raise UserError("Prefect is not installed: pip install -e '.[orchestration]'")


@command("wake-add")
def wake_add_cmd(args: argparse.Namespace) -> int:
    from sleepcycle import wake

    added = wake.add(args.file, line=_line(args), probes=args.probes)
    for reason in added.reasons:
        print(f"rejected {reason}", file=sys.stderr)
    print(
        f"added {added.accepted} wake records"
        + (f" and {added.probes} probes" if added.probes else "")
        + f" to line {_line(args)!r}"
        + (f"; {added.rejected} rejected lines quarantined in {added.quarantine}" if added.rejected else "")
    )
    return 0 if added.accepted or not added.rejected else 1


@command("wake-status")
def wake_status_cmd(args: argparse.Namespace) -> int:
    from sleepcycle import wake

    cfg = _config(args)
    st = wake.status(_line(args), threshold=cfg.flow.pressure_threshold)
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"line {st['line']!r}: {st['records']} wake records in {st['segments']} segments wait for the next sleep")
    print(
        f"sleep pressure {st['pressure']:.0%} of {st['threshold']} records"
        + (" (due: the sleep-pressure deployment starts a cycle)" if st["due"] else "")
    )
    print(f"quarantined lines: {st['quarantined']}; buffer: {st['buffer']}")
    return 0


NOT_PROMOTED = ("gate_failed", "rejected", "expired")


@command("wake-requeue")
def wake_requeue_cmd(args: argparse.Namespace) -> int:
    from sleepcycle import wake
    from sleepcycle.store import ObjectNotFound, open_store
    from sleepcycle.store.records import read_cycle_record

    line = _line(args)
    try:
        state = read_cycle_record(open_store(), line, args.cycle).get("state")
    except ObjectNotFound:
        raise UserError(f"line {line!r} has no cycle {args.cycle}: see sleepcycle cycle list") from None
    if state not in NOT_PROMOTED:
        raise UserError(
            f"cycle {args.cycle} of line {line!r} is {state}: only a cycle whose candidate was not promoted "
            f"({', '.join(NOT_PROMOTED)}) gives its records back"
        )
    try:
        done = wake.requeue(line, args.cycle)
    except wake.WakeError as e:
        raise UserError(str(e)) from None
    print(
        f"cycle {args.cycle} ({state}): {done['records']} wake records and {done['probes']} probes wait again "
        f"for the next sleep of line {line!r}"
        + (f"; {done['skipped']} left out (their ids are waiting already)" if done["skipped"] else "")
    )
    return 0


@command("cycle-run")
def cycle_run_cmd(args: argparse.Namespace) -> int:
    _flows()
    from flows import server
    from flows.sleep_cycle import sleep_cycle

    _config(args)  # a bad profile or override fails here, in one line, before any server starts
    with server.api(keep=args.keep_server):
        result = sleep_cycle(
            line=_line(args),
            config=args.config,
            overrides=args.set,
            run_seed=args.seed,
            refresh=args.refresh,
            resume=not args.new,
        )
    if result.get("state") == "refused":
        raise UserError(result["reason"])
    if result.get("state") == "skipped":
        print(f"no cycle ran: {result['reason']}")
        return 0
    print(json.dumps(result, indent=2))
    return 0


@command("cycle-list")
def cycle_list_cmd(args: argparse.Namespace) -> int:
    from sleepcycle.store import queries

    line = _line(args)
    rows = queries.cycles(line)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"line {line!r} has no cycles yet: sleepcycle wake add FILE, then sleepcycle cycle run")
        return 0

    def num(v) -> str:
        return f"{v:.3f}" if isinstance(v, int | float) else "-"

    _print_table(
        [
            [
                str(r["cycle"]),
                r["state"],
                (r.get("created") or "")[:19],
                {True: "pass", False: "FAIL"}.get(r.get("gate_passed"), "-"),
                num(r["metrics"].get("acquisition")),
                num(r["metrics"].get("retention_delta")),
                f"v{r['candidate_version']}" if r.get("candidate_version") else "-",
                r.get("decision_by") or "-",
            ]
            for r in rows
        ],
        ["cycle", "state", "created (UTC)", "gate", "acquisition", "retention", "candidate", "decided by"],
        title=f"sleep cycles of line {line!r}",
    )
    return 0


def _decide(args: argparse.Namespace, approve: bool) -> int:
    _flows()
    import time

    from flows.approval import DecisionError, decide
    from sleepcycle.store import open_store, queries
    from sleepcycle.store.records import read_cycle_record

    line = _line(args)
    try:
        result = decide(line, args.cycle, approve, _who(args), args.note)
    except DecisionError as e:
        raise UserError(str(e)) from None
    if result["via"] == "prefect":
        print(f"decision handed to the waiting flow run {result['flow_run_id']}")
        store, deadline = open_store(), time.monotonic() + args.wait
        while (
            time.monotonic() < deadline and read_cycle_record(store, line, args.cycle)["state"] == "awaiting_approval"
        ):
            time.sleep(1)
    state = queries.cycle(line, args.cycle)["state"]
    champion = queries.champion(line)
    if state == "awaiting_approval":
        print(f"cycle {args.cycle}: the run applies the decision when it resumes (a worker must pick it up)")
    else:
        print(f"cycle {args.cycle}: {state}; champion of line {line!r} is v{champion['version'] if champion else '-'}")
    return 0


@command("approve")
def approve_cmd(args: argparse.Namespace) -> int:
    return _decide(args, approve=True)


@command("reject")
def reject_cmd(args: argparse.Namespace) -> int:
    return _decide(args, approve=False)


@command("rollback")
def rollback_cmd(args: argparse.Namespace) -> int:
    from sleepcycle.store import RegistryError, open_registry

    line = _line(args)
    registry = open_registry()
    before = registry.alias(line, "champion")
    try:
        now = registry.rollback(line, who=_who(args), note=args.note)
    except RegistryError as e:
        raise UserError(str(e)) from None
    print(f"champion of line {line!r}: v{before} -> v{now} (rolled back by {_who(args)}: {args.note})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default="default", help="profile name (configs/NAME.yaml) or path")
    common.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set distill.steps=4 (repeatable)",
    )
    p = argparse.ArgumentParser(
        prog="sleepcycle",
        description="LLMs that learn by sleeping: "
        "consolidate what the model met in context into its weights, gated by evaluation.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    world = sub.add_parser("world", help="the built-in knowledge world")
    wsub = world.add_subparsers(dest="world_command", required=True, metavar="ACTION")
    exp = wsub.add_parser("export", parents=[common], help="write wake records and probes as JSONL")
    exp.add_argument("--out", required=True, help="output directory")
    exp.set_defaults(func="world-export")

    pre = sub.add_parser("pretrain", parents=[common], help="pretrain the tiny model on day 0 (cached)")
    pre.add_argument("--force", action="store_true", help="retrain even if a cached checkpoint exists")
    pre.set_defaults(func="pretrain")

    ev = sub.add_parser("eval", parents=[common], help="closed-book (or in-context) accuracy on a probe file")
    ev.add_argument(
        "--model",
        required=True,
        help="model directory (HF save_pretrained) or a sleep checkpoint (experts answer by distill.routing)",
    )
    ev.add_argument("--probes", required=True, help="probe JSONL")
    ev.add_argument("--docs", help="wake JSONL to put in the prompt (in-context accuracy)")
    ev.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ev.set_defaults(func="eval")

    b = sub.add_parser("bench", parents=[common], help="run one method over the day stream")
    b.add_argument("--method", required=True, help="in-context, sft, sft-replay, sleep-nodream, sleep, ...")
    b.add_argument("--days", type=int, help="wake days (default: world.days)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--json", help="write the result JSON here")
    b.set_defaults(func="bench")

    d = sub.add_parser("demo", parents=[common], help="pretrain if needed, then sleep cycles end to end")
    d.add_argument("--cycles", type=int, default=3)
    d.add_argument(
        "--via",
        choices=["auto", "flow", "inprocess"],
        default="auto",
        help="flow: through Prefect, the store and the registry (auto: when Prefect is installed)",
    )
    d.set_defaults(func="demo")

    sd = sub.add_parser(
        "seed-dist",
        parents=[common],
        help="Knowledge Seeding data-parallel under DeepSpeed (launch with torchrun or deepspeed)",
        description="Run under a launcher: torchrun --nproc_per_node N -m sleepcycle seed-dist ... "
        "(gloo on CPU, NCCL on GPUs). Rank 0 writes the candidate checkpoint.",
    )
    sd.add_argument("--snapshot", required=True, help="snapshot directory (with manifest.json)")
    sd.add_argument("--champion", required=True, help="champion checkpoint directory (with manifest.json)")
    sd.add_argument("--out", required=True, help="where the candidate checkpoint goes")
    sd.add_argument("--deepspeed", default="zero2", help="zero1|zero2|zero3 (configs/deepspeed/) or a JSON path")
    sd.add_argument("--replay", help="wake JSONL of earlier records for the replay arm")
    sd.add_argument("--token-budget", type=int, help="stop after this many training tokens (all ranks)")
    sd.add_argument("--seed", type=int, default=0, help="run seed")
    sd.add_argument("--metrics", help="append rank 0's metrics here as JSON lines (the flow reads them)")
    sd.add_argument("--trace", help="directory for a per-rank audit: items owned, sample ids and loss per step")
    sd.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)  # the deepspeed launcher's
    sd.set_defaults(func="seed-dist")

    dd = sub.add_parser(
        "dream-dist",
        parents=[common],
        help="Dreaming with its consolidation data-parallel under DeepSpeed (launch with torchrun or deepspeed)",
        description="Run under a launcher: torchrun --nproc_per_node N -m sleepcycle dream-dist ... Rank 0 writes "
        "and selects the dreams, every rank trains on its share of them, rank 0 writes the candidate.",
    )
    dd.add_argument("--seeded", required=True, help="seeded checkpoint directory (with manifest.json)")
    dd.add_argument("--snapshot", required=True, help="snapshot directory (with manifest.json)")
    dd.add_argument("--out", required=True, help="where the dreamed checkpoint goes")
    dd.add_argument("--deepspeed", default="zero2", help="a DeepSpeed config (its ZeRO stage is not used: stage 0)")
    dd.add_argument("--token-budget", type=int, help="cap on ReST-EM + consolidation training tokens")
    dd.add_argument("--seed", type=int, default=0, help="run seed")
    dd.add_argument("--metrics", help="append rank 0's metrics here as JSON lines (the flow reads them)")
    dd.add_argument("--trace", help="directory for a per-rank audit: the dreams each rank trained on per step")
    dd.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    dd.set_defaults(func="dream-dist")

    line = argparse.ArgumentParser(add_help=False)
    line.add_argument("--line", help="model line (default: $SLEEPCYCLE_LINE or 'default')")

    wake = sub.add_parser("wake", help="the wake buffer: what the model read awake, waiting for sleep")
    wksub = wake.add_subparsers(dest="wake_command", required=True, metavar="ACTION")
    wa = wksub.add_parser("add", parents=[line], help="validate wake records (JSONL) into the buffer")
    wa.add_argument("file", help="wake JSONL: {text, id?, source?, time?} per line")
    wa.add_argument("--probes", help="probe JSONL that evaluates these records (question, answer, ...)")
    wa.set_defaults(func="wake-add")
    ws = wksub.add_parser("status", parents=[common, line], help="records waiting, sleep pressure")
    ws.add_argument("--json", action="store_true")
    ws.set_defaults(func="wake-status")
    wr = wksub.add_parser(
        "requeue", parents=[line], help="give a rejected cycle's wake records back to the buffer for the next sleep"
    )
    wr.add_argument(
        "cycle", type=int, help="the cycle whose candidate was not promoted (gate failed, rejected, expired)"
    )
    wr.set_defaults(func="wake-requeue")

    cyc = sub.add_parser("cycle", help="sleep cycles through Prefect")
    csub = cyc.add_subparsers(dest="cycle_command", required=True, metavar="ACTION")
    cr = csub.add_parser(
        "run", parents=[common, line], help="run one sleep cycle now (PREFECT_API_URL or a local server)"
    )
    cr.add_argument("--seed", type=int, help="run seed of the stages (default: the cycle number)")
    cr.add_argument("--refresh", action="store_true", help="recompute every stage, ignoring cached results")
    cr.add_argument("--new", action="store_true", help="abandon a crashed cycle instead of resuming it")
    cr.add_argument("--keep-server", action="store_true", help="leave a local server started here running")
    cr.set_defaults(func="cycle-run")
    cl = csub.add_parser("list", parents=[line], help="the line's cycles with their state")
    cl.add_argument("--json", action="store_true")
    cl.set_defaults(func="cycle-list")

    for name, verb in (("approve", "promote it to champion"), ("reject", "leave the champion as it is")):
        a = sub.add_parser(name, parents=[line], help=f"decide on a gate-passed candidate: {verb}")
        a.add_argument("cycle", type=int, help="the cycle number (sleepcycle cycle list)")
        a.add_argument("--note", required=True, help="why (recorded with the decision)")
        a.add_argument("--who", help="who decides (default: $USER)")
        a.add_argument("--wait", type=float, default=120, help="seconds to wait for the run to apply it")
        a.set_defaults(func=name)

    rb = sub.add_parser("rollback", parents=[line], help="move champion back to the previous champion (audited)")
    rb.add_argument("--note", required=True, help="why (recorded)")
    rb.add_argument("--who", help="who rolls back (default: $USER)")
    rb.set_defaults(func="rollback")
    return p


def _quiet_deepspeed_probe() -> None:
    """transformers imports DeepSpeed when it is installed; on a machine without CUDA, DeepSpeed's accelerator
    probe prints a warning to stdout, which would corrupt the commands whose stdout is JSON. Naming the
    CPU accelerator up front is what the probe would conclude anyway, without the print."""
    if "DS_ACCELERATOR" in os.environ:
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if hasattr(args, "config"):  # a bad profile or --set fails here, before torch is imported (~4 s)
            _config(args)
        _quiet_deepspeed_probe()
        return COMMANDS[args.func](args)
    except (UserError, ConfigError) as e:
        print(f"sleepcycle: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        known = type(e).__module__.startswith("sleepcycle") or isinstance(e, FileNotFoundError)
        if not known:
            raise
        print(f"sleepcycle: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sleepcycle: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
