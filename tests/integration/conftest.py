"""Integration fixtures: real local servers, started once per session as processes and stopped by PID.

- `s3_server`: moto's S3 server (infra/local_servers.py), ~3 s; S3 tests get a fresh bucket on it.
- `mlflow_server`: `mlflow server` with SQLite + artifacts on that S3 server, ~15-40 s, started only
  when a test asks for it (one per session).
- `checkpoints`: two real sleep-cycle checkpoints of a micro Llama (cycle 2 adds one expert to cycle 1,
  base/ byte-identical), built once.

    .venv/bin/python -m pytest tests/integration
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from integration.helpers import local_servers, s3_store
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
