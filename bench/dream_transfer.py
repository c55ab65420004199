"""What a perfect dream of each kind would teach: true statements against true question-answer pairs.

    .venv/bin/python bench/dream_transfer.py CHECKPOINT... [--steps 20] [--lr 3e-3] --json OUT

For each seeded (or dreamed) checkpoint a bench run left (`/tmp/sleepcycle-bench-M-S/cycle-D/seeded`),
the closed-book probes of days 1..D that it answers wrong (multi-hop, and single facts) are written as the
dreams Dreaming hopes for, with their true answers from the world: a statement in the documents' wordings
(the two-hop implication "X's mentor M lives in C" for a multi-hop probe) or the question-answer pairs in
every ``ask`` wording (never the probe's own wording). The newest expert learns each arm alone, as
consolidation would (SFT, `dream.lr`, batch 8), from the same checkpoint; the table gives how many of the
wrong probes each arm puts right and what it does to the probes that were right. The world writes the
dreams here, so this is an upper bound on what each dream kind can carry into closed-book answers, not a
Dreaming run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from sleepcycle.config import load_config  # noqa: E402
from sleepcycle.evaluate import Question, answers, is_correct  # noqa: E402
from sleepcycle.experts import load_checkpoint  # noqa: E402
from sleepcycle.trainer import Example, train  # noqa: E402
from sleepcycle.world import QA_PROMPT, RELATIONS, World, render  # noqa: E402

ARMS = ("statement", "qa", "none")
KINDS = ("multihop", "fact")


def dreams_for(world: World, probe, day: int, arm: str) -> list[Example]:
    """The perfect dreams of `arm` about `probe` (its true answer as of `day`)."""
    rel = RELATIONS[probe.relation]
    if arm == "none":
        return []
    if probe.kind == "multihop":
        mentor = world.current(probe.subject, "mentor", day)
        if arm == "statement":
            return [Example("", render(rel.implication, probe.subject, probe.answer, m=mentor))]
        return [Example(QA_PROMPT.format(q=render(t, probe.subject)), " " + probe.answer) for t in rel.hop_ask]
    if arm == "statement":
        return [Example("", render(t, probe.subject, probe.answer)) for t in rel.doc]
    return [Example(QA_PROMPT.format(q=render(t, probe.subject)), " " + probe.answer) for t in rel.ask]


def correct(model, tok, probes) -> list[bool]:
    qs = [Question(p.question, p.answer) for p in probes]
    return [is_correct(a, q.answer) for a, q in zip(answers(model, tok, qs), qs)]


def transfer(checkpoint: Path, world: World, kind: str, steps: int, lr: float) -> dict:
    """Per arm: the wrong probes of `kind` put right, and the right ones lost, after learning that arm."""
    _, _, state = load_checkpoint(checkpoint)
    day = state["cycle"]
    probes = [p for d in range(1, day + 1) for p in world.probes(d, as_of=day) if p.kind == kind]
    out = {"checkpoint": str(checkpoint), "day": day, "kind": kind, "probes": len(probes), "arms": {}}
    for arm in ARMS:
        bank, tok, state = load_checkpoint(checkpoint)  # every arm from the same weights
        newest = state["history"][-1]["expert"]
        before = correct(bank.model.eval(), tok, probes)
        examples = [e for p, ok in zip(probes, before) if not ok for e in dreams_for(world, p, day, arm)]
        if examples:
            bank.trainable = newest
            for param in bank.parameters(newest):
                param.requires_grad = True
            train(bank.model, tok, examples, steps=steps, batch_size=8, lr=lr, params=bank.parameters(newest))
        after = correct(bank.model.eval(), tok, probes)
        out["arms"][arm] = {
            "right_before": sum(before),
            "wrong_put_right": sum(a and not b for a, b in zip(after, before)),
            "right_lost": sum(b and not a for a, b in zip(after, before)),
            "dreams": len(examples),
        }
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| checkpoint | day | probes | arm | right before | wrong put right | right lost |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for arm, a in r["arms"].items():
            wrong = r["probes"] - a["right_before"]
            name = "/".join(Path(r["checkpoint"]).parts[-3:])
            lines.append(
                f"| {name} | {r['day']} | {r['kind']} {r['probes']} | {arm} | {a['right_before']} | "
                f"{a['wrong_put_right']}/{wrong} | {a['right_lost']}/{a['right_before']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--profile", default="default", help="the config whose world the bench run used")
    ap.add_argument("--set", action="append", default=[], help="config override of that run (repeatable)")
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=None, help="default: the config's dream.lr")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    a = ap.parse_args(argv)
    cfg = load_config(a.profile, a.set)
    world = World(cfg.world)
    rows = [transfer(c, world, k, a.steps, a.lr or cfg.dream.lr) for c in a.checkpoints for k in a.kinds]
    text = table(rows)
    print(text, end="")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    if a.md:
        a.md.write_text(text)
    return rows


if __name__ == "__main__":
    main()
