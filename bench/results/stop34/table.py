"""Rebuild table.md: stop 34 reads Dreaming against Seeding on the full held-out and multi-hop probe sets
(`World.every_probe`, the bench's ``*_full_ACC``: both held-out wordings of every fact, ~580 probes, and all
three second hops of every new person, ~116, against ~280 and ~38 in the rows), at the bench's 60k tokens a
day and at 120k, where Seeding's 32 questions a document are spent several times over.

Runs: `sleepcycle bench --method M --days 5 --seed S --json OUT`, seeds 0-4, at the stop-33 defaults; at
120k with `--set train.tokens_per_day=120000 --set distill.steps=600 --set dream.steps=120` (the step caps
doubled with the budget as at stop 28, so that the budget, not a cap, stops both stages). E1 and E0 (rule 4):
`--set dream.dreams_per_doc=24` with `--set dream.importance=grad_norm` (E1) or the default grad_cosine (E0). The rule the comparisons are read by was fixed before any run
(rule.md): a gain counts iff the paired mean is > 0, higher on >= 4 of 5 seeds and > 2 standard errors.
The second base is `--set pretrain.seed=1`. The 60k runs reproduce the same runs at stops 32-33 on
the rows (checked below).

Run from the repository root: python bench/results/stop34/table.py > bench/results/stop34/table.md"""

import json
import math
import os
import statistics as st

HERE = "bench/results/stop34/"
RUNS = {
    "sleep-nodream": HERE + "nodream-s{s}.json",
    "sleep": HERE + "sleep-s{s}.json",
    "sleep-nodream, second base": HERE + "ps1-nodream-s{s}.json",
    "sleep, second base": HERE + "ps1-sleep-s{s}.json",
    "sleep-nodream, 120k tokens a day": HERE + "t120-nodream-s{s}.json",
    "sleep, 120k tokens a day": HERE + "t120-sleep-s{s}.json",
    "sleep, 24 dreams a document, grad_norm (E1)": HERE + "e1-gradnorm24-s{s}.json",
    "sleep, 24 dreams a document (E0)": HERE + "e0-cosine24-s{s}.json",
    "sleep, E1, second base": HERE + "ps1-e1-gradnorm24-s{s}.json",
}
PAIRS = [
    ("sleep", "sleep-nodream"),
    ("sleep, second base", "sleep-nodream, second base"),
    ("sleep, 120k tokens a day", "sleep-nodream, 120k tokens a day"),
    ("sleep-nodream, 120k tokens a day", "sleep-nodream"),
    ("sleep, 120k tokens a day", "sleep"),
    ("sleep, 24 dreams a document, grad_norm (E1)", "sleep-nodream"),
    ("sleep, 24 dreams a document, grad_norm (E1)", "sleep"),
    ("sleep, 24 dreams a document (E0)", "sleep"),
    ("sleep, 24 dreams a document, grad_norm (E1)", "sleep, 24 dreams a document (E0)"),
    ("sleep, E1, second base", "sleep-nodream, second base"),
    ("sleep, E1, second base", "sleep, second base"),
]
CONTROLS = {
    "sleep-nodream": "bench/results/dream-stop32/nodream-q32-s{s}.json",
    "sleep": "bench/results/dream-stop32/sleep-q32-s{s}.json",
    "sleep-nodream, second base": "bench/results/stop33/ps1-nodream-q32-s{s}.json",
    "sleep, second base": "bench/results/stop33/ps1-sleep-q32-s{s}.json",
}
KEYS = ["ACC", "BWT", "heldout_ACC", "heldout_full_ACC", "multihop_ACC", "multihop_full_ACC", "general_loss"]
HEAD = ["ACC", "BWT", "held-out (row)", "held-out (full)", "multi-hop (row)", "multi-hop (full)", "general loss"]
ABLATIONS = [  # name, what it changes; each against E1 (`sleep` with E1's sets), seed for seed
    ("sleep-importance", "random selection instead of the gradient norm"),
    ("sleep-restem", "no ReST-EM round on the dream writer"),
    ("sleep-curriculum", "kept dreams in random order, not easy to hard"),
    ("sleep+random-expert", "one random extra expert on while dreams are sampled"),
]
RULE = ["ACC", "heldout_ACC", "heldout_full_ACC", "multihop_ACC", "multihop_full_ACC"]
SEEDS = range(5)


