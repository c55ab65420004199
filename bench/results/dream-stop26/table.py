"""Rebuild table.md: stop 26's Dreaming variants against stop 25's default sleep and sleep-nodream runs.

Run from the repository root: python bench/results/dream-stop26/table.py > bench/results/dream-stop26/table.md"""

import json
import os
import statistics as st

DEFAULTS = "bench/results/routing/at-fb3d395/"
HERE = "bench/results/dream-stop26/"
KEYS = ["ACC", "BWT", "heldout_ACC", "multihop_ACC", "acquisition_vs_ceiling", "general_loss", "kl_drift"]
VARIANTS = [
    ("nodrift", "no drift budget"),
    ("distill", "consolidation=distill"),
    ("lowlr", "lr 7.5e-4"),
    ("budget10", "drift_budget 0.1"),
    ("writermodel", "writer=model"),
    ("routed", "writer=routed"),
    ("routed10", "writer=routed, drift_budget 0.1"),
]


def load(path: str) -> dict | None:
    return json.load(open(path))["metrics"] if os.path.exists(path) else None


def ms(xs: list[float]) -> str:
    return f"{st.mean(xs):.3f}" + (f" ± {st.stdev(xs):.3f}" if len(xs) > 1 else "")


def paired(runs: list[dict], ref: list[dict], key: str) -> str:
    return ms([x[key] - y[key] for x, y in zip(runs, ref)])


rows = [
    ("sleep-nodream (default)", DEFAULTS + "sleep-nodream-s{s}.json"),
    ("sleep (default)", DEFAULTS + "sleep-s{s}.json"),
] + [(name, HERE + tag + "-s{s}.json") for tag, name in VARIANTS]
print(
    "| variant | seeds | "
    + " | ".join(KEYS)
    + " | Δ vs sleep (ACC / held-out / multi-hop) | Δ vs sleep-nodream (ACC / held-out / multi-hop) |"
)
print("|" + "---|" * (len(KEYS) + 4))
for name, pattern in rows:
    seeds = [s for s in range(5) if load(pattern.format(s=s))]
    runs = [load(pattern.format(s=s)) for s in seeds]
    sleep = [load(DEFAULTS + f"sleep-s{s}.json") for s in seeds]
    nodream = [load(DEFAULTS + f"sleep-nodream-s{s}.json") for s in seeds]
    cells = " | ".join(ms([x[k] for x in runs]) for k in KEYS)
    vs = [" / ".join(paired(runs, ref, k) for k in ("ACC", "heldout_ACC", "multihop_ACC")) for ref in (sleep, nodream)]
    print(f"| {name} | {seeds[0]}–{seeds[-1]} | {cells} | {vs[0]} | {vs[1]} |")
