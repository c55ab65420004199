"""The line lock against a real Prefect server, in-process, the way the demo uses it: the API URL comes from
`flows.server.use` (Prefect settings in context variables), not from the environment. The lease renewer runs
in a thread of its own; it must talk to that server, not to a temporary one Prefect would start for a
thread without settings (that renewer died at once and the lease lapsed mid-cycle).

    .venv/bin/python -m pytest tests/integration/test_line_lock.py
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

pytestmark = pytest.mark.integration


def test_the_lease_renewer_keeps_renewing_on_the_server_the_block_uses(prefect_server, monkeypatch, tmp_path):
    from flows import line_lock, server
    from sleepcycle.config import FlowConfig
    from sleepcycle.store.artifacts import LocalStore

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "false")  # a temporary server would be an error
    monkeypatch.setattr(line_lock, "RENEW_EVERY_S", 0.3)
    failures: list[BaseException] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    line, store = f"lock-{uuid.uuid4().hex[:6]}", LocalStore(tmp_path / "store")
    fc = FlowConfig(lock_wait_s=5, lock_lease_s=60)
    with server.use(prefect_server.url):
        with line_lock.line_lock(line, fc, store=store) as lease:
            time.sleep(1.5)  # several renewals
            renewer = [t for t in threading.enumerate() if t.name == f"lease-{line_lock.lock_name(line)}"]
            assert renewer and renewer[0].is_alive() and not failures, failures
            assert line_lock.read_holder(store, line).lease_id == str(lease)
            with pytest.raises(line_lock.LineBusy, match="is busy"):  # the slot is really held
                with line_lock.line_lock(line, FlowConfig(lock_wait_s=1, lock_lease_s=60)):
                    pass
        assert line_lock.read_holder(store, line) is None
        with line_lock.line_lock(line, FlowConfig(lock_wait_s=5, lock_lease_s=60)):  # released: free again
            pass
    assert not failures, failures
