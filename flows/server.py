"""Where the Prefect API is: `PREFECT_API_URL`, or a local Prefect server this module starts by PID.

    from flows import server
    with server.api() as url:          # PREFECT_API_URL if set; else a recorded local server; else start one
        ...                            # Prefect clients and flows in this process talk to `url`

    python flows/server.py start|status|stop      # a local server for the CLI, the demo and the dashboard

The local server keeps its SQLite database and log in `$SLEEPCYCLE_HOME/prefect/` and records its PID and
URL in `server.json` there, so `sleepcycle approve` in another shell reaches the server a running
`sleepcycle cycle run` started. A fresh database needs ~70 s of migrations on first start, ~22 s after
(ENV.md). SQLite answers 503 "database is locked" under concurrent writers now and then; Prefect's client
retries those, and a deployment uses Postgres (docker/compose.yaml).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

HOST = "127.0.0.1"


class ServerError(RuntimeError):
    """A Prefect server that would not start (its log tail is in the message)."""


@dataclass
class LocalServer:
    pid: int
    url: str
    """The API URL (what PREFECT_API_URL takes): http://127.0.0.1:PORT/api"""
    home: str
    log: str

    def alive(self) -> bool:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except (FileNotFoundError, IndexError, ProcessLookupError):
            return False
        # A zombie has exited already; a recycled PID belongs to some other program.
        return state not in ("Z", "X") and b"prefect" in cmdline

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False


def default_home() -> Path:
    from sleepcycle.store.settings import load

    return load().home / "prefect"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tail(log: str, lines: int = 25) -> str:
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def start(home: Path | None = None, port: int | None = None, timeout: float = 240, ui: bool = True) -> LocalServer:
    """`prefect server start` on a free loopback port with its state in `home`; waits for /api/health."""
    home = Path(home or default_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = port or _free_port()
    log = home / "server.log"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
    }
    env.pop("PREFECT_API_URL", None)  # the server must not try to talk to another server
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port), "--analytics-off"]
    with open(log, "ab") as out:
        # Its own session: no terminal signals reach it, and `stop` signals the whole group.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    server = LocalServer(proc.pid, f"http://{HOST}:{port}/api", str(home), str(log))
    deadline = time.monotonic() + timeout
    while not server.healthy():
        if proc.poll() is not None:
            raise ServerError(f"prefect server exited during startup:\n{_tail(server.log)}")
        if time.monotonic() > deadline:
            stop(server)
            raise ServerError(f"prefect server not healthy at {server.url} after {timeout:.0f}s:\n{_tail(server.log)}")
        time.sleep(0.5)
    (home / "server.json").write_text(json.dumps(asdict(server), indent=2))
    return server


def stop(server: LocalServer, timeout: float = 30) -> None:
    """SIGTERM the server's process group, SIGKILL it if it is still there after `timeout` seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        if not server.alive():
            break
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and server.alive():
            time.sleep(0.1)
    try:
        os.waitpid(server.pid, os.WNOHANG)  # reap it when this process started it
    except ChildProcessError:
        pass
    record = Path(server.home) / "server.json"
    if record.exists() and json.loads(record.read_text()).get("pid") == server.pid:
        record.unlink()


def recorded(home: Path | None = None) -> LocalServer | None:
    """The local server recorded in `home`/server.json, if it is still running and healthy."""
    record = Path(home or default_home()) / "server.json"
    try:
        server = LocalServer(**json.loads(record.read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None
    return server if server.alive() and server.healthy() else None


def configured_url() -> str | None:
    """PREFECT_API_URL from the environment, else the recorded local server's URL, else None."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    server = recorded()
    return server.url if server else None


def _drain_workers() -> None:
    """Send the run logs and events still queued for the API, waiting at most 5 s for each."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=5)
        except Exception as exc:  # noqa: BLE001 - what cannot be sent must not fail the run that made it
            print(f"sleepcycle: some Prefect {worker.__name__} items were not sent: {exc}", file=sys.stderr)


@contextmanager
def use(url: str) -> Iterator[str]:
    """Point Prefect in this process (and the processes it starts) at `url` while the block runs. Task results
    (the resume cache) go to $SLEEPCYCLE_HOME/prefect/results unless PREFECT_RESULTS_LOCAL_STORAGE_PATH says."""
    from prefect.settings import PREFECT_API_URL, PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    env = {"PREFECT_API_URL": url}
    if not os.environ.get("PREFECT_RESULTS_LOCAL_STORAGE_PATH"):
        env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(default_home() / "results")
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    updates = {
        PREFECT_API_URL: url,
        PREFECT_RESULTS_LOCAL_STORAGE_PATH: os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"],
    }
    try:
        with temporary_settings(updates=updates):
            try:
                yield url
            finally:
                _drain_workers()  # while `url` is still the API: sent later, they would start a temporary server
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def api(keep: bool = False, say=print) -> Iterator[str]:
    """Yield a Prefect API URL: PREFECT_API_URL, a recorded local server, or one started here (stopped on
    exit unless `keep`)."""
    url = configured_url()
    if url:
        with use(url):
            yield url
        return
    say("PREFECT_API_URL is not set: starting a local Prefect server (first start migrates its database: ~1 min)")
    server = start()
    say(f"local Prefect server at {server.url.removesuffix('/api')} (pid {server.pid}, state in {server.home})")
    try:
        with use(server.url):
            yield server.url
    finally:
        if not keep:
            stop(server)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    action = args[0] if args else "status"
    if action == "start":
        server = recorded() or start()
        print(f"export PREFECT_API_URL={server.url}   # pid {server.pid}, log {server.log}")
    elif action == "stop":
        server = recorded()
        if server:
            stop(server)
        print("stopped" if server else "no local Prefect server is running")
    elif action == "status":
        server = recorded()
        print(f"running at {server.url} (pid {server.pid})" if server else "no local Prefect server is running")
    else:
        print("usage: python flows/server.py start|status|stop", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
