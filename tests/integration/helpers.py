"""Helpers for integration tests: the infra script, fresh S3 buckets, greedy decoding, store tripwires."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from sleepcycle.store.artifacts import ArtifactStore, S3Store

ROOT = Path(__file__).resolve().parents[2]


def _load_infra():
    # infra/ is a folder of scripts, not a package: load local_servers.py by path.
    spec = importlib.util.spec_from_file_location("local_servers", ROOT / "infra" / "local_servers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["local_servers"] = module
    spec.loader.exec_module(module)
    return module


local_servers = _load_infra()


def host_of(url: str) -> str:
    return url.split("://", 1)[1]


def s3_store(server, bucket: str | None = None, **options) -> S3Store:
    """A store on a fresh bucket of `server` (tests never see each other's objects)."""
    options = {"retries": 2, "backoff": 0.1, "timeout": 10.0, "create_bucket": True, **options}
    return S3Store(
        host_of(server.url),
        bucket or f"t-{uuid.uuid4().hex[:12]}",
        access_key="testing",
        secret_key="testing",
        **options,
    )


def boto3_client(server):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=server.url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def greedy(model, tok, prompt: str = "Ada Velm lives in", n: int = 12) -> list[int]:
    import torch

    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return out[0, ids.shape[1] :].tolist()


def after_uploads(store: ArtifactStore, n: int, action: Callable[[], None]) -> list[str]:
    """Run `action` right after the n-th put_file on `store` (e.g. raise, or stop the server);
    returns the list of keys uploaded, which grows as the test goes."""
    uploaded: list[str] = []
    put_file = store.put_file

    def counting(key, path):
        put_file(key, path)
        uploaded.append(key)
        if len(uploaded) == n:
            action()

    store.put_file = counting  # type: ignore[method-assign]
    return uploaded
