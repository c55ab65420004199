"""Small JSON records passed between stages: what was made, where, from what, and how it measured.

A `Manifest` names a directory of files by their sha256 digests. Its `digest` is the hash of the sorted
(path, sha256) list, so two runs that produce identical files produce the same digest, and a reader can
verify every file it loads against the manifest (`verify`). Stages return manifests; the store publishes
them (objects first, manifest last) and readers trust only manifests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_NAME = "manifest.json"


class IntegrityError(RuntimeError):
    """A file does not match the digest its manifest records."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    """What this is: "snapshot", "checkpoint", "experts", "dreams", "evaluation", "gate", ..."""
    name: str = ""
    files: dict[str, str] = Field(default_factory=dict)
    """Relative path -> sha256 of every file in the directory."""
    parents: dict[str, str] = Field(default_factory=dict)
    """Role -> digest of the manifests this was made from (e.g. {"snapshot": ..., "champion": ...})."""
    metrics: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    uri: str = ""
    """Where the files live (a local directory or s3://bucket/prefix); set by whoever stores them."""

    @property
    def digest(self) -> str:
        blob = json.dumps(sorted(self.files.items())).encode()
        return sha256_bytes(blob)

    @classmethod
    def of_directory(cls, root: Path, kind: str, **fields: Any) -> Manifest:
        root = Path(root)
        files = {
            p.relative_to(root).as_posix(): sha256_file(p)
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME
        }
        return cls(kind=kind, files=files, uri=str(root), **fields)

    def verify(self, root: Path) -> None:
        """Raise IntegrityError unless every listed file exists under `root` with its recorded digest."""
        for rel, digest in self.files.items():
            path = Path(root) / rel
            if not path.is_file():
                raise IntegrityError(f"{path}: missing (listed in the {self.kind} manifest)")
            actual = sha256_file(path)
            if actual != digest:
                raise IntegrityError(f"{path}: sha256 {actual[:12]}… does not match manifest {digest[:12]}…")

    def write(self, root: Path) -> Path:
        """Write manifest.json into `root` atomically (temp file + rename): readers never see half of it."""
        return atomic_write_text(Path(root) / MANIFEST_NAME, self.model_dump_json(indent=2))

    @classmethod
    def read(cls, root: Path) -> Manifest:
        return cls.model_validate_json((Path(root) / MANIFEST_NAME).read_text())

    def publish(self, tmp: Path, out: Path) -> Manifest:
        """Write this manifest, naming `out` as where the files live, into the finished directory `tmp`,
        then move `tmp` to `out` (replacing what was there): a stage's output appears whole or not at
        all, and its manifest.json names where it is, not the directory it was written in."""
        manifest = self.model_copy(update={"uri": str(out)})
        manifest.write(tmp)
        shutil.rmtree(out, ignore_errors=True)
        Path(tmp).rename(out)
        return manifest


def atomic_write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
