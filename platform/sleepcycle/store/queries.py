"""Read-only answers for the dashboard: plain dicts and lists (JSON-ready), never MLflow or SDK objects.

    from sleepcycle.store import queries
    queries.champion("default")              # the serving version, who approved it and when
    queries.cycles("default")                # one row per sleep cycle: state, metrics, candidate version
    queries.cycle("default", 3)              # timings, gate report, dream samples, lineage
    queries.accuracy_matrix("default")       # rows: after cycle i; columns: wake snapshots
    queries.pending_approvals("default")     # gate-passed candidates waiting for a person
    queries.alias_history("default")         # every champion/candidate move: who, when, from, to, why

Cycle records (records.py) say what a cycle did; the registry says what people decided since. A cycle's
state is the registry's decision on its candidate when there is one, else the record's own state.
Every function takes `store` and `registry` (default: opened from the environment) so a long-lived
caller such as the dashboard opens them once.
"""

from __future__ import annotations

import json
from typing import Any

from sleepcycle.store.artifacts import ArtifactStore, ObjectNotFound, StoreError, open_store
from sleepcycle.store.checkpoints import read_blob
from sleepcycle.store.records import read_cycle_record, read_cycle_records
from sleepcycle.store.registry import CANDIDATE, CHAMPION, ModelVersion, Registry, RegistryError, open_registry
from sleepcycle.store.settings import load as load_settings

DECIDED = {"approved", "rejected", "rolled_back"}


def _line_store(line: str | None, store: ArtifactStore | None) -> tuple[str, ArtifactStore]:
    s = load_settings()
    return line or s.line, store or open_store(s)


def _open(line: str | None, store: ArtifactStore | None, registry: Registry | None):
    line, store = _line_store(line, store)
    return line, store, registry or open_registry(store=store)


def _version(mv: ModelVersion | None) -> dict[str, Any] | None:
    return None if mv is None else mv.as_dict()


def _state(record: dict[str, Any], versions: dict[int, ModelVersion]) -> str:
    mv = versions.get(record.get("candidate_version"))  # type: ignore[arg-type]
    if mv is not None and mv.status in DECIDED:
        return mv.status
    return record.get("state", "unknown")


def champion(
    line: str | None = None, store: ArtifactStore | None = None, registry: Registry | None = None
) -> dict[str, Any] | None:
    """The champion version (with status, decision tags and metrics), or None before the first one."""
    line, store, registry = _open(line, store, registry)
    return _version(registry.champion(line))


def versions(
    line: str | None = None, store: ArtifactStore | None = None, registry: Registry | None = None
) -> list[dict[str, Any]]:
    line, store, registry = _open(line, store, registry)
    aliases = {registry.alias(line, a): a for a in (CANDIDATE, CHAMPION)}
    return [{**v.as_dict(), "alias": aliases.get(v.version)} for v in registry.versions(line)]


def cycles(
    line: str | None = None, store: ArtifactStore | None = None, registry: Registry | None = None
) -> list[dict[str, Any]]:
    """One summary row per recorded cycle, oldest first."""
    line, store, registry = _open(line, store, registry)
    by_version = {v.version: v for v in registry.versions(line)}
    rows = []
    for r in read_cycle_records(store, line):
        mv = by_version.get(r.get("candidate_version"))  # type: ignore[arg-type]
        rows.append(
            {
                "cycle": r["cycle"],
                "state": _state(r, by_version),
                "created": r.get("created"),
                "updated": r.get("updated"),
                "metrics": r.get("metrics", {}),
                "gate_passed": (r.get("gate") or {}).get("passed"),
                "candidate_version": r.get("candidate_version"),
                "parent_version": r.get("parent_version"),
                "snapshot": r.get("snapshot"),
                "candidate": r.get("candidate"),
                "decision_by": mv.tags.get("decision_by") if mv else None,
                "decision_at": mv.tags.get("decision_at") if mv else None,
                "run_id": r.get("run_id"),
            }
        )
    return rows


