"""Rebuild table.md: stop 27's Dreaming variants against stop 25's default sleep and sleep-nodream runs, and
what their dreams say (bench/dream_precision.py on each run's checkpoints).

Run from the repository root: python bench/results/dream-stop27/table.py > bench/results/dream-stop27/table.md"""

import json
import os
import statistics as st

DEFAULTS = "bench/results/routing/at-fb3d395/"
HERE = "bench/results/dream-stop27/"
KEYS = ["ACC", "BWT", "heldout_ACC", "multihop_ACC", "acquisition_vs_ceiling", "general_loss", "kl_drift"]
VARIANTS = [
    ("default", "defaults (rerun at this stop)"),
    ("temp04", "temperature 0.4"),
    ("conf07", "min_confidence −0.7"),
    ("conf04", "min_confidence −0.4"),
    ("conf04s10", "min_confidence −0.4, steps 10"),
    ("qaonly", "kinds [qa]"),
    ("qaonly07", "kinds [qa], min_confidence −0.7"),
    ("qaonlylr", "kinds [qa], lr 7.5e-4"),
    ("norewrite", "kinds [implication, qa]"),
]


def load(path: str) -> dict | None:
    return json.load(open(path)) if os.path.exists(path) else None


def ms(xs: list[float]) -> str:
    return f"{st.mean(xs):.3f}" + (f" ± {st.stdev(xs):.3f}" if len(xs) > 1 else "")


def paired(runs: list[dict], ref: list[dict], key: str) -> str:
    return ms([x[key] - y[key] for x, y in zip(runs, ref)])


def metrics_table() -> None:
    rows = [
        ("sleep-nodream (stop 25)", DEFAULTS + "sleep-nodream-s{s}.json"),
        ("sleep (stop 25)", DEFAULTS + "sleep-s{s}.json"),
    ]
    rows += [(name, HERE + tag + "-s{s}.json") for tag, name in VARIANTS]
    print(
        "| variant | seeds | "
        + " | ".join(KEYS)
        + " | Δ vs sleep (ACC / held-out / multi-hop) | Δ vs sleep-nodream (ACC / held-out / multi-hop) |"
    )
    print("|" + "---|" * (len(KEYS) + 4))
    for name, pattern in rows:
        seeds = [s for s in range(5) if load(pattern.format(s=s))]
        if not seeds:
            continue
        runs = [load(pattern.format(s=s))["metrics"] for s in seeds]
        sleep = [load(DEFAULTS + f"sleep-s{s}.json")["metrics"] for s in seeds]
        nodream = [load(DEFAULTS + f"sleep-nodream-s{s}.json")["metrics"] for s in seeds]
        cells = " | ".join(ms([x[k] for x in runs]) for k in KEYS)
        vs = [
            " / ".join(paired(runs, ref, k) for k in ("ACC", "heldout_ACC", "multihop_ACC")) for ref in (sleep, nodream)
        ]
        print(f"| {name} | {seeds[0]}–{seeds[-1]} | {cells} | {vs[0]} | {vs[1]} |")


def precision_table() -> None:
    """Pooled over each variant's seeds: the dreams written and kept, the share of them that is true, the
    two-hop dreams kept and true, and each score's AUC for truth over the dreams written (mean over runs)."""
    print()
    print(
        "| variant | seeds | written (true) | kept (true) | kept statements (true) | kept two-hop (true) | AUC importance | AUC reward | AUC confidence |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for tag, name in VARIANTS:
        runs = [r for s in range(5) if (r := load(HERE + f"precision/{tag}-s{s}.json"))]
        if not runs:
            continue
        seeds = " ".join(str(r["seed"]) for r in runs)
        rows = [d for r in runs for d in r["dreams"]]
        kept = [d for d in rows if d["kept"]]

        def share(ds: list[dict]) -> str:
            return f"{len(ds)} ({sum(d['true'] for d in ds) / len(ds):.2f})" if ds else "0"

        aucs = [
            ms([r["kinds"]["all"]["auc"][k] for r in runs if r["kinds"]["all"]["auc"][k] is not None])
            for k in ("importance", "reward", "confidence")
        ]
        statements = [d for d in kept if d["kind"] != "qa"]
        hops = [d for d in kept if d["two_hop"]]
        print(
            f"| {name} | {seeds} | {share(rows)} | {share(kept)} | {share(statements)} | {share(hops)} | "
            + " | ".join(aucs)
            + " |"
        )


metrics_table()
precision_table()
