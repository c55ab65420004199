"""The model registry: a version per candidate, the `champion` and `candidate` aliases, human decisions,
and an append-only history of every alias move (so "which version was champion at time t" has an answer).

    reg = open_registry()                          # MLflow when MLFLOW_TRACKING_URI is set, else local
    v = reg.register("default", digest, cycle=3, metrics={"acquisition": 0.8})   # moves `candidate`
    reg.approve("default", v, who="ana", note="looks good")                      # moves `champion`
    reg.champion_at("default", "2026-05-01T12:00:00+00:00")
    reg.rollback("default", who="ana", note="regression in prod")

Semantics, shared by both implementations (they differ only in where things are kept):
- `register` creates version n+1 for a checkpoint digest (tags: digest, cycle, metrics, manifest_uri) and
  points `candidate` at it.
- `approve` records decision/decision_by/decision_at/decision_note as version tags, moves `champion` to it
  and clears `candidate` if it pointed there. `reject` records the same tags and leaves `champion` alone.
- `rollback` moves `champion` back to the most recent earlier champion that was not itself rolled back,
  and tags the version it leaves with rolled_back_by/_at/_note.
- Every alias move appends an `AliasMove` (alias, from, to, who, when, reason); history is never edited.

`LocalRegistry` keeps JSON objects in an artifact store (local directory or S3):

    registry/<line>/versions/<n:06d>.json      created exclusively: two writers never get the same n
    registry/<line>/events/<ns>-<rand>.json    one object per tag change or alias move, never rewritten

so concurrent writers never overwrite each other; state is the replay of events in key order.
`MlflowRegistry` uses a registered model "sleepcycle-<line>" (version source = the checkpoint manifest
URI, MLflow aliases, version tags) and keeps the alias history as registered-model tags with unique,
sortable keys (`alias_move.<ns>-<rand>`), which are likewise only ever added.
"""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sleepcycle.store.artifacts import ArtifactStore, ObjectExists, ObjectNotFound, StoreError, open_store
from sleepcycle.store.checkpoints import manifest_key
from sleepcycle.store.settings import Settings, check_line
from sleepcycle.store.settings import load as load_settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

CHAMPION, CANDIDATE = "champion", "candidate"
ALIASES = (CHAMPION, CANDIDATE)


class RegistryError(StoreError):
    """A registry request that cannot be honoured (unknown version, nothing to roll back to, ...)."""


@dataclass(frozen=True)
class ModelVersion:
    line: str
    version: int
    digest: str
    """Digest of the checkpoint manifest: `fetch(store, "checkpoint", digest)` loads exactly this model."""
    source: str
    """Where the manifest is stored (s3://bucket/manifests/checkpoint/<digest>.json or file://...)."""
    cycle: int
    created: str
    metrics: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    run_id: str | None = None

    @property
    def status(self) -> str:
        """pending | approved | rejected | rolled_back (a rollback counts until a later decision)"""
        rolled, decided = self.tags.get("rolled_back_at"), self.tags.get("decision_at")
        if rolled and (not decided or _as_time(rolled) > _as_time(decided)):
            return "rolled_back"
        return self.tags.get("decision", "pending")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


