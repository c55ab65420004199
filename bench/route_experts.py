"""Expert routing (`sleepcycle.routing`) re-read on the checkpoints a finished bench run left behind.

    .venv/bin/python bench/route_experts.py RUN.json [--workdir DIR] [--modes all newest confidence] --json OUT
    .venv/bin/python bench/route_experts.py RUN.json --modes confidence confidence/subjects --json OUT
    .venv/bin/python bench/route_experts.py --summarise OUT... [--md TABLE.md]   # mean ± sd per method and mode

For every cycle's checkpoint of the run (`cycle-i/dreamed`, or `seeded` without Dreaming) it scores every
day's probes once per routing mode and gives each mode's full accuracy matrices and metrics, read against
the run's own in-context ceilings: ``all`` (every expert, the paper), ``newest`` (`distill.routing_choice`
newest) and ``confidence``, each optionally ``/subjects`` (`distill.routing_keys`) or ``@M`` (a
`distill.routing_margin`). Nothing is trained, so the modes differ only in who answers: the paired
comparison of routing choices on the same weights. Checkpoints written before the cycles stored their
routing keys (stop 23) are keyed with each day's documents, which is what a cycle now stores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from sleepcycle.bench import PROBE_KINDS, _accuracy_metrics, questions, run_workdir  # noqa: E402
from sleepcycle.config import Config  # noqa: E402
from sleepcycle.experts import load_checkpoint  # noqa: E402
from sleepcycle.pretrain import Corpus, confidence_texts  # noqa: E402
from sleepcycle.routing import (  # noqa: E402
    RoutedModel,
    Router,
    entity_keys,
    routed_accuracy,
    self_confidence,
    subject_keys,
)
from sleepcycle.seed import trained_texts  # noqa: E402
from sleepcycle.world import World  # noqa: E402

MODES = ("all", "newest", "confidence", "calibrated")
KEYS = ("names", "subjects")


def answerer_at(
    checkpoint: Path, world: World, keys: str = "names", cfg: Config | None = None
) -> tuple[RoutedModel, object]:
    """The checkpoint's routed answerer. What a checkpoint written before the cycles (or pretraining) stored
    them would hold is filled in: keys from the world's documents of each cycle (of day 0), and with `cfg`
    each route's `Router.reference` as `seed.learnt_confidence` computes it, from the questions in the
    training data of its cycle's `seeded` checkpoint beside this one (the base's from its corpus)."""
    bank, tok, state = load_checkpoint(checkpoint)
    for h in state.get("history", []):
        texts = [d.text for d in world.documents(h["cycle"])]
        h.setdefault("keys", entity_keys(texts))
        h.setdefault("subjects", subject_keys(texts))
    base = [d.text for d in world.base_documents(1)]
    state.setdefault("base_keys", entity_keys(base))
    state.setdefault("base_subjects", subject_keys(base))
    answerer = RoutedModel(bank.merged().eval(), Router.from_state(state, keys), bank)
    if cfg is not None and any(h.get("confidence") is None for h in state.get("history", [])):
        slots = [slot for slot, _ in answerer.router.experts]
        for k, h in enumerate(state["history"]):
            texts = trained_texts(checkpoint.parents[1] / f"cycle-{h['cycle']}" / "seeded")
            h["confidence"] = self_confidence(answerer.model(tuple(slots[: k + 1])), tok, texts)
    if cfg is not None and state.get("base_confidence") is None:
        texts = confidence_texts(Corpus(world, cfg))
        state["base_confidence"] = self_confidence(answerer.model(()), tok, texts)
    answerer.router = Router.from_state(state, keys)
    answerer.state = state  # the keyed state, for the other `keys` modes
    return answerer, tok


SUMMARY = ("ACC", "BWT", "acquisition_vs_ceiling", "heldout_ACC", "multihop_ACC", "base_retention")


def summarise(paths: list[Path]) -> str:
    """Mean ± sd over seeds of each method and mode, and each mode's paired difference from ``all``."""
    import statistics

    by: dict[tuple[str, str], list[dict]] = {}
    for p in paths:
        out = json.loads(p.read_text())
        for mode, v in out["modes"].items():
            by.setdefault((out["method"], mode), []).append({**v["metrics"], "seed": out["seed"]})

    def cell(xs: list[float]) -> str:
        return f"{statistics.fmean(xs):.3f} ± {statistics.stdev(xs):.3f}" if len(xs) > 1 else f"{xs[0]:.3f}"

    lines = ["| method | routing | seeds | " + " | ".join(SUMMARY) + " |", "|" + "---|" * (len(SUMMARY) + 3)]
    for (method, mode), runs in by.items():
        seeds = " ".join(str(r["seed"]) for r in runs)
        lines.append(
            f"| {method} | {mode} | {seeds} | " + " | ".join(cell([r[k] for r in runs]) for k in SUMMARY) + " |"
        )
    lines += ["", "Paired with `all` on the same weights (mean ± sd over seeds):", ""]
    lines += ["| method | routing | " + " | ".join(SUMMARY) + " |", "|" + "---|" * (len(SUMMARY) + 2)]
    for (method, mode), runs in by.items():
        base = {r["seed"]: r for r in by.get((method, "all"), [])}
        pairs = [(r, base[r["seed"]]) for r in runs if r["seed"] in base]
        if mode == "all" or not pairs:
            continue
        diffs = [cell([a[k] - b[k] for a, b in pairs]) for k in SUMMARY]
        lines.append(f"| {method} | {mode} − all | " + " | ".join(diffs) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?", help="the bench run's JSON")
    ap.add_argument("--summarise", nargs="+", type=Path, metavar="OUT", help="tabulate earlier --json outputs")
    ap.add_argument("--md", type=Path, help="with --summarise: write the table here too")
    ap.add_argument("--workdir", type=Path, help="its checkpoints (default: the workdir the run recorded)")
    ap.add_argument(
        "--modes",
        nargs="+",
        default=list(MODES),
        help=f"{' '.join(MODES)}; confidence@M: routing_margin M; MODE/subjects: distill.routing_keys subjects",
    )
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.summarise:
        table = summarise(a.summarise)
        print(table, end="")
        if a.md:
            a.md.write_text(table)
        return {"table": table}
    if a.run is None:
        ap.error("a bench run's JSON, or --summarise")
    for mode in a.modes:
        if mode.partition("/")[0].partition("@")[0] not in MODES or mode.partition("/")[2] not in ("", *KEYS):
            ap.error(f"unknown mode {mode!r}")
    run = json.loads(a.run.read_text())
    cfg = Config(**run["config"])
    days, world = run["days"], World(cfg.world)
    workdir = a.workdir or run_workdir(run)
    first = {"matrix": run["matrix"][0], **{k: run["matrices"][k][0] for k in PROBE_KINDS if k != "matrix"}}
    rows: dict[str, list[dict]] = {m: [first] for m in a.modes}  # row 0: the champion before any sleep
    kwargs = {"max_new_tokens": cfg.eval.max_new_tokens, "batch_size": cfg.eval.batch_size}
    for i in range(1, days + 1):
        ckpt = workdir / f"cycle-{i}" / "dreamed"
        ckpt = ckpt if ckpt.is_dir() else workdir / f"cycle-{i}" / "seeded"
        answerer, tok = answerer_at(ckpt, world, cfg=cfg)
        flat = RoutedModel(answerer.all)
        for mode in a.modes:
            mode_, _, keys = mode.partition("/")
            choice, _, margin = mode_.partition("@")
            answerer.choice = choice if choice != "all" else "newest"
            answerer.margin = float(margin or 0.0)
            answerer.router = Router.from_state(answerer.state, keys or "names")
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
