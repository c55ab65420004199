"""Content-addressed publish and fetch of manifest directories: checkpoints, wake snapshots, dream sets.

Object layout in an artifact store:

    blobs/sha256/<hex>                 every file, named by its sha256 (stored once, shared by all)
    manifests/<kind>/<digest>.json     the Manifest: relpath -> sha256, parents, metrics, meta

`publish` uploads each file whose blob is not there yet, then the manifest last. Readers trust only
manifests, so an interrupted publish leaves at most some unreferenced blobs, never a visible half
checkpoint. Across sleep cycles `base/` is byte-identical, so its blobs already exist and a cycle uploads
only its new expert (megabytes, not a model). `fetch` downloads into a temp directory, checks every file
against the manifest (an `IntegrityError` names the file on any mismatch) and renames it into place; a
destination that already verifies is reused.

    from sleepcycle.store import open_store, publish, fetch
    m = publish(open_store(), Path("runs/cycle-3/dreamed"))            # -> Manifest, uri = manifest URI
    fetch(open_store(), "checkpoint", m.digest, Path("/tmp/champion"))  # verified local copy

A wake snapshot is published the same way (kind "snapshot"). A dream set is the `dreams.jsonl` file of a
dreamed checkpoint: its digest is that file's sha256 (`dream_set_digest`) and `read_blob` returns it.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from pydantic import ValidationError

from sleepcycle.manifests import MANIFEST_NAME, IntegrityError, Manifest, sha256_bytes, sha256_file
from sleepcycle.store.artifacts import ArtifactStore, ObjectNotFound, StoreError
from sleepcycle.store.settings import load as load_settings

BLOBS = "blobs/sha256/"
MANIFESTS = "manifests/"
DREAMS = "dreams.jsonl"


def blob_key(sha256: str) -> str:
    return f"{BLOBS}{sha256}"


def manifest_key(kind: str, digest: str) -> str:
    return f"{MANIFESTS}{kind}/{digest}.json"


def _noop(_: dict) -> None:
    pass


def publish(store: ArtifactStore, root: Path, kind: str | None = None, log: Callable[[dict], None] = _noop) -> Manifest:
    """Upload the directory `root` (its manifest.json, or one computed for `kind`): blobs first, the
    manifest last. Returns the manifest with `uri` set to the stored manifest's URI.

    Every file is hashed before upload, so bytes that do not match the manifest are never published.
    Publishing the same files again uploads nothing and returns the manifest already stored."""
    root = Path(root)
    if (root / MANIFEST_NAME).is_file():
        manifest = Manifest.read(root)
        if kind and manifest.kind != kind:
            raise ValueError(f"{root}: manifest kind is {manifest.kind!r}, expected {kind!r}")
    elif kind:
        manifest = Manifest.of_directory(root, kind)
    else:
        raise ValueError(f"{root} has no {MANIFEST_NAME}: pass kind= to publish it as a plain directory")
    key = manifest_key(manifest.kind, manifest.digest)
    if store.exists(key):
        # Same files, same digest: what is stored is exactly this content (the first publication's
        # parents and metrics stay, as content-addressed objects never change).
        return read_manifest(store, manifest.kind, manifest.digest)
    uploaded = skipped = 0
    for rel, sha in sorted(manifest.files.items()):
        path = root / rel
        if not path.is_file():
            raise IntegrityError(f"{path}: missing (listed in the {manifest.kind} manifest)")
        actual = sha256_file(path)
        if actual != sha:
            raise IntegrityError(f"{path}: sha256 {actual[:12]}… does not match manifest {sha[:12]}…; not published")
        size = path.stat().st_size
        if store.exists(blob_key(sha)):
            skipped += size
            continue
        store.put_file(blob_key(sha), path)
        uploaded += size
    stored = manifest.model_copy(update={"uri": store.uri(key)})
    store.put_bytes(key, stored.model_dump_json(indent=2).encode())
    log({"publish/uploaded_bytes": uploaded, "publish/skipped_bytes": skipped, "publish/files": len(manifest.files)})
    return stored


def resolve(store: ArtifactStore, kind: str, digest: str) -> str:
    """The full digest of a published manifest from a full digest or a unique prefix (>= 8 hex)."""
    if len(digest) == 64:
        return digest
    if len(digest) < 8:
        raise StoreError(f"{kind} digest prefix {digest!r} is too short (use at least 8 characters)")
    matches = list_manifests(store, kind, prefix=digest)
    if len(matches) != 1:
        found = "no" if not matches else f"{len(matches)}"
        raise ObjectNotFound(f"{found} published {kind} matches {digest!r} in {store.uri()}")
    return matches[0]


def list_manifests(store: ArtifactStore, kind: str, prefix: str = "") -> list[str]:
    """Digests of every published manifest of `kind` (optionally starting with `prefix`)."""
    keys = store.list(f"{MANIFESTS}{kind}/{prefix}")
    return [k.rsplit("/", 1)[1].removesuffix(".json") for k in keys if k.endswith(".json")]


def read_manifest(store: ArtifactStore, kind: str, digest: str) -> Manifest:
    """The published manifest, checked to hash to the digest it is stored under."""
    digest = resolve(store, kind, digest)
    key = manifest_key(kind, digest)
    try:
        raw = store.get_bytes(key)
    except ObjectNotFound:
        raise ObjectNotFound(f"no published {kind} {digest[:12]}… in {store.uri()}") from None
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValidationError as exc:
        raise IntegrityError(f"{store.uri(key)}: not a valid manifest ({exc.error_count()} errors)") from None
    if manifest.digest != digest or manifest.kind != kind:
        raise IntegrityError(f"{store.uri(key)}: manifest content does not hash to its name (tampered?)")
    return manifest


def _safe_rel(rel: str) -> str:
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not rel:
        raise IntegrityError(f"manifest lists an unsafe path {rel!r}")
    return rel


def fetch(store: ArtifactStore, kind: str, digest: str, dest: Path | None = None) -> Manifest:
    """Download a published manifest directory to `dest` (default SLEEPCYCLE_HOME/cache/<kind>/<digest>),
    verifying every file; returns the manifest with `uri` set to the local directory.

    Raises IntegrityError naming the file when a blob is missing or its bytes do not match the manifest;
    nothing is left at `dest` then (a previous, verified copy there is reused rather than downloaded)."""
    digest = resolve(store, kind, digest)
    dest = Path(dest) if dest is not None else load_settings().home / "cache" / kind / digest
    if (dest / MANIFEST_NAME).is_file():
        try:
            local = Manifest.read(dest)
            if local.digest == digest and local.kind == kind:
                local.verify(dest)
                return local
        except (IntegrityError, ValidationError, ValueError):
            pass  # a damaged or different copy: download a fresh one and replace it
    manifest = read_manifest(store, kind, digest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.fetch-"))
    try:
        for rel, sha in sorted(manifest.files.items()):
            target = tmp / _safe_rel(rel)
            try:
                store.get_file(blob_key(sha), target)
            except ObjectNotFound:
                raise IntegrityError(
                    f"{kind} {digest[:12]}…: {rel}: blob {blob_key(sha)} is missing from {store.uri()}"
                ) from None
            actual = sha256_file(target)
            if actual != sha:
                raise IntegrityError(
                    f"{kind} {digest[:12]}…: {rel}: downloaded sha256 {actual[:12]}… does not match the "
                    f"manifest's {sha[:12]}… ({store.uri(blob_key(sha))} is corrupt)"
                )
        local = manifest.model_copy(update={"uri": str(dest)})
        local.write(tmp)
        if dest.exists():
            # Swap the old copy out with two renames, so dest is never a half-written directory.
            trash = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.old-"))
            dest.rename(trash / "old")
            tmp.rename(dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return local


def dream_set_digest(checkpoint: Manifest) -> str | None:
    """The digest of a dreamed checkpoint's dream set (the sha256 of its dreams.jsonl), if it has one."""
    return checkpoint.files.get(DREAMS)


def read_blob(store: ArtifactStore, sha256: str) -> bytes:
    """One stored file by its sha256 (e.g. a dream set), verified."""
    try:
        data = store.get_bytes(blob_key(sha256))
    except ObjectNotFound:
        raise ObjectNotFound(f"no blob {sha256[:12]}… in {store.uri()}") from None
    if sha256_bytes(data) != sha256:
        raise IntegrityError(f"{store.uri(blob_key(sha256))}: content does not match its sha256 name (corrupt)")
    return data
