"""Sleep pressure: start a sleep cycle when enough wake records wait, rather than only at night.

    python flows/deploy.py                # deploys this check every flow.pressure_check_minutes
    sleepcycle wake status                # the same numbers by hand

The check is a tiny flow (no model is loaded): it counts the records waiting in the line's wake buffer
(`sleepcycle.wake.status`) and, at `flow.pressure_threshold` or more, creates a run of the line's cycle
deployment `sleep_cycle/<line>`. It does nothing while a cycle of the line runs, waits for a worker or
awaits approval, so pressure never piles cycles up.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.states import Completed

from sleepcycle.config import load_config
from sleepcycle.store import open_store
from sleepcycle.store.records import read_cycle_records
from sleepcycle.store.settings import check_line
from sleepcycle.store.settings import load as load_settings

BUSY_RECORD_STATES = ("running", "awaiting_approval")


def _active_runs(deployment: str) -> list[str]:
    """Runs of the cycle deployment that are under way or due now (not tomorrow night's scheduled one)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=["SCHEDULED", "PENDING", "RUNNING", "PAUSED"])
                )
            ),
        )
    now = datetime.now(UTC)
    return [
        r.name
        for r in runs
        if r.state is not None
        and (r.state.type.value != "SCHEDULED" or (r.expected_start_time and r.expected_start_time <= now))
    ]


@flow(name="sleep_pressure")
def sleep_pressure(line: str | None = None, config: str = "default", overrides: list[str] | None = None) -> dict:
    """Start `sleep_cycle/<line>` when the line's wake buffer holds flow.pressure_threshold records or more."""
    from prefect.deployments import run_deployment

    from sleepcycle import wake

    log = get_run_logger()
    cfg = load_config(config, list(overrides or []))
    line = check_line(line or load_settings().line)
    status = wake.status(line, threshold=cfg.flow.pressure_threshold)
    summary = f"{status['records']} wake records waiting, threshold {status['threshold']}"
    if not status["due"]:
        return Completed(name="Skipped", message=f"low sleep pressure: {summary}", data=status)
    records = read_cycle_records(open_store(), line)
    if records and records[-1].get("state") in BUSY_RECORD_STATES:
        last = records[-1]
        return Completed(name="Skipped", message=f"cycle {last['cycle']} is {last['state']}: {summary}", data=status)
    deployment = f"sleep_cycle/{line}"
    active = _active_runs(deployment)
    if active:
        return Completed(name="Skipped", message=f"{deployment} already has runs under way {active}", data=status)
    run = run_deployment(
        deployment,
        parameters={"line": line, "config": config, "overrides": list(overrides or [])},
        timeout=0,
        as_subflow=False,
        tags=["sleep-pressure"],
    )
    log.info("sleep pressure %.0f%% (%s): started %s run %s", 100 * status["pressure"], summary, deployment, run.name)
    return {**status, "triggered": str(run.id), "flow_run_name": run.name}
