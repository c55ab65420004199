"""Faults during publish: the publishing process killed halfway, the S3 server paused (unresponsive)
or killed mid-upload. In every case readers see either the old state or the complete new checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from integration.helpers import ROOT, after_uploads, host_of, local_servers, s3_store
from sleepcycle.store.artifacts import LocalStore, S3Store, StoreUnavailable
from sleepcycle.store.checkpoints import fetch, list_manifests, publish
from sleepcycle.store.registry import LocalRegistry

pytestmark = pytest.mark.integration

# Publishes a checkpoint, pausing after each uploaded blob so the parent can kill it mid-way.
PUBLISHER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sleepcycle.store.artifacts import LocalStore, S3Store
    from sleepcycle.store.checkpoints import publish

    kind, where, bucket, src = sys.argv[1:5]
    store = LocalStore(Path(where)) if kind == "local" else S3Store(where, bucket, "testing", "testing")
    put_file = store.put_file
    def slow_put(key, path):
        put_file(key, path)
        print("uploaded", key, flush=True)
        time.sleep(0.5)
    store.put_file = slow_put
    publish(store, Path(src))
    print("published", flush=True)
    """
)


def test_publisher_killed_halfway_leaves_no_manifest_and_the_champion_untouched(store, checkpoints, tmp_path):
    registry = LocalRegistry(store)
    champion = publish(store, checkpoints.cycle1)
    registry.approve("main", registry.register("main", champion.digest, cycle=1), who="ana")

    if isinstance(store, LocalStore):
        args = ["local", str(store.root), "-", str(checkpoints.cycle2)]
    else:
        args = ["s3", store.endpoint, store.bucket, str(checkpoints.cycle2)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "platform")}
    proc = subprocess.Popen([sys.executable, "-c", PUBLISHER, *args], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().startswith("uploaded blobs/sha256/")
        proc.send_signal(signal.SIGKILL)  # no cleanup, no finally: as if the machine lost power
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    assert list_manifests(store, "checkpoint") == [champion.digest]
    assert registry.champion("main").digest == champion.digest
    fetch(store, "checkpoint", champion.digest, tmp_path / "champion").verify(tmp_path / "champion")
    # A later publish completes the job (and uploads only what is still missing).
    assert publish(store, checkpoints.cycle2).digest in list_manifests(store, "checkpoint")


@pytest.fixture
def own_s3(servers_dir):
    """An S3 server of this test's own, which it may pause or kill."""
    server = local_servers.start_s3(servers_dir, name=f"s3-faults-{time.monotonic_ns()}")
    yield server
    try:
        os.kill(server.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass
    local_servers.stop(server)


def test_s3_server_unresponsive_mid_upload_retries_then_fails_with_nothing_published(own_s3, checkpoints, caplog):
    store = s3_store(own_s3, retries=2, backoff=0.2, timeout=1.5)
    uploaded = after_uploads(store, 2, lambda: os.kill(own_s3.pid, signal.SIGSTOP))
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match=r"timed out \(gave up after 3 attempts\)"):
        publish(store, checkpoints.cycle1)
    assert time.monotonic() - t0 >= 3 * 1.5  # three attempts, each waiting out the timeout
    assert sum("retry" in r.getMessage() for r in caplog.records) == 2

    os.kill(own_s3.pid, signal.SIGCONT)
    assert len(uploaded) == 2 and all(store.exists(k) for k in uploaded)  # blobs were written...
    assert list_manifests(store, "checkpoint") == []  # ...but nothing is published
    m = publish(store, checkpoints.cycle1)  # and a retry later finishes it
    assert list_manifests(store, "checkpoint") == [m.digest]


def test_s3_server_back_within_the_retries_publish_succeeds(own_s3, checkpoints):
    store = s3_store(own_s3, retries=4, backoff=0.5, timeout=1.0)

    def pause_for_a_second():
        os.kill(own_s3.pid, signal.SIGSTOP)
        threading.Timer(1.0, os.kill, (own_s3.pid, signal.SIGCONT)).start()

    after_uploads(store, 1, pause_for_a_second)
    m = publish(store, checkpoints.cycle1)
    assert list_manifests(store, "checkpoint") == [m.digest]


def test_s3_server_killed_mid_upload_is_a_clear_error(own_s3, checkpoints):
    store = s3_store(own_s3, retries=2, backoff=0.1, timeout=2)
    after_uploads(store, 2, lambda: local_servers.stop(own_s3))
    with pytest.raises(StoreUnavailable, match=r"connection refused \(gave up after 3 attempts\)"):
        publish(store, checkpoints.cycle1)
    # moto keeps objects in memory, so a restarted server is empty; what matters is that our client
    # gave up cleanly and never wrote the manifest before the blobs.
    fresh = local_servers.start_s3(Path(own_s3.log).parent, port=int(own_s3.url.rsplit(":", 1)[1]), name="s3-restarted")
    try:
        again = S3Store(host_of(fresh.url), store.bucket, "testing", "testing", create_bucket=True)
        assert list_manifests(again, "checkpoint") == []
    finally:
        local_servers.stop(fresh)
