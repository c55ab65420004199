"""Integration fixtures: real local servers, started once per session as processes and stopped by PID.

- `s3_server`: moto's S3 server (infra/local_servers.py), ~3 s; S3 tests get a fresh bucket on it.
- `mlflow_server`: `mlflow server` with SQLite + artifacts on that S3 server, ~15-40 s, started only
  when a test asks for it (one per session).
- `checkpoints`: two real sleep-cycle checkpoints of a micro Llama (cycle 2 adds one expert to cycle 1,
  base/ byte-identical), built once.
- `prefect_server`: a real Prefect server (flows/server.py), ~10-70 s, one per session; `flow_home` makes
  worker environments on it, `sleepcycle_cli` runs flows as CLI processes (tests/integration/test_flow*.py).

    .venv/bin/python -m pytest tests/integration
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from integration.helpers import ROOT, local_servers, s3_store
from sleepcycle.store.artifacts import LocalStore


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def s3_server(servers_dir):
    server = local_servers.start_s3(servers_dir)
    local_servers.create_bucket(server.url, "sleepcycle")
    yield server
    local_servers.stop(server)


@pytest.fixture(scope="session")
def mlflow_server(s3_server, servers_dir):
    server = local_servers.start_mlflow(servers_dir, s3_server.url, "sleepcycle")
    yield server
    local_servers.stop(server)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """The same tests against both ArtifactStore implementations."""
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return s3_store(request.getfixturevalue("s3_server"))


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    """The environment a deployment would set, pointing at the session's S3 server."""
    env = {
        "SLEEPCYCLE_S3_ENDPOINT": s3_server.url,
        "SLEEPCYCLE_S3_BUCKET": "sleepcycle",
        "SLEEPCYCLE_HOME": str(tmp_path / "home"),
        **local_servers.CREDENTIALS,
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return env


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch):
    # MLflow prints "View run ... at" links for every run it ends: noise in test output.
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "1")


@dataclass
class Checkpoints:
    cycle1: Path
    cycle2: Path


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> Checkpoints:
    import torch

    from sleepcycle.experts import ExpertBank, save_checkpoint
    from sleepcycle.manifests import Manifest
    from unit.helpers import micro_model

    root = tmp_path_factory.mktemp("checkpoints")
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    torch.manual_seed(1)
    dirs: list[Path] = []
    for cycle in (1, 2):
        name = bank.activate(bank.free_slot())
        with torch.no_grad():  # a trained-looking expert: it must change the greedy output to matter
            for p in bank.parameters(name):
                p.add_(torch.randn_like(p) * 0.5)
        bank.freeze()
        d = root / f"cycle{cycle}"
        save_checkpoint(bank, tok, d, {"cycle": cycle}, base_dir=dirs[0] / "base" if dirs else None)
        Manifest.of_directory(d, "checkpoint", meta={"cycle": cycle}).write(d)
        dirs.append(d)
    return Checkpoints(*dirs)


# ----- Prefect and the sleep-cycle flow (flows/): one server per session, flows run as CLI processes -------


@pytest.fixture(scope="session")
def prefect_server(servers_dir):
    """`prefect server start` (flows/server.py) on a free port with a fresh SQLite database, stopped by PID."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # flows/ is a top-level folder of the repository, not an installed package
    from flows import server

    started = server.start(home=servers_dir / "prefect", ui=False)
    yield started
    server.stop(started)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The built-in world of the tiny profile as JSONL: day{N}.wake.jsonl and day{N}.probes.jsonl."""
    out = tmp_path_factory.mktemp("world")
    cmd = [sys.executable, "-m", "sleepcycle", "world", "export", "--config", "tiny", "--out", str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True)
    return out


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """The tiny profile's pretrained base, trained once per session; every flow home links `pretrained/` here."""
    home = tmp_path_factory.mktemp("tiny-base")
    env = {**os.environ, "SLEEPCYCLE_HOME": str(home), "SLEEPCYCLE_QUIET": "1"}
    subprocess.run(
        [sys.executable, "-m", "sleepcycle", "pretrain", "--config", "tiny"],
        check=True,
        cwd=ROOT,
        env=env,
        capture_output=True,
    )
    return home / "pretrained"


