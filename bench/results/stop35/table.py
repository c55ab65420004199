"""Rebuild table.md: stop 35 decides E1 (`dream.dreams_per_doc=24`, `dream.importance=grad_norm`, stop 34's
lead) as the default Dreaming on fresh seeds 5-9 of both pretrained bases, by the rule fixed at the end of
stop 34 (rule.md), and reads the issue's bars at the new default on seeds 0-9 (seeds 0-4 are stop 34's runs).

Runs: `sleepcycle bench --method M --days 5 --seed S --json OUT` at 60k tokens a day; E1 with `--set
dream.dreams_per_doc=24 --set dream.importance=grad_norm` (at stop 35's defaults, no sets); the stop-34
default Dreaming (12 a document, grad_cosine) is `sleep` at stop 34's defaults; the second base adds `--set
pretrain.seed=1`. A gain counts iff the paired mean is > 0, higher on >= 4 of 5 seeds (>= 8 of 10) and
> 2 standard errors.

Run from the repository root: python bench/results/stop35/table.py > bench/results/stop35/table.md"""

import json
import math
import os
import statistics as st

S34, S35 = "bench/results/stop34/", "bench/results/stop35/"
RUNS = {  # name: (seeds 0-4 at stop 34, seeds 5-9 at stop 35)
    "sleep-nodream": (S34 + "nodream-s{s}.json", S35 + "nodream-s{s}.json"),
    "sleep (E1, the default since stop 35)": (S34 + "e1-gradnorm24-s{s}.json", S35 + "e1-s{s}.json"),
    "sleep, stop-34 default (12 a document, cosine)": (S34 + "sleep-s{s}.json", S35 + "sleep-s{s}.json"),
    "sleep-nodream, second base": (S34 + "ps1-nodream-s{s}.json", S35 + "ps1-nodream-s{s}.json"),
    "sleep (E1), second base": (S34 + "ps1-e1-gradnorm24-s{s}.json", S35 + "ps1-e1-s{s}.json"),
    "sleep, stop-34 default, second base": (S34 + "ps1-sleep-s{s}.json", S35 + "ps1-sleep-s{s}.json"),
}
PAIRS = [
    ("sleep (E1, the default since stop 35)", "sleep, stop-34 default (12 a document, cosine)"),
    ("sleep (E1), second base", "sleep, stop-34 default, second base"),
    ("sleep (E1, the default since stop 35)", "sleep-nodream"),
    ("sleep (E1), second base", "sleep-nodream, second base"),
]
KEYS = ["ACC", "BWT", "heldout_ACC", "heldout_full_ACC", "multihop_ACC", "multihop_full_ACC", "general_loss"]
HEAD = ["ACC", "BWT", "held-out (row)", "held-out (full)", "multi-hop (row)", "multi-hop (full)", "general loss"]
RULE = ["ACC", "heldout_full_ACC", "multihop_full_ACC", "heldout_ACC", "multihop_ACC"]
ABLATIONS = [  # stop 34's runs of each Dreaming ablation with E1's sets: the ablations of the new default
    ("sleep-importance", "random selection instead of the gradient norm"),
    ("sleep-restem", "no ReST-EM round on the dream writer"),
    ("sleep-curriculum", "kept dreams in random order, not easy to hard"),
    ("sleep+random-expert", "one random extra expert on while dreams are sampled"),
]
TARGETING = [  # rule 2: how strongly to target, each against the default (stop 34's E1 runs), seeds 0-4
    ("e2-48", "48 pairs a document (`dream.dreams_per_doc=48`): 256 kept of about twice as many"),
    ("e3-norandom", "no random share (`dream.keep_top=256`, `dream.keep_random=0`)"),
]
SETS = {"0-4 (stop 34)": range(5), "5-9 (stop 35, fresh)": range(5, 10), "0-9": range(10)}


def runs(name: str, seeds: range) -> dict[int, dict]:
    out = {}
    for s in seeds:
        path = RUNS[name][s >= 5].format(s=s)
        if os.path.exists(path):
            out[s] = json.load(open(path))
    return out


def ms(xs: list[float], sign: str = "", digits: int = 3) -> str:
    return f"{st.mean(xs):{sign}.{digits}f}" + (f" ± {st.stdev(xs):.{digits}f}" if len(xs) > 1 else "")


def learn_s(run: dict) -> float:
    return sum(day["wall_clock_s"] for day in run["budget"]["days"])


def verdict(xs: list[float]) -> str:
    """Mean > 0, higher on >= 80% of seeds (4 of 5, 8 of 10), mean > 2 SE."""
    if len(xs) < 2:
        return "n/a"
    mean, se = st.mean(xs), st.stdev(xs) / math.sqrt(len(xs))
    up = sum(x > 0 for x in xs)
    ok = mean > 0 and up >= 0.8 * len(xs) and mean > 2 * se
    return f"{'gain' if ok else 'no gain'} ({up}/{len(xs)}, {mean / se if se else float('inf'):+.1f} SE)"


