"""Run the built-in continual-learning bench for several methods and seeds, then write one summary table.

    .venv/bin/python bench/run_all.py                                  # the core set (see CORE), seed 0
    .venv/bin/python bench/run_all.py --methods sft-replay sleep-nodream --seeds 0 1
    .venv/bin/python bench/run_all.py --table-only                     # re-tabulate bench/results/*.json

Each (method, seed) runs as its own `sleepcycle bench` process, one after the other (never in parallel: the
wall-clock column is a measurement), and writes bench/results/<method>-s<seed>.json; a result that already
exists is kept unless --force. The summary goes to bench/results/summary.json and summary.md.

Columns: ACC (mean over the wake days of the final accuracy-matrix row), BWT, acquisition (mean of the
diagonal: each day just after its cycle), the in-context ceiling (the model as it is before that day's
learning, with the day's documents in its prompt, one document per question), acquisition / ceiling,
held-out paraphrase and multi-hop accuracy after the last day, each beside its own in-context ceiling
("—" for results written before the bench measured those), base Δ (day-0 accuracy after the last day
minus before the first), learning wall-clock (the sum of the days' learning time: the methods' cost) and
the whole run's wall-clock (learning + evaluation).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CORE = ["in-context", "sft", "sft-replay", "sleep-nodream", "sleep-nodream-replay", "sleep"]
ABLATIONS = [
    "sleep-nodream-lti",
    "sleep-nodream-expansion",
    "sleep-nodream-fast",
    "sleep-nodream-anchor",
    "sleep-importance",
    "sleep+random-expert",
    "sleep-restem",
    "sleep-curriculum",
]
NOTES = {
    "sft": "no replay buffer",
    "sleep-nodream-replay": "no replay buffer (the paper's setting)",
    "sleep-nodream": "= sleep -dream",
    "sleep-nodream-lti": "no Learning to Imitate",
    "sleep-nodream-expansion": "full fine-tune at distill.full_lr, no expert",
    "sleep-nodream-fast": "fast weights instead of documents in the teacher's prompt",
    "sleep-nodream-anchor": "the activation anchor on (distill.anchor=20)",
    "sleep-importance": "random dream selection instead of importance",
    "sleep+random-expert": "the paper's random extra expert while dreaming (off by default)",
    "sleep-restem": "no ReST-EM rounds",
    "sleep-curriculum": "kept dreams in random order",
}
COLUMNS = [
    ("ACC", "ACC"),
    ("BWT", "BWT"),
    ("acquisition", "acq"),
    ("in_context_ceiling", "ceiling"),
    ("acquisition_vs_ceiling", "acq/ceil"),
    ("heldout_ACC", "held-out"),
    ("heldout_ceiling", "held-out ceil"),
    ("multihop_ACC", "multi-hop"),
    ("multihop_ceiling", "multi-hop ceil"),
    ("heldout_full_ACC", "held-out, all"),
    ("multihop_full_ACC", "multi-hop, all"),
    ("base_retention", "base Δ"),
]

ROUTED_ONLY = {"heldout_full_ACC", "multihop_full_ACC"}
"""Scored as the run answers only (`bench.evaluate_full`): an [all experts] row leaves them blank."""


def result_path(method: str, seed: int) -> Path:
    return RESULTS / f"{method}-s{seed}.json"


def run_one(method: str, seed: int, days: int, config: str, sets: list[str]) -> Path:
    out = result_path(method, seed)
    cmd = [sys.executable, "-m", "sleepcycle", "bench", "--config", config, "--method", method]
    cmd += ["--days", str(days), "--seed", str(seed), "--json", str(out)]
    for s in sets:
        cmd += ["--set", s]
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "SLEEPCYCLE_QUIET": "1"})
    print(f"  {method} seed {seed}: {time.time() - t0:.0f}s", flush=True)
    return out


def learning_seconds(result: dict) -> float:
    return sum(d.get("wall_clock_s", 0.0) for d in result["budget"]["days"])


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def summarise(paths: list[Path]) -> dict:
    rows = []
    for p in paths:
        r = json.loads(p.read_text())
        # a run that routed its experts also carries every expert's row (the paper's): same training, one row each
        views = [(r["method"], r["metrics"])]
        if "metrics_all_experts" in r:
            views.append((f"{r['method']} [all experts]", r["metrics_all_experts"]))
        for method, m in views:
            rows.append(
                {
                    "method": method,
                    "seed": r["seed"],
                    "days": r["days"],
                    **{k: m.get(k, None if k in ROUTED_ONLY else r["metrics"].get(k)) for k, _ in COLUMNS},
                    "learn_s": learning_seconds(r),
                    "wall_clock_s": r["wall_clock_s"],
                    "tokens_per_day": r["budget"]["tokens_per_day"],
                    "machine": r.get("machine", {}),
                    "file": p.name,
                }
            )
    order = {m: i for i, m in enumerate(CORE + ABLATIONS)}
    rows.sort(key=lambda r: (order.get(r["method"].removesuffix(" [all experts]"), 99), r["method"], r["seed"]))
    return {"rows": rows, "over_seeds": over_seeds(rows)}


def over_seeds(rows: list[dict]) -> list[dict]:
    """Mean and sample standard deviation of every column for the methods run with more than one seed."""
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(r)
    out = []
    for method, runs in by_method.items():
        if len(runs) < 2:
            continue
        agg: dict = {"method": method, "seeds": [r["seed"] for r in runs]}
        for k in [k for k, _ in COLUMNS] + ["learn_s"]:
            xs = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
            agg[k] = {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs)} if len(xs) > 1 else None
        out.append(agg)
    return out


def markdown(summary: dict) -> str:
    head = ["method", "seed"] + [h for _, h in COLUMNS] + ["learn s", "total s", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary["rows"]:
        cells = [r["method"], str(r["seed"])] + [_fmt(r[k]) for k, _ in COLUMNS]
        cells += [f"{r['learn_s']:.0f}", f"{r['wall_clock_s']:.0f}", NOTES.get(r["method"], "")]
        lines.append("| " + " | ".join(cells) + " |")
    if summary.get("over_seeds"):
        head = ["method", "seeds"] + [h for _, h in COLUMNS] + ["learn s"]
        lines += ["", "Mean ± sd over seeds:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for a in summary["over_seeds"]:
            cells = [a["method"], " ".join(map(str, a["seeds"]))]
            for k in [k for k, _ in COLUMNS] + ["learn_s"]:
                digits = 0 if k == "learn_s" else 3
                cells.append("—" if a[k] is None else f"{_fmt(a[k]['mean'], digits)} ± {_fmt(a[k]['sd'], digits)}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=CORE, help=f"default: {' '.join(CORE)}; 'ablations' adds those")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--config", default="default")
    ap.add_argument("--set", action="append", default=[], help="config override for every run (key=value)")
    ap.add_argument("--force", action="store_true", help="re-run results that exist")
    ap.add_argument("--table-only", action="store_true", help="only re-tabulate bench/results/*.json")
    args = ap.parse_args(argv)
    methods = [m for name in args.methods for m in (ABLATIONS if name == "ablations" else [name])]
    RESULTS.mkdir(parents=True, exist_ok=True)
    if not args.table_only:
        for seed in args.seeds:
            for method in methods:
                if result_path(method, seed).exists() and not args.force:
                    print(f"  {method} seed {seed}: kept {result_path(method, seed).name}")
                    continue
                run_one(method, seed, args.days, args.config, args.set)
    paths = sorted(p for p in RESULTS.glob("*-s*.json") if p.name != "summary.json")
    summary = summarise(paths)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")
    table = markdown(summary)
    (RESULTS / "summary.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