@dataclass(frozen=True)
class AliasMove:
    line: str
    alias: str
    from_version: int | None
    to_version: int | None
    who: str
    when: str
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _event_key() -> str:
    # Sortable by time (ns since the epoch, zero-padded), unique by the random suffix.
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _as_time(t: datetime | str) -> datetime:
    t = datetime.fromisoformat(t) if isinstance(t, str) else t
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class Registry(ABC):
    """Versions, aliases and decisions of model lines. Subclasses say where state lives; the rules
    (what approve, reject and rollback do) are here, so both behave the same."""

    # -- storage primitives -------------------------------------------------------------------------
    @abstractmethod
    def _create_version(self, line: str, record: dict[str, Any]) -> int: ...

    @abstractmethod
    def _add_tags(self, line: str, version: int, tags: dict[str, str]) -> None: ...

    @abstractmethod
    def _set_alias(self, line: str, alias: str, version: int | None, move: AliasMove) -> None:
        """Point `alias` at `version` (None: remove it) and append `move` to the history."""

    @abstractmethod
    def get(self, line: str, version: int) -> ModelVersion: ...

    @abstractmethod
    def versions(self, line: str) -> list[ModelVersion]:
        """Every version of the line, oldest first."""

    @abstractmethod
    def alias(self, line: str, alias: str) -> int | None:
        """The version `alias` points at now, or None."""

    @abstractmethod
    def history(self, line: str) -> list[AliasMove]:
        """Every alias move of the line, oldest first."""

    # -- the rules ----------------------------------------------------------------------------------
    store: ArtifactStore | None = None

    def source_of(self, digest: str) -> str:
        """The manifest URI recorded as a version's source."""
        return self.store.uri(manifest_key("checkpoint", digest)) if self.store else f"sleepcycle://checkpoint/{digest}"

    def register(
        self,
        line: str,
        digest: str,
        cycle: int,
        metrics: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        run_id: str | None = None,
        who: str = "sleepcycle",
    ) -> int:
        """A new version for the checkpoint `digest`; `candidate` moves to it. Returns the version."""
        check_line(line)
        record = {
            "digest": digest,
            "source": self.source_of(digest),
            "cycle": int(cycle),
            "created": _now(),
            "metrics": dict(metrics or {}),
            "tags": {str(k): str(v) for k, v in (tags or {}).items()},
            "run_id": run_id,
        }
        version = self._create_version(line, record)
        self._move(line, CANDIDATE, version, who, f"cycle {cycle} candidate registered")
        return version

    def _move(self, line: str, alias: str, to: int | None, who: str, reason: str) -> AliasMove | None:
        frm = self.alias(line, alias)
        if frm == to:
            return None
        move = AliasMove(line, alias, frm, to, who, _now(), reason)
        self._set_alias(line, alias, to, move)
        return move

    def set_alias(self, line: str, alias: str, version: int | None, who: str, reason: str = "") -> AliasMove | None:
        """Move an alias by hand (audited like any other move); e.g. the first champion of a line."""
        if alias not in ALIASES:
            raise RegistryError(f"unknown alias {alias!r} (known: {', '.join(ALIASES)})")
        if version is not None:
            self.get(line, version)
        return self._move(line, alias, version, who, reason)

    def _decide(self, line: str, version: int, decision: str, who: str, note: str) -> ModelVersion:
        if not who:
            raise RegistryError("a decision needs a name: who approved or rejected it")
        mv = self.get(line, version)
        self._add_tags(
            line, version, {"decision": decision, "decision_by": who, "decision_at": _now(), "decision_note": note}
        )
        if self.alias(line, CANDIDATE) == version:
            self._move(line, CANDIDATE, None, who, f"{decision} v{version}")
        if decision == "approved":
            self._move(line, CHAMPION, version, who, note or f"approved v{version}")
        return self.get(line, mv.version)

    def approve(self, line: str, version: int, who: str, note: str = "") -> ModelVersion:
        """Promote `version` to champion, recording who, when and why."""
        return self._decide(line, version, "approved", who, note)

    def reject(self, line: str, version: int, who: str, note: str = "") -> ModelVersion:
        """Record a rejection; the champion stays where it is."""
        return self._decide(line, version, "rejected", who, note)

    def rollback(self, line: str, who: str, note: str = "") -> int:
        """Move `champion` back to the previous champion; returns the version now serving."""
        current = self.alias(line, CHAMPION)
        if current is None:
            raise RegistryError(f"line {line!r} has no champion to roll back")
        skip = {current} | {v.version for v in self.versions(line) if v.status == "rolled_back"}
        earlier = [m.to_version for m in self.history(line) if m.alias == CHAMPION and m.to_version is not None]
        target = next((v for v in reversed(earlier) if v not in skip), None)
        if target is None:
            raise RegistryError(f"line {line!r}: no earlier champion to roll back to from v{current}")
        self._add_tags(line, current, {"rolled_back_by": who, "rolled_back_at": _now(), "rolled_back_note": note})
        self._move(line, CHAMPION, target, who, f"rollback from v{current}" + (f": {note}" if note else ""))
        return target

    def champion(self, line: str) -> ModelVersion | None:
        v = self.alias(line, CHAMPION)
        return None if v is None else self.get(line, v)

    def champion_at(self, line: str, t: datetime | str) -> int | None:
        """The version that was champion at time `t` (ISO-8601 or datetime; naive means UTC)."""
        t = _as_time(t)
        current = None
        for m in self.history(line):
            if m.alias == CHAMPION and _as_time(m.when) <= t:
                current = m.to_version
        return current


