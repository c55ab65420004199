"""infra/local_servers.py as a command (start, status, env, stop by PID), and the import boundary:
importing sleepcycle.store alone loads neither mlflow nor minio (the dashboard and flows import it)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from integration.helpers import ROOT, local_servers

pytestmark = pytest.mark.integration


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "infra" / "local_servers.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_starts_an_s3_server_and_stops_it_by_pid(tmp_path):
    state = tmp_path / "servers"
    started = cli("start", "--dir", str(state), "--no-mlflow", "--bucket", "demo")
    assert started.returncode == 0, started.stderr
    servers = local_servers.load(state)
    try:
        assert servers.s3.alive() and servers.mlflow is None
        assert f"pid {servers.s3.pid}" in cli("status", "--dir", str(state)).stdout
        env = dict(
            line.removeprefix("export ").split("=", 1) for line in cli("env", "--dir", str(state)).stdout.splitlines()
        )
        assert env["SLEEPCYCLE_S3_ENDPOINT"] == servers.s3.url and env["SLEEPCYCLE_S3_BUCKET"] == "demo"
        assert (state / "servers.env").read_text().startswith("export ")

        from sleepcycle.store.artifacts import S3Store

        store = S3Store(servers.s3.url.split("://")[1], "demo", "testing", "testing")  # the bucket exists
        store.put_bytes("hello", b"world")
        assert cli("start", "--dir", str(state), "--no-mlflow").returncode == 1  # already running
    finally:
        stopped = cli("stop", "--dir", str(state))
    assert stopped.returncode == 0 and not servers.s3.alive()
    assert not (state / "servers.json").exists()


def test_importing_the_store_loads_no_server_sdk():
    probe = (
        "import sys, sleepcycle.store, sleepcycle.store.queries; "
        "print(sorted(m for m in ('mlflow', 'minio', 'boto3', 'prefect', 'streamlit', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "platform")}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]"
