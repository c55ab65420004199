"""How well a pretrained base answers its own day-0 knowledge in wordings it never saw: the bound on held-out.

    .venv/bin/python bench/heldout_bound.py [--set pretrain.seed=1] [--json OUT] [--md TABLE.md] [--runs RUN.json ...]

Day-0 facts are the knowledge the base learnt best: pretraining asks about them, in the ``ask`` and ``probe``
wordings, for thousands of steps. The held-out wordings (`world.RELATIONS[...].heldout`) never appear in any
training text, so a day-0 fact asked in them measures what the base can read, apart from anything a sleep
cycle does. The bench's held-out probes ask about the wake days' facts in those same wordings; a cycle that
consolidates a fact as well as pretraining did can reach this accuracy closed-book, and no consolidation that
never writes those wordings is expected to pass it. Each template is scored on every day-0 fact of its
relation, closed-book and with the person's day-0 bio in the prompt (the in-context reading). Nothing is
trained; the base comes from the pretraining cache (`sleepcycle pretrain`). With ``--runs``, each bench
result (written since stop 35, with ``full_by_template``) adds a column: its last model's right/asked on the
wake days' held-out probes in each wording, beside the base's day-0 rate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from sleepcycle import models  # noqa: E402
from sleepcycle.config import load_config  # noqa: E402
from sleepcycle.evaluate import Question, accuracy  # noqa: E402
from sleepcycle.pretrain import pretrain  # noqa: E402
from sleepcycle.world import RELATIONS, World, aliases_for, render  # noqa: E402

WORDINGS = ("probe", "heldout")


def day0_questions(world: World, wording: str, with_bio: bool) -> dict[str, list[Question]]:
    """Every day-0 fact asked in every template of `wording`, keyed by template; with `with_bio`, each
    question carries one day-0 bio of its subject (the pretraining text) as its document."""
    bios = {d.subject: d.text for d in world.base_documents(1)} if with_bio else {}
    out: dict[str, list[Question]] = {}
    for f in world.facts_of_day(0):
        rel = RELATIONS[f.relation]
        answer = world.current(f.subject, f.relation, 0)
        if answer is None:
            continue
        docs = (bios[f.subject],) if with_bio and f.subject in bios else ()
        for t in getattr(rel, wording):
            q = Question(render(t, f.subject), answer, tuple(aliases_for(f.relation, answer)), wording, docs)
            out.setdefault(t, []).append(q)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="default")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--md", type=Path)
    ap.add_argument("--runs", type=Path, nargs="*", default=[], help="bench results to set beside, per wording")
    args = ap.parse_args(argv)
    runs = {}  # read first: a result that cannot be compared stops the script before any scoring
    for path in args.runs:
        if not path.is_file():
            sys.exit(f"{path}: no such bench result")
        run = json.loads(path.read_text())
        if "full_by_template" not in run:
            sys.exit(f"{path}: no full_by_template (a bench result written before stop 35); rerun it to compare")
        runs[f"{run['method']} s{run['seed']}"] = run["full_by_template"]["heldout"]
    cfg = load_config(args.profile, args.overrides)
    base = pretrain(cfg)
    model, tok = models.load(base.uri)
    world = World(cfg.world)
    kwargs = {"max_new_tokens": cfg.eval.max_new_tokens, "batch_size": cfg.eval.batch_size}
    rows = []
    for wording in WORDINGS:
        for with_bio in (False, True):
            for template, qs in day0_questions(world, wording, with_bio).items():
                acc, hits = accuracy(model, tok, qs, with_docs=with_bio, **kwargs)
                rows.append(
                    {"wording": wording, "template": template, "with_bio": with_bio, "n": len(qs), "correct": sum(hits)}
                )
    summary = {}
    for wording in WORDINGS:
        for with_bio in (False, True):
            sel = [r for r in rows if r["wording"] == wording and r["with_bio"] == with_bio]
            n, c = sum(r["n"] for r in sel), sum(r["correct"] for r in sel)
            summary[f"{wording}/{'bio' if with_bio else 'closed'}"] = {"n": n, "ACC": c / n if n else float("nan")}
    # The bench's full held-out set (`World.every_probe`, days 1..N) mixes relations and templates in its
    # own proportions: weight each template's day-0 rate by how often the wake days ask in it.
    rate = {r["template"]: r["correct"] / r["n"] for r in rows if r["wording"] == "heldout" and not r["with_bio"]}
    wake = [p for d in range(1, cfg.world.days + 1) for p in world.every_probe(d) if p.kind == "heldout"]
    summary["heldout/wake mix at day-0 rates"] = {
        "n": len(wake),
        "ACC": sum(rate[p.template] for p in wake) / len(wake),
    }
    result = {
        "base": base.uri,
        "digest": base.digest,
        "config": cfg.model_dump(mode="json"),
        "summary": summary,
        "rows": rows,
    }
    extra = "".join(f" {name}, wake days |" for name in runs)
    lines = [
        f"| wording | template | day 0, closed-book | day 0, with the bio |{extra}",
        "|" + "---|" * (4 + len(runs)),
    ]
    for wording in WORDINGS:
        for template in dict.fromkeys(r["template"] for r in rows if r["wording"] == wording):
            cells = [next(r for r in rows if r["template"] == template and r["with_bio"] == b) for b in (False, True)]
            wake_cells = "".join(
                f" {'/'.join(map(str, t[template])) if template in t else ''} |" for t in runs.values()
            )
            counts = " | ".join(f"{r['correct']}/{r['n']}" for r in cells)
            lines.append(f"| {wording} | {template} | {counts} |{wake_cells}")
    for key, v in summary.items():
        lines.append(
            f"| {key.split('/')[0]} | all ({key.split('/')[1]}) | {v['ACC']:.3f} of {v['n']} | |" + " |" * len(runs)
        )
    for name, by_template in runs.items():
        right, asked = (sum(v[i] for v in by_template.values()) for i in (0, 1))
        summary[f"heldout/{name}"] = {"n": asked, "ACC": right / asked}
        lines.append(f"| heldout | all ({name}, wake days) | {right / asked:.3f} of {asked} | |" + " |" * len(runs))
    table = "\n".join(lines)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.md:
        args.md.write_text(table + "\n")


if __name__ == "__main__":
    main()
