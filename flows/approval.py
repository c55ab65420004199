"""Manual approval: a person's decision on a gate-passed candidate, from the CLI, the dashboard or Prefect's UI.

    from flows.approval import decide
    decide("default", 3, approve=True, who="ana", note="retention holds")     # -> dict (see `decide`)

    sleepcycle approve 3 --note "retention holds"      sleepcycle reject 3 --note "forgot day 1"

A cycle whose gate passed waits as a paused (or suspended) Prefect flow run for an `Approval` input.
`decide` hands the decision to that run (`resume_flow_run(..., run_input=...)`), which then promotes
(`registry.approve` moves `champion`) or rejects, and records who, when and why. When no run waits (no
Prefect API here, the run died, the CLI that ran it was interrupted) `decide` records the same decision
directly in the registry and the cycle record: a decision never depends on a process staying alive.
The Prefect UI's "Resume" form on the paused run is the third way in; it goes through the flow alike.

A request older than `flow.approval_timeout_s` expires: state "expired", nothing promoted.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from pydantic import Field

from flows import server
from sleepcycle.store import ObjectNotFound, open_registry, open_store
from sleepcycle.store.artifacts import ArtifactStore
from sleepcycle.store.records import read_cycle_record, write_cycle_record
from sleepcycle.store.registry import Registry

try:  # The input model is Prefect's; the rest of this module also works where Prefect is not installed.
    from prefect.input import RunInput
except ImportError:  # pragma: no cover - the orchestration extra is missing
    from pydantic import BaseModel as RunInput

AWAITING = "awaiting_approval"
TIMEOUT_WHO = "sleepcycle (approval timeout)"


class Approval(RunInput):
    """The decision a paused sleep cycle waits for (Prefect shows these fields as the run's resume form)."""

    approve: bool = Field(description="Promote the candidate to champion (false: reject it).")
    who: str = Field(min_length=1, description="Who decides; recorded with the decision.")
    note: str = Field(default="", description="Why; recorded with the decision.")


class DecisionError(RuntimeError):
    """A decision that cannot be taken (no such cycle, nothing waiting, already decided, expired)."""


def now() -> str:
    return datetime.now(UTC).isoformat()


def overdue(record: dict[str, Any]) -> bool:
    deadline = record.get("approval_deadline")
    return bool(deadline) and datetime.fromisoformat(deadline) <= datetime.now(UTC)


def apply(
    store: ArtifactStore, registry: Registry, line: str, cycle: int, approve: bool, who: str, note: str, via: str
) -> dict[str, Any]:
    """Record a decision on cycle `cycle`'s candidate: registry first (moves `champion` on approval), then
    the cycle record. Returns the record written."""
    record = read_cycle_record(store, line, cycle)
    version = record["candidate_version"]
    mv = (registry.approve if approve else registry.reject)(line, version, who=who, note=note)
    return write_cycle_record(
        store,
        line,
        cycle,
        {
            **record,
            "state": "approved" if approve else "rejected",
            "stage": "done",
            "decision_by": mv.tags.get("decision_by", who),
            "decision_at": mv.tags.get("decision_at", now()),
            "decision_note": note,
            "decided_via": via,
        },
    )


def expire(store: ArtifactStore, registry: Registry, line: str, cycle: int) -> dict[str, Any]:
    """Close an approval request nobody answered in time: no promotion, state "expired"."""
    record = read_cycle_record(store, line, cycle)
    version = record["candidate_version"]
    note = f"no decision before {record.get('approval_deadline')}"
    if registry.get(line, version).status == "pending":
        # Registry has approve/reject only; its shared rule `_decide` with the decision "expired" tags the
        # version, clears `candidate` and leaves `champion` alone (asked of the store: a public `expire`).
        registry._decide(line, version, "expired", TIMEOUT_WHO, note)
    return write_cycle_record(
        store,
        line,
        cycle,
        {
            **record,
            "state": "expired",
            "stage": "done",
            "decision_by": TIMEOUT_WHO,
            "decision_at": now(),
            "decision_note": note,
        },
    )


def settle(store: ArtifactStore, registry: Registry, line: str, cycle: int) -> dict[str, Any] | None:
    """If the registry already holds a decision on the cycle's candidate (taken while no run waited), bring
    the cycle record in line with it and return the record; None while the candidate is still pending."""
    record = read_cycle_record(store, line, cycle)
    mv = registry.get(line, record["candidate_version"])
    if mv.status == "pending":
        return None
    if record.get("state") == AWAITING:
        state = mv.status if mv.status in ("approved", "rejected", "expired") else record["state"]
        record = write_cycle_record(
            store,
            line,
            cycle,
            {
                **record,
                "state": state,
                "stage": "done",
                "decision_by": mv.tags.get("decision_by"),
                "decision_at": mv.tags.get("decision_at"),
                "decision_note": mv.tags.get("decision_note", ""),
            },
        )
    return record


def _resume(flow_run_id: str, answer: Approval, wait_s: float = 20) -> str:
    """Hand the decision to the waiting run: "resumed", "expired" (Prefect failed the pause), or "absent"
    (the run is not waiting and does not start waiting within `wait_s`)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    deadline = time.monotonic() + wait_s
    with get_client(sync_client=True) as client:
        while True:
            try:
                run = client.read_flow_run(flow_run_id)
            except ObjectNotFound:
                return "absent"
            state = run.state
            if state is not None and state.is_paused():
                try:
                    resume_flow_run(run.id, run_input=answer.model_dump())
                    return "resumed"
                except FlowPauseTimeout:
                    return "expired"
                except NotPausedError:
                    pass  # resumed or expired between the read and the request: look again
            elif state is None or state.is_final() or time.monotonic() > deadline:
                return "absent"
            # Running or pending: the run is between its gate and its pause; give it a moment.
            time.sleep(1)


def decide(line: str, cycle: int, approve: bool, who: str, note: str) -> dict[str, Any]:
    """Approve or reject cycle `cycle` of `line`. Returns {"line", "cycle", "version", "decision", "via",
    "status", "flow_run_id", "champion_version"}: via "prefect" (status "resumed": the waiting run applies
    it) or "registry" (status "approved"/"rejected": applied here because no run was waiting).

    Raises DecisionError when the cycle does not exist, does not wait for a decision (already decided,
    gate failed, still running) or has expired."""
    answer = Approval(approve=approve, who=who.strip(), note=note)  # validates `who` before anything moves
    store = open_store()
    registry = open_registry(store=store)
    try:
        record = read_cycle_record(store, line, cycle)
    except ObjectNotFound:
        raise DecisionError(f"line {line!r} has no cycle {cycle}") from None
    state, version = record.get("state"), record.get("candidate_version")
    if state != AWAITING or version is None:
        raise DecisionError(f"cycle {cycle} of line {line!r} is {state}: it does not wait for a decision")
    mv = registry.get(line, version)
    if mv.status != "pending":
        settle(store, registry, line, cycle)
        raise DecisionError(f"cycle {cycle} (v{version}) was {mv.status} already by {mv.tags.get('decision_by')}")
    result = {
        "line": line,
        "cycle": cycle,
        "version": version,
        "decision": "approve" if approve else "reject",
        "flow_run_id": record.get("flow_run_id"),
    }
    url = server.configured_url()
    if record.get("flow_run_id") and url:
        with server.use(url):
            outcome = _resume(record["flow_run_id"], answer)
        if outcome == "resumed":
            return {
                **result,
                "via": "prefect",
                "status": "resumed",
                "champion_version": registry.alias(line, "champion"),
            }
        if outcome == "expired":
            expire(store, registry, line, cycle)
            raise DecisionError(f"cycle {cycle}: the approval request expired ({record.get('approval_deadline')})")
    if overdue(record):
        expire(store, registry, line, cycle)
        raise DecisionError(f"cycle {cycle}: the approval request expired at {record['approval_deadline']}")
    written = apply(store, registry, line, cycle, approve, answer.who, note, via="registry")
    return {
        **result,
        "via": "registry",
        "status": written["state"],
        "champion_version": registry.alias(line, "champion"),
    }
