"""The line lock's holder record: a holder counts as dead only when it ran on this host and its pid is gone
(flows/line_lock.py; the lock itself runs against a real Prefect server in tests/integration/test_flow_*.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from flows.line_lock import Holder, holder_key, host_id, read_holder
from sleepcycle.store.artifacts import LocalStore


def _gone_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # exited and reaped: the pid names no process (until the kernel reuses it)
    return proc.pid


def test_a_holder_is_dead_only_on_this_host_with_its_process_gone():
    here = host_id()
    assert here.startswith(socket.gethostname())
    assert Holder("l", here, _gone_pid()).dead_here()
    assert not Holder("l", here, os.getpid()).dead_here()
    assert not Holder("l", here, os.getppid()).dead_here()
    assert not Holder("l", "another-host", _gone_pid()).dead_here()  # elsewhere: only its lease can tell
    assert not Holder("l", socket.gethostname() + "/pid:[1]", _gone_pid()).dead_here()  # another pid namespace
    assert not Holder("l", here, 0).dead_here()


def test_a_missing_or_broken_holder_record_reads_as_none(tmp_path):
    store = LocalStore(tmp_path / "store")
    assert read_holder(store, "main") is None
    store.put_bytes(holder_key("main"), b"{not json")
    assert read_holder(store, "main") is None
    store.put_bytes(holder_key("main"), b'{"lease_id": "x", "host": "h", "pid": 3, "unknown": 1}')
    assert read_holder(store, "main") is None
    store.put_bytes(holder_key("main"), b'{"lease_id": "x", "host": "h", "pid": 3}')
    assert read_holder(store, "main") == Holder("x", "h", 3)
