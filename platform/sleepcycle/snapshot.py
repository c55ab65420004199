"""Wake snapshots: the new knowledge the model met while awake, frozen as an immutable, content-addressed
directory (wake.jsonl, optional probes.jsonl, manifest.json) named by its digest.

    from sleepcycle.snapshot import take_snapshot
    manifest = take_snapshot(records, workdir / "snapshots", probes=probe_records)

Probes travel with a snapshot for evaluation only: no stage that trains reads them (`read_documents`
returns texts alone), and a test checks that no probe question reaches a training text.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from sleepcycle.manifests import Manifest
from sleepcycle.records import parse, write_jsonl
from sleepcycle.trainer import Log, noop

WAKE, PROBES = "wake.jsonl", "probes.jsonl"


class SnapshotError(ValueError):
    """A snapshot that cannot be taken or read (no usable documents, a bad record, a bad directory)."""


def take_snapshot(
    records: list[dict], root: Path, probes: list[dict] | None = None, day: int | None = None, log: Log = noop
) -> Manifest:
    """Validate `records` (wake format) and freeze them under root/<digest>; returns the manifest.

    Re-taking a snapshot of the same records returns the same digest and writes nothing new."""
    blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    loaded = parse(blob, "wake", source="snapshot")
    if loaded.rejected:
        raise SnapshotError(f"snapshot refused: {loaded.rejected[0]}")
    if not loaded.records:
        raise SnapshotError("snapshot has no usable documents (every wake record was empty or invalid)")
    if probes:
        pblob = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in probes).encode()
        bad = parse(pblob, "probe", source="snapshot probes").rejected
        if bad:
            raise SnapshotError(f"snapshot refused: {bad[0]}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".snapshot-"))
    try:
        write_jsonl(tmp / WAKE, loaded.records)
        if probes:
            write_jsonl(tmp / PROBES, probes)
        manifest = Manifest.of_directory(
            tmp, "snapshot", meta={"documents": len(loaded.records), "probes": len(probes or []), "day": day}
        )
        final = root / manifest.digest[:16]
        manifest = manifest.model_copy(update={"name": final.name, "uri": str(final)})
        if final.exists():
            shutil.rmtree(tmp)
            existing = Manifest.read(final)
            existing.verify(final)
            return existing
        manifest.write(tmp)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log({"snapshot/documents": len(loaded.records)})
    return manifest


def read_documents(snapshot: Manifest | Path) -> list[str]:
    """The texts of a snapshot's wake records, verified against its manifest (never its probes)."""
    root = Path(snapshot.uri if isinstance(snapshot, Manifest) else snapshot)
    manifest = Manifest.read(root)
    manifest.verify(root)
    texts = [json.loads(line)["text"] for line in (root / WAKE).read_text().splitlines() if line.strip()]
    if not texts:
        raise SnapshotError(f"{root}: snapshot has no usable documents")
    return texts


def read_probes(snapshot: Manifest | Path) -> list[dict]:
    root = Path(snapshot.uri if isinstance(snapshot, Manifest) else snapshot)
    path = root / PROBES
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