def cycle(
    line: str | None,
    n: int,
    store: ArtifactStore | None = None,
    registry: Registry | None = None,
    dream_samples: int = 5,
) -> dict[str, Any]:
    """Everything about cycle `n`: the record, stage timings, gate report, a few dreams, lineage."""
    line, store, registry = _open(line, store, registry)
    try:
        r = read_cycle_record(store, line, n)
    except ObjectNotFound:
        raise ObjectNotFound(f"line {line!r} has no cycle {n}") from None
    version = None
    if r.get("candidate_version") is not None:
        try:
            version = registry.get(line, r["candidate_version"])
        except RegistryError:
            version = None
    by_version = {version.version: version} if version else {}
    return {
        "cycle": n,
        "state": _state(r, by_version),
        "created": r.get("created"),
        "updated": r.get("updated"),
        "timings": r.get("timings", {}),
        "metrics": r.get("metrics", {}),
        "gate": r.get("gate"),
        "accuracy_row": r.get("accuracy_row", {}),
        "dream_samples": r.get("dream_samples") or _dreams(store, r.get("dreams"), dream_samples),
        "version": _version(version),
        "error": r.get("error"),
        "lineage": {
            "snapshot": r.get("snapshot"),
            "champion": r.get("champion"),
            "parent_version": r.get("parent_version"),
            "candidate": r.get("candidate"),
            "candidate_version": r.get("candidate_version"),
            "dreams": r.get("dreams"),
            "checkpoint_uri": r.get("checkpoint_uri"),
            "run_id": r.get("run_id"),
        },
    }


def _dreams(store: ArtifactStore, digest: str | None, k: int) -> list[dict[str, Any]]:
    if not digest or k <= 0:
        return []
    try:
        lines = read_blob(store, digest).decode().splitlines()
    except StoreError:
        return []  # a dashboard shows the cycle without samples rather than failing
    return [json.loads(x) for x in lines[:k] if x.strip()]


def accuracy_matrix(
    line: str | None = None, store: ArtifactStore | None = None, registry: Registry | None = None
) -> dict[str, Any]:
    """{"rows": [cycle, ...], "columns": [snapshot digest, ...], "column_cycles": [cycle that brought
    the snapshot, or None], "values": [[accuracy or None]]} from the records' accuracy rows.
    (`registry` is accepted for the same call shape as the other queries; records alone answer this.)"""
    line, store = _line_store(line, store)  # records only: no registry needed
    everything = read_cycle_records(store, line)
    records = [r for r in everything if r.get("accuracy_row")]
    columns: list[str] = []
    for r in records:
        for digest in r["accuracy_row"]:
            if digest not in columns:
                columns.append(digest)
    introduced = {r.get("snapshot"): r["cycle"] for r in everything if r.get("snapshot")}
    return {
        "rows": [r["cycle"] for r in records],
        "columns": columns,
        "column_cycles": [introduced.get(c) for c in columns],
        "values": [[r["accuracy_row"].get(c) for c in columns] for r in records],
    }


def pending_approvals(
    line: str | None = None, store: ArtifactStore | None = None, registry: Registry | None = None
) -> list[dict[str, Any]]:
    """Versions no one has decided on yet whose gate passed, with their cycle's metrics and gate report."""
    line, store, registry = _open(line, store, registry)
    records = {r.get("candidate_version"): r for r in read_cycle_records(store, line)}
    out = []
    for v in registry.versions(line):
        r = records.get(v.version, {})
        passed = (r.get("gate") or {}).get("passed", v.tags.get("gate") != "failed")
        if v.status == "pending" and passed:
            out.append({**v.as_dict(), "gate": r.get("gate"), "cycle_metrics": r.get("metrics", {})})
    return out


def alias_history(
    line: str | None = None, store: ArtifactStore | None = None, registry: Registry | None = None
) -> list[dict[str, Any]]:
    line, store, registry = _open(line, store, registry)
    return [m.as_dict() for m in registry.history(line)]
