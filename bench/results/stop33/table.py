"""Rebuild table.md: the bench at the stop-33 defaults, where Knowledge Seeding writes 32 questions a document
from 60 drafts (before: 16 from 30), with every ablation on five seeds.

Runs: `sleepcycle bench --method M --days 5 --seed S --json OUT`, seeds 0-4. The default base's `sleep` and
`sleep-nodream` rows are stop 32's control runs (bench/results/dream-stop32/sleep-q32-*, nodream-q32-*,
made with `--set distill.questions_per_doc=32 --set distill.question_drafts=60`, today's defaults); the
seed-0 runs with no --set at this stop (default-*) check that they reproduce. The second base
(``--set pretrain.seed=1``) and the ablations (`q32-M`, with the same two sets) ran here. Before-stop-33
rows: bench/results/routing/at-fb3d395/ (default base), dream-stop30/ps1-nodream-* and
dream-stop32/ps1-dw12qa-* (second base). Δ is paired per seed, mean ± sd; "higher" counts seeds above.

Run from the repository root: python bench/results/stop33/table.py > bench/results/stop33/table.md"""

import json
import os
import statistics as st

HERE = "bench/results/stop33/"
S32 = "bench/results/dream-stop32/"
OLD = "bench/results/routing/at-fb3d395/"
RUNS = {  # row: path pattern
    "sft-replay": HERE + "sft-replay-s{s}.json",
    "sleep-nodream": S32 + "nodream-q32-s{s}.json",
    "sleep": S32 + "sleep-q32-s{s}.json",
    "sleep-nodream, second base": HERE + "ps1-nodream-q32-s{s}.json",
    "sleep, second base": HERE + "ps1-sleep-q32-s{s}.json",
    "sleep-nodream, 16 questions (before)": OLD + "sleep-nodream-s{s}.json",
    "sleep, 16 questions (before)": S32 + "dw12qa-s{s}.json",
    "sleep-nodream, 16 questions (before), second base": "bench/results/dream-stop30/ps1-nodream-s{s}.json",
    "sleep, 16 questions (before), second base": S32 + "ps1-dw12qa-s{s}.json",
    "sleep-nodream at 42k tokens a day (sleep's Seeding share)": HERE + "nodream-42k-s{s}.json",
    "sleep-nodream, distill.named_questions": HERE + "named-nodream-s{s}.json",
    "sleep, distill.named_questions": HERE + "named-sleep-s{s}.json",
    "sleep-nodream, distill.named_questions, second base": HERE + "ps1-named-nodream-s{s}.json",
    "sleep, distill.named_questions, second base": HERE + "ps1-named-sleep-s{s}.json",
}
PAIRS = [  # (a, b): a − b per seed
    ("sleep", "sleep-nodream"),
    ("sleep, second base", "sleep-nodream, second base"),
    ("sleep-nodream", "sleep-nodream, 16 questions (before)"),
    ("sleep-nodream, second base", "sleep-nodream, 16 questions (before), second base"),
    ("sleep", "sleep, 16 questions (before)"),
    ("sleep, second base", "sleep, 16 questions (before), second base"),
    ("sleep", "sft-replay"),
    ("sleep-nodream at 42k tokens a day (sleep's Seeding share)", "sleep-nodream"),
    ("sleep", "sleep-nodream at 42k tokens a day (sleep's Seeding share)"),
    ("sleep-nodream, distill.named_questions", "sleep-nodream"),
    ("sleep, distill.named_questions", "sleep"),
    ("sleep, distill.named_questions", "sleep-nodream, distill.named_questions"),
    ("sleep-nodream, distill.named_questions, second base", "sleep-nodream, second base"),
    ("sleep, distill.named_questions, second base", "sleep, second base"),
    ("sleep, distill.named_questions, second base", "sleep-nodream, distill.named_questions, second base"),
]
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


def ms(xs: list[float], sign: str = "") -> str:
    return f"{st.mean(xs):{sign}.3f}" + (f" ± {st.stdev(xs):.3f}" if len(xs) > 1 else "")


def runs(pattern: str) -> dict[int, dict]:
    return {s: r for s in SEEDS if (r := load(pattern.format(s=s)))}


def learn_s(run: dict) -> float:
    return sum(day["wall_clock_s"] for day in run["budget"]["days"])


def day_mean(run: dict, key: str) -> float:
    return st.mean(day[key] for day in run["budget"]["days"] if key in day)


def host(rs) -> str:
    return " ".join(sorted({r["machine"]["cpu_family_model"] for r in rs}))


def paired(a: dict[int, dict], b: dict[int, dict]) -> tuple[list[int], str, str]:
    seeds = sorted(set(a) & set(b))
    cells = " | ".join(ms([a[s]["metrics"][k] - b[s]["metrics"][k] for s in seeds], "+") for k in KEYS)
    up = [sum(a[s]["metrics"][k] > b[s]["metrics"][k] for s in seeds) for k in ("ACC", "heldout_ACC", "multihop_ACC")]
    return seeds, cells, " / ".join(map(str, up))


def main() -> None:
    print("| row | seeds | " + " | ".join(HEAD) + " | learn s (host) |")
    print("|" + "---|" * (len(HEAD) + 3))
    for name, pattern in RUNS.items():
        if rs := runs(pattern):
            cells = " | ".join(ms([r["metrics"][k] for r in rs.values()]) for k in KEYS)
            seeds = " ".join(map(str, rs))
            print(f"| {name} | {seeds} | {cells} | {ms([learn_s(r) for r in rs.values()])} ({host(rs.values())}) |")
    print()
    print("| a − b, paired per seed | seeds | " + " | ".join(HEAD) + " | a higher: ACC / held-out / multi-hop |")
    print("|" + "---|" * (len(HEAD) + 3))
    for a, b in PAIRS:
        ra, rb = runs(RUNS[a]), runs(RUNS[b])
        if set(ra) & set(rb):
            seeds, cells, up = paired(ra, rb)
            print(f"| {a} − {b} | {' '.join(map(str, seeds))} | {cells} | {up} |")
    print()
    print("| ablation − parent, paired per seed | what it changes | seeds | " + " | ".join(HEAD) + " | learn s |")
    print("|" + "---|" * (len(HEAD) + 4))
    for name, parent, what in ABLATIONS:
        ra, rb = runs(HERE + f"q32-{name}-s{{s}}.json"), runs(RUNS[parent])
        if set(ra) & set(rb):
            seeds, cells, _ = paired(ra, rb)
            learn = ms([learn_s(r) for r in ra.values()])
            print(f"| {name} − {parent} | {what} | {' '.join(map(str, seeds))} | {cells} | {learn} |")
    print()
    print("| Dreaming, mean over days and seeds | reward rate | dreams/s | distinct 2-grams | KL drift |")
    print("|---|---|---|---|---|")
    for name in ("sleep", "sleep, second base"):
        if rs := list(runs(RUNS[name]).values()):
            print(f"| {name} | " + " | ".join(f"{st.mean(day_mean(r, k) for r in rs):.3f}" for k in DREAM) + " |")
    for tag, ref in (("default-sleep", "sleep"), ("default-sleep-nodream", "sleep-nodream")):
        if (again := load(f"{HERE}{tag}-s0.json")) and (first := load(RUNS[ref].format(s=0))):
            same = again["matrix"] == first["matrix"] and again["metrics"] == first["metrics"]
            print()
            print(
                f"`{ref}` seed 0 with no --set at the stop-33 defaults: accuracy matrix and metrics "
                f"{'identical to' if same else 'DIFFERENT from'} the run with the two sets."
            )


if __name__ == "__main__":
    main()
