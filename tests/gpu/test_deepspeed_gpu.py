"""DeepSpeed seeding on CUDA (NCCL), one process per visible GPU; skipped without CUDA or deepspeed.

.venv/bin/python -m pytest tests/gpu -m gpu
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from integration.test_deepspeed import EXACT, launch, ranks

from sleepcycle.config import load_config
from sleepcycle.manifests import Manifest
from sleepcycle.pretrain import pretrain
from sleepcycle.snapshot import take_snapshot
from sleepcycle.world import World

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds-gpu")
    cfg = load_config("tiny")
    champion = pretrain(cfg, workdir=root / "pretrained")
    world = World(cfg.world)
    snap = take_snapshot([d.record() for day in (1, 2) for d in world.documents(day)], root / "snaps", day=1)
    return root, champion, snap


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_seeding_trains_on_gpus_over_nccl(inputs, zero):
    n = torch.cuda.device_count()
    overrides = EXACT if zero == "zero3" else ["distill.steps=3", "distill.batch_size=4", "distill.lmbda=0.5"]
    out, trace = launch(inputs, f"gpu-{zero}", overrides, zero=zero, nproc=n, cpu=False)
    rows = ranks(trace)
    assert len(rows) == n and all(r[0]["world"] == n for r in rows)
    owned = sorted(i for r in rows for i in r[0]["own"])
    assert owned == list(range(len(owned))), "the shards are disjoint and cover the items"
    frozen = json.loads((trace / "frozen.json").read_text())
    assert frozen["before"] == frozen["after"]
    m = Manifest.read(out)
    assert m.meta["world_size"] == n and m.metrics["seed/loss"] == m.metrics["seed/loss"]
