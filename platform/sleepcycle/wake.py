"""The wake buffer: what a model line read while awake, waiting for its next sleep cycle.

    sleepcycle wake add day1.jsonl [--probes day1.probes.jsonl]    # validate, append, quarantine the rest
    sleepcycle wake status                                          # records waiting, sleep pressure

Layout under ``$SLEEPCYCLE_HOME/wake/<line>/`` (the compose stack keeps it on the `sleepcycle-home` volume):

    segments/<ns>-<pid>-<rand>.jsonl    the valid wake records of one `add`, written whole (temp file + rename)
    probes/<same name>.jsonl            the probes that came with them (evaluation only; written first)
    quarantine/<same name>.jsonl        rejected lines: file, line, field, reason, raw (nothing is lost)
    claims/<cycle:05d>.json             the segments sleep cycle n took, created exclusively
    requeued/<cycle:05d>.json           cycle n's records went back to the buffer (`requeue`), created exclusively

Concurrent writers never share a file: every `add` writes its own uniquely named segment, so nothing needs a
lock and a reader sees a segment whole or not at all. A cycle *claims* the segments waiting when it starts
(a re-run of a crashed cycle reads the same claim, hence the same snapshot); sleep pressure counts the
records in unclaimed segments against `flow.pressure_threshold`. Duplicate ids are refused within one file
and against the waiting buffer at `add` time, and dropped (first one kept) when a claim is read, which is
what makes concurrent adders safe.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sleepcycle.manifests import atomic_write_text, sha256_file
from sleepcycle.records import DEFAULT_MAX_BYTES, RecordError, Rejected, parse, write_jsonl
from sleepcycle.store.settings import check_line
from sleepcycle.store.settings import load as load_settings

SEGMENTS, PROBES, QUARANTINE, CLAIMS, REQUEUED = "segments", "probes", "quarantine", "claims", "requeued"


class WakeError(RuntimeError):
    """A wake-buffer request that cannot be honoured (a claim that is gone, a file that cannot be read)."""


@dataclass(frozen=True)
class Added:
    """What one `add` did."""

    segment: str | None
    """The segment's file name (None when no record was valid)."""
    accepted: int
    rejected: int
    probes: int
    quarantine: str | None
    """Where the rejected lines went, with their reasons."""
    reasons: tuple[str, ...] = ()
    """The first few rejections, as `file:line: field: reason` lines."""


def buffer_dir(line: str | None = None, home: Path | None = None) -> Path:
    settings = load_settings()
    return Path(home or settings.home) / "wake" / check_line(line or settings.line)


def _unique_name() -> str:
    # Sortable by time (ns, zero-padded), unique across processes and machines sharing the volume.
    return f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def segments(root: Path) -> list[str]:
    """Every segment's file name, oldest first (in-flight temp files start with a dot and are skipped)."""
    d = root / SEGMENTS
    return sorted(p.name for p in d.glob("*.jsonl") if not p.name.startswith(".")) if d.is_dir() else []


def claims(root: Path) -> dict[int, dict]:
    d = root / CLAIMS
    if not d.is_dir():
        return {}
    return {int(p.stem): json.loads(p.read_text()) for p in sorted(d.glob("*.json")) if not p.name.startswith(".")}


def pending(line: str | None = None, home: Path | None = None) -> list[str]:
    """Segments no cycle has claimed yet, oldest first."""
    root = buffer_dir(line, home)
    taken = {name for c in claims(root).values() for name in c["segments"]}
    return [s for s in segments(root) if s not in taken]


def _pending_ids(root: Path, names: list[str]) -> set[str]:
    ids: set[str] = set()
    for name in names:
        try:
            ids.update(r["id"] for r in _read_jsonl(root / SEGMENTS / name))
        except FileNotFoundError:
            continue
    return ids


