"""Concurrent writers of the wake buffer: 4 processes x 1,000 good records (with bad lines and ids the
processes share) land in the next snapshot exactly once each; every bad line is in quarantine with its reason.

    .venv/bin/python -m pytest tests/integration/test_flow_wake.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

WRITERS, ADDS, PER_ADD, SHARED = 4, 50, 20, 25

# One writer: ADDS appends of PER_ADD good records, two bad lines each, and the SHARED ids every writer sends.
WRITER = f"""
import json, sys
from sleepcycle import wake
p = int(sys.argv[1])
for a in range({ADDS}):
    good = [{{"id": f"p{{p}}-{{a * {PER_ADD} + i}}", "text": f"writer {{p}} record {{a * {PER_ADD} + i}}"}} for i in range({PER_ADD})]
    shared = [{{"id": f"shared-{{a % {SHARED}}}", "text": f"a fact every writer saw: {{a % {SHARED}}}"}}]
    blob = "".join(json.dumps(r) + "\\n" for r in good + shared) + '{{"text": "cut off\\n' + '{{"id": "x"}}\\n'
    wake.add_bytes(blob.encode(), f"writer-{{p}}-add-{{a}}", line="busy")
"""


def test_concurrent_wake_adds_land_exactly_once_in_the_next_snapshot(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))  # flows/ sits at the repository root
    from flows.sleep_cycle import snapshot_stage
    from sleepcycle import wake
    from sleepcycle.store import open_store

    monkeypatch.setenv("SLEEPCYCLE_HOME", str(tmp_path / "home"))
    for k in ("SLEEPCYCLE_S3_ENDPOINT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    env = {**os.environ}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(p)], env=env) for p in range(WRITERS)]
    assert [w.wait(300) for w in writers] == [0] * WRITERS

    status = wake.status("busy", threshold=1000)
    good = {f"p{p}-{i}" for p in range(WRITERS) for i in range(ADDS * PER_ADD)}
    expected = good | {f"shared-{k}" for k in range(SHARED)}
    # Some shared ids were refused at add time ("already in the buffer"); racing ones got in twice.
    assert len(expected) <= status["records"] <= len(expected) + WRITERS * ADDS
    quarantine = [
        json.loads(x)
        for f in (tmp_path / "home/wake/busy/quarantine").glob("*.jsonl")
        for x in f.read_text().splitlines()
    ]
    assert sum("bad JSON" in q["reason"] for q in quarantine) == WRITERS * ADDS
    assert sum(q["field"] == "text" and "missing" in q["reason"] for q in quarantine) == WRITERS * ADDS
    dup_refused = sum("already in the buffer" in q["reason"] for q in quarantine)
    assert status["records"] + dup_refused == len(good) + WRITERS * ADDS  # nothing lost: kept or quarantined

    claim = wake.claim("busy", 1)
    store = open_store()
    out = snapshot_stage.fn("busy", claim, store.uri(), str(tmp_path / "snapshots"))  # the flow's snapshot stage
    snapshot = Path(out["manifest"]["uri"].removeprefix("file://"))
    assert out["manifest"]["meta"]["documents"] == len(expected)
    local = tmp_path / "snapshots" / out["manifest"]["name"]
    ids = [json.loads(x)["id"] for x in (local / "wake.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) and set(ids) == expected
    assert out["duplicates_dropped"] == status["records"] - len(expected)
    assert snapshot.name.endswith(".json")  # published: the manifest is in the store, named by its digest
    assert wake.status("busy", threshold=1000)["records"] == 0  # the claim took everything that waited
