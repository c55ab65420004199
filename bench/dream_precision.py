"""How many of a bench run's dreams are true, and whether Dreaming's scores tell the true ones apart.

    .venv/bin/python bench/dream_precision.py RUN.json [--workdir DIR] --json OUT
    .venv/bin/python bench/dream_precision.py --summarise OUT... [--md TABLE.md]   # pooled over runs

Every dream a finished `sleepcycle bench` run wrote (`cycle-i/dreamed/dreams.jsonl`) is checked against the
built-in world as of its day (`world.claims`, `World.holds`): *true* when every fact it states holds,
*garbled* when a sentence or question is in no wording of the world (garbled dreams count as not true).
Per kind and per stage (written; at or above ``dream.min_confidence`` when the run set it; kept; rewarded)
it gives the share that is true, and the AUC with which each of Dreaming's scores ranks true dreams over
the rest: the importance (selection), the reward (tau) and the teacher's confidence (`dream.verify`),
computed here on the run's seeded checkpoint for runs written before dreams carried it. Nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from sleepcycle.bench import run_workdir  # noqa: E402
from sleepcycle.config import Config  # noqa: E402
from sleepcycle.dream import Dream, verify  # noqa: E402
from sleepcycle.experts import load_checkpoint  # noqa: E402
from sleepcycle.manifests import Manifest  # noqa: E402
from sleepcycle.snapshot import read_documents  # noqa: E402
from sleepcycle.world import World, claims  # noqa: E402

SCORES = ("importance", "reward", "confidence")
KINDS = ("implication", "rewrite", "qa", "two-hop", "all")


def auc(rows: list[dict], score: str) -> float | None:
    """P(score of a true dream > score of one that is not), ties counted half; None without both."""
    pos = sorted(r[score] for r in rows if r["true"] and r[score] is not None)
    neg = sorted(r[score] for r in rows if not r["true"] and r[score] is not None)
    if not pos or not neg:
        return None
    import bisect

    wins = sum(
        bisect.bisect_left(neg, p) + 0.5 * (bisect.bisect_right(neg, p) - bisect.bisect_left(neg, p)) for p in pos
    )
    return wins / (len(pos) * len(neg))


def checked(run: dict, workdir: Path) -> list[dict]:
    """The run's dreams, each with its day, truth, garbling and the three scores."""
    world = World(Config(**run["config"]).world)
    snapshots = {Manifest.read(p).digest: p for p in (workdir / "snapshots").iterdir() if p.is_dir()}
    rows = []
    for day in range(1, run["days"] + 1):
        path = workdir / f"cycle-{day}" / "dreamed" / "dreams.jsonl"
        if not path.exists():  # the cycle that grew the model dreams nothing
            continue
        dreams = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        if any(d.get("confidence") is None for d in dreams):
            seeded = workdir / f"cycle-{day}" / "seeded"
            docs = read_documents(snapshots[Manifest.read(seeded).parents["snapshot"]])
            bank, tok, _ = load_checkpoint(seeded)
            objs = [as_dream(d) for d in dreams]
            verify(bank.model.eval(), tok, docs, objs)
            for d, o in zip(dreams, objs):
                d["confidence"] = o.confidence
        for d in dreams:
            said = claims(d["text"])
            rows.append(
                {
                    "day": day,
                    "kind": d["kind"],
                    "kept": d["kept"],
                    "garbled": said is None,
                    "true": said is not None and all(world.holds(c, day) for c in said),
                    "two_hop": "'s mentor " in d["text"] or " the mentor of " in d["text"],
                    **{s: d.get(s) for s in SCORES},
                }
            )
    return rows


def as_dream(row: dict) -> Dream:
    """A dreams.jsonl row as the `Dream` it was (a pair's prompt is its text up to the answer)."""
    if row["kind"] == "qa":
        cut = row["text"].index("\nAnswer:") + len("\nAnswer:")
        return Dream(row["doc"], "qa", row["text"][:cut], row["text"][cut:])
    return Dream(row["doc"], row["kind"], "", row["text"])


def stages(rows: list[dict], min_confidence: float | None) -> dict[str, list[dict]]:
    out = {"written": rows}
    if min_confidence is not None:
        out["verified"] = [r for r in rows if r["confidence"] is not None and r["confidence"] >= min_confidence]
    out["kept"] = [r for r in rows if r["kept"]]
    out["rewarded"] = [r for r in rows if r["reward"] == 1.0]
    return out


def measures(rows: list[dict], min_confidence: float | None) -> dict:
    """Per kind: true and garbled shares by stage, each score's AUC over the written dreams."""
    out = {}
    for kind in KINDS:
        sub = [r for r in rows if kind in ("all", r["kind"]) or (kind == "two-hop" and r["two_hop"])]
        out[kind] = {
            "stages": {
                stage: {
                    "n": len(rs),
                    "true": sum(r["true"] for r in rs) / len(rs) if rs else None,
                    "garbled": sum(r["garbled"] for r in rs) / len(rs) if rs else None,
                }
                for stage, rs in stages(sub, min_confidence).items()
            },
            "auc": {s: auc(sub, s) for s in SCORES},
        }
    return out


def table(result: dict) -> str:
    def pct(x):
        return "–" if x is None else f"{x:.2f}"

    names = list(next(iter(result["kinds"].values()))["stages"])
    head = (
        "| kind | " + " | ".join(f"{s} (n, true)" for s in names) + " | AUC importance | AUC reward | AUC confidence |"
    )
    lines = [head, "|" + "---|" * (len(names) + 4)]
    for kind, m in result["kinds"].items():
        cells = [f"{m['stages'][s]['n']}, {pct(m['stages'][s]['true'])}" for s in names]
        lines.append(f"| {kind} | " + " | ".join(cells) + " | " + " | ".join(pct(m["auc"][s]) for s in SCORES) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?", help="the bench run's JSON")
    ap.add_argument("--workdir", type=Path, help="its checkpoints (default: the workdir the run recorded)")
    ap.add_argument("--summarise", nargs="+", type=Path, metavar="OUT", help="pool earlier --json outputs")
    ap.add_argument("--md", type=Path, help="write the table here too")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.summarise:
        outs = [json.loads(p.read_text()) for p in a.summarise]
        threshold = {o["min_confidence"] for o in outs}
        if len(threshold) > 1:
            ap.error(f"runs with different dream.min_confidence: {sorted(threshold, key=str)}")
        rows = [r for o in outs for r in o["dreams"]]
        result = {"runs": [f"{o['method']}-s{o['seed']}" for o in outs], "kinds": measures(rows, threshold.pop())}
    else:
        if a.run is None:
            ap.error("a bench run's JSON, or --summarise")
        run = json.loads(a.run.read_text())
        workdir = a.workdir or run_workdir(run)
        threshold = run["config"]["dream"].get("min_confidence")
        rows = checked(run, workdir)
        result = {
            "method": run["method"],
            "seed": run["seed"],
            "min_confidence": threshold,
            "kinds": measures(rows, threshold),
            "dreams": rows,
        }
    text = table(result)
    print(text, end="")
    if a.md:
        a.md.write_text(text)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
