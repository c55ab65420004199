"""The ArtifactStore contract, run against a local directory and against the S3 server process; then
what only S3 has: multipart uploads, bucket and credential errors, retries on an unreachable endpoint."""

from __future__ import annotations

import logging
import os
import time

import pytest

from integration.helpers import boto3_client, host_of, local_servers, s3_store
from sleepcycle.store.artifacts import (
    AccessDenied,
    BucketNotFound,
    LocalStore,
    ObjectExists,
    ObjectNotFound,
    S3Store,
    StoreError,
    StoreUnavailable,
    open_store,
)

pytestmark = pytest.mark.integration


# ----- the contract, on both stores --------------------------------------------------------------------


def test_bytes_and_files_round_trip(store, tmp_path):
    store.put_bytes("a/b/c.json", b'{"x": 1}')
    assert store.get_bytes("a/b/c.json") == b'{"x": 1}'
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    store.put_file("files/src.bin", src)
    out = store.get_file("files/src.bin", tmp_path / "deep" / "out.bin")
    assert out.read_bytes() == src.read_bytes()
    store.put_bytes("a/b/c.json", b"replaced")
    assert store.get_bytes("a/b/c.json") == b"replaced"


def test_empty_objects(store, tmp_path):
    (tmp_path / "empty").write_bytes(b"")
    store.put_file("e/file", tmp_path / "empty")
    store.put_bytes("e/bytes", b"")
    assert store.get_bytes("e/bytes") == b""
    assert store.get_file("e/file", tmp_path / "got").read_bytes() == b""


def test_exists_list_delete(store):
    for key in ("m/checkpoint/aa.json", "m/checkpoint/ab.json", "m/snapshot/aa.json", "mx/other"):
        store.put_bytes(key, b"1")
    assert store.exists("m/checkpoint/aa.json") and not store.exists("m/checkpoint/zz.json")
    assert store.list("m/checkpoint/") == ["m/checkpoint/aa.json", "m/checkpoint/ab.json"]
    assert store.list("m/checkpoint/a") == ["m/checkpoint/aa.json", "m/checkpoint/ab.json"]
    assert store.list("m/") == ["m/checkpoint/aa.json", "m/checkpoint/ab.json", "m/snapshot/aa.json"]
    assert store.list("nothing/") == []
    store.delete("m/checkpoint/aa.json")
    store.delete("m/checkpoint/aa.json")  # deleting what is gone is not an error
    assert store.list("m/checkpoint/") == ["m/checkpoint/ab.json"]


def test_missing_object_is_a_clear_error_and_leaves_no_file(store, tmp_path):
    with pytest.raises(ObjectNotFound, match="no object 'not/there'"):
        store.get_bytes("not/there")
    out = tmp_path / "downloads"
    out.mkdir()
    with pytest.raises(ObjectNotFound):
        store.get_file("not/there", out / "file")
    assert not list(out.iterdir())  # neither the file nor a temp file


def test_exclusive_put_never_replaces(store):
    store.put_bytes("claims/000001.json", b"first", exclusive=True)
    with pytest.raises(ObjectExists):
        store.put_bytes("claims/000001.json", b"second", exclusive=True)
    assert store.get_bytes("claims/000001.json") == b"first"


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "a/.hidden", "a\\b"])
def test_bad_keys_are_refused(store, key):
    with pytest.raises(StoreError, match="invalid object key"):
        store.put_bytes(key, b"x")


def test_uris_name_the_object(store):
    uri = store.uri("blobs/sha256/ab")
    assert uri.endswith("/blobs/sha256/ab")
    assert uri.startswith("s3://" if isinstance(store, S3Store) else "file:///")


def test_local_store_leaves_no_temp_files(tmp_path):
    store = LocalStore(tmp_path / "s")
    store.put_bytes("a/b", b"x")
    store.put_file("a/c", __file__)
    assert sorted(p.name for p in (tmp_path / "s" / "a").iterdir()) == ["b", "c"]


# ----- S3 only ----------------------------------------------------------------------------------------


def test_large_files_upload_in_parts(s3_server, tmp_path):
    store = s3_store(s3_server, part_size=5 << 20)
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 << 20))
    store.put_file("big.bin", big)
    head = boto3_client(s3_server).head_object(Bucket=store.bucket, Key="big.bin")
    assert head["ETag"].strip('"').endswith("-3")  # an S3 multipart ETag: md5-of-parts "-" part count
    assert store.get_file("big.bin", tmp_path / "back.bin").read_bytes() == big.read_bytes()


def test_missing_bucket_is_a_clear_error(s3_server):
    store = s3_store(s3_server, bucket="no-such-bucket", create_bucket=False)
    with pytest.raises(BucketNotFound, match="bucket 'no-such-bucket' does not exist at http://127.0.0.1"):
        store.get_bytes("anything")


def test_bad_credentials_are_a_clear_error(servers_dir):
    # A second S3 server that checks every request's credentials (moto skips auth by default).
    strict = local_servers.start_s3(servers_dir, env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}, name="s3-auth")
    try:
        store = S3Store(host_of(strict.url), "sleepcycle", access_key="AKIAWRONG", secret_key="nope", retries=0)
        with pytest.raises(AccessDenied, match="refused the credentials.*AWS_ACCESS_KEY_ID"):
            store.put_bytes("x", b"1")
    finally:
        local_servers.stop(strict)


def test_unreachable_endpoint_retries_with_backoff_then_fails_clearly(caplog):
    port = local_servers.free_port()  # nothing listens there
    store = S3Store(f"127.0.0.1:{port}", "sleepcycle", "testing", "testing", retries=3, backoff=0.2, timeout=2)
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="sleepcycle.store"):
        with pytest.raises(StoreUnavailable, match="connection refused.*gave up after 4 attempts"):
            store.get_bytes("x")
    waited = time.monotonic() - t0
    assert 0.2 + 0.4 + 0.8 <= waited < 10  # exponential backoff between the four attempts
    assert [r.getMessage().split("; ")[1][:9] for r in caplog.records] == ["retry 1/3", "retry 2/3", "retry 3/3"]


def test_open_store_follows_the_environment(s3_env, monkeypatch, tmp_path):
    store = open_store()
    assert isinstance(store, S3Store) and store.bucket == "sleepcycle" and store.url == s3_env["SLEEPCYCLE_S3_ENDPOINT"]
    store.put_bytes("env/check", b"ok")
    assert store.get_bytes("env/check") == b"ok"
    monkeypatch.delenv("SLEEPCYCLE_S3_ENDPOINT")
    local = open_store()
    assert isinstance(local, LocalStore) and local.root == (tmp_path / "home" / "store").resolve()
