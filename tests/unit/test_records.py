"""Every validation case of the public formats: a clear reason, and the good records survive."""

import json

import pytest

from sleepcycle.records import RecordError, read, write_jsonl

GOOD = [{"text": "Ada lives in Velmora.", "id": "a"}, {"text": "Bo works at Corvid Systems.", "id": "b"}]


def _file(tmp_path, bad_line: bytes, name="wake.jsonl"):
    lines = [json.dumps(GOOD[0]).encode(), bad_line, json.dumps(GOOD[1]).encode()]
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.mark.parametrize(
    "bad, field, reason",
    [
        (b'{"text": "unterminated', None, "bad JSON"),
        (b'{"text": ""}', "text", "must not be empty"),
        (b'{"text": "   "}', "text", "must not be empty"),
        (b'{"text": 42}', "text", "must be a str"),
        (b'{"id": "x"}', "text", "missing required field"),
        (b'{"text": "Cy is a baker.", "id": "a"}', "id", "duplicate id 'a' (first on line 1)"),
        (b'{"text": "Cy is a baker.", "time": "yesterday"}', "time", "not an ISO-8601 timestamp"),
        (b'{"text": "Cy is a baker.", "colour": "red"}', "colour", "unknown field"),
        (b'["a", "list"]', None, "expected a JSON object"),
        (b'{"text": "caf\xe9"}', None, "invalid UTF-8"),
        (b"\x00\x01\x02\x03binary\x7f", None, "binary data"),
    ],
)
def test_bad_wake_record_is_rejected_with_reason_and_good_records_survive(tmp_path, bad, field, reason):
    path = _file(tmp_path, bad)
    quarantine = tmp_path / "quarantine.jsonl"
    loaded = read(path, "wake", quarantine=quarantine)
    assert [r["text"] for r in loaded.records] == [g["text"] for g in GOOD]
    assert len(loaded.rejected) == 1
    rej = loaded.rejected[0]
    assert rej.line == 2 and rej.field == field and reason in rej.reason
    assert str(rej).startswith(f"{path}:2")
    q = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert q[0]["line"] == 2 and reason in q[0]["reason"]


def test_oversize_record_is_rejected_by_configurable_limit(tmp_path):
    big = json.dumps({"text": "x" * 500}).encode()
    path = _file(tmp_path, big)
    loaded = read(path, "wake", max_bytes=200)
    assert len(loaded.records) == 2
    assert "over the 200-byte limit" in loaded.rejected[0].reason
    assert len(read(path, "wake", max_bytes=10_000).records) == 3


def test_records_without_id_get_a_content_id_and_duplicates_are_caught(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text('{"text": "same"}\n{"text": "same"}\n{"text": "other", "time": "2026-01-02T03:04:05Z"}\n')
    loaded = read(path, "wake")
    assert len(loaded.records) == 2 and loaded.records[0]["id"].startswith("sha-")
    assert "duplicate id" in loaded.rejected[0].reason


@pytest.mark.parametrize(
    "bad, field, reason",
    [
        (b'{"question": "Where?"}', "answer", "missing required field"),
        (b'{"question": "", "answer": "x"}', "question", "must not be empty"),
        (b'{"question": "Where?", "answer": "x", "aliases": "y"}', "aliases", "must be a list"),
        (b'{"question": "Where?", "answer": "x", "aliases": [1]}', "aliases", "list of non-empty strings"),
        (b'{"question": "Where?", "answer": 3}', "answer", "must be a str"),
    ],
)
def test_bad_probe_is_rejected(tmp_path, bad, field, reason):
    good = [{"question": "Where does Ada live?", "answer": "Velmora", "aliases": ["velmora city"], "kind": "fact"}]
    path = tmp_path / "probes.jsonl"
    path.write_bytes(json.dumps(good[0]).encode() + b"\n" + bad + b"\n")
    loaded = read(path, "probe")
    assert loaded.records == good
    assert loaded.rejected[0].field == field and reason in loaded.rejected[0].reason


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(RecordError, match="no such file"):
        read(tmp_path / "nope.jsonl", "wake")


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.jsonl"
    write_jsonl(target, [{"text": "kept"}])

    class Boom:
        def __iter__(self):
            yield {"text": "half"}
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_jsonl(target, Boom())
    assert target.read_text() == '{"text": "kept"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]
