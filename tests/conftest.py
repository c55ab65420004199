"""Shared fixtures. Servers (S3, MLflow, Prefect, Streamlit) start from fixtures in tests/integration and
tests/e2e and are stopped by PID; unit tests use tiny in-process models only."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SLEEPCYCLE_QUIET", "1")
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    # `pytest -n N`: share the cores among the workers (and the processes they start) instead of letting each
    # torch take them all; oversubscribed torch threads spin against each other.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // workers)))


@pytest.fixture(scope="session")
def tiny_cfg():
    from sleepcycle.config import load_config

    return load_config("tiny")