def _replay_from(moves: list[AliasMove]) -> list[AliasMove]:
    """`from` as the replay sees it (the previous move's `to`), which stays right under racing writers."""
    last: dict[str, int | None] = {}
    out = []
    for m in moves:
        out.append(AliasMove(m.line, m.alias, last.get(m.alias), m.to_version, m.who, m.when, m.reason))
        last[m.alias] = m.to_version
    return out


# ----- JSON objects in the artifact store ----------------------------------------------------------------


class LocalRegistry(Registry):
    """Registry state as immutable JSON objects in an artifact store (the embedded default)."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self._events: dict[str, dict] = {}  # key -> event; events never change, so caching is safe

    def _prefix(self, line: str) -> str:
        return f"registry/{check_line(line)}/"

    def _create_version(self, line: str, record: dict[str, Any]) -> int:
        prefix = self._prefix(line) + "versions/"
        n = len(self.store.list(prefix)) + 1
        record = {**record, "token": uuid.uuid4().hex}
        for _ in range(1000):
            data = json.dumps({**record, "version": n}, indent=2).encode()
            try:
                self.store.put_bytes(f"{prefix}{n:06d}.json", data, exclusive=True)
                return n
            except ObjectExists:
                # Another writer took n, unless our own earlier attempt did and only its reply was lost.
                if self.store.get_bytes(f"{prefix}{n:06d}.json") == data:
                    return n
                n += 1
        raise RegistryError(f"line {line!r}: could not claim a version number")

    def _append(self, line: str, event: dict) -> None:
        key = f"{self._prefix(line)}events/{_event_key()}.json"
        self.store.put_bytes(key, json.dumps(event).encode(), exclusive=True)
        self._events[key] = event

    def _read_events(self, line: str) -> list[dict]:
        keys = self.store.list(self._prefix(line) + "events/")
        for k in keys:
            if k not in self._events:
                self._events[k] = json.loads(self.store.get_bytes(k))
        return [self._events[k] for k in keys]

    def _add_tags(self, line: str, version: int, tags: dict[str, str]) -> None:
        self.get(line, version)
        self._append(line, {"type": "tags", "version": version, "tags": tags, "when": _now()})

    def _set_alias(self, line: str, alias: str, version: int | None, move: AliasMove) -> None:
        self._append(line, {"type": "alias", **move.as_dict()})

    def _version(self, line: str, record: dict, events: list[dict]) -> ModelVersion:
        tags = dict(record.get("tags", {}))
        for e in events:
            if e["type"] == "tags" and e["version"] == record["version"]:
                tags.update(e["tags"])
        tags.update({"digest": record["digest"], "cycle": str(record["cycle"]), "manifest_uri": record["source"]})
        return ModelVersion(
            line,
            record["version"],
            record["digest"],
            record["source"],
            record["cycle"],
            record["created"],
            record.get("metrics", {}),
            tags,
            record.get("run_id"),
        )

    def get(self, line: str, version: int) -> ModelVersion:
        try:
            record = json.loads(self.store.get_bytes(f"{self._prefix(line)}versions/{int(version):06d}.json"))
        except ObjectNotFound:
            raise RegistryError(f"line {line!r} has no version {version}") from None
        return self._version(line, record, self._read_events(line))

    def versions(self, line: str) -> list[ModelVersion]:
        events = self._read_events(line)
        keys = self.store.list(self._prefix(line) + "versions/")
        return [self._version(line, json.loads(self.store.get_bytes(k)), events) for k in keys]

    def history(self, line: str) -> list[AliasMove]:
        moves = [
            AliasMove(**{k: v for k, v in e.items() if k != "type"})
            for e in self._read_events(line)
            if e["type"] == "alias"
        ]
        return _replay_from(moves)

    def alias(self, line: str, alias: str) -> int | None:
        current = None
        for m in self.history(line):
            if m.alias == alias:
                current = m.to_version
        return current


# ----- the MLflow model registry ----------------------------------------------------------------------

MOVE_TAG = "alias_move."


class MlflowRegistry(Registry):
    """Registered model "sleepcycle-<line>" on an MLflow server; `store` gives versions their source URI."""

    def __init__(self, tracking_uri: str | None = None, store: ArtifactStore | None = None):
        from mlflow import MlflowClient

        self.client: MlflowClient = MlflowClient(tracking_uri=tracking_uri)
        self.store = store
        self._known: set[str] = set()

    def source_of(self, digest: str) -> str:
        # MLflow refuses file:// sources that are not inside a run's artifacts: a local store's
        # manifests are named by a sleepcycle:// URI instead (the tags still carry the file URI).
        uri = super().source_of(digest)
        return uri if not uri.startswith("file:") else f"sleepcycle://checkpoint/{digest}"

    @staticmethod
    def model_name(line: str) -> str:
        return f"sleepcycle-{check_line(line)}"

    def _ensure_model(self, line: str) -> str:
        from mlflow.exceptions import MlflowException

        name = self.model_name(line)
        if name not in self._known:
            try:
                self.client.create_registered_model(
                    name, tags={"sleepcycle.line": line}, description=f"sleepcycle model line {line!r}"
                )
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            self._known.add(name)
        return name

    def _create_version(self, line: str, record: dict[str, Any]) -> int:
        name = self._ensure_model(line)
        tags = {
            **record["tags"],
            "digest": record["digest"],
            "cycle": str(record["cycle"]),
            "created": record["created"],
            "metrics": json.dumps(record["metrics"]),
            "manifest_uri": super().source_of(record["digest"]),
        }
        mv = self.client.create_model_version(
            name, record["source"], run_id=record["run_id"], tags=tags, description=f"cycle {record['cycle']} candidate"
        )
        return int(mv.version)

    def _add_tags(self, line: str, version: int, tags: dict[str, str]) -> None:
        name = self.model_name(line)
        for k, v in tags.items():
            self.client.set_model_version_tag(name, str(version), k, v)

    def _set_alias(self, line: str, alias: str, version: int | None, move: AliasMove) -> None:
        name = self._ensure_model(line)
        if version is None:
            self.client.delete_registered_model_alias(name, alias)
        else:
            self.client.set_registered_model_alias(name, alias, str(version))
        self.client.set_registered_model_tag(name, MOVE_TAG + _event_key(), json.dumps(move.as_dict()))

    def _to_version(self, line: str, mv: Any) -> ModelVersion:
        tags = dict(mv.tags)
        return ModelVersion(
            line,
            int(mv.version),
            tags.get("digest", ""),
            mv.source,
            int(tags.get("cycle", -1)),
            tags.get("created") or datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(),
            json.loads(tags.get("metrics", "{}")),
            tags,
            mv.run_id or None,
        )

    def get(self, line: str, version: int) -> ModelVersion:
        from mlflow.exceptions import MlflowException

        try:
            return self._to_version(line, self.client.get_model_version(self.model_name(line), str(version)))
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise RegistryError(f"line {line!r} has no version {version}") from None
            raise

    def versions(self, line: str) -> list[ModelVersion]:
        out, token = [], None
        while True:
            page = self.client.search_model_versions(
                f"name = '{self.model_name(line)}'", max_results=1000, page_token=token
            )
            out += [self._to_version(line, mv) for mv in page]
            token = page.token
            if not token:
                return sorted(out, key=lambda v: v.version)

    def history(self, line: str) -> list[AliasMove]:
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client.get_registered_model(self.model_name(line)).tags
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        moves = [AliasMove(**json.loads(v)) for k, v in sorted(tags.items()) if k.startswith(MOVE_TAG)]
        return _replay_from(moves)

    def alias(self, line: str, alias: str) -> int | None:
        from mlflow.exceptions import MlflowException

        try:
            return int(self.client.get_model_version_by_alias(self.model_name(line), alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise


def open_registry(settings: Settings | None = None, store: ArtifactStore | None = None) -> Registry:
    """MLflow's registry when MLFLOW_TRACKING_URI is set, else JSON objects in the artifact store."""
    s = settings or load_settings()
    store = store or open_store(s)
    if s.tracking_uri:
        return MlflowRegistry(s.tracking_uri, store)
    return LocalRegistry(store)
