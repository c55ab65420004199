"""DeepSpeed seeding and Dreaming's consolidation on CUDA (NCCL), one process per visible GPU; skipped without
CUDA or deepspeed. CI has no GPU: run these on a GPU machine (bench/README.md records when they last ran).

- ZeRO-2 and ZeRO-3 seeding train, leave every frozen parameter bit-identical and write a checkpoint;
- the CUDA run of a deterministic configuration matches the single-process trainer replayed on the CPU;
- two whole cycles (Seeding with on-policy rollouts and the LTI term, then Dreaming) run on the GPU, the
  second with the activation anchor of the first in both stages.

    .venv/bin/python -m pytest tests/gpu -m gpu
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from integration.test_deepspeed import EXACT, launch, ranks, replay_one_process

from sleepcycle.config import load_config
from sleepcycle.experts import load_checkpoint
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


def on_cuda(rows: list[list[dict]]) -> bool:
    return all(r[0]["device"].startswith("cuda") for r in rows)


@pytest.mark.parametrize("zero", ["zero2", "zero3"])
def test_seeding_trains_on_gpus_over_nccl(inputs, zero):
    n = torch.cuda.device_count()
    overrides = (
        [*EXACT, "distill.anchor=0"]
        if zero == "zero3"
        else ["distill.steps=3", "distill.batch_size=4", "distill.lmbda=0.5"]
    )
    out, trace = launch(inputs, f"gpu-{zero}", overrides, zero=zero, nproc=n, cpu=False)
    rows = ranks(trace)
    assert len(rows) == n and all(r[0]["world"] == n for r in rows) and on_cuda(rows)
    owned = sorted(i for r in rows for i in r[0]["own"])
    assert owned == list(range(len(owned))), "the shards are disjoint and cover the items"
    frozen = json.loads((trace / "frozen.json").read_text())
    assert frozen["before"] == frozen["after"]
    m = Manifest.read(out)
    assert m.meta["world_size"] == n and math.isfinite(m.metrics["seed/loss"])


def test_cuda_seeding_matches_the_cpu_trainer(inputs):
    """fp32 on the GPU against the CPU, same items, teacher samples and fresh expert: the same losses and the
    same trained expert up to the two devices' rounding (TF32 is off for fp32 matmuls by default)."""
    _, champion, _ = inputs
    out, trace = launch(inputs, "gpu-exact", EXACT, nproc=torch.cuda.device_count(), cpu=False)
    assert on_cuda(ranks(trace))
    diffs, worst = replay_one_process(out, trace, champion)
    print(f"CUDA vs CPU: max relative loss diff per step {max(diffs):.2e}, max |param diff| {worst:.2e}")
    assert len(diffs) == 4 and max(diffs) < 1e-3
    assert worst < 1e-4


def test_two_cycles_seed_and_dream_on_the_gpu_with_the_anchor(inputs, tmp_path):
    """Cycle 1: Seeding with the full loss (on-policy rollouts and LTI), then Dreaming's consolidation, both
    launched as the flow launches them. Cycle 2 starts from cycle 1's dreamed checkpoint, so its Seeding and
    its Dreaming both carry the activation anchor of cycle 1 (a penalty built on the GPU from moments saved
    on the CPU)."""
    from sleepcycle.launch import dream_launched

    root, _, snap = inputs
    n = torch.cuda.device_count()
    full = ["distill.steps=3", "distill.batch_size=4", "distill.lmbda=0.5"]
    sets = [f"distributed.nproc={n}", "dream.steps=3", "dream.keep_top=6", "dream.keep_random=2"]
    cfg = load_config("tiny", [*full, *sets])
    champion = inputs[1]
    for cycle in (1, 2):
        seeded_dir, trace = launch((root, champion, snap), f"gpu-cycle{cycle}", full, nproc=n, cpu=False)
        assert on_cuda(ranks(trace))
        seeded = Manifest.read(seeded_dir).model_copy(update={"uri": str(seeded_dir)})
        assert math.isfinite(seeded.metrics["seed/loss"])
        assert ("seed/anchor" in seeded.metrics) == (cycle == 2), "only cycle 2 has an earlier cycle to anchor on"
        if cycle == 2:
            assert math.isfinite(seeded.metrics["seed/anchor"]) and seeded.metrics["seed/anchor"] >= 0
        logged, said = [], []
        dreamed = dream_launched(
            cfg, seeded, snap, tmp_path / f"dreamed{cycle}", log=logged.append, run_seed=cycle, say=said.append,
            trace=tmp_path / f"dream-trace{cycle}",
        )  # fmt: skip
        assert dreamed.kind == "checkpoint" and dreamed.meta["world_size"] == n, "\n".join(said[-40:])
        assert on_cuda(ranks(tmp_path / f"dream-trace{cycle}"))
        assert any("dream/sft_loss" in row for row in logged), logged[-5:]
        assert all(math.isfinite(row["dream/sft_loss"]) for row in logged if "dream/sft_loss" in row)
        _, _, state = load_checkpoint(Path(dreamed.uri))
        assert len(state["active"]) == cycle
        champion = dreamed
