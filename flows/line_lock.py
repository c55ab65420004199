"""The line lock: one sleep cycle per model line at a time, across processes and machines.

A Prefect global concurrency limit `sleepcycle-line-<line>` (limit 1) is taken with a lease that a thread
renews while the cycle runs. The holder (lease id, host, pid, flow run) is written next to the line's cycle
records, so that a crashed holder's slot can be freed at once:

- the holder's process died on *this* host (SIGKILL, OOM, a reboot of the worker): the next cycle of the
  line sees the pid is gone and releases the dead holder's lease before it queues;
- anywhere else the lease lapses on its own `flow.lock_lease_s` after the last renewal.

Prefect's own `concurrency()` context manager does the same acquire/renew/release but keeps the lease id to
itself; this module talks to the same public client endpoints so it can publish that id.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sleepcycle.config import FlowConfig
from sleepcycle.store.artifacts import ArtifactStore, ObjectNotFound
from sleepcycle.store.settings import check_line

log = logging.getLogger("sleepcycle.flows.lock")
MIN_LEASE_S = 60.0  # the Prefect server refuses shorter leases
RENEW_EVERY_S: float | None = None  # None: a third of the lease (tests shorten it)


class LineBusy(RuntimeError):
    """Another cycle of the same model line holds the line lock."""


def lock_name(line: str) -> str:
    return f"sleepcycle-line-{line}"


def host_id() -> str:
    """This host as far as pids go: the hostname plus the pid namespace where there is one, so two
    containers that share a hostname (host networking) never judge each other's pids."""
    try:
        return f"{socket.gethostname()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


def holder_key(line: str) -> str:
    return f"lines/{check_line(line)}/lock.json"


@dataclass(frozen=True)
class Holder:
    lease_id: str
    host: str
    pid: int
    flow_run_id: str | None = None
    acquired: float = 0.0

    def dead_here(self) -> bool:
        """True when the holder ran on this host and its process is gone (a live or foreign pid: False)."""
        if self.host != host_id() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, another user's
            return False
        return False


def read_holder(store: ArtifactStore, line: str) -> Holder | None:
    try:
        return Holder(**json.loads(store.get_bytes(holder_key(line))))
    except (ObjectNotFound, ValueError, TypeError):
        return None


def release_dead_holder(client: Any, store: ArtifactStore, line: str) -> Holder | None:
    """Free the slot of a holder whose process died on this host; returns it, or None when there is none.
    Releasing a lease that has lapsed or was released already does nothing (the server ignores it)."""
    holder = read_holder(store, line)
    if holder is None or not holder.dead_here():
        return None
    client.release_concurrency_slots_with_lease(UUID(holder.lease_id))
    store.delete(holder_key(line))
    _logger().warning(
        "line %r: the lock holder (pid %d on %s, flow run %s) is gone; its lease %s is released",
        line,
        holder.pid,
        holder.host,
        holder.flow_run_id,
        holder.lease_id,
    )
    return holder


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return log


def _acquire(client: Any, name: str, fc: FlowConfig, holder: Any) -> UUID:
    """Take the slot, waiting up to `fc.lock_wait_s` on the server's 423 Locked / Retry-After."""
    import httpx

    deadline = time.monotonic() + fc.lock_wait_s
    while True:
        try:
            response = client.increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=_lease_s(fc), holder=holder
            )
            return UUID(response.json()["lease_id"])
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 423:
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{name}: no slot within {fc.lock_wait_s:.0f}s") from None
            time.sleep(max(0.1, min(float(exc.response.headers.get("Retry-After", 1)), left, 2.0)))


def _lease_s(fc: FlowConfig) -> float:
    return max(MIN_LEASE_S, fc.lock_lease_s)


def _renew(lease_id: UUID, fc: FlowConfig, stop: threading.Event) -> None:
    from prefect.client.orchestration import get_client

    every = RENEW_EVERY_S or _lease_s(fc) / 3
    with get_client(sync_client=True) as client:
        while not stop.wait(every):
            try:
                client.renew_concurrency_lease(lease_id, lease_duration=_lease_s(fc))
            except Exception as exc:  # noqa: BLE001 - a missed renewal is retried; the lease outlives two
                log.warning("line lock lease %s: renewal failed (%s); retrying in %.0fs", lease_id, exc, every)


@contextmanager
def line_lock(
    line: str,
    fc: FlowConfig,
    holder: Any = None,
    store: ArtifactStore | None = None,
    busy: Callable[[], str] | str = "",
) -> Iterator[UUID]:
    """Hold the line's slot (limit created on first use) for the block; yields the lease id. LineBusy when
    another cycle keeps it longer than `fc.lock_wait_s` (`busy`: what to say about that cycle)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.exceptions import ObjectAlreadyExists

    name = lock_name(line)
    lease_holder = ConcurrencyLeaseHolder(type="flow_run", id=holder) if holder else None
    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass
        if store is not None:
            release_dead_holder(client, store, line)
        try:
            lease_id = _acquire(client, name, fc, lease_holder)
        except TimeoutError:
            raise LineBusy(
                f"line {line!r} is busy{busy() if callable(busy) else busy}; one cycle per line at a time "
                f"(limit {name}), this run waited {fc.lock_wait_s:.0f}s and gave up. "
                "Run it again when that cycle is done."
            ) from None
    stop = threading.Event()
    # In this context: Prefect's settings (e.g. the API URL that flows.server.use sets) live in context
    # variables, which a plain thread does not inherit.
    renewer = threading.Thread(
        target=contextvars.copy_context().run, args=(_renew, lease_id, fc, stop), daemon=True, name=f"lease-{name}"
    )
    renewer.start()
    try:
        if store is not None:
            me = Holder(str(lease_id), host_id(), os.getpid(), str(holder) if holder else None, time.time())
            store.put_bytes(holder_key(line), json.dumps(me.__dict__, sort_keys=True).encode())
        yield lease_id
    finally:
        stop.set()
        try:
            if store is not None and (mine := read_holder(store, line)) and mine.lease_id == str(lease_id):
                store.delete(holder_key(line))
        finally:
            with get_client(sync_client=True) as client:
                client.release_concurrency_slots_with_lease(lease_id)
            renewer.join(timeout=2)
