"""The registry rules, identical for the JSON registry (on a directory and on S3) and for MLflow's model
registry: versions, candidate/champion aliases, approvals with who/when/note, rejection, rollback, and
an append-only alias history that answers "which version was champion at time t"."""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta

import pytest

from integration.helpers import s3_store
from sleepcycle.store.artifacts import LocalStore
from sleepcycle.store.registry import CANDIDATE, CHAMPION, LocalRegistry, MlflowRegistry, RegistryError, open_registry

pytestmark = pytest.mark.integration


@pytest.fixture(params=["local-dir", "local-s3", "mlflow"])
def registry(request, tmp_path):
    if request.param == "local-dir":
        return LocalRegistry(LocalStore(tmp_path / "store"))
    store = s3_store(request.getfixturevalue("s3_server"))
    if request.param == "local-s3":
        return LocalRegistry(store)
    return MlflowRegistry(request.getfixturevalue("mlflow_server").url, store)


@pytest.fixture
def line() -> str:
    return f"line-{uuid.uuid4().hex[:8]}"  # the MLflow server is shared by the session: one line per test


def digest(n: int) -> str:
    return f"{n:064x}"


def test_register_creates_versions_and_moves_candidate(registry, line):
    assert registry.versions(line) == [] and registry.champion(line) is None
    v1 = registry.register(line, digest(1), cycle=1, metrics={"acquisition": 0.75}, tags={"gate": "passed"})
    v2 = registry.register(line, digest(2), cycle=2)
    assert (v1, v2) == (1, 2)
    assert registry.alias(line, CANDIDATE) == 2
    mv = registry.get(line, 1)
    assert mv.digest == digest(1) and mv.cycle == 1 and mv.metrics == {"acquisition": 0.75}
    assert mv.tags["gate"] == "passed" and mv.status == "pending"
    assert mv.source.endswith(f"manifests/checkpoint/{digest(1)}.json")
    assert [v.version for v in registry.versions(line)] == [1, 2]
    with pytest.raises(RegistryError, match="no version 9"):
        registry.get(line, 9)


def test_approve_moves_champion_and_records_who_when_and_why(registry, line):
    v = registry.register(line, digest(1), cycle=1)
    before = datetime.now().astimezone()
    mv = registry.approve(line, v, who="ana", note="acquisition up, no forgetting")
    assert registry.alias(line, CHAMPION) == v and registry.alias(line, CANDIDATE) is None
    assert mv.status == "approved"
    assert mv.tags["decision_by"] == "ana" and mv.tags["decision_note"] == "acquisition up, no forgetting"
    assert datetime.fromisoformat(mv.tags["decision_at"]) >= before - timedelta(seconds=1)
    move = [m for m in registry.history(line) if m.alias == CHAMPION][-1]
    assert (move.from_version, move.to_version, move.who) == (None, v, "ana")


def test_reject_leaves_the_champion(registry, line):
    v1 = registry.register(line, digest(1), cycle=1)
    registry.approve(line, v1, who="ana")
    v2 = registry.register(line, digest(2), cycle=2)
    mv = registry.reject(line, v2, who="bo", note="forgets day 1")
    assert mv.status == "rejected" and mv.tags["decision_by"] == "bo"
    assert registry.alias(line, CHAMPION) == v1 and registry.alias(line, CANDIDATE) is None
    with pytest.raises(RegistryError, match="needs a name"):
        registry.approve(line, v2, who="")


def test_rollback_restores_the_previous_champion_and_is_audited(registry, line):
    for n in (1, 2, 3):
        registry.approve(line, registry.register(line, digest(n), cycle=n), who="ana")
    assert registry.rollback(line, who="cy", note="bad answers in prod") == 2
    assert registry.alias(line, CHAMPION) == 2
    assert registry.get(line, 3).status == "rolled_back" and registry.get(line, 3).tags["rolled_back_by"] == "cy"
    last = registry.history(line)[-1]
    assert (last.alias, last.from_version, last.to_version, last.who) == (CHAMPION, 3, 2, "cy")
    assert "bad answers in prod" in last.reason
    assert registry.rollback(line, who="cy") == 1  # again: past the rolled-back version, to v1
    with pytest.raises(RegistryError, match="no earlier champion"):
        registry.rollback(line, who="cy")


def test_champion_at_answers_which_version_served_when(registry, line):
    for n in (1, 2):
        registry.approve(line, registry.register(line, digest(n), cycle=n), who="ana")
    registry.rollback(line, who="bo")
    moves = [m for m in registry.history(line) if m.alias == CHAMPION]
    assert [(m.from_version, m.to_version) for m in moves] == [(None, 1), (1, 2), (2, 1)]
    times = [datetime.fromisoformat(m.when) for m in moves]
    assert registry.champion_at(line, times[0] - timedelta(seconds=1)) is None
    assert registry.champion_at(line, times[0]) == 1
    assert registry.champion_at(line, times[0] + (times[1] - times[0]) / 2) == 1
    assert registry.champion_at(line, times[1].isoformat()) == 2
    assert registry.champion_at(line, times[2] + timedelta(days=1)) == 1


def test_history_is_append_only(registry, line):
    registry.approve(line, registry.register(line, digest(1), cycle=1), who="ana")
    first = registry.history(line)
    registry.approve(line, registry.register(line, digest(2), cycle=2), who="bo")
    later = registry.history(line)
    assert later[: len(first)] == first and len(later) > len(first)


def test_concurrent_writers_never_share_a_version(tmp_path):
    registry = LocalRegistry(LocalStore(tmp_path / "store"))
    got: list[int] = []

    def writer(k: int) -> None:
        mine = LocalRegistry(registry.store)  # a separate client, as another process would be
        for i in range(3):
            got.append(mine.register("busy", digest(k * 10 + i), cycle=k))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 19))
    assert {v.digest for v in registry.versions("busy")} == {digest(k * 10 + i) for k in range(6) for i in range(3)}


def test_mlflow_registry_is_what_mlflow_clients_see(mlflow_server, s3_server, line):
    from mlflow import MlflowClient

    registry = MlflowRegistry(mlflow_server.url, s3_store(s3_server))
    v = registry.register(line, digest(7), cycle=7, metrics={"acquisition": 0.9})
    registry.approve(line, v, who="ana", note="ok")
    client = MlflowClient(mlflow_server.url)
    mv = client.get_model_version_by_alias(f"sleepcycle-{line}", "champion")
    assert mv.version == str(v) and mv.source == registry.get(line, v).source
    assert mv.source.startswith("s3://") and mv.tags["decision_by"] == "ana"


def test_open_registry_follows_the_environment(s3_env, monkeypatch, mlflow_server):
    assert isinstance(open_registry(), LocalRegistry)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    assert isinstance(open_registry(), MlflowRegistry)
