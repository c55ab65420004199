"""Rebuild table.md: `sleep` against `sleep-nodream` at four per-day token budgets, and against Seeding alone
on the tokens Seeding gets inside `sleep` (stop 28).

The 60k rows are stop 25's default runs (bench/results/routing/at-fb3d395/); the others are `sleepcycle bench
--method M --days 5 --seed S --set train.tokens_per_day=N`, with every step cap grown with the budget at
120k and 240k (``distill.steps=600|1200``, ``dream.steps=120|240``) so that the budget, not a cap, stops
both stages; the Seeding-alone arms (42k, 84k) keep the step caps of the `sleep` runs they match. Seeds
3-4 at 30k and 120k ran at stop 30 on a newer host (AMD EPYC family 26, the same base weights); where a
row's runs come from two hosts its wall-clock is given per host.

Run from the repository root: python bench/results/dream-stop28/table.py > bench/results/dream-stop28/table.md"""

import json
import os
import statistics as st

HERE = "bench/results/dream-stop28/"
DEFAULTS = "bench/results/routing/at-fb3d395/"
BUDGETS = [  # label, the sleep runs, the sleep-nodream runs
    ("30k", HERE + "b30-sleep-s{s}.json", HERE + "b30-nodream-s{s}.json"),
    ("60k (defaults, stop 25)", DEFAULTS + "sleep-s{s}.json", DEFAULTS + "sleep-nodream-s{s}.json"),
    ("120k (step caps doubled)", HERE + "b120-sleep-s{s}.json", HERE + "b120-nodream-s{s}.json"),
    ("240k (step caps ×4)", HERE + "b240-sleep-s{s}.json", HERE + "b240-nodream-s{s}.json"),
]
MATCHED = [  # label, the sleep runs, sleep-nodream given only the tokens Seeding gets inside those sleep runs
    ("60k: Seeding alone at 42k", DEFAULTS + "sleep-s{s}.json", HERE + "b42-nodream-s{s}.json"),
    ("120k: Seeding alone at 84k", HERE + "b120-sleep-s{s}.json", HERE + "b84-nodream-s{s}.json"),
]
KEYS = ["ACC", "BWT", "heldout_ACC", "multihop_ACC", "acquisition_vs_ceiling", "general_loss"]
SEEDS = range(5)


def load(path: str) -> dict | None:
    return json.load(open(path)) if os.path.exists(path) else None


def ms(xs: list[float]) -> str:
    return f"{st.mean(xs):.3f}" + (f" ± {st.stdev(xs):.3f}" if len(xs) > 1 else "")


def tokens(runs: list[dict], key: str) -> float:
    return st.mean(day.get(key, 0) for r in runs for day in r["budget"]["days"])


def clock(runs: list[dict]) -> str:
    """Wall-clock per host (cpu family/model): runs of two hosts are not averaged together."""
    hosts: dict[str, list[dict]] = {}
    for r in runs:
        hosts.setdefault(r["machine"]["cpu_family_model"], []).append(r)
    return "; ".join(
        f"{ms([r['wall_clock_s'] for r in rs])} (host {h}, seeds {' '.join(str(r['seed']) for r in rs)})"
        if len(hosts) > 1
        else ms([r["wall_clock_s"] for r in rs])
        for h, rs in hosts.items()
    )


def budgets_table() -> None:
    """Per budget and method: the metrics, the tokens each stage spent a day, and the learning time."""
    print(
        "| budget / day | method | seeds | "
        + " | ".join(KEYS)
        + " | Seeding tokens / day | Dreaming tokens / day | wall-clock s |"
    )
    print("|" + "---|" * (len(KEYS) + 6))
    for budget, *patterns in BUDGETS:
        for method, pattern in zip(("sleep", "sleep-nodream"), patterns):
            runs = [r for s in SEEDS if (r := load(pattern.format(s=s)))]
            if not runs:
                continue
            cells = " | ".join(ms([r["metrics"][k] for r in runs]) for k in KEYS)
            seeds = " ".join(str(r["seed"]) for r in runs)
            print(
                f"| {budget} | {method} | {seeds} | {cells} | {tokens(runs, 'seed/tokens'):.0f} | "
                f"{tokens(runs, 'dream/tokens'):.0f} | {clock(runs)} |"
            )


def paired_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print()
    print(f"| {title} | seeds | ACC | held-out | multi-hop | BWT |")
    print("|---|---|---|---|---|---|")
    for label, sleep, other in rows:
        pairs = [
            (s, a["metrics"], b["metrics"])
            for s in SEEDS
            if (a := load(sleep.format(s=s))) and (b := load(other.format(s=s)))
        ]
        if pairs:
            d = [ms([a[k] - b[k] for _, a, b in pairs]) for k in ("ACC", "heldout_ACC", "multihop_ACC", "BWT")]
            print(f"| {label} | {' '.join(str(s) for s, _, _ in pairs)} | " + " | ".join(d) + " |")


budgets_table()
paired_table("sleep − sleep-nodream, budget / day", BUDGETS)
paired_table("sleep − Seeding alone on sleep's Seeding tokens (what Dreaming's tokens add)", MATCHED)
