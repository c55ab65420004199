"""The `sleepcycle` command: one subcommand, one function.

    sleepcycle world export --out DIR        the built-in world as wake/probe JSONL
    sleepcycle pretrain                      tokenizer + tiny model on day 0 (cached)
    sleepcycle eval --model PATH --probes F  closed-book accuracy of a checkpoint on a probe file
    sleepcycle bench --method M --days N     one method over the day stream, matrix + metrics
    sleepcycle demo                          a few sleep cycles end to end on the built-in world

Every subcommand takes ``--config PROFILE`` and ``--set section.key=value`` overrides.
"""

from __future__ import annotations

import argparse
import json
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
    keys = [
        "ACC",
        "BWT",
        "FWT",
        "forgetting",
        "FUAR",
        "acquisition",
        "in_context_ceiling",
        "heldout_ACC",
        "multihop_ACC",
        "base_retention",
        "general_loss",
        "kl_drift",
    ]
    _print_table(
        [[f"{metrics[k]:.3f}" if isinstance(metrics.get(k), float) else str(metrics.get(k)) for k in keys]],
        keys,
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
    from sleepcycle import models
    from sleepcycle.evaluate import Question, accuracy
    from sleepcycle.records import read

    loaded = read(args.probes, "probe")
    for r in loaded.rejected:
        print(f"skipped {r}", file=sys.stderr)
    if not loaded.records:
        raise UserError(f"{args.probes}: no valid probes")
    docs: tuple[str, ...] = ()
    if args.docs:
        docs = tuple(r["text"] for r in read(args.docs, "wake").records)
    model, tok = models.load(args.model)
    qs = [
        Question(r["question"], r["answer"], tuple(r.get("aliases", [])), r.get("kind", "fact"), docs)
        for r in loaded.records
    ]
    acc, hits = accuracy(model, tok, qs, with_docs=bool(docs))
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
    from sleepcycle.bench import all_methods, run_bench, write_result

    cfg = _config(args)
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

    return run_demo(_config(args), cycles=args.cycles)


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
    ev.add_argument("--model", required=True, help="checkpoint directory (HF save_pretrained)")
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
    d.set_defaults(func="demo")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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
