"""Register a model line's deployments on the Prefect server, then exit (re-running updates them).

    python flows/deploy.py [--line default] [--config default] [--set flow.nightly_cron="0 2 * * *"]
    docker compose -f docker/compose.yaml exec prefect-worker python flows/deploy.py

- `sleep_cycle/<line>`: the sleep cycle on the nightly cron (`flow.nightly_cron` in `flow.timezone`).
  Deployment concurrency 1 (extra runs queue, never run side by side), and a run that starts more than
  `flow.max_lateness_s` after its slot skips itself: a worker back after a day off sleeps once, not three
  times. Passed gates suspend the run until someone decides, so no worker slot is held while waiting.
- `sleep_pressure/<line>`: every `flow.pressure_check_minutes`, a light check (flows/pressure.py) that
  starts a run of `sleep_cycle/<line>` when `flow.pressure_threshold` wake records wait.

Both go to the process work pool `sleepcycle` (the compose worker polls it; `--pool` picks another, e.g.
`sleepcycle-k8s`). A missing pool is created from infra/prefect/process-job-template.json. The code is
taken from this checkout (`from_source`), which is where the worker runs it (the image's /app).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "infra" / "prefect" / "process-job-template.json"


def _ensure_pool(name: str) -> dict:
    """The pool's base job template; a missing process pool is created from the committed template."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_work_pool(name).base_job_template
        except ObjectNotFound:
            template = json.loads(TEMPLATE.read_text())
            try:
                client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
            except ObjectAlreadyExists:
                pass
            return client.read_work_pool(name).base_job_template


def deploy(line: str, config: str = "default", overrides: list[str] | None = None, pool: str = "sleepcycle") -> dict:
    """Create or update `sleep_cycle/<line>` and `sleep_pressure/<line>`; returns {name: deployment id}."""
    from prefect.schedules import Cron, Interval

    from flows.pressure import sleep_pressure
    from flows.sleep_cycle import sleep_cycle
    from sleepcycle.config import load_config
    from sleepcycle.store.settings import check_line
    from sleepcycle.store.settings import load as load_settings

    line, overrides = check_line(line), list(overrides or [])
    cfg = load_config(config, overrides)
    template = _ensure_pool(pool)
    # A job's `env` replaces the template's default, so keep those and add where task results (the resume
    # cache) live: on the SLEEPCYCLE_HOME volume, so a restarted worker still finds them.
    env = dict(template.get("variables", {}).get("properties", {}).get("env", {}).get("default") or {})
    results = os.environ.get("PREFECT_RESULTS_LOCAL_STORAGE_PATH") or str(load_settings().home / "prefect" / "results")
    env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = results
    common = {
        "work_pool_name": pool,
        "parameters": {"line": line, "config": config, "overrides": overrides},
        "job_variables": {"env": env},
        "tags": ["sleepcycle", f"line:{line}"],
        "build": False,
        "push": False,
        "print_next_steps": False,
        "ignore_warnings": True,
    }
    cycle = sleep_cycle.from_source(str(ROOT), "flows/sleep_cycle.py:sleep_cycle")
    pressure = sleep_pressure.from_source(str(ROOT), "flows/pressure.py:sleep_pressure")
    ids = {
        f"sleep_cycle/{line}": cycle.deploy(
            name=line,
            schedules=[Cron(cfg.flow.nightly_cron, timezone=cfg.flow.timezone)],
            concurrency_limit=1,
            description=f"Nightly sleep cycle of line {line!r} ({config}); resumes crashed cycles; waits for approval.",
            **common,
        ),
        f"sleep_pressure/{line}": pressure.deploy(
            name=line,
            schedules=[Interval(cfg.flow.pressure_check_minutes * 60)],
            description=f"Starts sleep_cycle/{line} at {cfg.flow.pressure_threshold} waiting wake records.",
            **common,
        ),
    }
    return {k: str(v) for k, v in ids.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Register the nightly and sleep-pressure deployments of a model line.")
    p.add_argument("--line", default=os.environ.get("SLEEPCYCLE_LINE", "default"))
    p.add_argument("--config", default="default", help="config profile the cycles run with")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--pool", default="sleepcycle", help="work pool (sleepcycle: process; sleepcycle-k8s: GPU Jobs)")
    args = p.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        print(
            "error: set PREFECT_API_URL to the Prefect server's API (e.g. http://localhost:4200/api)", file=sys.stderr
        )
        return 2
    for name, dep_id in deploy(args.line, args.config, args.set, args.pool).items():
        print(f"deployment {name}: {dep_id}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # run as a script: make `flows` importable
    sys.exit(main())
