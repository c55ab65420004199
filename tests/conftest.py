"""Shared fixtures. Servers (S3, MLflow, Prefect, Streamlit) start from fixtures in tests/integration and
tests/e2e and are stopped by PID; unit tests use tiny in-process models only."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("SLEEPCYCLE_QUIET", "1")


@pytest.fixture(scope="session")
def tiny_cfg():
    from sleepcycle.config import load_config

    return load_config("tiny")
