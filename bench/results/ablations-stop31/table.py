"""Rebuild table.md: every ablation of `sleep` and `sleep-nodream` on five seeds at one commit (stop 31).

Until this stop the ablations had one seed each (stop 25's `ablations-s0/`, scored with that stop's router).
Runs here: `sleepcycle bench --method M --days 5 --seed S` for the nine ablations in
`sleepcycle.cycle.SLEEP_METHODS`, seeds 0-4, and `sleep` / `sleep-nodream` seed 0 again as a check that
today's code reproduces the default rows (bench/results/routing/at-fb3d395/, stop 25's host). Each
ablation is paired per seed with the method it ablates (Δ = ablation − parent, mean ± sd over seeds);
wall-clock and learning seconds are per host.

Run from the repository root: python bench/results/ablations-stop31/table.py > bench/results/ablations-stop31/table.md"""

import json
import os
import statistics as st

HERE = "bench/results/ablations-stop31/"
DEFAULTS = "bench/results/routing/at-fb3d395/"
PARENTS = ("sleep", "sleep-nodream")  # their five-seed runs are stop 25's, in DEFAULTS
ABLATIONS = [  # name, parent, what it changes
    ("sleep-importance", "sleep", "random selection instead of the gradient-cosine importance"),
    ("sleep+random-expert", "sleep", "one random extra expert on while dreams are sampled"),
    ("sleep-restem", "sleep", "no ReST-EM round on the dream writer"),
    ("sleep-curriculum", "sleep", "kept dreams in random order, not easy to hard"),
    ("sleep-nodream-lti", "sleep-nodream", "no Learning-to-Imitate RL term"),
    ("sleep-nodream-anchor", "sleep-nodream", "activation anchor at weight 20"),
    ("sleep-nodream-fast", "sleep-nodream", "fast weights instead of the document in the prompt"),
    ("sleep-nodream-replay", "sleep-nodream", "no replay arm"),
    ("sleep-nodream-expansion", "sleep-nodream", "full fine-tune instead of a new expert"),
]
KEYS = ["ACC", "BWT", "acquisition_vs_ceiling", "heldout_ACC", "multihop_ACC", "general_loss"]
HEAD = ["ACC", "BWT", "acq / ceiling", "held-out", "multi-hop", "general loss"]
DREAM = ["dream/reward_rate", "dream/dreams_per_s", "dream/distinct_2", "dream/kl_drift"]
SEEDS = range(5)


def load(path: str) -> dict | None:
    return json.load(open(path)) if os.path.exists(path) else None


def ms(xs: list[float]) -> str:
    return f"{st.mean(xs):.3f}" + (f" ± {st.stdev(xs):.3f}" if len(xs) > 1 else "")


def runs(method: str) -> list[dict]:
    folder = DEFAULTS if method in PARENTS else HERE
    return [r for s in SEEDS if (r := load(f"{folder}{method}-s{s}.json"))]


def learn_s(run: dict) -> float:
    return sum(day["wall_clock_s"] for day in run["budget"]["days"])


def day_mean(run: dict, key: str) -> float:
    return st.mean(day[key] for day in run["budget"]["days"] if key in day)


def host(rs: list[dict]) -> str:
    return " ".join(sorted({r["machine"]["cpu_family_model"] for r in rs}))


def main() -> None:
    print("| method | seeds | " + " | ".join(HEAD) + " | learn s (host) |")
    print("|" + "---|" * (len(HEAD) + 3))
    for method in [*PARENTS, *(a for a, _, _ in ABLATIONS)]:
        if rs := runs(method):
            cells = " | ".join(ms([r["metrics"][k] for r in rs]) for k in KEYS)
            seeds = " ".join(str(r["seed"]) for r in rs)
            print(f"| {method} | {seeds} | {cells} | {ms([learn_s(r) for r in rs])} ({host(rs)}) |")
    print()
    print("| ablation − parent, paired per seed | what it changes | seeds | " + " | ".join(HEAD) + " |")
    print("|" + "---|" * (len(HEAD) + 3))
    for name, parent, what in ABLATIONS:
        by_seed = {b["seed"]: b for b in runs(parent)}
        pairs = [(a, by_seed[a["seed"]]) for a in runs(name) if a["seed"] in by_seed]
        if pairs:
            d = " | ".join(ms([a["metrics"][k] - b["metrics"][k] for a, b in pairs]) for k in KEYS)
            print(f"| {name} − {parent} | {what} | {' '.join(str(a['seed']) for a, _ in pairs)} | {d} |")
    print()
    print("| Dreaming, mean over days | seeds | reward rate | dreams/s | distinct 2-grams | KL drift |")
    print("|---|---|---|---|---|---|")
    for method in ["sleep", *(a for a, p, _ in ABLATIONS if p == "sleep")]:
        if rs := runs(method):
            cells = " | ".join(ms([day_mean(r, k) for r in rs]) for k in DREAM)
            print(f"| {method} | {' '.join(str(r['seed']) for r in rs)} | {cells} |")
    check = [
        (m, a["matrix"] == b["matrix"], learn_s(a), host([a]))
        for m in PARENTS
        if (a := load(f"{HERE}{m}-s0.json")) and (b := load(f"{DEFAULTS}{m}-s0.json"))
    ]
    if check:
        print()
        print(
            "Reproduction check, seed 0 at this stop against stop 25's run: "
            + ", ".join(
                f"{m} {'same' if same else 'DIFFERENT'} accuracy matrix (learn s here {t:.1f}, host {h})"
                for m, same, t, h in check
            )
            + "."
        )


if __name__ == "__main__":
    main()
