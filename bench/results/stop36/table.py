"""Rebuild table.md: stop 36's runs, each paired seed for seed with its parent, read by the rules in rule.md.

A-D ask where a wake fact's held-out reading is lost (the expert's layout, statements); E and rule 6 decide
`distill.named_questions`. Runs: `sleepcycle bench --method M --days 5 --seed S --json OUT` at 60k tokens a
day, default base unless the row says "second base" (`--set pretrain.seed=1`); A-D's attention layouts ran
through a monkeypatch of `experts._MLP_TARGETS` before `distill.expert_modules` existed (check-knob-s0.json:
the knob reproduces A's seed 0 exactly). A gain counts iff the paired mean is > 0, higher on >= 4 of 5 seeds
(8 of 10) and > 2 standard errors. The helpers are stop 35's (`../stop35/table.py`).

Run from the repository root: python bench/results/stop36/table.py > bench/results/stop36/table.md"""

import importlib.util
import json
import os
import statistics as st

S34, S35, S36 = "bench/results/stop34/", "bench/results/stop35/", "bench/results/stop36/"
_spec = importlib.util.spec_from_file_location("stop35_table", S35 + "table.py")
t35 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(t35)

NODREAM, SLEEP = S35 + "tmpl-nodream-s{s}.json", S34 + "e1-gradnorm24-s{s}.json"  # the defaults, seeds 0-4
FIRST, FRESH = range(5), range(5, 10)
PAIRS = [  # (rule, arm, its path, parent, its path, seeds)
    ("A", "sleep-nodream, expert on q/k/v/o + MLP", S36 + "attn-nodream-s{s}.json", "sleep-nodream", NODREAM, FIRST),
    ("C2", "sleep-nodream, q/k + MLP", S36 + "qk-nodream-s{s}.json", "sleep-nodream", NODREAM, FIRST),
    ("C1", "sleep-nodream, v/o + MLP", S36 + "vo-nodream-s{s}.json", "sleep-nodream", NODREAM, FIRST),
    ("B", "sleep-nodream, 1 question + 32 openings", S36 + "stmt-nodream-s{s}.json", "sleep-nodream", NODREAM, FIRST),
    ("D", "sleep, q/k/v/o + MLP", S36 + "attn-sleep-s{s}.json", "sleep-nodream, q/k/v/o + MLP",
     S36 + "attn-nodream-s{s}.json", FIRST),
    ("D", "sleep, q/k/v/o + MLP", S36 + "attn-sleep-s{s}.json", "sleep", SLEEP, FIRST),
    ("E (i)", "sleep, named", S36 + "named-sleep-s{s}.json", "sleep-nodream, named", S36 + "named-nodream-s{s}.json",
     FIRST),
    ("E (ii)", "sleep, named", S36 + "named-sleep-s{s}.json", "sleep", SLEEP, FIRST),
    ("E (ii)", "sleep-nodream, named", S36 + "named-nodream-s{s}.json", "sleep-nodream", NODREAM, FIRST),
    ("6 (a)", "sleep, named", S36 + "named-sleep-s{s}.json", "sleep", S35 + "e1-s{s}.json", FRESH),
    ("6 (b)", "sleep-nodream, named", S36 + "named-nodream-s{s}.json", "sleep-nodream", S35 + "nodream-s{s}.json",
     FRESH),
    ("6 (a)", "sleep, named, second base", S36 + "ps1-named-sleep-s{s}.json", "sleep, second base",
     S35 + "ps1-e1-s{s}.json", FRESH),
    ("6 (b)", "sleep-nodream, named, second base", S36 + "ps1-named-nodream-s{s}.json", "sleep-nodream, second base",
     S35 + "ps1-nodream-s{s}.json", FRESH),
    ("bar", "sleep, named", S36 + "named-sleep-s{s}.json", "sleep-nodream, named", S36 + "named-nodream-s{s}.json",
     range(10)),
    ("bar", "sleep, named, second base", S36 + "ps1-named-sleep-s{s}.json", "sleep-nodream, named, second base",
     S36 + "ps1-named-nodream-s{s}.json", FRESH),
]  # fmt: skip
KEYS = ["heldout_full_ACC", "ACC", "multihop_full_ACC", "BWT", "general_loss", "kl_drift"]
HEAD = ["held-out (all 580)", "ACC", "multi-hop (all 116)", "BWT", "general loss", "KL drift"]
JUDGED = KEYS[:3]


def load(pattern: str, seeds: range) -> dict[int, dict]:
    return {s: json.load(open(p)) for s in seeds if os.path.exists(p := pattern.format(s=s))}


def ceiling(run: dict) -> float:
    """The rows' in-context ceiling: the model at the start of each day with the probes' documents in front."""
    return st.mean(run["in_context_ceilings"])


def main() -> None:
    print("| rule | arm − parent | seeds | " + " | ".join(HEAD) + " | ceiling, arm / parent | learn s, arm |")
    print("|" + "---|" * (len(HEAD) + 5))
    for rule, arm, pa, parent, pp, seeds in PAIRS:
        a, p = load(pa, seeds), load(pp, seeds)
        common = sorted(set(a) & set(p))
        if not common:
            continue
        diff = {k: [a[s]["metrics"][k] - p[s]["metrics"][k] for s in common] for k in KEYS}
        cells = " | ".join(t35.ms(diff[k], "+") + (f" ({t35.verdict(diff[k])})" if k in JUDGED else "") for k in KEYS)
        ceil = f"{st.mean(ceiling(a[s]) for s in common):.3f} / {st.mean(ceiling(p[s]) for s in common):.3f}"
        learn = t35.ms([t35.learn_s(a[s]) for s in common], digits=1)
        span = f"{common[0]}-{common[-1]}" if len(common) > 1 else str(common[0])
        print(f"| {rule} | {arm} − {parent} | {span} | {cells} | {ceil} | {learn} |")
    checks = [
        ("sleep-nodream at the defaults (after expert_modules landed)", S36 + "check-default-s0.json", NODREAM),
        ("sleep-nodream, expert_modules=mlp+attention", S36 + "check-knob-s0.json", S36 + "attn-nodream-s{s}.json"),
    ]
    print()
    for what, path, ref in checks:
        if os.path.exists(path) and os.path.exists(ref.format(s=0)):
            same = json.load(open(path))["matrix"] == json.load(open(ref.format(s=0)))["matrix"]
            print(f"- seed 0 of {what}: matrix {'identical to' if same else 'DIFFERENT from'} {ref.format(s=0)}")


if __name__ == "__main__":
    main()
