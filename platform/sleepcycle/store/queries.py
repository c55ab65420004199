"""Read-only answers for the dashboard: plain dicts and lists (JSON-ready), never MLflow or SDK objects.

    from sleepcycle.store import queries
    queries.champion("default")              # the serving version, who approved it and when
    queries.cycles("default")                # one row per sleep cycle: state, metrics, candidate version
    queries.cycle("default", 3)              # timings, gate report, dream samples, lineage
    queries.accuracy_matrix("default")       # rows: after cycle i; columns: wake snapshots
    queries.pending_approvals("default")     # gate-passed candidates waiting for a person
    queries.alias_history("default")         # every champion/candidate move: who, when, from, to, why
    queries.model_size(digest)               # active parameters and experts of a published checkpoint
    queries.model_sizes("default")           # the same for each cycle's candidate (and the first champion)
    queries.sleep_pressure("default")        # the wake buffer's status, or None before sleepcycle.wake exists

Cycle records (records.py) say what a cycle did; the registry says what people decided since. A cycle's
state is the registry's decision on its candidate when there is one, else the record's own state.
Every function takes `store` and `registry` (default: opened from the environment) so a long-lived
caller such as the dashboard opens them once.
"""

from __future__ import annotations

import importlib
import json
import math
from typing import Any

from sleepcycle.manifests import IntegrityError
from sleepcycle.store.artifacts import ArtifactStore, ObjectNotFound, StoreError, open_store
from sleepcycle.store.checkpoints import read_blob, read_manifest
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
    candidate = _checkpoint(store, r.get("candidate"))
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
        "size": _size(store, candidate),
        "error": r.get("error"),
        "lineage": {
            "snapshot": r.get("snapshot"),
            "champion": r.get("champion"),
            "parent_version": r.get("parent_version"),
            # A dreamed candidate names the seeded model it grew from; a record may also say it itself.
            "seeded": r.get("seeded") or (candidate.parents.get("seeded") if candidate else None),
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
    """Versions no one has decided on yet whose gate passed, with their cycle's metrics, gate report and
    approval deadline (None when the request does not expire)."""
    line, store, registry = _open(line, store, registry)
    records = {r.get("candidate_version"): r for r in read_cycle_records(store, line)}
    out = []
    for v in registry.versions(line):
        r = records.get(v.version, {})
        passed = (r.get("gate") or {}).get("passed", v.tags.get("gate") != "failed")
        if v.status == "pending" and passed:
            out.append(
                {
                    **v.as_dict(),
                    "gate": r.get("gate"),
                    "cycle_metrics": r.get("metrics", {}),
                    "approval_deadline": r.get("approval_deadline"),
                }
            )
    return out


def alias_history(
    line: str | None = None, store: ArtifactStore | None = None, registry: Registry | None = None
) -> list[dict[str, Any]]:
    line, store, registry = _open(line, store, registry)
    return [m.as_dict() for m in registry.history(line)]


# ----- model size: read from the published checkpoint, never from a loaded model -------------------------

_PARAMS: dict[str, int | None] = {}
"""sha256 of a .safetensors blob -> its parameter count. Blobs are content-addressed, so an entry never goes
stale and holds for every store: the base weights, shared by all cycles, are read once per process."""


def _checkpoint(store: ArtifactStore, digest: str | None):
    if not digest:
        return None
    try:
        return read_manifest(store, "checkpoint", digest)
    except (StoreError, IntegrityError):
        return None  # unpublished or damaged: the page shows the cycle without a size


def _tensor_parameters(store: ArtifactStore, sha256: str) -> int | None:
    """Parameters in a safetensors file, from its JSON header alone (no torch, no tensor data parsed)."""
    if sha256 not in _PARAMS:
        try:
            data = read_blob(store, sha256)
            n = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + n])
            _PARAMS[sha256] = sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
        except (StoreError, IntegrityError, ValueError, KeyError, TypeError):
            return None
    return _PARAMS[sha256]


def _size(store: ArtifactStore, manifest) -> dict[str, Any] | None:
    if manifest is None:
        return None
    files = manifest.files
    state: dict[str, Any] = {}
    if "sleep.json" in files:
        try:
            state = json.loads(read_blob(store, files["sleep.json"]))
        except (StoreError, IntegrityError, ValueError):
            state = {}
    active = list(state.get("active", []))
    # base/ (or a plain HF directory at the root) holds the dense weights; experts/<slot>/ the adapters.
    base = [sha for rel, sha in files.items() if rel.endswith(".safetensors") and not rel.startswith("experts/")]
    experts = {
        slot: [sha for rel, sha in files.items() if rel.startswith(f"experts/{slot}/") and rel.endswith(".safetensors")]
        for slot in active
    }
    counts = [_tensor_parameters(store, sha) for sha in base]
    base_params = sum(counts) if base and None not in counts else None
    expert_counts = [_tensor_parameters(store, sha) for shas in experts.values() for sha in shas]
    expert_params = sum(c for c in expert_counts if c is not None) if None not in expert_counts else None
    return {
        "digest": manifest.digest,
        "experts": active,
        "n_experts": len(active),
        "capacity": state.get("capacity"),
        "rank": state.get("rank"),
        "base_parameters": base_params,
        "expert_parameters": expert_params,
        "active_parameters": None if base_params is None or expert_params is None else base_params + expert_params,
    }


def model_size(digest: str, store: ArtifactStore | None = None) -> dict[str, Any] | None:
    """Active experts (sleep.json) and parameter counts (safetensors headers) of the published checkpoint
    `digest`: {digest, experts, n_experts, capacity, rank, base_parameters, expert_parameters,
    active_parameters}; None when no such checkpoint is published. Only the active experts count: a bank
    pre-allocates every slot, masked until activated."""
    _, store = _line_store(None, store)
    return _size(store, _checkpoint(store, digest))


def model_sizes(
    line: str | None = None, store: ArtifactStore | None = None, registry: Registry | None = None
) -> list[dict[str, Any]]:
    """Model size over cycles: the first cycle's starting champion (as cycle n-1), then each cycle's
    candidate, oldest first; cycles whose checkpoint is not published are left out."""
    line, store = _line_store(line, store)  # records only, as accuracy_matrix
    rows = []
    records = read_cycle_records(store, line)
    if records and records[0].get("champion"):
        size = model_size(records[0]["champion"], store)
        if size:
            rows.append({"cycle": records[0]["cycle"] - 1, "role": "starting champion", **size})
    for r in records:
        size = model_size(r["candidate"], store) if r.get("candidate") else None
        if size:
            rows.append({"cycle": r["cycle"], "role": "candidate", **size})
    return rows


# ----- sleep pressure ----------------------------------------------------------------------------------


def sleep_pressure(line: str | None = None) -> dict[str, Any] | None:
    """The wake buffer's status (how much the model has seen awake since its last sleep) from
    `sleepcycle.wake.status`, as plain data; None while no wake buffer module exists."""
    line = line or load_settings().line
    try:
        wake = importlib.import_module("sleepcycle.wake")
    except ModuleNotFoundError:
        return None
    status = getattr(wake, "status", None)
    if status is None:
        return None
    out = status(line)
    return json.loads(json.dumps(out if isinstance(out, dict) else vars(out), default=str))
