"""sleepcycle.store: the only code that talks to S3/MinIO and MLflow (STYLE.md).

    settings.py     endpoints, bucket, credentials, local root: environment variables only
    artifacts.py    ArtifactStore: LocalStore (a directory) | S3Store (minio SDK); open_store()
    checkpoints.py  content-addressed publish/fetch of manifest directories (checkpoints, snapshots)
    records.py      one JSON record per sleep cycle, for the dashboard and audits
    tracking.py     MLflow lineage: experiment per line, run per cycle, child run per stage; open_tracker()
    registry.py     versions, champion/candidate aliases, approvals, alias history; open_registry()
    queries.py      read-only plain-data answers for the dashboard

Importing this package imports neither mlflow nor minio: they load when an S3Store, MlflowTracker or
MlflowRegistry is created. docs/storage.md describes the object layout and the guarantees.
"""

from sleepcycle.manifests import IntegrityError
from sleepcycle.store.artifacts import (
    AccessDenied,
    ArtifactStore,
    BucketNotFound,
    LocalStore,
    ObjectExists,
    ObjectNotFound,
    S3Store,
    StoreError,
    StoreUnavailable,
    open_store,
)
from sleepcycle.store.checkpoints import fetch, publish, read_manifest
from sleepcycle.store.records import read_cycle_records, write_cycle_record
from sleepcycle.store.registry import (
    CANDIDATE,
    CHAMPION,
    AliasMove,
    LocalRegistry,
    MlflowRegistry,
    ModelVersion,
    Registry,
    RegistryError,
    open_registry,
)
from sleepcycle.store.settings import Settings
from sleepcycle.store.settings import load as load_settings
from sleepcycle.store.tracking import MlflowTracker, NoopTracker, open_tracker

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "AccessDenied",
    "AliasMove",
    "ArtifactStore",
    "BucketNotFound",
    "IntegrityError",
    "LocalRegistry",
    "LocalStore",
    "MlflowRegistry",
    "MlflowTracker",
    "ModelVersion",
    "NoopTracker",
    "ObjectExists",
    "ObjectNotFound",
    "Registry",
    "RegistryError",
    "S3Store",
    "Settings",
    "StoreError",
    "StoreUnavailable",
    "fetch",
    "load_settings",
    "open_registry",
    "open_store",
    "open_tracker",
    "publish",
    "read_cycle_records",
    "read_manifest",
    "write_cycle_record",
]
