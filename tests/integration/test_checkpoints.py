"""Content-addressed checkpoints on both stores: publish/fetch round trips a real model (same greedy
output through plain transformers + PEFT), the base is stored once, every download is verified, and an
interrupted publish leaves nothing visible."""

from __future__ import annotations

import hashlib
import io
import json
import shutil

import pytest

from integration.helpers import after_uploads, boto3_client, greedy, s3_store
from sleepcycle.manifests import IntegrityError, Manifest
from sleepcycle.store.artifacts import LocalStore, ObjectNotFound
from sleepcycle.store.checkpoints import (
    blob_key,
    dream_set_digest,
    fetch,
    list_manifests,
    manifest_key,
    publish,
    read_blob,
    read_manifest,
)

pytestmark = pytest.mark.integration


def corrupt(store, key: str) -> None:
    """Flip one byte of a stored object behind the store's back (as bit rot or a bad disk would)."""
    data = bytearray(store.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    if isinstance(store, LocalStore):
        (store.root / key).write_bytes(bytes(data))
    else:
        store.client.put_object(store.bucket, key, io.BytesIO(bytes(data)), len(data))


def test_published_checkpoint_loads_and_generates_the_same(store, checkpoints, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sleepcycle.experts import load_for_inference

    model, tok = load_for_inference(checkpoints.cycle2)
    expected = greedy(model, tok)
    base_only, _ = load_for_inference(checkpoints.cycle2 / "base")
    assert greedy(base_only, tok) != expected, "the experts must matter for this test to mean anything"

    m = publish(store, checkpoints.cycle2)
    assert m.uri == store.uri(manifest_key("checkpoint", m.digest))
    local = fetch(store, "checkpoint", m.digest, tmp_path / "champion")
    assert local.digest == m.digest and local.uri == str(tmp_path / "champion")

    # Plain transformers + PEFT, no sleepcycle code: base, then each expert merged in.
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "champion" / "base")
    for slot in json.loads((tmp_path / "champion" / "sleep.json").read_text())["active"]:
        plain = PeftModel.from_pretrained(plain, tmp_path / "champion" / "experts" / slot).merge_and_unload()
    plain_tok = AutoTokenizer.from_pretrained(tmp_path / "champion" / "base")
    assert greedy(plain.eval(), plain_tok) == expected
    again, again_tok = load_for_inference(tmp_path / "champion")
    assert greedy(again, again_tok) == expected


def test_base_is_stored_once_and_a_cycle_adds_only_its_expert(store, checkpoints):
    first = publish(store, checkpoints.cycle1)
    blobs_after_first = set(store.list("blobs/"))
    stats = {}
    second = publish(store, checkpoints.cycle2, log=stats.update)
    new = set(store.list("blobs/")) - blobs_after_first
    new_files = {rel for rel, sha in second.files.items() if blob_key(sha) in new}
    assert new_files and all(rel.startswith("experts/e01/") or rel == "sleep.json" for rel in new_files)
    assert not any(rel.startswith("base/") for rel in new_files)
    assert stats["publish/uploaded_bytes"] < stats["publish/skipped_bytes"] / 5
    assert {first.digest, second.digest} == set(list_manifests(store, "checkpoint"))
    # Publishing again uploads nothing and returns the stored manifest.
    stats.clear()
    assert publish(store, checkpoints.cycle2, log=stats.update) == second and stats == {}


def test_every_downloaded_file_is_verified_a_flipped_byte_is_an_integrity_error(store, checkpoints, tmp_path):
    m = publish(store, checkpoints.cycle1)
    sha = m.files["base/model.safetensors"]
    corrupt(store, blob_key(sha))
    with pytest.raises(IntegrityError, match=r"base/model\.safetensors: downloaded sha256 .* does not match"):
        fetch(store, "checkpoint", m.digest, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ckpt")] == []  # no temp dir left


def test_a_missing_blob_is_an_integrity_error(store, checkpoints, tmp_path):
    m = publish(store, checkpoints.cycle1)
    store.delete(blob_key(m.files["sleep.json"]))
    with pytest.raises(IntegrityError, match="sleep.json: blob .* is missing"):
        fetch(store, "checkpoint", m.digest, tmp_path / "ckpt")


def test_a_tampered_manifest_is_refused(store, checkpoints):
    m = publish(store, checkpoints.cycle1)
    key = manifest_key("checkpoint", m.digest)
    doc = json.loads(store.get_bytes(key))
    doc["files"]["base/config.json"] = "0" * 64
    store.put_bytes(key, json.dumps(doc).encode())
    with pytest.raises(IntegrityError, match="does not hash to its name"):
        read_manifest(store, "checkpoint", m.digest)


def test_a_verified_local_copy_is_reused_and_a_damaged_one_replaced(store, checkpoints, tmp_path):
    m = publish(store, checkpoints.cycle1)
    dest = tmp_path / "cache" / "c1"
    fetch(store, "checkpoint", m.digest[:12], dest)  # a unique prefix is enough
    downloads = []
    get_file = store.get_file
    store.get_file = lambda key, path: downloads.append(key) or get_file(key, path)
    fetch(store, "checkpoint", m.digest, dest)
    assert downloads == []
    (dest / "sleep.json").write_text("{}")  # damage the local copy
    fetch(store, "checkpoint", m.digest, dest)
    assert len(downloads) == len(m.files)
    Manifest.read(dest).verify(dest)


def test_an_interrupted_publish_leaves_no_manifest_and_the_champion_untouched(store, checkpoints, tmp_path):
    champion = publish(store, checkpoints.cycle1)

    def boom():
        raise RuntimeError("injected: publisher died after 2 blobs")

    # cycle2's base blobs already exist; only its new files upload. Fail after the second of them.
    uploaded = after_uploads(store, 2, boom)
    with pytest.raises(RuntimeError, match="injected"):
        publish(store, checkpoints.cycle2)
    assert len(uploaded) == 2
    assert list_manifests(store, "checkpoint") == [champion.digest]  # the half upload is invisible
    fetch(store, "checkpoint", champion.digest, tmp_path / "champion").verify(tmp_path / "champion")


def test_publish_refuses_files_that_do_not_match_their_manifest(store, checkpoints, tmp_path):
    work = tmp_path / "ckpt"
    shutil.copytree(checkpoints.cycle1, work)
    (work / "sleep.json").write_text('{"edited": true}')
    with pytest.raises(IntegrityError, match="sleep.json.*not published"):
        publish(store, work)
    assert list_manifests(store, "checkpoint") == []


def test_snapshots_and_dream_sets_are_stored_by_digest(store, tmp_path):
    from sleepcycle.snapshot import take_snapshot

    snap = take_snapshot(
        [{"text": "Ada Velm lives in Velmora."}, {"text": "Bo Tarsk owns a parrot."}],
        tmp_path / "snapshots",
        probes=[{"question": "Where does Ada Velm live?", "answer": "Velmora"}],
    )
    stored = publish(store, snap.uri)
    assert stored.kind == "snapshot" and stored.digest == snap.digest
    back = fetch(store, "snapshot", snap.digest, tmp_path / "fetched")
    assert (tmp_path / "fetched" / "wake.jsonl").read_text() == (
        tmp_path / "snapshots" / snap.name / "wake.jsonl"
    ).read_text()
    assert back.meta["documents"] == 2

    dreamed = tmp_path / "dreamed"
    dreamed.mkdir()
    (dreamed / "dreams.jsonl").write_text('{"text": "a dream"}\n')
    m = Manifest.of_directory(dreamed, "checkpoint")
    m.write(dreamed)
    publish(store, dreamed)
    digest = dream_set_digest(m)
    assert digest == hashlib.sha256(b'{"text": "a dream"}\n').hexdigest()
    assert read_blob(store, digest) == b'{"text": "a dream"}\n'
    with pytest.raises(ObjectNotFound):
        fetch(store, "checkpoint", "f" * 64, tmp_path / "nothing")


def test_boto3_sees_the_promoted_checkpoint_and_its_bytes_match_the_manifest(s3_server, checkpoints, tmp_path):
    store = s3_store(s3_server)
    m = publish(store, checkpoints.cycle2)
    s3 = boto3_client(s3_server)  # not our code: an independent S3 client
    keys = {
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=store.bucket)
        for o in page.get("Contents", [])
    }
    assert manifest_key("checkpoint", m.digest) in keys
    manifest = json.loads(s3.get_object(Bucket=store.bucket, Key=manifest_key("checkpoint", m.digest))["Body"].read())
    assert manifest["files"] == m.files
    for rel, sha in manifest["files"].items():
        assert blob_key(sha) in keys
        body = s3.get_object(Bucket=store.bucket, Key=blob_key(sha))["Body"].read()
        assert hashlib.sha256(body).hexdigest() == sha, rel
