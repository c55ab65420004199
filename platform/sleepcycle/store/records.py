"""Cycle records: one JSON object per sleep cycle of a model line, for the dashboard and for audits.

    lines/<line>/cycles/<n:05d>.json

The flow writes a record when a cycle starts and rewrites it as stages finish (each write replaces the
whole object atomically); `store.queries` reads them together with the registry. Fields the queries
understand (all optional except `cycle`):

    cycle             int, the cycle number (1, 2, ...; 0 is the pretrained starting point)
    state             "running" | "failed" | "gate_failed" | "awaiting_approval" | "approved" | "rejected"
    created, updated  ISO-8601 UTC (filled in here when missing)
    snapshot          digest of the wake snapshot
    champion          digest of the checkpoint the cycle started from; parent_version its registry version
    candidate         digest of the candidate checkpoint; candidate_version its registry version
    dreams            digest of the dream set (sha256 of the candidate's dreams.jsonl)
    metrics           {name: number}: the candidate's evaluation metrics
    timings           {stage: seconds}
    gate              the gate decision (GateDecision.model_dump(): passed, checks)
    accuracy_row      {snapshot digest: accuracy} of the candidate (one row of the accuracy matrix)
    run_id            the MLflow parent run of the cycle, when tracked
    checkpoint_uri    where the candidate's manifest is stored
    error             one line, when state is "failed"
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sleepcycle.store.artifacts import ArtifactStore, ObjectNotFound
from sleepcycle.store.settings import check_line


def cycle_key(line: str, cycle: int) -> str:
    return f"lines/{check_line(line)}/cycles/{cycle:05d}.json"


def write_cycle_record(store: ArtifactStore, line: str, cycle: int, record: dict[str, Any]) -> dict[str, Any]:
    """Store (replace) the record of `cycle`; returns what was written (with cycle, line, timestamps)."""
    if not isinstance(cycle, int) or cycle < 0:
        raise ValueError(f"cycle must be a non-negative int, got {cycle!r}")
    now = datetime.now(UTC).isoformat()
    full = {**record, "cycle": cycle, "line": line, "updated": now}
    if "created" not in full:
        try:  # a rewrite keeps the first write's creation time
            full["created"] = read_cycle_record(store, line, cycle).get("created", now)
        except ObjectNotFound:
            full["created"] = now
    store.put_bytes(cycle_key(line, cycle), json.dumps(full, indent=2, sort_keys=True, default=str).encode())
    return full


def read_cycle_record(store: ArtifactStore, line: str, cycle: int) -> dict[str, Any]:
    return json.loads(store.get_bytes(cycle_key(line, cycle)))


def read_cycle_records(store: ArtifactStore, line: str) -> list[dict[str, Any]]:
    """Every record of the line, in cycle order."""
    keys = [k for k in store.list(f"lines/{check_line(line)}/cycles/") if k.endswith(".json")]
    return sorted((json.loads(store.get_bytes(k)) for k in keys), key=lambda r: r["cycle"])