def add_bytes(
    data: bytes,
    source: str,
    line: str | None = None,
    probes: bytes | None = None,
    home: Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Added:
    """Validate wake JSONL (and optional probe JSONL) and append the valid records as one new segment."""
    root = buffer_dir(line, home)
    name = _unique_name()
    loaded = parse(data, "wake", source, max_bytes, seen_ids=_pending_ids(root, pending(line, home)))
    rejected: list[Rejected] = list(loaded.rejected)
    good_probes: list[dict] = []
    if probes is not None:
        p = parse(probes, "probe", f"{source} (probes)", max_bytes)
        good_probes, rejected = p.records, rejected + p.rejected
    quarantine = None
    if rejected:
        quarantine = root / QUARANTINE / name
        write_jsonl(quarantine, [asdict(r) for r in rejected])
    if loaded.records:
        if good_probes:  # probes first: a visible segment always has its probes
            write_jsonl(root / PROBES / name, good_probes)
        write_jsonl(root / SEGMENTS / name, loaded.records)
    return Added(
        segment=name if loaded.records else None,
        accepted=len(loaded.records),
        rejected=len(rejected),
        probes=len(good_probes) if loaded.records else 0,
        quarantine=str(quarantine) if quarantine else None,
        reasons=tuple(str(r) for r in rejected[:5]),
    )


def add(
    path: str | Path,
    line: str | None = None,
    probes: str | Path | None = None,
    home: Path | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Added:
    """`sleepcycle wake add FILE`: validate a wake JSONL file and append its valid records to the buffer."""

    def read(p: str | Path) -> bytes:
        try:
            return Path(p).read_bytes()
        except FileNotFoundError:
            raise RecordError(f"{p}: no such file") from None
        except OSError as e:
            raise RecordError(f"{p}: cannot read: {e.strerror}") from None

    return add_bytes(read(path), str(path), line, read(probes) if probes else None, home, max_bytes)


def add_records(records: list[dict], line: str | None = None, probes: list[dict] | None = None, **kw) -> Added:
    """Append records given as dicts (the demo, tests): the same validation as a file."""
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    pblob = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in probes).encode() if probes else None
    return add_bytes(blob, "<records>", line, pblob, **kw)


def _create_once(path: Path, record: dict) -> bool:
    """Write `record` as JSON at `path` only if nothing is there yet (atomic and exclusive: a temp file
    hard-linked into place). False when `path` already existed; it is left as it was."""
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}")
    atomic_write_text(tmp, json.dumps(record, indent=2))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def claim(line: str, cycle: int, home: Path | None = None) -> dict:
    """The segments sleep cycle `cycle` sleeps on: its existing claim, else every pending segment (claimed
    exclusively now). Returns {"cycle", "segments": [name], "sha256": {name: digest}, "created"}."""
    root = buffer_dir(line, home)
    path = root / CLAIMS / f"{cycle:05d}.json"
    if path.exists():
        return json.loads(path.read_text())
    names = pending(line, home)
    record = {
        "cycle": cycle,
        "segments": names,
        "sha256": {n: sha256_file(root / SEGMENTS / n) for n in names},
        "created": datetime.now(UTC).isoformat(),
    }
    if not _create_once(path, record):  # a claim is never rewritten: a second claimant reads the first
        record = json.loads(path.read_text())
    return record


def release(line: str, cycle: int, home: Path | None = None) -> bool:
    """Give an abandoned cycle's segments back to the buffer (they count as pending again)."""
    path = buffer_dir(line, home) / CLAIMS / f"{cycle:05d}.json"
    if not path.exists():
        return False
    path.unlink()
    return True


