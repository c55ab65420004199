"""Stand-in for flows.approval.decide with its signature and its no-waiting-run behaviour: record the
decision directly in the registry. Tests use it only when the real flows.approval is not importable."""

from __future__ import annotations

from sleepcycle.store import open_registry
from sleepcycle.store.registry import RegistryError


def decide(line: str, cycle: int, approve: bool, who: str, note: str) -> dict:
    registry = open_registry()
    waiting = [v for v in registry.versions(line) if v.cycle == cycle and v.status == "pending"]
    if not waiting:
        raise RegistryError(f"line {line!r}: cycle {cycle} has no candidate waiting for a decision")
    version = waiting[-1].version
    (registry.approve if approve else registry.reject)(line, version, who=who, note=note)
    return {
        "line": line,
        "cycle": cycle,
        "version": version,
        "decision": "approved" if approve else "rejected",
        "via": "registry",
    }
