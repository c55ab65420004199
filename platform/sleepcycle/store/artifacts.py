"""Artifact stores: named byte objects in a local directory (the embedded default) or an S3 bucket.

One narrow interface, two implementations (STYLE.md): `ArtifactStore` has put/get of files and bytes,
exists, list, delete and uri. Keys are "/"-separated relative names (``blobs/sha256/ab12...``). Writes are
atomic in both: a reader sees an old object, a whole new one, or none, never half of one. What the keys
mean (content-addressed blobs, manifests, records, registry events) is decided by checkpoints.py,
records.py and registry.py, not here.

    store = open_store()          # S3 when SLEEPCYCLE_S3_ENDPOINT is set, else $SLEEPCYCLE_HOME/store

`S3Store` talks to MinIO, AWS S3 or any S3 endpoint through the minio SDK: multipart upload for large
files, retries with exponential backoff on transient faults (connection refused or reset, timeouts,
5xx), and one-line `StoreError`s for bad credentials, a missing bucket or a missing object.
"""

from __future__ import annotations

import io
import logging
import os
import random
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sleepcycle.store.settings import Settings
from sleepcycle.store.settings import load as load_settings

if TYPE_CHECKING:
    from minio import Minio

log = logging.getLogger("sleepcycle.store")
T = TypeVar("T")
MiB = 1 << 20


class StoreError(RuntimeError):
    """Any failure of the artifact store, with a one-line message a user can act on."""


class ObjectNotFound(StoreError):
    """No object under that key."""


class ObjectExists(StoreError):
    """An exclusive put found the key already taken."""


class BucketNotFound(StoreError):
    """The configured bucket does not exist on the endpoint."""


class AccessDenied(StoreError):
    """The endpoint refused the credentials (unknown key, wrong secret, no permission)."""


class StoreUnavailable(StoreError):
    """The endpoint kept failing transiently (refused, reset, timed out, 5xx) through every retry."""


def check_key(key: str) -> str:
    """Keys are relative "/"-paths without empty, "." or ".." parts and no part starting with "." (the
    local store keeps its temp files under dot-names, so no key can collide with one)."""
    parts = key.split("/")
    if not key or "\\" in key or any(not p or p.startswith(".") for p in parts):
        raise StoreError(f"invalid object key {key!r}")
    return key


class ArtifactStore(ABC):
    """Named byte objects. Every method raises a `StoreError` subclass on failure."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Upload the file at `path` under `key` (replacing any object there)."""

    @abstractmethod
    def get_file(self, key: str, path: Path) -> Path:
        """Download `key` to `path` atomically (temp file + rename in path's directory)."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, exclusive: bool = False) -> None:
        """Store `data` under `key`; with `exclusive`, raise ObjectExists instead of replacing."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key that starts with `prefix`, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; removing a missing key is not an error."""

    @abstractmethod
    def uri(self, key: str = "") -> str:
        """Where `key` lives, for people and other tools: file:///... or s3://bucket/key."""


# ----- a local directory -----------------------------------------------------------------------------


class LocalStore(ArtifactStore):
    """Objects are files under `root`; writes go to a dot-named temp file that is renamed into place."""

    def __init__(self, root: Path):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _write(self, dest: Path, fill: Callable[[Any], None], exclusive: bool = False) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                fill(f)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:
                # link() fails if dest exists, atomically: two writers can never both win the same key.
                try:
                    os.link(tmp, dest)
                except FileExistsError:
                    raise ObjectExists(f"{self.uri(dest.relative_to(self.root).as_posix())} already exists") from None
            else:
                os.replace(tmp, dest)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def put_file(self, key: str, path: Path) -> None:
        try:
            with open(path, "rb") as src:
                self._write(self._path(key), lambda f: shutil.copyfileobj(src, f, MiB))
        except FileNotFoundError:
            raise StoreError(f"cannot upload {path}: no such file") from None

    def get_file(self, key: str, path: Path) -> Path:
        src = self._path(key)
        try:
            with open(src, "rb") as f_src:
                self._write(Path(path), lambda f: shutil.copyfileobj(f_src, f, MiB))
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r} in {self.uri()}") from None
        return Path(path)

    def put_bytes(self, key: str, data: bytes, exclusive: bool = False) -> None:
        self._write(self._path(key), lambda f: f.write(data), exclusive=exclusive)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ObjectNotFound(f"no object {key!r} in {self.uri()}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        if prefix:
            check_key(prefix.rstrip("/"))  # keeps the walk inside root
        # Walk only the directory that can hold the prefix, not the whole store.
        start = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not name.startswith("."):
                    key = Path(dirpath, name).relative_to(self.root).as_posix()
                    if key.startswith(prefix):
                        keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str = "") -> str:
        return (self.root / key).as_uri() if key else self.root.as_uri()


