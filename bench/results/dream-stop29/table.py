"""Rebuild table.md: the bench on a base pretrained with `pretrain.fresh_mentors=0.5` against the default base
(stop 29), and which ways of composing a two-hop label beat Seeding's teacher on each.

Runs: `sleepcycle bench --method M --days 5 --seed S [--set pretrain.fresh_mentors=0.5|0.1] [--set ...]`;
the default-base rows are stop 25's runs (bench/results/routing/at-fb3d395/). The composition tables are
`bench/dream_composition.py --summarise` over the composition-*.json files here; `direct-bases.json` is
`bench/dream_composition.py --direct LABEL=BASE...` over bases pretrained with and without fresh mentors,
at two pretraining seeds. The fresh_mentors 0.1 runs (stop 30) ran on a newer host than the others, so
wall-clock is given per host; the fresh_mentors 0.5 runs shared the CPU with composition runs.

Run from the repository root: .venv/bin/python bench/results/dream-stop29/table.py > bench/results/dream-stop29/table.md"""

import glob
import json
import os
import statistics as st
import subprocess
import sys

HERE = "bench/results/dream-stop29/"
DEFAULTS = "bench/results/routing/at-fb3d395/"
ARMS = [  # label, runs
    ("default base: sleep-nodream", DEFAULTS + "sleep-nodream-s{s}.json"),
    ("default base: sleep", DEFAULTS + "sleep-s{s}.json"),
    ("fresh_mentors 0.5: sleep-nodream", HERE + "fm-nodream-s{s}.json"),
    ("fresh_mentors 0.5: sleep", HERE + "fm-sleep-s{s}.json"),
    ("fresh_mentors 0.5: sleep, dream.writer=routed", HERE + "fm-routed-sleep-s{s}.json"),
    ("fresh_mentors 0.1: sleep-nodream", HERE + "fm01-nodream-s{s}.json"),
    ("fresh_mentors 0.1: sleep", HERE + "fm01-sleep-s{s}.json"),
]
PAIRS = [  # label, a, b: a - b per seed
    ("sleep − sleep-nodream, default base", 1, 0),
    ("sleep − sleep-nodream, fresh_mentors 0.5", 3, 2),
    ("sleep (routed) − sleep-nodream, fresh_mentors 0.5", 4, 2),
    ("sleep-nodream: fresh_mentors 0.5 − default base", 2, 0),
    ("sleep: fresh_mentors 0.5 − default base", 3, 1),
    ("sleep − sleep-nodream, fresh_mentors 0.1", 6, 5),
    ("sleep-nodream: fresh_mentors 0.1 − default base", 5, 0),
    ("sleep: fresh_mentors 0.1 − default base", 6, 1),
]
COMPOSITIONS = [  # label, the composition-*.json files of sleep-nodream runs
    ("default base", "composition-nodream-s*.json"),
    ("fresh_mentors 0.5", "composition-fm-nodream-s*.json"),
    ("fresh_mentors 0.1", "composition-fm01-nodream-s*.json"),
]
KEYS = ["ACC", "BWT", "heldout_ACC", "multihop_ACC", "acquisition_vs_ceiling", "general_loss"]
SEEDS = range(5)


def load(path: str) -> dict | None:
    return json.load(open(path)) if os.path.exists(path) else None


def ms(xs: list[float]) -> str:
    return f"{st.mean(xs):.3f}" + (f" ± {st.stdev(xs):.3f}" if len(xs) > 1 else "")


def runs(pattern: str) -> dict[int, dict]:
    return {s: r for s in SEEDS if (r := load(pattern.format(s=s)))}


def main() -> None:
    arms = [(label, runs(p)) for label, p in ARMS]
    print("| arm | seeds | " + " | ".join(KEYS) + " | wall-clock s |")
    print("|---|---|" + "---|" * (len(KEYS) + 1))
    for label, rs in arms:
        if rs:
            cells = [ms([r["metrics"][k] for r in rs.values()]) for k in KEYS]
            wall = "; ".join(
                f"{ms([r['wall_clock_s'] for r in rs.values() if r['machine']['cpu_family_model'] == h])} (host {h})"
                for h in sorted({r["machine"]["cpu_family_model"] for r in rs.values()})
            )
            print(f"| {label} | {' '.join(map(str, rs))} | " + " | ".join(cells) + f" | {wall} |")
    print()
    print("| paired Δ per seed | seeds | ACC | held-out | multi-hop | BWT |")
    print("|---|---|---|---|---|---|")
    for label, a, b in PAIRS:
        ra, rb = arms[a][1], arms[b][1]
        seeds = sorted(set(ra) & set(rb))
        if seeds:
            d = {k: [ra[s]["metrics"][k] - rb[s]["metrics"][k] for s in seeds] for k in KEYS}
            cells = [ms(d[k]) for k in ("ACC", "heldout_ACC", "multihop_ACC", "BWT")]
            print(f"| {label} | {' '.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    for label, pattern in COMPOSITIONS:
        files = sorted(glob.glob(HERE + pattern))
        if files:
            print(f"\nTwo-hop labels, {label} (sleep-nodream checkpoints, {len(files)} runs):\n")
            out = subprocess.run(
                [sys.executable, "bench/dream_composition.py", "--summarise", *files],
                capture_output=True,
                text=True,
                check=True,
            )
            print(out.stdout, end="")
    direct = load(HERE + "direct-bases.json")
    if direct:
        print("\nSeeding's teacher's two-hop label on each base (`dream_composition.py --direct`, days 1-5):\n")
        print("| base | mentor from | n | direct |\n|---|---|---|---|")
        for base, by_origin in direct.items():
            for origin, m in by_origin.items():
                print(f"| {base} | {origin} | {m['n']} | {m['direct']:.2f} |")


if __name__ == "__main__":
    main()
