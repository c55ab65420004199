"""Where the store talks to: endpoints, bucket, credentials and the local root, from the environment only.

YAML configs never hold endpoints or secrets (STYLE.md); everything here is an environment variable, with
the ecosystem's usual names where one exists:

    MLFLOW_TRACKING_URI       MLflow server (http://host:5000); unset -> no MLflow, local registry
    AWS_ACCESS_KEY_ID         S3/MinIO credentials (the same names boto3, mc and MLflow read)
    AWS_SECRET_ACCESS_KEY
    AWS_SESSION_TOKEN         optional (temporary credentials)
    AWS_DEFAULT_REGION        default us-east-1 (MinIO ignores it; AWS needs the bucket's region)
    SLEEPCYCLE_S3_ENDPOINT    S3 endpoint, e.g. http://127.0.0.1:9000; unset -> local directory store
    SLEEPCYCLE_S3_BUCKET      default "sleepcycle"
    SLEEPCYCLE_S3_SECURE      1/0: TLS for an endpoint given without a scheme (default 1); a scheme wins
    SLEEPCYCLE_HOME           local root (default ~/.cache/sleepcycle); the local store is HOME/store
    SLEEPCYCLE_LINE           model line name (default "default")

    python -c "from sleepcycle.store.settings import load; print(load())"
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
LINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class SettingsError(ValueError):
    """An environment variable with a value the store cannot use."""


@dataclass(frozen=True)
class Settings:
    home: Path
    """Local root: the local store lives in home/store, fetched checkpoints in home/cache."""
    line: str = "default"
    """The model line: one MLflow experiment, one registered model, one alias history."""
    s3_endpoint: str | None = None
    """host:port without scheme (what the minio SDK wants); None means the local directory store."""
    s3_secure: bool = True
    s3_bucket: str = "sleepcycle"
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    tracking_uri: str | None = None

    @property
    def s3_url(self) -> str | None:
        if not self.s3_endpoint:
            return None
        return ("https://" if self.s3_secure else "http://") + self.s3_endpoint


def check_line(line: str) -> str:
    """Line names become S3 keys, experiment names and registered-model names: keep them plain."""
    if not LINE_RE.match(line):
        raise SettingsError(f"line name {line!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return line


def _flag(name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise SettingsError(f"{name}={value!r}: expected 1/0, true/false, yes/no")


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `env` (default: os.environ)."""
    env = os.environ if env is None else env
    home = Path(env.get("SLEEPCYCLE_HOME") or Path.home() / ".cache" / "sleepcycle").expanduser()
    endpoint, secure = None, _flag("SLEEPCYCLE_S3_SECURE", env.get("SLEEPCYCLE_S3_SECURE"), True)
    raw = (env.get("SLEEPCYCLE_S3_ENDPOINT") or "").strip()
    if raw:
        if "://" in raw:
            parts = urlsplit(raw)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise SettingsError(f"SLEEPCYCLE_S3_ENDPOINT={raw!r}: expected http(s)://host:port (no path)")
            endpoint, secure = parts.netloc, parts.scheme == "https"
        else:
            endpoint = raw.rstrip("/")
    return Settings(
        home=home,
        line=check_line(env.get("SLEEPCYCLE_LINE") or "default"),
        s3_endpoint=endpoint,
        s3_secure=secure,
        s3_bucket=env.get("SLEEPCYCLE_S3_BUCKET") or "sleepcycle",
        region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1",
        access_key=env.get("AWS_ACCESS_KEY_ID") or None,
        secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        session_token=env.get("AWS_SESSION_TOKEN") or None,
        tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
    )
