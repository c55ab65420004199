"""Local servers for the tests and the demo: an S3 endpoint and an MLflow tracking server, on free
loopback ports, started as background processes and stopped by PID.

- S3: moto's server mode (`python -m moto.server`), in memory, ~3 s to start, ~100 MB. No MinIO binary
  can be installed here; moto speaks the same S3 protocol to the minio SDK, boto3 and MLflow.
- MLflow: `mlflow server` with a SQLite backend in the state directory and artifacts proxied to
  s3://BUCKET/artifacts on that endpoint (clients need no S3 credentials); ~40 s to /health, ~0.8 GB.

    python infra/local_servers.py start [--dir .sleepcycle/servers] [--bucket sleepcycle] [--no-mlflow]
    source .sleepcycle/servers/servers.env     # SLEEPCYCLE_S3_*, AWS_*, MLFLOW_TRACKING_URI
    python infra/local_servers.py status
    python infra/local_servers.py stop

The state directory holds servers.json (PIDs, URLs), servers.env, the servers' logs and mlflow.db. Tests
import this file (tests/integration/conftest.py) and use `start_s3`, `start_mlflow`, `stop`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from pathlib import Path

HOST = "127.0.0.1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
DEFAULT_DIR = Path(".sleepcycle/servers")


class ServerError(RuntimeError):
    """A server that would not start (its log tail is in the message)."""


@dataclass
class Server:
    name: str
    pid: int
    url: str
    log: str
    proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)
    """Set when this process started the server (lets `stop` reap it); None when loaded from a file."""

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return _pid_alive(self.pid)


@dataclass
class Servers:
    dir: str
    bucket: str
    s3: Server
    mlflow: Server | None = None

    def env(self) -> dict[str, str]:
        """What sleepcycle, boto3, mc-style tools and the MLflow client need to reach these servers."""
        env = {
            **CREDENTIALS,
            "SLEEPCYCLE_S3_ENDPOINT": self.s3.url,
            "SLEEPCYCLE_S3_BUCKET": self.bucket,
            "AWS_ENDPOINT_URL_S3": self.s3.url,  # boto3 >= 1.28 picks this up: plain boto3.client("s3")
            "MLFLOW_S3_ENDPOINT_URL": self.s3.url,
        }
        if self.mlflow:
            env["MLFLOW_TRACKING_URI"] = self.mlflow.url
        return env

    def save(self) -> None:
        d = Path(self.dir)
        data = {"dir": self.dir, "bucket": self.bucket, "s3": _plain(self.s3), "mlflow": _plain(self.mlflow)}
        (d / "servers.json").write_text(json.dumps(data, indent=2))
        (d / "servers.env").write_text("".join(f"export {k}={v}\n" for k, v in self.env().items()))


def _plain(server: Server | None) -> dict | None:
    return None if server is None else {f.name: getattr(server, f.name) for f in fields(server) if f.name != "proc"}


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited already; only its parent's wait is missing


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _spawn(name: str, cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # A session of its own: the server outlives this command (CLI use), gets no terminal signals, and
        # `stop` can signal its whole process group (mlflow's uvicorn worker included).
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )


def _wait_http(server: Server, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServerError(f"{server.name} exited during startup:\n{_tail(server.log)}")
        try:
            with urllib.request.urlopen(server.url + path, timeout=2) as r:
                if r.status < 500:
                    return
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.3)
    stop(server)
    raise ServerError(f"{server.name} not healthy at {server.url}{path} after {timeout:.0f}s:\n{_tail(server.log)}")


def _tail(log: str, lines: int = 20) -> str:
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def start_s3(state_dir: Path, port: int | None = None, env: dict[str, str] | None = None, name: str = "s3") -> Server:
    """moto's S3 server on a free port; `env` adds variables (e.g. INITIAL_NO_AUTH_ACTION_COUNT=0 to
    make it check credentials)."""
    port = port or free_port()
    log = Path(state_dir) / f"{name}.log"
    proc = _spawn(
        name,
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        log,
        {**os.environ, **CREDENTIALS, **(env or {})},
    )
    server = Server(name, proc.pid, f"http://{HOST}:{port}", str(log), proc)
    _wait_http(server, "/moto-api/", timeout=60)
    return server


def create_bucket(s3_url: str, bucket: str) -> None:
    from minio import Minio

    host = s3_url.split("://", 1)[1]
    client = Minio(
        host,
        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        secure=s3_url.startswith("https"),
        region=CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)


def start_mlflow(state_dir: Path, s3_url: str, bucket: str, port: int | None = None, timeout: float = 180) -> Server:
    """`mlflow server` (SQLite in state_dir, artifacts proxied to s3://bucket/artifacts) on a free port."""
    state_dir = Path(state_dir).resolve()
    port = port or free_port()
    log = state_dir / "mlflow.log"
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{state_dir / 'mlflow.db'}",
        "--artifacts-destination",
        f"s3://{bucket}/artifacts",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # Job execution (on by default in MLflow 3) starts seven huey consumers: ~1 GB and CPU we do not need.
    env = {**os.environ, **CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": s3_url, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = _spawn("mlflow", cmd, log, env)
    server = Server("mlflow", proc.pid, f"http://{HOST}:{port}", str(log), proc)
    _wait_http(server, "/health", timeout=timeout)
    return server


def stop(server: Server | None, timeout: float = 30) -> None:
    """SIGTERM the server's process group, SIGKILL it if still there after `timeout` seconds."""
    if server is None or not server.alive():
        if server is not None and server.proc is not None:
            server.proc.wait()
        return
    if server.proc is None and not _is_ours(server):
        # The PID file is stale and the number now belongs to someone else: leave that process alone.
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and server.alive():
            time.sleep(0.1)
        if not server.alive():
            break
    if server.proc is not None:
        server.proc.wait(timeout=10)


def _is_ours(server: Server) -> bool:
    try:
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return False
    return ("moto" in cmdline) if server.name != "mlflow" else ("mlflow" in cmdline)


def start(state_dir: Path = DEFAULT_DIR, bucket: str = "sleepcycle", mlflow: bool = True) -> Servers:
    """Both servers (S3 first: MLflow stores its artifacts there), the bucket, servers.json/.env."""
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    s3 = start_s3(state_dir)
    try:
        create_bucket(s3.url, bucket)
        ml = start_mlflow(state_dir, s3.url, bucket) if mlflow else None
    except BaseException:
        stop(s3)
        raise
    servers = Servers(str(state_dir), bucket, s3, ml)
    try:
        servers.save()
    except BaseException:
        stop_all(servers)
        raise
    return servers


def load(state_dir: Path = DEFAULT_DIR) -> Servers:
    data = json.loads((Path(state_dir) / "servers.json").read_text())
    return Servers(
        data["dir"],
        data["bucket"],
        Server(**data["s3"]),
        Server(**data["mlflow"]) if data.get("mlflow") else None,
    )


def stop_all(servers: Servers) -> None:
    stop(servers.mlflow)
    stop(servers.s3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "env"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state directory (PIDs, logs, mlflow.db)")
    parser.add_argument("--bucket", default="sleepcycle")
    parser.add_argument("--no-mlflow", action="store_true", help="only the S3 server")
    args = parser.parse_args(argv)
    state = args.dir / "servers.json"
    if args.command == "start":
        old = load(args.dir) if state.exists() else None
        if old and any(s and s.alive() for s in (old.s3, old.mlflow)):
            print(f"already running (see {state}); `stop` first", file=sys.stderr)
            return 1
        servers = start(args.dir, args.bucket, mlflow=not args.no_mlflow)
        print(f"S3 (moto)  {servers.s3.url}  pid {servers.s3.pid}  bucket {servers.bucket}")
        if servers.mlflow:
            print(f"MLflow     {servers.mlflow.url}  pid {servers.mlflow.pid}")
        print(f"environment: source {Path(servers.dir) / 'servers.env'}")
        return 0
    if not state.exists():
        print(f"no servers recorded in {args.dir}", file=sys.stderr)
        return 1
    servers = load(args.dir)
    if args.command == "stop":
        stop_all(servers)
        state.unlink()
        print("stopped")
    elif args.command == "status":
        for s in (servers.s3, servers.mlflow):
            if s:
                print(f"{s.name:7s} {s.url}  pid {s.pid}  {'running' if s.alive() else 'stopped'}")
    else:
        print("".join(f"export {k}={v}\n" for k, v in servers.env().items()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