def paired_rows(title: str, parent: dict[int, dict], arms: list[tuple[str, str, str]]) -> None:
    """One table of arms paired seed for seed with `parent`: (name, what it changes, path pattern with {s})."""
    print()
    print(f"| {title} | what it changes | " + " | ".join(HEAD) + " | learn s |")
    print("|" + "---|" * (len(HEAD) + 3))
    for name, what, pattern in arms:
        ra = {s: json.load(open(p)) for s in parent if os.path.exists(p := pattern.format(s=s))}
        if seeds := sorted(ra):
            diff = {k: [ra[s]["metrics"][k] - parent[s]["metrics"][k] for s in seeds] for k in KEYS}
            cells = " | ".join(ms(diff[k], "+") + (f" ({verdict(diff[k])})" if k in RULE[:3] else "") for k in KEYS)
            print(f"| {name} | {what} | {cells} | {ms([learn_s(r) for r in ra.values()], digits=1)} |")


def main() -> None:
    print("| row, seeds 0-9 | " + " | ".join(HEAD) + " | learn s |")
    print("|" + "---|" * (len(HEAD) + 2))
    for name in RUNS:
        if rs := runs(name, SETS["0-9"]):
            cells = " | ".join(ms([r["metrics"][k] for r in rs.values()]) for k in KEYS)
            print(f"| {name} ({len(rs)}) | {cells} | {ms([learn_s(r) for r in rs.values()], digits=1)} |")
    for label, seeds in SETS.items():
        print()
        print(f"| a − b, paired, seeds {label} | " + " | ".join(HEAD) + " |")
        print("|" + "---|" * (len(HEAD) + 1))
        verdicts = []
        for a, b in PAIRS:
            ra, rb = runs(a, seeds), runs(b, seeds)
            common = sorted(set(ra) & set(rb))
            if not common:
                continue
            diff = {k: [ra[s]["metrics"][k] - rb[s]["metrics"][k] for s in common] for k in KEYS}
            print(f"| {a} − {b} | " + " | ".join(ms(diff[k], "+") for k in KEYS) + " |")
            verdicts.append((a, b, {k: verdict(diff[k]) for k in RULE}))
        print()
        print(f"| by the rule, seeds {label} | " + " | ".join(RULE) + " |")
        print("|" + "---|" * (len(RULE) + 1))
        for a, b, v in verdicts:
            print(f"| {a} − {b} | " + " | ".join(v[k] for k in RULE) + " |")
    parent = runs("sleep (E1, the default since stop 35)", SETS["0-4 (stop 34)"])
    targeting = [(name, what, S35 + name + "-s{s}.json") for name, what in TARGETING]
    paired_rows("targeting − sleep (E1), paired, seeds 0-4 (rule 2)", parent, targeting)
    # rule 4: more document openings in Seeding (statements), against sleep-nodream rerun with full_by_template
    base = {s: json.load(open(p)) for s in range(5) if os.path.exists(p := S35 + f"tmpl-nodream-s{s}.json")}
    e5 = {s: json.load(open(p)) for s in base if os.path.exists(p := S35 + f"e5-open32-s{s}.json")}
    if seeds := sorted(e5):
        same = all(base[s]["matrix"] == json.load(open(S34 + f"nodream-s{s}.json"))["matrix"] for s in seeds)
        diff = {k: [e5[s]["metrics"][k] - base[s]["metrics"][k] for s in seeds] for k in KEYS}
        print()
        print("| rule 4, paired, seeds 0-4 | " + " | ".join(HEAD) + " |")
        print("|" + "---|" * (len(HEAD) + 1))
        cells = " | ".join(ms(diff[k], "+") + (f" ({verdict(diff[k])})" if k in RULE[:3] else "") for k in KEYS)
        print(f"| sleep-nodream, openings_per_doc=32 − sleep-nodream | {cells} |")
        print()
        print("| held-out wording, right/asked over seeds 0-4 | sleep-nodream | openings_per_doc=32 |")
        print("|---|---|---|")
        for t in base[seeds[0]]["full_by_template"]["heldout"]:
            cell = [f"{sum(r[s]['full_by_template']['heldout'][t][0] for s in seeds)}/"
                    f"{sum(r[s]['full_by_template']['heldout'][t][1] for s in seeds)}" for r in (base, e5)]  # fmt: skip
            print(f"| {t} | {cell[0]} | {cell[1]} |")
        print()
        print(f"sleep-nodream rerun, seeds {seeds}: matrices {'identical to' if same else 'DIFFERENT from'} stop 34's.")
    ablations = [(name, what, S34 + f"e1-{name}" + "-s{s}.json") for name, what in ABLATIONS]
    paired_rows("ablation − sleep (E1), paired, seeds 0-4 (stop 34)", parent, ablations)


if __name__ == "__main__":
    main()
