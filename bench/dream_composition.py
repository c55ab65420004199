"""Is there a label for two-hop questions that beats Seeding's teacher? Ways a dream could compose one.

    .venv/bin/python bench/dream_composition.py RUN.json [--workdir DIR] --json OUT [--md TABLE.md]
    .venv/bin/python bench/dream_composition.py --summarise OUT... [--md TABLE.md]   # pooled over runs
    .venv/bin/python bench/dream_composition.py [RUN.json] --direct [LABEL=]BASE... [--json OUT]  # bases only (RUN's world)

A multi-hop probe asks after a new person X's mentor M ("What is the home city of X's mentor?"): hop 1 is in
the wake document about X, hop 2 is memory of M (a day-0 person, or one a wake day introduced). Seeding
distils the answer from its teacher, the base reading X's document. Dreaming can only beat that on
multi-hop if it writes a truer label, so for every (X, M, hop relation) of days 1..5 this scores, greedily,
the ways a dream could compose one on the checkpoint the day starts from (day 1: the base; day d: cycle
d-1's last checkpoint of the run, dreamed or seeded, every expert on) and on the base:

- ``direct``: the reader answers the two-hop question with X's document in its prompt (the base is
  Seeding's teacher);
- ``decomposed``: the reader answers "Who is the mentor of X?" from the document, then the checkpoint
  answers the hop relation of the mentor it named closed-book (two calls, composed by the caller);
- ``hop 2, true mentor``: the closed-book half alone, asked about the true M;
- ``chain``: the reader writes the two-hop implication ("Implication: X's mentor" then greedy), and the
  chain counts as right when it contains the true answer (the one call that composes in the model);
- ``doc + recall``: the reader answers with X's document and the checkpoint's own recollection of M
  (greedy continuation of M's name) in its prompt; ``doc + true bio``: with a true bio of M instead.

Rows are split by the mentor's origin (day 0, or a wake day). Nothing is trained. Written at stop 29
(bench/README.md); the world's templates are used to ask and to score, as the evaluation probes are.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from sleepcycle.bench import run_workdir  # noqa: E402
from sleepcycle.config import Config  # noqa: E402
from sleepcycle.evaluate import is_correct  # noqa: E402
from sleepcycle.experts import load_checkpoint  # noqa: E402
from sleepcycle.generate import HFGenerator, complete  # noqa: E402
from sleepcycle.world import (  # noqa: E402
    DOC_PREFIX,
    HOP_RELATIONS,
    QA_PROMPT,
    RELATIONS,
    WRITE_IMPLICATION,
    Fact,
    World,
    render,
)

WAYS = ("direct", "decomposed", "hop 2, true mentor", "chain", "doc + recall", "doc + true bio")


def context(*docs: str) -> str:
    return "".join(DOC_PREFIX.format(d=d) for d in docs)


def ask(template: str, subject: str) -> str:
    return QA_PROMPT.format(q=render(template, subject))


def items_of(world: World, day: int) -> list[dict]:
    """(X, M, hop relation, true answer, M's origin) for every new person of `day` and hop relation."""
    out = []
    for f in world.facts_of_day(day):
        if f.relation != "mentor" or f.kind != "new_entity":
            continue
        first = min(x.day for x in world.facts if x.subject == f.value)
        for hop in HOP_RELATIONS:
            answer = world.current(f.value, hop.name, day)
            if answer:
                out.append({"x": f.subject, "m": f.value, "hop": hop.name, "answer": answer, "origin": first})
    return out


def direct_prompt(doc: str, it: dict) -> str:
    """The two-hop question about `it` with X's document in the prompt: what Seeding's teacher answers."""
    return context(doc) + ask(RELATIONS[it["hop"]].hop_probe[0], it["x"])


def score_day(world: World, day: int, checkpoint: Path, base_dir: Path, rng: random.Random) -> list[dict]:
    """One row per item and reader: whether each way gets the true answer."""
    bank, tok, _ = load_checkpoint(checkpoint)
    model = bank.model.eval()
    base = load_checkpoint(base_dir)[0].model.eval() if checkpoint != base_dir else model
    gen = HFGenerator(tok.eos_token_id, tok.pad_token_id)
    run = lambda m, prompts, n=8: complete(gen, m, tok, prompts, n)  # noqa: E731
    docs = {d.subject: d.text for d in world.documents(day)}
    items = items_of(world, day)
    mentors = sorted({it["m"] for it in items})
    true_bio = {
        m: world.bio(rng, m, [Fact(0, m, r, v, "base") for r in RELATIONS if (v := world.current(m, r, day))])
        for m in mentors
    }
    recall = {m: f"{m} {r.strip()}".split("\n")[0] for m, r in zip(mentors, run(model, mentors, 48))}
    hop_q = {it["hop"]: RELATIONS[it["hop"]].hop_probe[0] for it in items}
    closed = lambda names: run(model, [ask(RELATIONS[it["hop"]].ask[0], n) for it, n in zip(items, names)])  # noqa: E731
    true_hop2 = closed([it["m"] for it in items])
    rows = []
    for reader_name, reader in (("base", base), ("checkpoint", model)):
        doc = [context(docs[it["x"]]) for it in items]
        direct = run(reader, [direct_prompt(docs[it["x"]], it) for it in items])
        named = run(reader, [d + ask("Who is the mentor of {s}?", it["x"]) for d, it in zip(doc, items)])
        chain_prefix = [RELATIONS[it["hop"]].implication.split(" {m}")[0] for it in items]
        chain = run(
            reader, [d + WRITE_IMPLICATION + " " + render(p, it["x"]) for d, p, it in zip(doc, chain_prefix, items)], 16
        )
        with_recall = run(
            reader, [context(docs[it["x"]], recall[it["m"]]) + ask(hop_q[it["hop"]], it["x"]) for it in items]
        )
        with_bio = run(
            reader, [context(docs[it["x"]], true_bio[it["m"]]) + ask(hop_q[it["hop"]], it["x"]) for it in items]
        )
        decomposed = closed([n.strip() for n in named])
        for i, it in enumerate(items):
            ok = lambda a, answer=it["answer"]: is_correct(a, answer)  # noqa: E731
            rows.append(
                {
                    "day": day,
                    "reader": reader_name,
                    **it,
                    "direct": ok(direct[i]),
                    "decomposed": ok(decomposed[i]),
                    "hop 2, true mentor": ok(true_hop2[i]),
                    "chain": it["answer"] in chain[i],
                    "doc + recall": ok(with_recall[i]),
                    "doc + true bio": ok(with_bio[i]),
                    "hop 1": is_correct(named[i], it["m"]),
                    "recall holds the answer": it["answer"] in recall[it["m"]],
                }
            )
    return rows


def direct_accuracy(world: World, base_dir: Path, days: int) -> dict:
    """The base's direct in-context two-hop accuracy over days 1..`days` (Seeding's teacher's label), by the
    mentor's origin: what a pretraining change (`pretrain.fresh_mentors`, `pretrain.seed`) does to it."""
    bank, tok, _ = load_checkpoint(base_dir)
    model = bank.model.eval()
    gen = HFGenerator(tok.eos_token_id, tok.pad_token_id)
    right: dict[str, list[bool]] = defaultdict(list)
    for day in range(1, days + 1):
        docs = {d.subject: d.text for d in world.documents(day)}
        items = items_of(world, day)
        prompts = [direct_prompt(docs[it["x"]], it) for it in items]
        for it, out in zip(items, complete(gen, model, tok, prompts, 8)):
            for key in ("all", "day 0" if it["origin"] == 0 else "wake day"):
                right[key].append(is_correct(out, it["answer"]))
    return {key: {"n": len(v), "direct": sum(v) / len(v)} for key, v in sorted(right.items())}


def summary(rows: list[dict]) -> dict:
    groups = defaultdict(list)
    for r in rows:
        origin = "day 0" if r["origin"] == 0 else "wake day"
        for key in (origin, "all"):
            groups[(r["reader"], key)].append(r)
    return {
        f"{reader} | {origin}": {
            "n": len(rs),
            **{w: sum(r[w] for r in rs) / len(rs) for w in (*WAYS, "hop 1", "recall holds the answer")},
        }
        for (reader, origin), rs in sorted(groups.items())
    }


def table(result: dict) -> str:
    cols = (*WAYS, "hop 1", "recall holds the answer")
    lines = ["| reader | mentor from | n | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 3)]
    for key, m in result["summary"].items():
        reader, origin = key.split(" | ")
        lines.append(f"| {reader} | {origin} | {m['n']} | " + " | ".join(f"{m[c]:.2f}" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?", help="a sleep-nodream (or sleep) bench run's JSON")
    ap.add_argument("--workdir", type=Path, help="its checkpoints (default: the workdir the run recorded)")
    ap.add_argument("--summarise", nargs="+", type=Path, metavar="OUT", help="pool earlier --json outputs")
    ap.add_argument("--direct", nargs="+", metavar="[LABEL=]BASE", help="only these bases' direct accuracy")
    ap.add_argument("--md", type=Path, help="write the table here too")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.run is not None and not a.run.is_file():
        ap.error(f"{a.run}: no such run JSON")
    if a.direct:
        run = json.loads(a.run.read_text()) if a.run else {"config": {}, "days": Config().world.days}
        world = World(Config(**run["config"]).world)
        bases = dict(b.split("=", 1) if "=" in b else (b, b) for b in a.direct)
        if missing := [b for b in bases.values() if not (Path(b) / "config.json").is_file()]:
            ap.error(f"not a model checkpoint (no config.json): {', '.join(missing)}")
        result = {label: direct_accuracy(world, Path(b), run["days"]) for label, b in bases.items()}
        text = "| base | mentor from | n | direct |\n|---|---|---|---|\n" + "".join(
            f"| {b} | {k} | {m['n']} | {m['direct']:.2f} |\n" for b, r in result.items() for k, m in r.items()
        )
        print(text, end="")
        if a.json:
            a.json.write_text(json.dumps(result, indent=1))
        return result
    if a.summarise:
        outs = [json.loads(p.read_text()) for p in a.summarise]
        rows = [r for o in outs for r in o["rows"]]
        result = {"runs": [f"{o['method']}-s{o['seed']}" for o in outs], "summary": summary(rows)}
    else:
        if a.run is None:
            ap.error("a bench run's JSON, or --summarise")
        run = json.loads(a.run.read_text())
        workdir = a.workdir or run_workdir(run)
        world = World(Config(**run["config"]).world)
        base_dir = Path(run["champion"]["uri"])
        rng = random.Random(f"composition-{run['seed']}")
        rows = []
        for day in range(1, run["days"] + 1):
            last = workdir / f"cycle-{day - 1}"
            checkpoint = base_dir if day == 1 else last / "dreamed" if (last / "dreamed").is_dir() else last / "seeded"
            rows += score_day(world, day, checkpoint, base_dir, rng)
        result = {"method": run["method"], "seed": run["seed"], "summary": summary(rows), "rows": rows}
    text = table(result)
    print(text, end="")
    if a.md:
        a.md.write_text(text)
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
