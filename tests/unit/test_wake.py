"""The wake buffer: validated appends, quarantine with reasons, claims for sleep cycles, sleep pressure."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sleepcycle import wake

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPCYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SLEEPCYCLE_LINE", raising=False)
    return tmp_path / "home"


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sleepcycle", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "SLEEPCYCLE_HOME": str(home)},
    )


def test_add_keeps_good_records_and_quarantines_the_rest_with_reasons(home, tmp_path):
    src = _jsonl(
        tmp_path / "day.jsonl",
        [{"text": "Ada lives in Velmora.", "id": "a"}, '{"text": ', {"text": "Bo is a baker."}, {"txt": "typo"}],
    )
    added = wake.add(src, line="main")
    assert (added.accepted, added.rejected) == (2, 2)
    segment = home / "wake" / "main" / "segments" / added.segment
    kept = [json.loads(x) for x in segment.read_text().splitlines()]
    assert [r["text"] for r in kept] == ["Ada lives in Velmora.", "Bo is a baker."]
    assert kept[1]["id"].startswith("sha-")  # records without an id get a content hash
    quarantined = [json.loads(x) for x in Path(added.quarantine).read_text().splitlines()]
    assert [(q["line"], q["field"]) for q in quarantined] == [(2, None), (4, "txt")]
    assert "bad JSON" in quarantined[0]["reason"] and quarantined[1]["raw"] == '{"txt": "typo"}'


def test_duplicates_are_refused_against_the_waiting_buffer_and_dropped_when_a_claim_is_read(home, tmp_path):
    wake.add_records([{"text": "one", "id": "x"}, {"text": "two", "id": "y"}], line="main")
    again = wake.add_records([{"text": "one again", "id": "x"}, {"text": "three", "id": "z"}], line="main")
    assert (again.accepted, again.rejected) == (1, 1) and "already in the buffer" in again.reasons[0]
    # Two writers racing past the add-time check both land a record "w": the claim reader keeps the first.
    root = home / "wake" / "main" / "segments"
    (root / "99999999999999999999-1-aaaaaaaa.jsonl").write_text(json.dumps({"id": "w", "text": "first"}) + "\n")
    (root / "99999999999999999999-2-bbbbbbbb.jsonl").write_text(json.dumps({"id": "w", "text": "second"}) + "\n")
    records, probes, dropped = wake.collect("main", wake.claim("main", 1))
    assert [r["id"] for r in records] == ["x", "y", "z", "w"] and records[-1]["text"] == "first"
    assert dropped == 1 and probes == []


def test_claims_freeze_what_a_cycle_sleeps_on_and_pressure_counts_the_rest(home):
    wake.add_records([{"text": f"doc {i}"} for i in range(3)], line="main", probes=[{"question": "q?", "answer": "a"}])
    st = wake.status("main", threshold=4)
    assert (st["records"], st["segments"], st["due"]) == (3, 1, False) and st["pressure"] == 0.75
    first = wake.claim("main", 1)
    assert wake.claim("main", 1) == first  # a re-run of cycle 1 sleeps on exactly the same segments
    wake.add_records([{"text": "late arrival"}], line="main")
    assert wake.status("main", threshold=4)["records"] == 1
    second = wake.claim("main", 2)
    assert set(first["segments"]).isdisjoint(second["segments"])
    records, probes, _ = wake.collect("main", first)
    assert len(records) == 3 and probes == [{"question": "q?", "answer": "a"}]
    assert wake.release("main", 2) and wake.status("main", threshold=1)["due"]


def test_a_claimed_segment_that_changed_is_an_error(home):
    wake.add_records([{"text": "doc"}], line="main")
    taken = wake.claim("main", 1)
    segment = home / "wake" / "main" / "segments" / taken["segments"][0]
    segment.write_text(json.dumps({"id": "evil", "text": "swapped"}) + "\n")
    with pytest.raises(wake.WakeError, match="changed"):
        wake.collect("main", taken)


def test_status_reads_the_default_profile_threshold(home):
    from sleepcycle.config import load_config

    st = wake.status("fresh")
    assert st["records"] == 0 and st["threshold"] == load_config("default").flow.pressure_threshold


def test_cli_wake_add_and_status(home, tmp_path):
    src = _jsonl(tmp_path / "in.jsonl", [{"text": "Ada lives in Velmora."}, "not json"])

    run = lambda *args: _cli(home, *args)  # noqa: E731

    out = run("wake", "add", str(src), "--line", "cli")
    assert out.returncode == 0, out.stderr
    assert "added 1 wake records" in out.stdout and "1 rejected lines quarantined" in out.stdout
    assert f"{src}:2" in out.stderr
    out = run("wake", "status", "--line", "cli", "--config", "tiny", "--json")
    assert json.loads(out.stdout)["records"] == 1
    out = run("wake", "add", str(tmp_path / "missing.jsonl"))
    assert out.returncode == 2 and "no such file" in out.stderr and "Traceback" not in out.stderr


def test_requeue_gives_a_cycles_records_back_once_and_keeps_its_claim(home):
    wake.add_records(
        [{"text": "Ada lives in Velmora.", "id": "a"}, {"text": "Bo is a baker.", "id": "b"}],
        line="main",
        probes=[{"question": "Where does Ada live?", "answer": "Velmora"}],
    )
    first = wake.claim("main", 1)
    assert wake.pending("main") == []
    wake.add_records([{"text": "Cy arrived later.", "id": "c"}, {"text": "Bo again.", "id": "b"}], line="main")

    done = wake.requeue("main", 1)
    # "b" is waiting already (added again after the claim): the waiting copy is kept, the old one left out
    assert (done["records"], done["probes"], done["skipped"]) == (1, 1, 1)
    assert wake.claims(home / "wake" / "main")[1] == first  # the cycle's lineage is untouched
    with pytest.raises(wake.WakeError, match="requeued already"):
        wake.requeue("main", 1)

    records, probes, dropped = wake.collect("main", wake.claim("main", 2))
    assert sorted(r["id"] for r in records) == ["a", "b", "c"] and dropped == 0
    assert {r["id"]: r["text"] for r in records}["b"] == "Bo again."
    assert probes == [{"question": "Where does Ada live?", "answer": "Velmora"}]


def test_requeue_of_a_cycle_that_claimed_nothing_is_an_error(home):
    with pytest.raises(wake.WakeError, match="claimed no wake records"):
        wake.requeue("main", 7)
    assert not (home / "wake" / "main" / "requeued").exists()


def test_cli_requeue_only_for_a_cycle_that_was_not_promoted(home):
    from sleepcycle.store import open_store
    from sleepcycle.store.records import write_cycle_record

    run = lambda *args: _cli(home, *args)  # noqa: E731

    wake.add_records([{"text": "Ada lives in Velmora.", "id": "a"}], line="cli")
    wake.claim("cli", 1)
    write_cycle_record(open_store(), "cli", 1, {"state": "approved"})
    out = run("wake", "requeue", "1", "--line", "cli")
    assert out.returncode == 2 and "is approved" in out.stderr and "Traceback" not in out.stderr
    assert wake.pending("cli") == []
    out = run("wake", "requeue", "2", "--line", "cli")
    assert out.returncode == 2 and "has no cycle 2" in out.stderr

    write_cycle_record(open_store(), "cli", 1, {"state": "gate_failed"})
    out = run("wake", "requeue", "1", "--line", "cli")
    assert out.returncode == 0, out.stderr
    assert "1 wake records and 0 probes wait again" in out.stdout
    assert len(wake.pending("cli")) == 1
    out = run("wake", "requeue", "1", "--line", "cli")
    assert out.returncode == 2 and "requeued already" in out.stderr
