"""Rebuild table.md: Dreaming whose kept question-answer pairs are distilled from the teacher reading their
documents, with many more of them kept (stop 32), against `sleep` and `sleep-nodream` of the same seed.

Runs: `sleepcycle bench --method sleep --days 5 --seed S --json OUT --set ...` with the sets below, on the
default base (parents: stop 25's runs in bench/results/routing/at-fb3d395/) and on the second pretrained
base, ``pretrain.seed=1`` (parents: stop 30's runs in bench/results/dream-stop30/). Δ is paired per seed,
mean ± sd; "higher" counts the seeds on which the variant is above `sleep-nodream`.

Run from the repository root: python bench/results/dream-stop32/table.py > bench/results/dream-stop32/table.md"""

import json
import os
import statistics as st

HERE = "bench/results/dream-stop32/"
BASES = {  # base: (sleep's runs, sleep-nodream's runs)
    "default": (
        "bench/results/routing/at-fb3d395/sleep-s{s}.json",
        "bench/results/routing/at-fb3d395/sleep-nodream-s{s}.json",
    ),
    "pretrain.seed=1": (
        "bench/results/dream-stop30/ps1-sleep-s{s}.json",
        "bench/results/dream-stop30/ps1-nodream-s{s}.json",
    ),
}
DISTILL, WIDE = "consolidation=distill", "keep_top=96 keep_random=32"
VARIANTS = [  # file prefix, base, the dream.* sets
    ("distillqa", "default", f"{DISTILL}, kinds=[qa] (keep 24 + 8)"),
    ("distillwide", "default", f"{DISTILL}, {WIDE} (all three kinds)"),
    ("distillwideqa", "default", f"{DISTILL}, {WIDE}, kinds=[qa]"),
    ("dw12qa", "default", f"{DISTILL}, kinds=[qa], dreams_per_doc=12, keep_top=192 keep_random=64"),
    ("ps1-distillwideqa", "pretrain.seed=1", f"{DISTILL}, {WIDE}, kinds=[qa]"),
    ("ps1-dw12qa", "pretrain.seed=1", f"{DISTILL}, kinds=[qa], dreams_per_doc=12, keep_top=192 keep_random=64"),
    ("dw24qa", "default", f"{DISTILL}, kinds=[qa], dreams_per_doc=24, keep_top=192 keep_random=64"),
    ("ps1-dw24qa", "pretrain.seed=1", f"{DISTILL}, kinds=[qa], dreams_per_doc=24, keep_top=192 keep_random=64"),
]
QUESTIONS = "distill.questions_per_doc=32 distill.question_drafts=60"
CONTROLS = [  # Seeding with twice the questions, with and without Dreaming: (label, runs, against, its runs)
    (f"sleep-nodream, {QUESTIONS}", HERE + "nodream-q32-s{s}.json", "sleep-nodream", BASES["default"][1]),
    (
        f"sleep (new defaults), {QUESTIONS}",
        HERE + "sleep-q32-s{s}.json",
        "sleep (new defaults)",
        HERE + "dw12qa-s{s}.json",
    ),
    (
        f"sleep (new defaults), {QUESTIONS}",
        HERE + "sleep-q32-s{s}.json",
        f"sleep-nodream, {QUESTIONS}",
        HERE + "nodream-q32-s{s}.json",
    ),
]
ABLATIONS = [  # `sleepcycle bench --method M` at the new defaults, paired with `sleep` at them (dw12qa)
    ("sleep-importance", "random selection instead of the gradient-cosine importance"),
    ("sleep-restem", "no ReST-EM round on the dream writer"),
    ("sleep-curriculum", "kept dreams in random order, not easy to hard"),
    ("sleep+random-expert", "one random extra expert on while dreams are sampled"),
]
KEYS = ["ACC", "BWT", "heldout_ACC", "multihop_ACC", "general_loss"]
HEAD = ["ACC", "BWT", "held-out", "multi-hop", "general loss"]
SEEDS = range(5)


def load(path: str) -> dict | None:
    return json.load(open(path)) if os.path.exists(path) else None


def ms(xs: list[float]) -> str:
    return f"{st.mean(xs):+.3f}" + (f" ± {st.stdev(xs):.3f}" if len(xs) > 1 else "")


