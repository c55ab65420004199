"""The sleep-cycle flow against real local servers (Prefect, S3, MLflow): a tiny cycle reaches "awaiting
approval"; approval through the API resumes it and moves `champion`; rejection leaves it; the request
expires; a failed gate never promotes; one cycle per line; rollback.

    .venv/bin/python -m pytest -m system tests/integration/test_flow_cycle.py

Every line here sleeps on the same wake day with the same champion and seed, so only the first cycle
computes its stages; the others find them cached (the resume cache doubles as a result cache).
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.system]

PASS = ["--set", "gate.min_acquisition=0"]  # the tiny model learns little: let the gate pass on purpose


def _line(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _cycle(cli, env, tiny_world, tmp_path, line: str, *sets: str):
    """Wake day 1 into `line`, then `sleepcycle cycle run` in the background; returns the process."""
    out = cli.run(
        env,
        "wake",
        "add",
        str(tiny_world / "day1.wake.jsonl"),
        "--probes",
        str(tiny_world / "day1.probes.jsonl"),
        "--line",
        line,
    )
    assert out.returncode == 0, out.stderr
    return cli.start(env, tmp_path / f"{line}.log", "cycle", "run", "--config", "tiny", "--line", line, *sets)


def _awaiting(rec: dict) -> bool:
    return rec["state"] != "running"  # past its stages: awaiting approval (or failed, which the test shows)


def test_a_tiny_cycle_awaits_approval_and_approval_moves_champion(
    sleepcycle_cli, tracked_flow_env, tiny_world, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.approval import decide
    from sleepcycle.store import open_registry

    cli, env, line = sleepcycle_cli, tracked_flow_env, _line("approve")
    cli.here(env)
    proc = _cycle(cli, env, tiny_world, tmp_path, line, *PASS)
    rec = cli.wait_for(line, 1, _awaiting, proc=proc)
    assert rec["state"] == "awaiting_approval", (tmp_path / f"{line}.log").read_text()[-3000:]
    registry = open_registry()
    assert registry.alias(line, "candidate") == rec["candidate_version"] != registry.alias(line, "champion")
    bootstrap = registry.alias(line, "champion")
    for field in ("snapshot", "seeded", "candidate", "dreams", "champion", "run_id", "accuracy_row", "gate", "metrics"):
        assert rec.get(field), field
    assert set(rec["timings"]) == {"snapshot", "seed", "dream", "evaluate"}

    with get_client(sync_client=True) as client:
        # The record says "awaiting approval" just before the run pauses (decide() allows for that window too).
        deadline = time.monotonic() + 60
        while not (run := client.read_flow_run(rec["flow_run_id"])).state.is_paused() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert run.state.is_paused(), run.state  # a paused run with typed input: Prefect's UI shows the form
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"gate-{line}-1"]))
        )
        assert artifacts and "Gate report" in artifacts[0].data

    result = decide(line, 1, approve=True, who="ana", note="retention holds")
    assert (result["via"], result["status"]) == ("prefect", "resumed")
    assert proc.wait(180) == 0, (tmp_path / f"{line}.log").read_text()[-3000:]
    rec = cli.record(line, 1)
    assert (rec["state"], rec["decision_by"], rec["decision_note"]) == ("approved", "ana", "retention holds")
    assert registry.alias(line, "champion") == rec["candidate_version"] and registry.alias(line, "candidate") is None
    move = registry.history(line)[-1]
    assert (move.alias, move.to_version, move.who) == ("champion", rec["candidate_version"], "ana")

    # Lineage in MLflow: a parent run for the cycle, a child run per stage, the gate report as artifacts.
    from mlflow import MlflowClient

    ml = MlflowClient(env["MLFLOW_TRACKING_URI"])
    parent = ml.get_run(rec["run_id"])
    assert parent.data.tags["sleepcycle.snapshot"] == rec["snapshot"]
    assert parent.data.tags["sleepcycle.candidate_version"] == str(rec["candidate_version"])
    children = ml.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {c.data.tags["sleepcycle.stage"] for c in children} == {"snapshot", "seed", "dream", "evaluate"}
    assert {"gate.json", "gate.md"} <= {a.path for a in ml.list_artifacts(parent.info.run_id)}

    listed = cli.run(env, "cycle", "list", "--line", line, "--json")
    assert [r["state"] for r in json.loads(listed.stdout)] == ["approved"]
    out = cli.run(env, "rollback", "--line", line, "--note", "regression in prod", "--who", "ops")
    assert out.returncode == 0, out.stderr
    assert registry.alias(line, "champion") == bootstrap and registry.history(line)[-1].who == "ops"
    out = cli.run(env, "approve", "1", "--line", line, "--note", "again")
    assert out.returncode == 2 and "does not wait for a decision" in out.stderr


def test_rejection_leaves_champion_untouched(sleepcycle_cli, tracked_flow_env, tiny_world, tmp_path):
    from sleepcycle.store import open_registry

    cli, env, line = sleepcycle_cli, tracked_flow_env, _line("reject")
    cli.here(env)
    proc = _cycle(cli, env, tiny_world, tmp_path, line, *PASS)
    rec = cli.wait_for(line, 1, _awaiting, proc=proc)
    assert rec["state"] == "awaiting_approval"
    registry = open_registry()
    champion = registry.alias(line, "champion")
    out = cli.run(env, "reject", "1", "--line", line, "--note", "forgot day 0", "--who", "bo")
    assert out.returncode == 0, out.stderr
    assert "rejected" in out.stdout
    assert proc.wait(180) == 0
    rec = cli.record(line, 1)
    assert (rec["state"], rec["decision_by"]) == ("rejected", "bo")
    assert registry.alias(line, "champion") == champion and registry.alias(line, "candidate") is None
    version = registry.get(line, rec["candidate_version"])
    assert (version.status, version.tags["decision_note"]) == ("rejected", "forgot day 0")


def test_the_approval_request_expires(sleepcycle_cli, tracked_flow_env, tiny_world, tmp_path):
    from flows.approval import DecisionError, decide
    from sleepcycle.store import open_registry

    cli, env, line = sleepcycle_cli, tracked_flow_env, _line("expire")
    cli.here(env)
    proc = _cycle(cli, env, tiny_world, tmp_path, line, *PASS, "--set", "flow.approval_timeout_s=8")
    assert proc.wait(600) == 0, (tmp_path / f"{line}.log").read_text()[-3000:]
    rec = cli.record(line, 1)
    assert rec["state"] == "expired" and "approval timeout" in rec["decision_by"]
    registry = open_registry()
    assert registry.get(line, rec["candidate_version"]).status == "expired"
    assert registry.alias(line, "champion") != rec["candidate_version"] and registry.alias(line, "candidate") is None
    with pytest.raises(DecisionError, match="does not wait"):
        decide(line, 1, approve=True, who="late", note="too late")


def test_a_failed_gate_rejects_and_never_promotes(sleepcycle_cli, tracked_flow_env, tiny_world, tmp_path):
    from sleepcycle.store import open_registry

    cli, env, line = sleepcycle_cli, tracked_flow_env, _line("gate")
    cli.here(env)
    proc = _cycle(cli, env, tiny_world, tmp_path, line)  # the tiny profile's own thresholds: acquisition fails
    assert proc.wait(600) == 0, (tmp_path / f"{line}.log").read_text()[-3000:]
    rec = cli.record(line, 1)
    assert rec["state"] == "gate_failed" and not rec["gate"]["passed"]
    assert "acquisition" in rec["decision_note"]
    registry = open_registry()
    version = registry.get(line, rec["candidate_version"])
    assert version.status == "rejected" and version.tags["gate"] == "failed"
    assert registry.alias(line, "champion") != rec["candidate_version"]
    # the rejected cycle's records go back to the buffer for the next cycle, once
    day1 = len((tiny_world / "day1.wake.jsonl").read_text().splitlines())
    status = lambda: json.loads(cli.run(env, "wake", "status", "--line", line, "--json").stdout)  # noqa: E731
    assert status()["records"] == 0
    out = cli.run(env, "wake", "requeue", "1", "--line", line)
    assert out.returncode == 0, out.stderr
    assert f"{day1} wake records" in out.stdout and status()["records"] == day1
    assert cli.run(env, "wake", "requeue", "1", "--line", line).returncode == 2


def test_one_cycle_per_line_a_second_waits_or_is_refused(sleepcycle_cli, tracked_flow_env, tiny_world, tmp_path):
    from flows.approval import decide

    cli, env, line = sleepcycle_cli, tracked_flow_env, _line("busy")
    cli.here(env)
    first = _cycle(cli, env, tiny_world, tmp_path, line, *PASS)
    cli.wait_for(line, 1, lambda r: r["state"] == "awaiting_approval", proc=first)
    # While cycle 1 holds the line (paused for approval), a second run waits flow.lock_wait_s, then gives up.
    out = cli.run(env, "cycle", "run", "--config", "tiny", "--line", line, "--set", "flow.lock_wait_s=3")
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"line '{line}' is busy: cycle 1 is awaiting_approval" in out.stderr
    assert "Traceback" not in out.stderr and cli.record(line, 2) is None
    # A patient one waits for the slot, then finds cycle 1 decided and nothing left to sleep on.
    waiting = cli.start(env, tmp_path / "waiting.log", "cycle", "run", "--config", "tiny", "--line", line)
    deadline = time.monotonic() + 120
    while "Beginning flow run" not in (tmp_path / "waiting.log").read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # now it is queued on the line's slot
    decide(line, 1, approve=False, who="ana", note="make room")
    assert first.wait(180) == 0 and waiting.wait(180) == 0
    assert "nothing to sleep on" in (tmp_path / "waiting.log").read_text()
    assert cli.record(line, 2) is None
