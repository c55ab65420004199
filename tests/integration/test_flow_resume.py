"""Crash and resume: a sleep cycle killed with SIGKILL mid-seeding is re-run; the re-run finds the snapshot
stage cached (Prefect task state "Cached", not executed), recomputes from seeding on, and ends with the
same candidate checkpoint, byte for byte, as an uninterrupted run with the same seed.

    .venv/bin/python -m pytest -m system tests/integration/test_flow_resume.py

The uninterrupted run uses a store of its own, so nothing it computes can be a cache hit for the re-run.
The killed cycle still holds its line lock lease; the re-run, on the same host, sees the holder's pid is gone
and releases that lease at once instead of waiting out `flow.lock_lease_s` (flows/line_lock.py).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.system]

SEED = ["--seed", "7"]  # the same seed for all three runs (tiny profile; its own gate thresholds fail it)
# The tiny profile seeds in about a second: too short to be killed "mid-seeding" reliably. A longer seeding
# (more steps, a budget that does not stop it early) leaves a wide window, the same for all three runs. At
# 120 steps an AVX-512 host finished seeding within the 2 s the test waits (CI, 2026-11-27): 480.
LONG_SEEDING = ["--set", "distill.steps=480", "--set", "train.tokens_per_day=100000000"]


def test_a_cycle_killed_mid_seeding_resumes_after_its_last_completed_stage(
    sleepcycle_cli, flow_home, tiny_world, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    cli, line = sleepcycle_cli, "resume"
    crashed, reference = flow_home("flow-crash"), flow_home("flow-reference")
    for env in (crashed, reference):
        out = cli.run(
            env,
            "wake",
            "add",
            str(tiny_world / "day2.wake.jsonl"),
            "--probes",
            str(tiny_world / "day2.probes.jsonl"),
            "--line",
            line,
        )
        assert out.returncode == 0, out.stderr

    run = ["cycle", "run", "--config", "tiny", "--line", line, *SEED, *LONG_SEEDING, "--set", "flow.lock_lease_s=600"]
    # First the uninterrupted run (same seed, its own store and cache), while the line's lock is free: the
    # lock lives on the shared Prefect server, and the killed run below holds it until its lease lapses.
    out = cli.run(reference, *run)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    cli.here(reference)
    expected = cli.record(line, 1)
    assert expected["state"] == "gate_failed" and expected["cached"] == []

    cli.here(crashed)
    doomed = cli.start(crashed, tmp_path / "crash.log", *run)
    cli.wait_for(line, 1, lambda r: r.get("stage") == "seed", timeout=600, proc=doomed)
    time.sleep(2)  # well inside Knowledge Seeding
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    killed = cli.record(line, 1)
    assert (killed["state"], killed["stage"]) == ("running", "seed") and "seeded" not in killed

    cli.here(crashed)
    # The dead run's lease has 10 minutes left: only releasing it lets this run in within lock_wait_s.
    out = cli.run(crashed, *run, "--set", "flow.lock_wait_s=30")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    said = out.stdout + out.stderr
    assert "the lock holder (pid" in said and "is gone; its lease" in said, said[-3000:]
    resumed = cli.record(line, 1)
    assert resumed["flow_run_id"] != killed["flow_run_id"] and resumed["state"] == "gate_failed"
    assert resumed["cached"] == ["snapshot"] and resumed["snapshot"] == killed["snapshot"] == expected["snapshot"]
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[resumed["flow_run_id"]])))
    states = {t.name.rsplit("-", 1)[0]: t.state.name for t in tasks}
    assert states["snapshot"] == "Cached"
    assert all(states[s] == "Completed" for s in ("seed", "dream", "evaluate")), states

    # Deterministic for a fixed seed on one machine: the resumed cycle made exactly the uninterrupted one's files.
    assert resumed["seeded"] == expected["seeded"], "Knowledge Seeding is not deterministic for a fixed seed"
    assert resumed["candidate"] == expected["candidate"], "Dreaming is not deterministic for a fixed seed"