@pytest.fixture(scope="session")
def flow_home(prefect_server, tiny_base, tmp_path_factory):
    """make(name, s3=None, mlflow=None) -> the environment of a worker with its own SLEEPCYCLE_HOME (sharing the
    tiny base): the session's Prefect server, and the local store or a fresh bucket on `s3` (+ MLflow)."""

    def make(name: str, s3=None, mlflow=None) -> dict[str, str]:
        home = tmp_path_factory.mktemp(name)
        (home / "pretrained").symlink_to(tiny_base)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SLEEPCYCLE_", "MLFLOW_", "PREFECT_", "AWS_")) or k == "SLEEPCYCLE_QUIET"
        }
        env.update(
            SLEEPCYCLE_HOME=str(home),
            SLEEPCYCLE_QUIET="1",
            PREFECT_API_URL=prefect_server.url,
            PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(home / "prefect" / "results"),
            PYTHONUNBUFFERED="1",
            MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT="1",
        )
        if s3 is not None:
            bucket = f"flows-{uuid.uuid4().hex[:8]}"
            local_servers.create_bucket(s3.url, bucket)
            env.update(local_servers.CREDENTIALS, SLEEPCYCLE_S3_ENDPOINT=s3.url, SLEEPCYCLE_S3_BUCKET=bucket)
        if mlflow is not None:
            env["MLFLOW_TRACKING_URI"] = mlflow.url
        return env

    return make


@pytest.fixture(scope="session")
def tracked_flow_env(flow_home, s3_server, mlflow_server) -> dict[str, str]:
    """One worker environment on S3 + MLflow shared by the flow tests: they reuse each other's cached stages."""
    return flow_home("flow-tracked", s3=s3_server, mlflow=mlflow_server)


@pytest.fixture
def sleepcycle_cli(monkeypatch):
    """Drive flows as a user does: `sleepcycle` CLI processes in a given environment, plus in-process access
    (`here(env)`: this process's store, registry and Prefect client see that environment)."""
    from types import SimpleNamespace

    procs: list[subprocess.Popen] = []

    def run(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "sleepcycle", *args]
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

    def start(env: dict, log: Path, *args: str) -> subprocess.Popen:
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "sleepcycle", *args],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a test can SIGKILL it whole
            )
        procs.append(proc)
        return proc

    def here(env: dict) -> None:
        for k in [k for k in os.environ if k.startswith(("SLEEPCYCLE_", "MLFLOW_TRACKING", "AWS_"))]:
            monkeypatch.delenv(k)
        for k, v in env.items():
            if k.startswith(("SLEEPCYCLE_", "MLFLOW_", "PREFECT_", "AWS_")):
                monkeypatch.setenv(k, v)
        from prefect.settings import PREFECT_API_URL, PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

        ctx = temporary_settings(
            updates={
                PREFECT_API_URL: env["PREFECT_API_URL"],
                PREFECT_RESULTS_LOCAL_STORAGE_PATH: env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"],
            }
        )
        ctx.__enter__()
        contexts.append(ctx)

    def record(line: str, cycle: int) -> dict | None:
        from sleepcycle.store import ObjectNotFound, open_store
        from sleepcycle.store.records import read_cycle_record

        try:
            return read_cycle_record(open_store(), line, cycle)
        except ObjectNotFound:
            return None

    def wait_for(line: str, cycle: int, ok, timeout: float = 900, proc: subprocess.Popen | None = None) -> dict:
        """Poll the cycle record (in the environment given to `here`) until ok(record) holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rec = record(line, cycle)
            if rec is not None and ok(rec):
                return rec
            if proc is not None and proc.poll() is not None:
                rec = record(line, cycle)
                if rec is not None and ok(rec):
                    return rec
                raise AssertionError(f"the flow process exited ({proc.returncode}) first; record: {rec}")
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f}s; record: {record(line, cycle)}")

    contexts: list = []
    if str(ROOT) not in sys.path:
        monkeypatch.syspath_prepend(str(ROOT))
    yield SimpleNamespace(run=run, start=start, here=here, record=record, wait_for=wait_for)
    for ctx in reversed(contexts):
        ctx.__exit__(None, None, None)
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