def load(path: str) -> dict | None:
    return json.load(open(path)) if os.path.exists(path) else None


def runs(pattern: str) -> dict[int, dict]:
    return {s: r for s in SEEDS if (r := load(pattern.format(s=s)))}


def ms(xs: list[float], sign: str = "", digits: int = 3) -> str:
    return f"{st.mean(xs):{sign}.{digits}f}" + (f" ± {st.stdev(xs):.{digits}f}" if len(xs) > 1 else "")


def learn_s(run: dict) -> float:
    return sum(day["wall_clock_s"] for day in run["budget"]["days"])


def verdict(xs: list[float]) -> str:
    """rule.md: mean > 0, higher on >= 4 of 5 seeds, mean > 2 SE."""
    if len(xs) < 2:
        return "n/a"
    mean, se = st.mean(xs), st.stdev(xs) / math.sqrt(len(xs))
    up = sum(x > 0 for x in xs)
    ok = mean > 0 and up >= 4 and mean > 2 * se
    return f"{'gain' if ok else 'no gain'} ({up}/{len(xs)}, {mean / se if se else float('inf'):+.1f} SE)"


def main() -> None:
    print("| row | seeds | " + " | ".join(HEAD) + " | learn s |")
    print("|" + "---|" * (len(HEAD) + 3))
    for name, pattern in RUNS.items():
        if rs := runs(pattern):
            cells = " | ".join(ms([r["metrics"][k] for r in rs.values()]) for k in KEYS)
            print(
                f"| {name} | {' '.join(map(str, rs))} | {cells} | {ms([learn_s(r) for r in rs.values()], digits=1)} |"
            )
    print()
    print("| a − b, paired per seed | seeds | " + " | ".join(HEAD) + " |")
    print("|" + "---|" * (len(HEAD) + 2))
    verdicts = []
    for a, b in PAIRS:
        ra, rb = runs(RUNS[a]), runs(RUNS[b])
        seeds = sorted(set(ra) & set(rb))
        if not seeds:
            continue
        diff = {k: [ra[s]["metrics"][k] - rb[s]["metrics"][k] for s in seeds] for k in KEYS}
        print(f"| {a} − {b} | {' '.join(map(str, seeds))} | " + " | ".join(ms(diff[k], "+") for k in KEYS) + " |")
        verdicts.append((a, b, {k: verdict(diff[k]) for k in RULE}))
    print()
    print("| a − b, by rule.md | " + " | ".join(RULE) + " |")
    print("|" + "---|" * (len(RULE) + 1))
    for a, b, v in verdicts:
        print(f"| {a} − {b} | " + " | ".join(v[k] for k in RULE) + " |")
    print()
    print("| ablation − E1, paired per seed | what it changes | seeds | " + " | ".join(HEAD) + " | learn s |")
    print("|" + "---|" * (len(HEAD) + 4))
    parent = runs(RUNS["sleep, 24 dreams a document, grad_norm (E1)"])
    for name, what in ABLATIONS:
        ra = runs(HERE + f"e1-{name}-s{{s}}.json")
        if seeds := sorted(set(ra) & set(parent)):
            cells = " | ".join(ms([ra[s]["metrics"][k] - parent[s]["metrics"][k] for s in seeds], "+") for k in KEYS)
            learn = ms([learn_s(r) for r in ra.values()], digits=1)
            print(f"| {name} | {what} | {' '.join(map(str, seeds))} | {cells} | {learn} |")
    for name, pattern in CONTROLS.items():
        now, before = runs(RUNS[name]), runs(pattern)
        seeds = sorted(set(now) & set(before))
        same = all(now[s]["matrix"] == before[s]["matrix"] for s in seeds)
        print()
        print(
            f"`{name}` at 60k, seeds {' '.join(map(str, seeds))}: accuracy matrices "
            f"{'identical to' if same else 'DIFFERENT from'} the same runs at stops 32-33 ({pattern})."
        )
    probes = {json.dumps(r["full_probes"]) for p in RUNS.values() for r in runs(p).values()}
    print()
    print(f"Full probe sets scored: {', '.join(sorted(probes))}.")


if __name__ == "__main__":
    main()
