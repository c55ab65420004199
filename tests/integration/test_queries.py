"""The dashboard's read-only queries over cycle records + the registry: plain, JSON-ready data."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from integration.helpers import s3_store
from sleepcycle.manifests import Manifest
from sleepcycle.store import queries
from sleepcycle.store.artifacts import LocalStore, ObjectNotFound
from sleepcycle.store.checkpoints import dream_set_digest, publish
from sleepcycle.store.records import read_cycle_records, write_cycle_record
from sleepcycle.store.registry import LocalRegistry, MlflowRegistry

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local", "s3+mlflow"])
def stores(request, tmp_path):
    if request.param == "local":
        store = LocalStore(tmp_path / "store")
        return store, LocalRegistry(store)
    store = s3_store(request.getfixturevalue("s3_server"))
    return store, MlflowRegistry(request.getfixturevalue("mlflow_server").url, store)


def gate(passed: bool) -> dict:
    return {"passed": passed, "checks": {"acquisition": {"value": 0.8 if passed else 0.1, "ok": passed}}}


def simulate(store, registry, line: str, tmp_path) -> dict:
    """Four cycles: approved, rejected, awaiting approval, stopped by the gate."""
    snaps = [f"{n:064x}" for n in range(1, 5)]
    v0 = registry.register(line, "0" * 64, cycle=0)
    registry.approve(line, v0, who="bootstrap", note="pretrained")
    dreamed = tmp_path / "dreamed"
    dreamed.mkdir()
    (dreamed / "dreams.jsonl").write_text("".join(json.dumps({"text": f"dream {i}"}) + "\n" for i in range(9)))
    manifest = Manifest.of_directory(dreamed, "checkpoint")
    manifest.write(dreamed)
    publish(store, dreamed)
    decisions = {1: "approve", 2: "reject"}
    for n in (1, 2, 3, 4):
        passed = n != 4
        record = {
            "state": "awaiting_approval" if passed else "gate_failed",
            "snapshot": snaps[n - 1],
            "champion": "0" * 64,
            "parent_version": v0,
            "candidate": f"{n:064x}",
            "metrics": {"acquisition": 0.8 if passed else 0.1},
            "timings": {"seed": 10.0 + n, "dream": 5.0, "evaluate": 2.0},
            "gate": gate(passed),
            "accuracy_row": {s: 0.5 + 0.1 * (j == n - 1) for j, s in enumerate(snaps[:n])},
            "dreams": dream_set_digest(manifest),
        }
        if passed:
            record["candidate_version"] = registry.register(line, f"{n:064x}", cycle=n)
        write_cycle_record(store, line, n, record)
        if n in decisions:
            getattr(registry, decisions[n])(line, record["candidate_version"], who="ana", note=f"cycle {n}")
    return {"v0": v0}


def test_queries_answer_in_plain_data(stores, tmp_path):
    store, registry = stores
    line = f"q{uuid.uuid4().hex[:8]}"
    simulate(store, registry, line, tmp_path)
    kw = {"store": store, "registry": registry}

    rows = queries.cycles(line, **kw)
    assert [r["state"] for r in rows] == ["approved", "rejected", "awaiting_approval", "gate_failed"]
    assert rows[0]["decision_by"] == "ana" and rows[3]["candidate_version"] is None

    champ = queries.champion(line, **kw)
    assert champ["cycle"] == 1 and champ["status"] == "approved" and champ["tags"]["decision_note"] == "cycle 1"

    pending = queries.pending_approvals(line, **kw)
    assert [p["cycle"] for p in pending] == [3] and pending[0]["gate"]["passed"] is True

    matrix = queries.accuracy_matrix(line, **kw)
    assert matrix["rows"] == [1, 2, 3, 4] and matrix["column_cycles"] == [1, 2, 3, 4]
    assert matrix["values"][0] == [0.6, None, None, None] and matrix["values"][3][3] == 0.6

    detail = queries.cycle(line, 2, **kw)
    assert detail["state"] == "rejected" and detail["timings"]["seed"] == 12.0
    assert detail["gate"]["passed"] and detail["version"]["tags"]["decision"] == "rejected"
    assert detail["dream_samples"] == [{"text": f"dream {i}"} for i in range(5)]
    assert detail["lineage"]["parent_version"] == 1 and detail["lineage"]["snapshot"] == f"{2:064x}"

    history = queries.alias_history(line, **kw)
    assert [(h["alias"], h["to_version"]) for h in history if h["alias"] == "champion"] == [
        ("champion", 1),
        ("champion", 2),
    ]
    versions = queries.versions(line, **kw)
    assert {v["version"]: v["alias"] for v in versions}[2] == "champion"

    everything = [rows, champ, pending, matrix, detail, history, versions]
    assert json.loads(json.dumps(everything)) == everything  # plain data through and through

    with pytest.raises(ObjectNotFound, match="no cycle 99"):
        queries.cycle(line, 99, **kw)


def test_cycle_records_keep_their_creation_time(tmp_path):
    store = LocalStore(tmp_path)
    first = write_cycle_record(store, "main", 1, {"state": "running"})
    second = write_cycle_record(store, "main", 1, {"state": "awaiting_approval"})
    assert second["created"] == first["created"] and second["updated"] >= first["updated"]
    assert [r["state"] for r in read_cycle_records(store, "main")] == ["awaiting_approval"]
    assert store.list("lines/main/cycles/") == ["lines/main/cycles/00001.json"]


def test_model_size_and_lineage_from_published_checkpoints(stores, tmp_path, monkeypatch):
    """Sizes come from sleep.json and the safetensors headers of the published checkpoint, not a loaded model."""
    root = str(Path(__file__).resolve().parents[2])
    monkeypatch.syspath_prepend(root)  # dashboard/ is a top-level folder: its fixture writes a real lineage
    from dashboard import fixture

    store, registry = stores
    line = f"q{uuid.uuid4().hex[:8]}"
    built = fixture.build(store, registry, line, tmp_path / "lineage")
    kw = {"store": store, "registry": registry}

    sizes = queries.model_sizes(line, store=store)
    assert [(s["cycle"], s["role"], s["n_experts"]) for s in sizes][:3] == [
        (0, "starting champion", 0),
        (1, "candidate", 1),
        (2, "candidate", 2),
    ]
    base = sizes[0]["base_parameters"]
    assert base > 0 and all(s["base_parameters"] == base for s in sizes)
    assert sizes[1]["expert_parameters"] > 0 and sizes[2]["expert_parameters"] == 2 * sizes[1]["expert_parameters"]
    assert sizes[2]["active_parameters"] == base + sizes[2]["expert_parameters"]
    assert sizes[2]["experts"] == ["e00", "e01"] and sizes[2]["capacity"] == fixture.CAPACITY

    champ = queries.champion(line, **kw)
    assert queries.model_size(champ["digest"], store=store)["n_experts"] == 2
    assert queries.model_size("f" * 64, store=store) is None

    detail = queries.cycle(line, 3, **kw)
    assert detail["size"]["experts"] == ["e00", "e01"]
    assert detail["lineage"]["seeded"] and detail["lineage"]["seeded"] != detail["lineage"]["candidate"]
    assert json.loads(json.dumps([sizes, detail])) == [sizes, detail]
    assert built["pending"] == [5]
