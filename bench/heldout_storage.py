"""How a finished run's last model reads what it knows, by how each fact was learnt: the held-out gap per source.

    .venv/bin/python bench/heldout_storage.py RUN.json [--workdir DIR] [--json OUT] [--md TABLE.md]

`heldout_bound.py` scores the pretrained base on its own day-0 facts in the held-out wordings; this scores a
bench run's last checkpoint (`cycle-N/dreamed`, or `seeded` without Dreaming, answered as the bench answers:
routed) on every fact of every day in every wording a relation has: the ``ask`` wordings (the only ones a
sleep cycle writes), the ``probe`` wordings (pretraining asks them about day-0 people only) and the
``heldout`` wordings (no training text has them). Facts are grouped by how they were learnt:

- ``day0/qa``: a day-0 fact of a person pretraining asked about (`pretrain.qa_fraction` of them);
- ``day0/bios``: a day-0 fact of a person pretraining knew from bios alone, never asked about;
- ``new_entity``, ``new_fact``, ``update``: the wake days' facts, which the sleep cycles learnt.

Day-0 facts are kept only for people no wake document is about (routing answers those through the
experts) and only where no update replaced them. Beside each group's rate in each wording the table gives
the held-out rate of the facts the model answers in *every* ask and probe wording: what a fact it surely
knows is read at in wordings it never saw. That separates "not stored" from "stored, but only readable in
the wordings it was learnt in". The wake days' held-out answers must equal the run's own `full_by_template`
tally; if they do not, the checkpoint is not the run's and the script stops without writing anything.
Nothing is trained; about a minute per run on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from sleepcycle.bench import run_workdir  # noqa: E402
from sleepcycle.config import Config  # noqa: E402
from sleepcycle.evaluate import Question  # noqa: E402
from sleepcycle.pretrain import Corpus  # noqa: E402
from sleepcycle.routing import RoutedModel, routed_accuracy  # noqa: E402
from sleepcycle.world import RELATIONS, World, aliases_for, render  # noqa: E402

WORDINGS = ("ask", "probe", "heldout")
GROUPS = ("day0/qa", "day0/bios", "new_entity", "new_fact", "update")


def fact_rows(world: World, cfg: Config, days: int) -> list[dict]:
    """One row per (fact, wording, template): the fact's group (`GROUPS`), subject, relation, template and the
    question asked as of day `days` (the answer is the fact's value then)."""
    asked = set(Corpus(world, cfg).qa_people)
    woken = {f.subject for d in range(1, days + 1) for f in world.facts_of_day(d)}
    rows = []
    for day in range(days + 1):
        for f in world.facts_of_day(day):
            answer = world.current(f.subject, f.relation, days)
            if answer is None:
                continue
            if day == 0:
                if f.subject in woken or world.current(f.subject, f.relation, 0) != answer:
                    continue
                group = "day0/qa" if f.subject in asked else "day0/bios"
            else:
                group = f.kind
            rel = RELATIONS[f.relation]
            for wording in WORDINGS:
                for t in getattr(rel, wording):
                    q = Question(render(t, f.subject), answer, tuple(aliases_for(f.relation, answer)), wording, ())
                    rows.append({"group": group, "subject": f.subject, "relation": f.relation, "wording": wording,
                                 "template": t, "question": q})  # fmt: skip
    return rows


def tabulate(rows: list[dict]) -> dict:
    """From scored rows (each with ``hit``): [right, asked] per group and wording, per group and held-out
    template, and per group over the facts right in every ask and probe wording (``known``: [facts, held-out
    right, held-out asked])."""
    by_wording: dict[str, dict[str, list[int]]] = {g: {w: [0, 0] for w in WORDINGS} for g in GROUPS}
    by_template: dict[str, dict[str, list[int]]] = {}
    facts: dict[tuple[str, str, str], dict[str, list[int]]] = {}
    for r in rows:
        tally = by_wording[r["group"]][r["wording"]]
        tally[0] += r["hit"]
        tally[1] += 1
        if r["wording"] == "heldout":
            t = by_template.setdefault(r["template"], {g: [0, 0] for g in GROUPS})[r["group"]]
            t[0] += r["hit"]
            t[1] += 1
        facts.setdefault((r["group"], r["subject"], r["relation"]), {w: [] for w in WORDINGS})[r["wording"]].append(
            r["hit"]
        )
    known = {g: [0, 0, 0] for g in GROUPS}
    for (group, _, _), hits in facts.items():
        if hits["ask"] and hits["probe"] and all(hits["ask"]) and all(hits["probe"]):
            known[group][0] += 1
            known[group][1] += sum(hits["heldout"])
            known[group][2] += len(hits["heldout"])
    return {"by_wording": by_wording, "by_template": by_template, "known": known}


def _rate(right: int, asked: int) -> str:
    return f"{right}/{asked} ({right / asked:.3f})" if asked else "—"


def table(tab: dict) -> str:
    lines = ["| wording | " + " | ".join(GROUPS) + " |", "|" + "---|" * (len(GROUPS) + 1)]
    for w in WORDINGS:
        lines.append(f"| {w} | " + " | ".join(_rate(*tab["by_wording"][g][w]) for g in GROUPS) + " |")
    known = tab["known"]
    lines.append(
        "| held-out, of the facts right in every ask and probe wording | "
        + " | ".join(f"{_rate(*known[g][1:])}, {known[g][0]} facts" if known[g][0] else "—" for g in GROUPS)
        + " |"
    )
    for t, cells in tab["by_template"].items():
        lines.append(f"| held-out: {t} | " + " | ".join(_rate(*cells[g]) for g in GROUPS) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="the bench run's JSON")
    ap.add_argument("--workdir", type=Path, help="its checkpoints (default: the workdir the run recorded)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    a = ap.parse_args(argv)
    run = json.loads(a.run.read_text())
    cfg, days = Config(**run["config"]), run["days"]
    workdir = a.workdir or run_workdir(run)
    ckpt = workdir / f"cycle-{days}" / "dreamed"
    ckpt = ckpt if ckpt.is_dir() else workdir / f"cycle-{days}" / "seeded"
    if not ckpt.is_dir():
        sys.exit(f"{workdir}: no cycle-{days} checkpoint (pass the run's --workdir)")
    world = World(cfg.world)
    answerer, tok = RoutedModel.from_config(ckpt, cfg)  # as the bench answers its probes
    rows = fact_rows(world, cfg, days)
    _, hits = routed_accuracy(
        answerer, tok, [r.pop("question") for r in rows], max_new_tokens=cfg.eval.max_new_tokens,
        batch_size=cfg.eval.batch_size,
    )  # fmt: skip
    for r, hit in zip(rows, hits):
        r["hit"] = int(hit)
    tab = tabulate(rows)
    # the wake groups' held-out questions are the bench's full held-out set: the same answers, or these are
    # not the run's weights (another run of the same method and seed wrote there since) and nothing is written
    full = run.get("full_by_template", {}).get("heldout")
    wake = [sum(tab["by_template"][t][g][i] for t in tab["by_template"] for g in GROUPS[2:]) for i in (0, 1)]
    recorded = [sum(v[i] for v in full.values()) for i in (0, 1)] if full else wake
    if wake != recorded:
        sys.exit(
            f"{ckpt}: answers {wake[0]}/{wake[1]} of the wake days' held-out probes where {a.run} recorded "
            f"{recorded[0]}/{recorded[1]}: not this run's checkpoint"
        )
    text = table(tab)
    print(text, end="")
    out = {"run": str(a.run), "method": run["method"], "seed": run["seed"], "checkpoint": str(ckpt), **tab}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    if a.md:
        a.md.write_text(text)
    return out


if __name__ == "__main__":
    main()
