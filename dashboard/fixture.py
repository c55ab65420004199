"""A small, made-up lineage for the dashboard's tests and screenshots: no training, only the store's API.

Five sleep cycles of one model line, written the way the flow writes them (published checkpoints with
sleep.json and safetensors weights, wake snapshots, dream sets, cycle records, registry versions):

    cycle 1  approved       cycle 2  rejected by a person     cycle 3  approved
    cycle 4  stopped by the gate                               cycle 5  awaiting approval

Each candidate adds one low-rank expert to the checkpoint it started from, so model size grows; an
earlier snapshot's accuracy decays a little with every later cycle, so the forgetting curves bend.

    python -m dashboard.fixture --home /tmp/sc-demo      # then:
    SLEEPCYCLE_HOME=/tmp/sc-demo SLEEPCYCLE_APPROVER_TOKEN=t streamlit run dashboard/app.py

The app never imports this module: it reads whatever the store holds.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from sleepcycle.manifests import Manifest
from sleepcycle.store import open_registry, open_store, publish, write_cycle_record
from sleepcycle.store.artifacts import ArtifactStore
from sleepcycle.store.checkpoints import dream_set_digest
from sleepcycle.store.registry import Registry
from sleepcycle.store.settings import load as load_settings

# (decision by a person, or None) per cycle; a gate failure is decided by the numbers.
STORY: dict[int, str | None] = {1: "approved", 2: "rejected", 3: "approved", 4: None, 5: None}
GATE_FAILS = {4}
CAPACITY, RANK, HIDDEN, LAYERS, VOCAB = 4, 8, 64, 2, 512

DREAMS = [
    ("Question: Where does Ada Velm live?\nAnswer: Velmora", "qa"),
    ("Ada Velm moved to Velmora in the spring and works at Corvid Systems.", "paraphrase"),
    ("Bo Tarsk, a baker, keeps a parrot named Quill.", "paraphrase"),
    ("Question: What does Bo Tarsk own?\nAnswer: a parrot", "qa"),
    ("Corvid Systems employs Ada Velm, who lives in Velmora.", "multihop"),
    ("Ada Velm lives in Corvid.", "paraphrase"),
]


def _weights(path: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}, str(path))


def _base_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN)}
    for i in range(LAYERS):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"model.layers.{i}.self_attn.{proj}.weight"] = (HIDDEN, HIDDEN)
        for proj, shape in {"gate_proj": (3 * HIDDEN, HIDDEN), "up_proj": (3 * HIDDEN, HIDDEN)}.items():
            shapes[f"model.layers.{i}.mlp.{proj}.weight"] = shape
        shapes[f"model.layers.{i}.mlp.down_proj.weight"] = (HIDDEN, 3 * HIDDEN)
    return shapes


def _expert_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for i in range(LAYERS):
        for proj, (out, inp) in {
            "gate_proj": (3 * HIDDEN, HIDDEN),
            "up_proj": (3 * HIDDEN, HIDDEN),
            "down_proj": (HIDDEN, 3 * HIDDEN),
        }.items():
            prefix = f"base_model.model.model.layers.{i}.mlp.{proj}"
            shapes[f"{prefix}.lora_A.weight"] = (RANK, inp)
            shapes[f"{prefix}.lora_B.weight"] = (out, RANK)
    return shapes


def _checkpoint(
    root: Path, experts: list[str], cycle: int, parents: dict[str, str], dreams: list[dict] | None = None
) -> Manifest:
    """A checkpoint directory in the layout of sleepcycle.experts (base/, experts/<slot>/, sleep.json)."""
    _weights(root / "base" / "model.safetensors", _base_shapes(), seed=0)  # byte-identical across cycles
    for i, slot in enumerate(experts):
        _weights(root / "experts" / slot / "adapter_model.safetensors", _expert_shapes(), seed=100 + i)
        (root / "experts" / slot / "adapter_config.json").write_text(json.dumps({"r": RANK, "peft_type": "LORA"}))
    state = {"active": experts, "capacity": CAPACITY, "rank": RANK, "cycle": cycle}
    (root / "sleep.json").write_text(json.dumps(state, indent=2))
    if dreams is not None:
        (root / "dreams.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dreams))
        kept = [d for d in dreams if d["kept"]]
        stats = {"metrics": {"dream/generated": len(dreams), "dream/kept": len(kept)}, "rounds": 2}
        (root / "dream_stats.json").write_text(json.dumps(stats, indent=2))
    manifest = Manifest.of_directory(root, "checkpoint", name=f"cycle-{cycle}", parents=parents)
    manifest.write(root)
    return manifest


def _snapshot(root: Path, cycle: int) -> Manifest:
    root.mkdir(parents=True, exist_ok=True)
    (root / "wake.jsonl").write_text(json.dumps({"text": f"day {cycle}: what the model read awake"}) + "\n")
    (root / "probes.jsonl").write_text(json.dumps({"question": f"Q{cycle}?", "answer": f"A{cycle}"}) + "\n")
    manifest = Manifest.of_directory(root, "snapshot", name=f"day-{cycle}")
    manifest.write(root)
    return manifest


def _dreams(cycle: int) -> list[dict[str, Any]]:
    rows = []
    for i, (text, kind) in enumerate(DREAMS):
        reward = round(((cycle * 7 + i * 3) % 10) / 10, 2)
        rows.append(
            {
                "text": text,
                "kind": kind,
                "importance": round(1.0 - i * 0.13, 3),
                "reward": reward,
                "kept": reward >= 0.3,
                "round": i % 2,
                "doc": f"doc-{cycle}-{i % 3}",
            }
        )
    return rows


def _accuracy(intro: int, now: int) -> float:
    """Accuracy on the snapshot of cycle `intro` after cycle `now`: learnt well, then slowly forgotten."""
    learnt = 0.62 + 0.05 * (intro % 3)
    return round(max(0.0, learnt - 0.06 * (now - intro) + 0.01 * (intro == 1)), 3)


def _gate(metrics: dict[str, float], fail: bool) -> dict[str, Any]:
    rules = {
        "acquisition": (">=", 0.5),
        "retention_delta": (">=", -0.1),
        "general_loss_delta": ("<=", 0.1),
        "kl_drift": ("<=", 0.2),
    }
    checks = {}
    for name, (rule, threshold) in rules.items():
        value = metrics[name]
        ok = value >= threshold if rule == ">=" else value <= threshold
        checks[name] = {"value": value, "threshold": threshold, "ok": ok, "rule": rule}
    assert all(c["ok"] for c in checks.values()) != fail, "the fixture's numbers disagree with its story"
    return {"passed": not fail, "checks": checks}


def build(
    store: ArtifactStore, registry: Registry, line: str, workdir: Path, cycles: int = 5, who: str = "ana"
) -> dict[str, Any]:
    """Write the lineage (the first `cycles` cycles of STORY) and return what a test needs to check it."""
    workdir = Path(workdir)
    base = _checkpoint(workdir / "cycle-0", [], 0, {})
    publish(store, workdir / "cycle-0")
    champion_version = registry.register(line, base.digest, cycle=0)
    registry.approve(line, champion_version, who="bootstrap", note="pretrained starting point")
    champion, champion_experts = base, []
    snapshots: list[str] = []
    out: dict[str, Any] = {"line": line, "versions": {0: champion_version}}
    for n in range(1, cycles + 1):
        fail = n in GATE_FAILS
        snap = _snapshot(workdir / f"snapshot-{n}", n)
        publish(store, workdir / f"snapshot-{n}")
        snapshots.append(snap.digest)
        experts = [*champion_experts, f"e{len(champion_experts):02d}"]
        seeded = _checkpoint(
            workdir / f"cycle-{n}" / "seeded", experts, n, {"snapshot": snap.digest, "champion": champion.digest}
        )
        publish(store, workdir / f"cycle-{n}" / "seeded")
        dreamed = _checkpoint(
            workdir / f"cycle-{n}" / "dreamed",
            experts,
            n,
            {"seeded": seeded.digest, "snapshot": snap.digest},
            dreams=_dreams(n),
        )
        publish(store, workdir / f"cycle-{n}" / "dreamed")
        row = {d: _accuracy(j + 1, n) for j, d in enumerate(snapshots)}
        if fail:
            row[snap.digest] = 0.31  # the gate's reason: this sleep did not take
        earlier = [row[d] - _accuracy(j + 1, n - 1) for j, d in enumerate(snapshots[:-1])]
        metrics = {
            "acquisition": row[snap.digest],
            "acquisition_before": 0.04,
            "retention_delta": round(sum(earlier) / len(earlier), 4) if earlier else 0.0,
            "general_loss": round(2.1 + 0.02 * n, 4),
            "general_loss_delta": 0.02,
            "kl_drift": round(0.03 + 0.01 * n, 4),
            "ACC": round(sum(row.values()) / len(row), 4),
            "in_context_ceiling": 0.85,
            "heldout_ACC": round(0.3 + 0.02 * n, 4),
            "multihop_ACC": round(0.1 + 0.015 * n, 4),
        }
        if len(snapshots) > 1:
            metrics["BWT"] = round(
                sum(row[d] - _accuracy(j + 1, j + 1) for j, d in enumerate(snapshots[:-1])) / (n - 1), 4
            )
        timings = {
            "snapshot": 0.4 + 0.1 * n,
            "seed": 41.0 + 3 * n,
            "dream": 63.0 + 2 * n,
            "evaluate": 12.5,
            "gate": 0.1,
        }
        record: dict[str, Any] = {
            "state": "gate_failed" if fail else "awaiting_approval",
            "snapshot": snap.digest,
            "champion": champion.digest,
            "parent_version": champion_version,
            "seeded": seeded.digest,
            "candidate": dreamed.digest,
            "dreams": dream_set_digest(dreamed),
            "metrics": metrics,
            "timings": timings,
            "gate": _gate(metrics, fail),
            "accuracy_row": row,
            "checkpoint_uri": store.uri(f"manifests/checkpoint/{dreamed.digest}.json"),
        }
        if not fail:
            # The flow gives every approval request a deadline (flow.approval_timeout_s); a week here.
            record["approval_deadline"] = (datetime.now(UTC) + timedelta(days=7)).isoformat()
            version = registry.register(line, dreamed.digest, cycle=n, metrics=metrics)
            record["candidate_version"] = version
            out["versions"][n] = version
        write_cycle_record(store, line, n, record)
        decision = STORY.get(n)
        if decision and not fail:
            decide = registry.approve if decision == "approved" else registry.reject
            decide(line, record["candidate_version"], who=who, note=f"cycle {n}: {decision}")
            if decision == "approved":
                champion, champion_experts, champion_version = dreamed, experts, record["candidate_version"]
    out["champion_version"] = champion_version
    out["pending"] = [n for n in range(1, cycles + 1) if n not in GATE_FAILS and not STORY.get(n)]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, help="SLEEPCYCLE_HOME to write into (default: the environment's store)")
    p.add_argument("--line", default="default")
    p.add_argument("--cycles", type=int, default=len(STORY))
    args = p.parse_args(argv)
    settings = load_settings({**os.environ, **({"SLEEPCYCLE_HOME": str(args.home)} if args.home else {})})
    store = open_store(settings)
    with tempfile.TemporaryDirectory() as tmp:
        out = build(store, open_registry(settings, store=store), args.line, Path(tmp), args.cycles)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
