"""Lineage in MLflow: one experiment per model line, a parent run per sleep cycle, a child run per stage.

    tracker = open_tracker()           # MlflowTracker when MLFLOW_TRACKING_URI is set, else NoopTracker
    with tracker.cycle("default", 3, params=cfg.model_dump()):
        tracker.link(parent_version=2, snapshot=snap.digest)
        tracker.log_input("wake_snapshot", snap.digest, kind="snapshot")
        with tracker.stage("seed", params={"steps": 40}):
            seeded = seed(cfg, snap, champion, workdir, log=tracker.log_metrics)
        ...
        tracker.link(checkpoint_uri=published.uri, candidate_version=v)
        tracker.log_accuracy_matrix(matrix)
        tracker.log_gate(decision.model_dump(), decision.markdown())

Every method logs to the innermost open run (the stage inside a cycle, else the cycle), so a core stage's
`log` callable can simply be `tracker.log_metrics`. A stage's wall time is logged as `duration_s` on the
stage and `time/<stage>_s` on the cycle; a stage that raises ends FAILED with its error as a tag.

Inputs are logged with `MlflowClient.log_inputs` as metadata-only datasets (mlflow.data MetaDataset) whose
source is the manifest URI in the artifact store and whose digest is the manifest digest (MLflow's column
holds 36 characters; the full digest is the `sleepcycle.digest` input tag). Models are never logged
with `log_model` (mlflow.pytorch's torch.export default freezes shapes, and checkpoints already live in
the artifact store): runs carry checkpoint URIs and digests as tags instead.

The client API (not the fluent one) is used throughout: no global active run, so the tracker is safe to
use next to other MLflow code in the same process.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sleepcycle.store.artifacts import ArtifactStore, open_store
from sleepcycle.store.checkpoints import manifest_key
from sleepcycle.store.settings import Settings, check_line
from sleepcycle.store.settings import load as load_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger("sleepcycle.store")
PREFIX = "sleepcycle."
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value


def experiment_name(line: str) -> str:
    return f"sleepcycle/{check_line(line)}"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config dicts as dotted MLflow params ({"seed": {"steps": 4}} -> {"seed.steps": "4"})."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = (v if isinstance(v, str) else json.dumps(v, default=str))[:MAX_PARAM_CHARS]
    return out


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The entries MLflow can store as metrics (numbers and bools; strings and None are dropped)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, complex)}


class NoopTracker:
    """The tracker interface, doing nothing: the embedded default when no MLflow server is configured."""

    run_id: str | None = None

    @contextmanager
    def cycle(
        self, line: str, cycle: int, params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None
    ) -> Iterator[str | None]:
        """Open the parent run of one sleep cycle; yields its run id (None here)."""
        yield None

    @contextmanager
    def stage(self, name: str, params: Mapping[str, Any] | None = None) -> Iterator[str | None]:
        """Open a child run for one stage inside the open cycle; yields its run id (None here)."""
        yield None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        pass

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def link(
        self,
        *,
        parent_version: int | None = None,
        snapshot: str | None = None,
        checkpoint_uri: str | None = None,
        candidate_version: int | None = None,
        dreams: str | None = None,
    ) -> None:
        """Lineage tags on the cycle run: where it started, what it read, what it produced."""

    def log_input(self, name: str, digest: str, kind: str, uri: str | None = None, context: str = "training") -> None:
        """A dataset input (wake snapshot, dream set) by digest."""

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        pass

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_accuracy_matrix(self, matrix: Mapping[str, Any] | list[list[float]]) -> None:
        """The accuracy matrix (rows: after cycle i; columns: snapshots) as accuracy_matrix.json."""

    def log_gate(self, decision: Mapping[str, Any], markdown: str | None = None) -> None:
        """The gate report as gate.json (+ gate.md) and `gate.passed` as a metric."""


class MlflowTracker(NoopTracker):
    """Writes cycles and stages as MLflow runs through the client API."""

    def __init__(self, tracking_uri: str | None = None, store: ArtifactStore | None = None):
        from mlflow import MlflowClient

        self.client: MlflowClient = MlflowClient(tracking_uri=tracking_uri)
        self.store = store
        self._stack: list[str] = []  # open runs: [cycle] or [cycle, stage]
        self._steps: dict[tuple[str, str], int] = {}

    # -- runs -----------------------------------------------------------------------------------
    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        return self._stack[-1] if self._stack else None

    def _need_run(self) -> str:
        if not self._stack:
            raise RuntimeError("no open run: call inside `with tracker.cycle(...)`")
        return self._stack[-1]

    def experiment_id(self, line: str) -> str:
        from mlflow.exceptions import MlflowException

        name = experiment_name(line)
        exp = self.client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(name, tags={PREFIX + "line": line})
        except MlflowException as exc:  # created meanwhile by another writer
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(name).experiment_id

    @contextmanager
    def _run(self, experiment_id: str, name: str, tags: dict[str, str], params: Mapping[str, Any] | None):
        run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        self._stack.append(run_id)
        t0, failed = time.time(), None
        try:
            if params:
                self.log_params(params)
            yield run_id
        except BaseException as exc:
            failed = exc
            raise
        finally:
            self._stack.pop()
            self._close(run_id, time.time() - t0, failed)

    def _close(self, run_id: str, seconds: float, failed: BaseException | None) -> None:
        try:
            self.client.log_metric(run_id, "duration_s", seconds)
            if failed is not None:
                self.client.set_tag(run_id, PREFIX + "error", f"{type(failed).__name__}: {failed}"[:5000])
            status = "FINISHED" if failed is None else "KILLED" if isinstance(failed, KeyboardInterrupt) else "FAILED"
            self.client.set_terminated(run_id, status)
        except Exception:
            if failed is None:
                raise
            # The stage's own error matters more than a tracking hiccup while reporting it.
            log.warning("could not close MLflow run %s", run_id, exc_info=True)

    @contextmanager
    def cycle(
        self, line: str, cycle: int, params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None
    ) -> Iterator[str]:
        if self._stack:
            raise RuntimeError("a cycle run is already open in this tracker")
        tags = {PREFIX + "line": line, PREFIX + "cycle": str(cycle), **{k: str(v) for k, v in (tags or {}).items()}}
        self._line, self._experiment = line, self.experiment_id(line)
        with self._run(self._experiment, f"cycle-{cycle:04d}", tags, params) as run_id:
            yield run_id

    @contextmanager
    def stage(self, name: str, params: Mapping[str, Any] | None = None) -> Iterator[str]:
        if len(self._stack) != 1:
            raise RuntimeError("a stage runs directly inside an open cycle (`with tracker.cycle(...)`)")
        parent = self._stack[0]
        tags = {"mlflow.parentRunId": parent, PREFIX + "stage": name, PREFIX + "line": self._line}
        t0 = time.time()
        try:
            with self._run(self._experiment, name, tags, params) as run_id:
                yield run_id
        finally:
            try:
                self.client.log_metric(parent, f"time/{name}_s", time.time() - t0)
            except Exception:
                log.warning("could not log the time of stage %s", name, exc_info=True)

    # -- logging ------------------------------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        from mlflow.entities import Metric

        run_id = self._need_run()
        now = int(time.time() * 1000)
        batch = []
        for k, v in numeric(metrics).items():
            if step is None:
                # Repeated keys (a loss per training step) become a curve, not one overwritten point.
                s = self._steps.get((run_id, k), 0)
                self._steps[(run_id, k)] = s + 1
            else:
                s = step
            batch.append(Metric(k, v if math.isfinite(v) else float("nan"), now, s))
        for i in range(0, len(batch), 1000):  # MLflow's log_batch limit
            self.client.log_batch(run_id, metrics=batch[i : i + 1000])

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        run_id = self._need_run()
        items = [Param(k, v) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # MLflow's log_batch limit for params
            self.client.log_batch(run_id, params=items[i : i + 100])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        run_id = self._need_run()
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def link(
        self,
        *,
        parent_version: int | None = None,
        snapshot: str | None = None,
        checkpoint_uri: str | None = None,
        candidate_version: int | None = None,
        dreams: str | None = None,
    ) -> None:
        from mlflow.entities import RunTag

        if not self._stack:
            raise RuntimeError("no open cycle run")
        values = {
            "parent_version": parent_version,
            "snapshot": snapshot,
            "checkpoint_uri": checkpoint_uri,
            "candidate_version": candidate_version,
            "dreams": dreams,
        }
        tags = [RunTag(PREFIX + k, str(v)) for k, v in values.items() if v is not None]
        self.client.log_batch(self._stack[0], tags=tags)

    def log_input(self, name: str, digest: str, kind: str, uri: str | None = None, context: str = "training") -> None:
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        run_id = self._need_run()
        store = self.store or open_store()
        uri = uri or store.uri(manifest_key(kind, digest))
        dataset = MetaDataset(resolve_dataset_source(uri), name=name, digest=digest[:36])
        tags = [
            InputTag(MLFLOW_DATASET_CONTEXT, context),
            InputTag(PREFIX + "digest", digest),
            InputTag(PREFIX + "kind", kind),
        ]
        # MlflowClient has no Dataset -> entity helper; _to_mlflow_entity is what mlflow.log_input uses.
        self.client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(), tags)])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self._need_run(), str(path), artifact_path)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(self._need_run(), obj, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self._need_run(), text, artifact_file)

    def log_accuracy_matrix(self, matrix: Mapping[str, Any] | list[list[float]]) -> None:
        obj = {"values": matrix} if isinstance(matrix, list) else dict(matrix)
        run_id = self._stack[0] if self._stack else self._need_run()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "accuracy_matrix.json"
            path.write_text(json.dumps(obj, indent=2, default=str))
            self.client.log_artifact(run_id, str(path))

    def log_gate(self, decision: Mapping[str, Any], markdown: str | None = None) -> None:
        run_id = self._stack[0] if self._stack else self._need_run()
        self.client.log_dict(run_id, dict(decision), "gate.json")
        if markdown:
            self.client.log_text(run_id, markdown, "gate.md")
        if "passed" in decision:
            self.client.log_metric(run_id, "gate.passed", float(bool(decision["passed"])))


def open_tracker(settings: Settings | None = None, store: ArtifactStore | None = None) -> NoopTracker:
    """MlflowTracker when MLFLOW_TRACKING_URI is set, else a NoopTracker."""
    s = settings or load_settings()
    if not s.tracking_uri:
        return NoopTracker()
    return MlflowTracker(s.tracking_uri, store)
