"""Expert routing (`sleepcycle.routing`) re-read on the checkpoints a finished bench run left behind.

    .venv/bin/python bench/route_experts.py RUN.json [--workdir DIR] [--modes all newest confidence] --json OUT

For every cycle's checkpoint of the run (`cycle-i/dreamed`, or `seeded` without Dreaming) it scores every
day's probes once per routing mode and gives each mode's full accuracy matrices and metrics, read against
the run's own in-context ceilings: ``all`` (every expert, the paper), ``newest`` (`distill.routing_choice`
newest) and ``confidence``. Nothing is trained, so the modes differ only in who answers: the paired
comparison of routing choices on the same weights. Checkpoints written before the cycles stored their
routing keys (stop 23) are keyed with each day's documents, which is what a cycle now stores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from sleepcycle.bench import PROBE_KINDS, _accuracy_metrics, questions  # noqa: E402
from sleepcycle.config import Config  # noqa: E402
from sleepcycle.experts import load_checkpoint  # noqa: E402
from sleepcycle.routing import RoutedModel, Router, entity_keys, routed_accuracy  # noqa: E402
from sleepcycle.world import World  # noqa: E402

MODES = ("all", "newest", "confidence")


def answerer_at(checkpoint: Path, world: World) -> tuple[RoutedModel, object]:
    bank, tok, state = load_checkpoint(checkpoint)
    for h in state.get("history", []):
        if "keys" not in h:  # written before the cycles stored them
            h["keys"] = entity_keys([d.text for d in world.documents(h["cycle"])])
    return RoutedModel(bank.merged().eval(), Router.from_state(state), bank), tok


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="the bench run's JSON")
    ap.add_argument("--workdir", type=Path, help="its checkpoints (default /tmp/sleepcycle-bench-METHOD-SEED)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    run = json.loads(a.run.read_text())
    cfg = Config(**run["config"])
    days, world = run["days"], World(cfg.world)
    workdir = a.workdir or Path(f"/tmp/sleepcycle-bench-{run['method']}-{run['seed']}")
    first = {"matrix": run["matrix"][0], **{k: run["matrices"][k][0] for k in PROBE_KINDS if k != "matrix"}}
    rows: dict[str, list[dict]] = {m: [first] for m in a.modes}  # row 0: the champion before any sleep
    kwargs = {"max_new_tokens": cfg.eval.max_new_tokens, "batch_size": cfg.eval.batch_size}
    for i in range(1, days + 1):
        ckpt = workdir / f"cycle-{i}" / "dreamed"
        ckpt = ckpt if ckpt.is_dir() else workdir / f"cycle-{i}" / "seeded"
        answerer, tok = answerer_at(ckpt, world)
        flat = RoutedModel(answerer.all)
        for mode in a.modes:
            answerer.choice = mode if mode != "all" else "newest"
            row: dict[str, list[float]] = {k: [] for k in PROBE_KINDS}
            for j in range(days + 1):
                qs = questions(world, j, as_of=i, limit=cfg.eval.probes_per_day)
                for key, kinds in PROBE_KINDS.items():
                    sel = [q for q in qs if q.kind in kinds]
                    row[key].append(routed_accuracy(flat if mode == "all" else answerer, tok, sel, **kwargs)[0])
            rows[mode].append(row)
        print(f"cycle {i}: " + "  ".join(f"{m} {sum(r[-1]['matrix'][1:]) / days:.3f}" for m, r in rows.items()))
    by_kind = run["in_context_ceilings_by_kind"]
    out = {
        "run": str(a.run),
        "method": run["method"],
        "seed": run["seed"],
        "workdir": str(workdir),
        "modes": {
            m: {"matrix": [r["matrix"] for r in rs], "metrics": _accuracy_metrics(rs, by_kind)}
            for m, rs in rows.items()
        },
    }
    for m, v in out["modes"].items():
        met = v["metrics"]
        print(
            f"{m:11s} ACC {met['ACC']:.3f}  BWT {met['BWT']:+.3f}  acq/ceil {met['acquisition_vs_ceiling']:.3f}  "
            f"held-out {met['heldout_ACC']:.3f}  multi-hop {met['multihop_ACC']:.3f}"
        )
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