# ----- S3 through the minio SDK ------------------------------------------------------------------------

_TRANSIENT_CODES = {"SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout", "RequestTimeTooSkewed"}
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "InvalidSecurity",
}


class S3Store(ArtifactStore):
    """Objects in one bucket of an S3 endpoint (MinIO, AWS, moto), through the minio SDK."""

    def __init__(
        self,
        endpoint: str,
        bucket: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        secure: bool = False,
        region: str = "us-east-1",
        part_size: int = 16 * MiB,
        retries: int = 5,
        backoff: float = 0.5,
        timeout: float = 30.0,
        create_bucket: bool = False,
    ):
        """`endpoint` is host:port (no scheme; `secure` picks TLS). `part_size` (>= 5 MiB, S3's minimum)
        is the multipart chunk: larger files upload in parts. `retries` extra attempts per call, waiting
        `backoff`, 2x`backoff`, 4x... seconds (with jitter); `timeout` bounds connect and each read."""
        import certifi
        import urllib3
        from minio import Minio

        if part_size < 5 * MiB:
            raise ValueError("part_size must be at least 5 MiB (S3's minimum multipart part)")
        self.endpoint, self.bucket, self.secure = endpoint, bucket, secure
        self.part_size, self.retries, self.backoff = part_size, retries, backoff
        self.create_bucket = create_bucket
        # Our own retry loop below sees every fault and classifies it; urllib3's would hide them (and
        # multiply waiting), so it is switched off here.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            maxsize=10,
            retries=False,
            cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        self.client: Minio = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            session_token=session_token,
            secure=secure,
            region=region,
            http_client=http,
        )
        self._bucket_ok = False

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, bucket={self.bucket!r})"

    @property
    def url(self) -> str:
        return ("https://" if self.secure else "http://") + self.endpoint

    # -- errors and retries -------------------------------------------------------------------------

    def _translate(self, exc: Exception, op: str, key: str | None) -> StoreError:
        """One StoreError per failure; StoreUnavailable marks the ones worth retrying."""
        import urllib3
        from minio.error import InvalidResponseError, S3Error, ServerError

        what = f"{op} {key!r}" if key else op
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, S3Error):
            code = exc.code or ""
            status = getattr(exc.response, "status", 0) or 0
            if code in ("NoSuchKey", "NoSuchObject"):
                return ObjectNotFound(f"no object {key!r} in {self.uri()}")
            if code == "NoSuchBucket":
                return self._no_bucket()
            if code in _AUTH_CODES:
                return AccessDenied(
                    f"{self.url} refused the credentials for {what} in bucket {self.bucket!r} ({code}): "
                    "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy"
                )
            if code == "PreconditionFailed" or status == 412:
                return ObjectExists(f"{self.uri(key or '')} already exists")
            if code in _TRANSIENT_CODES or status >= 500:
                return StoreUnavailable(f"{self.url}: {what} failed: {code} (HTTP {status})")
            return StoreError(f"{self.url}: {what} failed: {code}: {exc.message}")
        if isinstance(exc, ServerError):
            if exc.status_code >= 500:
                return StoreUnavailable(f"{self.url}: {what} failed: HTTP {exc.status_code}")
            return StoreError(f"{self.url}: {what} failed: HTTP {exc.status_code}")
        if isinstance(exc, InvalidResponseError):
            status = getattr(exc, "_code", 0) or 0
            if status >= 500:
                return StoreUnavailable(f"{self.url}: {what} failed: HTTP {status} (non-S3 response)")
            if status == 403:
                return AccessDenied(f"{self.url} refused {what} (HTTP 403): check the credentials")
            return StoreError(f"{self.url}: {what} failed: HTTP {status} (not an S3 response: wrong endpoint?)")
        if isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError):
            reason = type(exc).__name__
            if isinstance(exc, urllib3.exceptions.NewConnectionError):
                reason = "connection refused"
            elif isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
                reason = "timed out"
            elif isinstance(exc, urllib3.exceptions.ProtocolError | ConnectionError):
                reason = "connection reset"
            return StoreUnavailable(f"{self.url}: {what} failed: {reason}")
        return StoreError(f"{self.url}: {what} failed: {type(exc).__name__}: {exc}")

    def _no_bucket(self) -> BucketNotFound:
        return BucketNotFound(
            f"bucket {self.bucket!r} does not exist at {self.url}: create it (`mc mb`, "
            "`python infra/local_servers.py start`) or set SLEEPCYCLE_S3_BUCKET"
        )

    def _call(self, op: str, key: str | None, fn: Callable[[], T]) -> T:
        if not self._bucket_ok:
            self._bucket_ok = True  # set first: the check itself goes through _call
            try:
                self._check_bucket()
            except BaseException:
                self._bucket_ok = False
                raise
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - every fault is classified, then re-raised
                err = self._translate(exc, op, key)
                if not isinstance(err, StoreUnavailable) or attempt == self.retries:
                    if isinstance(err, StoreUnavailable):
                        err = StoreUnavailable(f"{err} (gave up after {attempt + 1} attempts)")
                    raise err from exc
                log.warning("%s; retry %d/%d in %.1fs", err, attempt + 1, self.retries, delay)
                time.sleep(delay * (1 + 0.25 * random.random()))
                delay *= 2
        raise AssertionError("unreachable")

    def _check_bucket(self) -> None:
        if self._call("check bucket", None, lambda: self.client.bucket_exists(self.bucket)):
            return
        if not self.create_bucket:
            raise self._no_bucket()
        self._call("create bucket", None, lambda: self.client.make_bucket(self.bucket))

    # -- the interface ------------------------------------------------------------------------------

    def put_file(self, key: str, path: Path) -> None:
        check_key(key)
        if not Path(path).is_file():
            raise StoreError(f"cannot upload {path}: no such file")
        # fput_object switches to multipart above part_size (and aborts the upload if a part fails).
        self._call(
            "upload",
            key,
            lambda: self.client.fput_object(self.bucket, key, str(path), part_size=self.part_size),
        )

    def get_file(self, key: str, path: Path) -> Path:
        check_key(key)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)

        def download() -> None:
            # Our own temp file + rename (not fget_object's resumable .part file): a retry starts clean.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
            try:
                response = self.client.get_object(self.bucket, key)
                try:
                    with os.fdopen(fd, "wb") as f:
                        for chunk in response.stream(MiB):
                            f.write(chunk)
                finally:
                    response.close()
                    response.release_conn()
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)

        self._call("download", key, download)
        return path

    def put_bytes(self, key: str, data: bytes, exclusive: bool = False) -> None:
        check_key(key)
        if exclusive:
            # minio 7.2 has no public conditional put. S3 (since 2024), MinIO and moto honour
            # `If-None-Match: *` on PutObject, so the private single-request call carries that header.
            headers = {"Content-Type": "application/octet-stream", "If-None-Match": "*"}
            self._call("create", key, lambda: self.client._put_object(self.bucket, key, data, headers))
            return
        self._call(
            "upload",
            key,
            lambda: self.client.put_object(self.bucket, key, io.BytesIO(data), len(data)),
        )

    def get_bytes(self, key: str) -> bytes:
        check_key(key)

        def read() -> bytes:
            response = self.client.get_object(self.bucket, key)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call("download", key, read)

    def exists(self, key: str) -> bool:
        check_key(key)
        try:
            self._call("stat", key, lambda: self.client.stat_object(self.bucket, key))
            return True
        except ObjectNotFound:
            return False

    def list(self, prefix: str = "") -> list[str]:
        objects = self._call(
            "list",
            prefix or "/",
            lambda: [
                o.object_name for o in self.client.list_objects(self.bucket, prefix=prefix or None, recursive=True)
            ],
        )
        return sorted(name for name in objects if name)

    def delete(self, key: str) -> None:
        check_key(key)
        self._call("delete", key, lambda: self.client.remove_object(self.bucket, key))

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"


def open_store(settings: Settings | None = None, **s3_options: Any) -> ArtifactStore:
    """The store the environment names: S3 when SLEEPCYCLE_S3_ENDPOINT is set, else a local directory
    (SLEEPCYCLE_HOME/store). `s3_options` go to S3Store (part_size, retries, backoff, timeout)."""
    s = settings or load_settings()
    if not s.s3_endpoint:
        return LocalStore(s.home / "store")
    return S3Store(
        s.s3_endpoint,
        s.s3_bucket,
        access_key=s.access_key,
        secret_key=s.secret_key,
        session_token=s.session_token,
        secure=s.s3_secure,
        region=s.region,
        **s3_options,
    )
