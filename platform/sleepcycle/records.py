"""The public data formats: wake records and probes as JSONL, validated line by line.

Wake record: ``{"text": str, "id"?: str, "source"?: str, "time"?: ISO-8601}``
Probe:       ``{"question": str, "answer": str, "aliases"?: [str], "kind"?: str}``

A bad line never sinks the file: good records are returned, bad ones are returned as `Rejected` (file,
line, field, reason) and can be written to a quarantine JSONL next to the input. Writes are atomic
(temp file + rename), so a failure leaves no half-written output.

    sleepcycle world export --out DIR     # the built-in world in these formats
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sleepcycle.manifests import atomic_write_text

DEFAULT_MAX_BYTES = 64 * 1024
Format = Literal["wake", "probe"]

_FIELDS: dict[str, dict[str, tuple[type, bool]]] = {
    # field -> (type, required)
    "wake": {"text": (str, True), "id": (str, False), "source": (str, False), "time": (str, False)},
    "probe": {"question": (str, True), "answer": (str, True), "aliases": (list, False), "kind": (str, False)},
}


class RecordError(ValueError):
    """A whole file that cannot be read (missing, unreadable, or with no usable record)."""


@dataclass(frozen=True)
class Rejected:
    file: str
    line: int
    field: str | None
    reason: str
    raw: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" + (f": field {self.field!r}" if self.field else "")
        return f"{where}: {self.reason}"


@dataclass
class Loaded:
    records: list[dict] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def record_id(text: str) -> str:
    """The id of a wake record that has none: a content hash, so the same text always gets the same id."""
    return "sha-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _check(obj: Any, fmt: Format) -> tuple[str | None, str] | None:
    """(field, reason) for the first problem in a decoded record, or None if it is valid."""
    if not isinstance(obj, dict):
        return None, f"expected a JSON object, got {type(obj).__name__}"
    spec = _FIELDS[fmt]
    for key in obj:
        if key not in spec:
            return key, f"unknown field (allowed: {', '.join(spec)})"
    for key, (typ, required) in spec.items():
        if key not in obj:
            if required:
                return key, "missing required field"
            continue
        value = obj[key]
        if not isinstance(value, typ):
            return key, f"must be a {typ.__name__}, got {type(value).__name__}"
        if typ is str and key in ("text", "question", "answer", "id") and not value.strip():
            return key, "must not be empty"
    if fmt == "probe" and "aliases" in obj and not all(isinstance(a, str) and a.strip() for a in obj["aliases"]):
        return "aliases", "must be a list of non-empty strings"
    if fmt == "wake" and "time" in obj:
        try:
            datetime.fromisoformat(obj["time"].replace("Z", "+00:00"))
        except ValueError:
            return "time", f"not an ISO-8601 timestamp: {obj['time']!r}"
    return None


def _binary(text: str) -> bool:
    return any((ord(c) < 32 and c not in "\t\r\n") or ord(c) == 0x7F for c in text)


def _validate_line(raw: bytes, fmt: Format, max_bytes: int) -> tuple[Any, tuple[str | None, str] | None]:
    """(record, None) for a valid line, else (None, (field, reason))."""
    if len(raw) > max_bytes:
        return None, (None, f"record is {len(raw)} bytes, over the {max_bytes}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, (None, f"invalid UTF-8 at byte {e.start}")
    if _binary(text):
        return None, (None, "binary data (control characters) in the line")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, (None, f"bad JSON: {e.msg} at column {e.colno}")
    problem = _check(obj, fmt)
    return (None, problem) if problem else (obj, None)


def parse(
    data: bytes,
    fmt: Format,
    source: str = "<input>",
    max_bytes: int = DEFAULT_MAX_BYTES,
    seen_ids: set[str] | None = None,
) -> Loaded:
    """Validate JSONL bytes. `seen_ids` (wake only) carries ids already accepted elsewhere."""
    out = Loaded()
    ids: dict[str, int] = {}
    seen_ids = set() if seen_ids is None else seen_ids
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        obj, problem = _validate_line(raw, fmt, max_bytes)
        if problem is None and fmt == "wake":
            rid = obj.get("id") or record_id(obj["text"])
            if rid in ids or rid in seen_ids:
                first = f"first on line {ids[rid]}" if rid in ids else "already in the buffer"
                problem = ("id", f"duplicate id {rid!r} ({first})")
            else:
                ids[rid] = n
                obj = {"id": rid, **{k: v for k, v in obj.items() if k != "id"}}
        if problem is not None:
            out.rejected.append(Rejected(source, n, problem[0], problem[1], raw[:2000].decode("utf-8", "replace")))
        else:
            out.records.append(obj)
    return out


def read(
    path: str | Path,
    fmt: Format,
    max_bytes: int = DEFAULT_MAX_BYTES,
    quarantine: Path | None = None,
    seen_ids: set[str] | None = None,
) -> Loaded:
    """Read and validate a JSONL file; write rejected lines (with reasons) to `quarantine` if given."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except OSError as e:
        raise RecordError(f"{path}: cannot read: {e.strerror}") from None
    loaded = parse(data, fmt, str(path), max_bytes, seen_ids)
    if quarantine is not None and loaded.rejected:
        write_jsonl(quarantine, [asdict(r) for r in loaded.rejected])
    return loaded


def write_jsonl(path: str | Path, records: Iterable[dict]) -> Path:
    """Write records as JSONL atomically (all or nothing)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return atomic_write_text(Path(path), text)
