"""Rebuild table.md: `sleep` against `sleep-nodream` on a second pretrained base (`pretrain.seed=1`), beside
the default base (stop 30).

Runs: `sleepcycle bench --method M --days 5 --seed S --set pretrain.seed=1` (ps1-*.json here, on a newer
host than the default-base rows, which are stop 25's runs in bench/results/routing/at-fb3d395/; wall-clock
is therefore per host). Paired Δ per seed, mean ± sd.

Run from the repository root: python bench/results/dream-stop30/table.py > bench/results/dream-stop30/table.md"""

import json
import os
import statistics as st

HERE = "bench/results/dream-stop30/"
DEFAULTS = "bench/results/routing/at-fb3d395/"
BASES = [  # label, the sleep runs, the sleep-nodream runs
    ("default base (pretrain seed 0)", DEFAULTS + "sleep-s{s}.json", DEFAULTS + "sleep-nodream-s{s}.json"),
    ("pretrain seed 1", HERE + "ps1-sleep-s{s}.json", HERE + "ps1-nodream-s{s}.json"),
]
KEYS = ["ACC", "BWT", "heldout_ACC", "multihop_ACC", "acquisition_vs_ceiling", "general_loss"]
SEEDS = range(5)


def load(path: str) -> dict | None:
    return json.load(open(path)) if os.path.exists(path) else None


def ms(xs: list[float]) -> str:
    return f"{st.mean(xs):.3f}" + (f" ± {st.stdev(xs):.3f}" if len(xs) > 1 else "")


def main() -> None:
    print("| base | method | seeds | " + " | ".join(KEYS) + " | wall-clock s (host) |")
    print("|" + "---|" * (len(KEYS) + 4))
    for base, *patterns in BASES:
        for method, pattern in zip(("sleep", "sleep-nodream"), patterns):
            runs = [r for s in SEEDS if (r := load(pattern.format(s=s)))]
            if runs:
                cells = " | ".join(ms([r["metrics"][k] for r in runs]) for k in KEYS)
                hosts = " ".join(sorted({r["machine"]["cpu_family_model"] for r in runs}))
                wall = ms([r["wall_clock_s"] for r in runs])
                print(f"| {base} | {method} | {' '.join(str(r['seed']) for r in runs)} | {cells} | {wall} ({hosts}) |")
    print()
    print("| sleep − sleep-nodream | seeds | ACC | held-out | multi-hop | BWT |")
    print("|---|---|---|---|---|---|")
    for base, sleep, nodream in BASES:
        pairs = [
            (s, a["metrics"], b["metrics"])
            for s in SEEDS
            if (a := load(sleep.format(s=s))) and (b := load(nodream.format(s=s)))
        ]
        if pairs:
            d = [ms([a[k] - b[k] for _, a, b in pairs]) for k in ("ACC", "heldout_ACC", "multihop_ACC", "BWT")]
            print(f"| {base} | {' '.join(str(s) for s, _, _ in pairs)} | " + " | ".join(d) + " |")


if __name__ == "__main__":
    main()
