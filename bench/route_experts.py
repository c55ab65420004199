"""Entity-keyed expert routing (`sleepcycle.routing`) on the checkpoints a bench run left behind.

    .venv/bin/python bench/route_experts.py /tmp/sleepcycle-bench-sleep-nodream-4 --json out.json

Reads the run's last checkpoint (`cycle-T/seeded`, or `dreamed` when it exists) and scores every day's
probes twice: with every expert on (the bench's last matrix row, reproduced) and routed. Nothing is
trained. Checkpoints written since the cycles store their routing keys use those; older ones (stop 23's
runs) are keyed here with the entities of each day's documents, which is what a cycle now stores. The
bench itself now reports both rows (`matrices.all_experts`); this script re-reads runs made before that.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from sleepcycle.bench import PROBE_KINDS  # noqa: E402
from sleepcycle.config import load_config  # noqa: E402
from sleepcycle.evaluate import Question, accuracy  # noqa: E402
from sleepcycle.experts import load_checkpoint  # noqa: E402
from sleepcycle.routing import Router, entity_keys  # noqa: E402
from sleepcycle.world import QA_PROMPT, World  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path)
    ap.add_argument("--days", type=int, default=5)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    cfg = load_config("default")
    world = World(cfg.world)
    last = a.workdir / f"cycle-{a.days}"
    ckpt = last / "dreamed" if (last / "dreamed").is_dir() else last / "seeded"
    bank, tok, state = load_checkpoint(ckpt)
    for h in state["history"]:
        if "keys" not in h:  # written before the cycles stored them
            h["keys"] = entity_keys([d.text for d in world.documents(h["cycle"])])
    router = Router.from_state(state)
    models: dict = {}

    def model_for(route):
        if route not in models:
            with bank.using(list(route) if route else list(bank.active)):
                models[route] = bank.merged().eval()
        return models[route]

    rows: dict[str, dict[str, list[float]]] = {"all": {}, "routed": {}}
    for j in range(a.days + 1):
        probes = world.probes(j, as_of=a.days, limit=cfg.eval.probes_per_day)
        for key, kinds in PROBE_KINDS.items():
            qs = [Question(p.question, p.answer, p.aliases, p.kind) for p in probes if p.kind in kinds]
            if not qs:
                for r in rows.values():
                    r.setdefault(key, []).append(float("nan"))
                continue
            rows["all"].setdefault(key, []).append(accuracy(model_for(None), tok, qs)[0])
            hits = 0
            for route, idx in router.groups([QA_PROMPT.format(q=q.question) for q in qs]).items():
                hits += sum(accuracy(model_for(route), tok, [qs[i] for i in idx])[1])
            rows["routed"].setdefault(key, []).append(hits / len(qs))
    out = {"workdir": str(a.workdir), "checkpoint": str(ckpt), "rows": rows}
    for name, r in rows.items():
        print(name, " ".join(f"{x:.2f}" for x in r["matrix"]))
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