def paired(pairs: list[tuple[dict, dict]]) -> tuple[str, str]:
    """The Δ cells (a − b, mean ± sd over the pairs) and how many pairs are higher on held-out / multi-hop."""
    d = " | ".join(ms([a["metrics"][k] - b["metrics"][k] for a, b in pairs]) for k in KEYS)
    up = [sum(a["metrics"][k] > b["metrics"][k] for a, b in pairs) for k in ("heldout_ACC", "multihop_ACC")]
    return d, f"{up[0]} / {up[1]} of {len(pairs)}"


def day_mean(run: dict, key: str) -> float:
    return st.mean(day[key] for day in run["budget"]["days"] if key in day)


def main() -> None:
    print("| variant | base | seeds | " + " | ".join(HEAD) + " | kept dreams a day | learn s |")
    print("|" + "---|" * (len(HEAD) + 5))
    rows = []
    for tag, base, sets in VARIANTS:
        runs = [r for s in SEEDS if (r := load(f"{HERE}{tag}-s{s}.json"))]
        if not runs:
            continue
        sleep, nodream = ([load(p.format(s=r["seed"])) for r in runs] for p in BASES[base])
        rows.append((sets, base, runs, sleep, nodream))
        cells = " | ".join(f"{st.mean(r['metrics'][k] for r in runs):.3f}" for k in KEYS)
        learn = [sum(d["wall_clock_s"] for d in r["budget"]["days"]) for r in runs]
        learn = f"{st.mean(learn):.1f}" + (f" ± {st.stdev(learn):.1f}" if len(learn) > 1 else "")
        kept = st.mean(day_mean(r, "dream/kept") for r in runs)
        print(f"| {sets} | {base} | {' '.join(str(r['seed']) for r in runs)} | {cells} | {kept:.0f} | {learn} |")
    for name, ref in (("sleep", 3), ("sleep-nodream", 4)):
        print()
        print(f"| variant − {name}, paired per seed | base | " + " | ".join(HEAD) + " | held-out / multi-hop higher |")
        print("|" + "---|" * (len(HEAD) + 3))
        for row in rows:
            sets, base, runs = row[:3]
            d, up = paired(list(zip(runs, row[ref])))
            print(f"| {sets} | {base} | {d} | {up} |")
    print()
    print(
        "| Seeding with more questions (default base), paired per seed | against | "
        + " | ".join(HEAD)
        + " | held-out / multi-hop higher |"
    )
    print("|" + "---|" * (len(HEAD) + 3))
    for label, pattern, against, ref in CONTROLS:
        pairs = [(a, b) for s in SEEDS if (a := load(pattern.format(s=s))) and (b := load(ref.format(s=s)))]
        if pairs:
            d, up = paired(pairs)
            print(f"| {label} | {against} | {d} | {up} |")
    print()
    print(
        "| ablation − `sleep` at the new defaults, paired per seed | what it changes | seeds | "
        + " | ".join(HEAD)
        + " |"
    )
    print("|" + "---|" * (len(HEAD) + 3))
    for name, what in ABLATIONS:
        pairs = [
            (a, b) for s in SEEDS if (a := load(f"{HERE}{name}-s{s}.json")) and (b := load(f"{HERE}dw12qa-s{s}.json"))
        ]
        if pairs:
            d, _ = paired(pairs)
            print(f"| {name} | {what} | {' '.join(str(a['seed']) for a, _ in pairs)} | {d} |")
    for name, what in ABLATIONS[1:2]:  # checked on the second base after the default base's held-out result
        pairs = [
            (a, b)
            for s in SEEDS
            if (a := load(f"{HERE}ps1-{name}-s{s}.json")) and (b := load(f"{HERE}ps1-dw12qa-s{s}.json"))
        ]
        if pairs:
            d, _ = paired(pairs)
            print(f"| {name}, pretrain.seed=1 | {what} | {' '.join(str(a['seed']) for a, _ in pairs)} | {d} |")
    if (again := load(f"{HERE}default-sleep-s0.json")) and (first := load(f"{HERE}dw12qa-s0.json")):
        same = again["matrix"] == first["matrix"]
        print()
        print(
            f"`sleep` seed 0 with no --set, at the new defaults: accuracy matrix {'identical to' if same else 'DIFFERENT from'} the dw12qa run's."
        )


if __name__ == "__main__":
    main()
