"""Rebuild table.md: the bench on a base pretrained with `pretrain.fresh_mentors=0.5` against the default base
(stop 29), and which ways of composing a two-hop label beat Seeding's teacher on each.

Runs: `sleepcycle bench --method M --days 5 --seed S [--set pretrain.fresh_mentors=0.5] [--set ...]`; the
default-base rows are stop 25's runs (bench/results/routing/at-fb3d395/). The composition tables are
`bench/dream_composition.py --summarise` over the composition-*.json files here.

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
]
PAIRS = [  # label, a, b: a - b per seed
    ("sleep − sleep-nodream, default base", 1, 0),
    ("sleep − sleep-nodream, fresh_mentors 0.5", 3, 2),
    ("sleep (routed) − sleep-nodream, fresh_mentors 0.5", 4, 2),
    ("sleep-nodream: fresh_mentors 0.5 − default base", 2, 0),
    ("sleep: fresh_mentors 0.5 − default base", 3, 1),
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
            wall = ms([r["wall_clock_s"] for r in rs.values()])
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
    for name in ("default", "fm"):
        files = sorted(glob.glob(HERE + f"composition-{'' if name == 'default' else 'fm-'}nodream-s*.json"))
        if files:
            print(
                f"\nTwo-hop labels, {'default base' if name == 'default' else 'fresh_mentors 0.5'} "
                f"(sleep-nodream checkpoints, {len(files)} runs):\n"
            )
            out = subprocess.run(
                [sys.executable, "bench/dream_composition.py", "--summarise", *files],
                capture_output=True,
                text=True,
                check=True,
            )
            print(out.stdout, end="")


if __name__ == "__main__":
    main()