def requeue(line: str, cycle: int, home: Path | None = None) -> dict:
    """Put the records sleep cycle `cycle` slept on back in the buffer, for a cycle that did not promote
    them (its gate failed, or a person rejected it or let it expire): the next cycle sleeps on them again,
    beside whatever arrived since. The claim stays as it was (it is the lineage of that cycle); the records
    become one new segment with their probes, and `requeued/<cycle>.json` records it, created exclusively,
    so a cycle is requeued once. Records whose id is waiting already are left out. Returns {"cycle",
    "segment", "records", "probes", "skipped", "created"}. Whether the cycle's candidate was promoted is
    the caller's to check (`sleepcycle wake requeue` reads the cycle's record)."""
    root = buffer_dir(line, home)
    claimed = root / CLAIMS / f"{cycle:05d}.json"
    if not claimed.exists():
        raise WakeError(f"cycle {cycle} of line {check_line(line)!r} claimed no wake records: nothing to requeue")
    taken = json.loads(claimed.read_text())
    marker = root / REQUEUED / f"{cycle:05d}.json"
    if marker.exists():
        raise WakeError(f"cycle {cycle}'s records were requeued already ({marker})")
    records, probes, _ = collect(line, taken, home)
    waiting = _pending_ids(root, pending(line, home))
    kept = [r for r in records if r["id"] not in waiting]
    name = _unique_name()
    record = {
        "cycle": cycle,
        "segment": name if kept else None,
        "records": len(kept),
        "probes": len(probes) if kept else 0,
        "skipped": len(records) - len(kept),
        "created": datetime.now(UTC).isoformat(),
    }
    hidden = root / SEGMENTS / f".{name}"  # invisible to `segments` until the marker is ours
    if kept:
        write_jsonl(hidden, kept)
    if not _create_once(marker, record):  # a concurrent requeue of the same cycle won
        hidden.unlink(missing_ok=True)
        raise WakeError(f"cycle {cycle}'s records were requeued already ({marker})")
    if kept:
        if probes:  # probes first: a visible segment always has its probes
            write_jsonl(root / PROBES / name, probes)
        hidden.rename(root / SEGMENTS / name)
    return record


def collect(line: str, taken: dict, home: Path | None = None) -> tuple[list[dict], list[dict], int]:
    """(records, probes, duplicates dropped) of a claim, in segment order; the first record of an id wins.

    Raises WakeError when a claimed segment is missing or changed since it was claimed."""
    root = buffer_dir(line, home)
    records: list[dict] = []
    probes: list[dict] = []
    seen: set[str] = set()
    dropped = 0
    for name in taken["segments"]:
        path = root / SEGMENTS / name
        if not path.exists() or sha256_file(path) != taken["sha256"][name]:
            raise WakeError(f"{path}: claimed by cycle {taken['cycle']} but missing or changed since")
        for r in _read_jsonl(path):
            if r["id"] in seen:
                dropped += 1
                continue
            seen.add(r["id"])
            records.append(r)
        if (root / PROBES / name).exists():
            probes += _read_jsonl(root / PROBES / name)
    return records, probes, dropped


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for x in f if x.strip())
    except FileNotFoundError:
        return 0


def status(line: str | None = None, threshold: int | None = None, home: Path | None = None) -> dict:
    """The buffer and the sleep pressure as plain data (what `sleepcycle wake status` and the dashboard show):
    records waiting for a snapshot against `threshold` (default: the `default` profile's
    flow.pressure_threshold)."""
    if threshold is None:
        from sleepcycle.config import load_config

        threshold = load_config("default").flow.pressure_threshold
    settings = load_settings()
    line = line or settings.line
    root = buffer_dir(line, home)
    waiting = pending(line, home)
    records = sum(_count_lines(root / SEGMENTS / n) for n in waiting)
    taken = claims(root)
    quarantined = sum(_count_lines(p) for p in (root / QUARANTINE).glob("*.jsonl")) if root.exists() else 0
    return {
        "line": line,
        "buffer": str(root),
        "records": records,
        "segments": len(waiting),
        "threshold": threshold,
        "pressure": records / threshold if threshold else 0.0,
        "due": threshold > 0 and records >= threshold,
        "quarantined": quarantined,
        "last_claim": max(taken) if taken else None,
        "claimed_segments": sum(len(c["segments"]) for c in taken.values()),
    }
