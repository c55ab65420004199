"""MLflow lineage on the real server: a parent run per cycle with a child run per stage, dataset inputs
by digest, lineage tags, the accuracy matrix and gate report as artifacts (stored on S3 via the server)."""

from __future__ import annotations

import inspect
import json
import uuid

import mlflow
import pytest

from integration.helpers import boto3_client, s3_store
from sleepcycle.store.tracking import MlflowTracker, NoopTracker, experiment_name, open_tracker

pytestmark = pytest.mark.integration


@pytest.fixture
def tracker(mlflow_server, s3_server):
    return MlflowTracker(mlflow_server.url, s3_store(s3_server))


def run_one_cycle(tracker, line: str, snapshot: str, dreams: str) -> dict:
    ids = {}
    with tracker.cycle(line, 3, params={"seed": {"steps": 4, "lr": 1e-3}, "profile": "tiny"}) as cycle_id:
        ids["cycle"] = cycle_id
        tracker.link(parent_version=2, snapshot=snapshot)
        tracker.log_input("wake_snapshot", snapshot, kind="snapshot")
        with tracker.stage("seed", params={"steps": 4}) as run_id:
            ids["seed"] = run_id
            for loss in (2.0, 1.5, 1.2):
                tracker.log_metrics({"seed/loss": loss, "note": "strings are skipped"})
        with tracker.stage("dream") as run_id:
            ids["dream"] = run_id
            tracker.log_input("dream_set", dreams, kind="dreams", uri=f"s3://sleepcycle/blobs/sha256/{dreams}")
            tracker.log_metrics({"dream/kept": 12})
        with tracker.stage("evaluate") as run_id:
            ids["evaluate"] = run_id
            tracker.log_metrics({"acquisition": 0.8, "retention_delta": -0.01})
        tracker.link(checkpoint_uri="s3://sleepcycle/manifests/checkpoint/abc.json", candidate_version=3)
        tracker.log_accuracy_matrix({"rows": [1, 2, 3], "values": [[0.9], [0.8, 0.7], [0.8, 0.7, 0.8]]})
        tracker.log_gate({"passed": True, "checks": {"acquisition": {"value": 0.8, "ok": True}}}, "## Gate\npassed")
    return ids


def test_search_runs_shows_the_cycle_with_its_stage_children(tracker, mlflow_server, s3_server):
    line = f"t{uuid.uuid4().hex[:8]}"
    snapshot, dreams = "a" * 64, "d" * 64
    ids = run_one_cycle(tracker, line, snapshot, dreams)

    mlflow.set_tracking_uri(mlflow_server.url)
    runs = mlflow.search_runs(experiment_names=[experiment_name(line)])
    parent = runs[runs["run_id"] == ids["cycle"]].iloc[0]
    assert parent["tags.mlflow.runName"] == "cycle-0003" and parent["status"] == "FINISHED"
    assert parent["tags.sleepcycle.snapshot"] == snapshot and parent["tags.sleepcycle.parent_version"] == "2"
    assert parent["tags.sleepcycle.checkpoint_uri"].startswith("s3://")
    assert parent["params.seed.steps"] == "4" and parent["metrics.gate.passed"] == 1.0
    assert parent["metrics.time/seed_s"] >= 0 and parent["metrics.time/evaluate_s"] >= 0

    children = mlflow.search_runs(
        experiment_names=[experiment_name(line)], filter_string=f"tags.mlflow.parentRunId = '{ids['cycle']}'"
    )
    assert sorted(children["tags.mlflow.runName"]) == ["dream", "evaluate", "seed"]
    assert set(children["status"]) == {"FINISHED"} and (children["metrics.duration_s"] >= 0).all()

    client = mlflow.MlflowClient(mlflow_server.url)
    losses = client.get_metric_history(ids["seed"], "seed/loss")
    assert [(m.step, m.value) for m in losses] == [(0, 2.0), (1, 1.5), (2, 1.2)]
    assert "note" not in client.get_run(ids["seed"]).data.metrics

    inputs = client.get_run(ids["cycle"]).inputs.dataset_inputs
    (snap_input,) = inputs
    assert snap_input.dataset.name == "wake_snapshot" and snap_input.dataset.digest == snapshot[:36]
    assert {t.key: t.value for t in snap_input.tags}["sleepcycle.digest"] == snapshot
    assert json.loads(snap_input.dataset.source)["uri"].endswith(f"manifests/snapshot/{snapshot}.json")
    dream_input = client.get_run(ids["dream"]).inputs.dataset_inputs[0]
    assert {t.key: t.value for t in dream_input.tags}["sleepcycle.digest"] == dreams

    artifacts = {a.path for a in client.list_artifacts(ids["cycle"])}
    assert {"accuracy_matrix.json", "gate.json", "gate.md"} <= artifacts
    local = mlflow.artifacts.download_artifacts(run_id=ids["cycle"], artifact_path="accuracy_matrix.json")
    assert json.loads(open(local).read())["values"][2] == [0.8, 0.7, 0.8]
    # The server proxies artifacts into the S3 bucket: they are there for any S3 client.
    keys = [
        o["Key"] for o in boto3_client(s3_server).list_objects_v2(Bucket="sleepcycle", Prefix="artifacts/")["Contents"]
    ]
    assert any(k.endswith(f"{ids['cycle']}/artifacts/gate.json") for k in keys)


def test_a_failing_stage_marks_its_run_failed(tracker, mlflow_server):
    line = f"t{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match="diverged"):
        with tracker.cycle(line, 1):
            with tracker.stage("seed") as seed_id:
                raise ValueError("loss diverged")
    client = mlflow.MlflowClient(mlflow_server.url)
    run = client.get_run(seed_id)
    assert run.info.status == "FAILED" and "loss diverged" in run.data.tags["sleepcycle.error"]
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FAILED"


def test_stages_only_inside_a_cycle(tracker):
    with pytest.raises(RuntimeError, match="inside an open cycle"):
        with tracker.stage("seed"):
            pass
    with pytest.raises(RuntimeError, match="no open run"):
        tracker.log_metrics({"x": 1})


def test_noop_tracker_has_the_same_methods(monkeypatch):
    public = {n for n in dir(MlflowTracker) if not n.startswith("_")} - {"experiment_id"}
    for name in public:
        assert hasattr(NoopTracker, name), name
        if callable(getattr(MlflowTracker, name)):
            mine, noop = inspect.signature(getattr(MlflowTracker, name)), inspect.signature(getattr(NoopTracker, name))
            assert list(mine.parameters) == list(noop.parameters), name
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    noop = open_tracker()
    assert type(noop) is NoopTracker
    with noop.cycle("x", 1) as run_id, noop.stage("seed"):
        noop.log_metrics({"a": 1})
        noop.log_input("wake_snapshot", "a" * 64, "snapshot")
    assert run_id is None
