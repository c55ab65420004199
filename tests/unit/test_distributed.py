"""The pieces of DeepSpeed seeding that need no process group: sharding and the shipped ZeRO configs.
The 2-process run itself is tests/integration/test_deepspeed.py."""

import pytest

from sleepcycle.distributed import DS_CONFIGS, DistributedError, ds_config, shard


@pytest.mark.parametrize("n,world", [(7, 2), (8, 2), (5, 3), (3, 1)])
def test_shards_are_disjoint_and_cover_every_item(n, world):
    parts = [shard(n, r, world) for r in range(world)]
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(n)) and len(flat) == len(set(flat))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_shipped_zero_configs_load_with_this_runs_batch():
    assert sorted(p.stem for p in DS_CONFIGS.glob("*.json")) == ["zero1", "zero2", "zero3"]
    for stage in (1, 2, 3):
        cfg = ds_config(f"zero{stage}", micro_batch=2)
        assert cfg["zero_optimization"]["stage"] == stage
        assert cfg["train_micro_batch_size_per_gpu"] == 2 and cfg["gradient_accumulation_steps"] == 1
        assert cfg["gradient_clipping"] == 1.0 and cfg["zero_force_ds_cpu_optimizer"] is False
        assert not any(k.startswith("_") for k in cfg)
    with pytest.raises(DistributedError, match="zero1, zero2, zero3"):
        ds_config("zero4", 2)
