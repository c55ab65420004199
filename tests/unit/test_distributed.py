"""The pieces of DeepSpeed training that need no process group: sharding, the shipped ZeRO configs, and the
launch the flow's stages make (`sleepcycle.launch`: command lines from config, output streaming, failure,
metrics), driven here by a stand-in command. The 2-process runs are tests/integration/test_deepspeed.py."""

import json
import sys
from pathlib import Path

import pytest

from sleepcycle import launch
from sleepcycle.config import load_config
from sleepcycle.distributed import DS_CONFIGS, DistributedError, ds_config, shard
from sleepcycle.launch import dream_command, dream_launched, seed_command, seed_launched
from sleepcycle.manifests import Manifest


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


def test_seed_command_from_config_torchrun():
    cfg = load_config("tiny", ["distributed.nproc=4", "distributed.deepspeed=zero1"])
    cmd = seed_command(
        cfg,
        Path("/l/config.yaml"),
        Path("/s"),
        Path("/c"),
        Path("/out"),
        replay=Path("/l/r.jsonl"),
        run_seed=7,
        token_budget=500,
    )
    assert cmd[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4"]
    assert cmd[5:8] == ["-m", "sleepcycle", "seed-dist"]
    args = dict(zip(cmd[8::2], cmd[9::2]))
    assert args == {
        "--config": "/l/config.yaml",
        "--deepspeed": "zero1",
        "--snapshot": "/s",
        "--champion": "/c",
        "--out": "/out",
        "--seed": "7",
        "--replay": "/l/r.jsonl",
        "--token-budget": "500",
    }


def test_seed_command_from_config_deepspeed_launcher():
    cfg = load_config("tiny", ["distributed.nproc=8", "distributed.launcher=deepspeed"])
    cmd = seed_command(cfg, Path("c.yaml"), Path("s"), Path("c"), Path("o"), metrics=Path("m"), master_port=29611)
    assert cmd[:5] == [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus=8", "--master_port=29611"]
    assert cmd[5:8] == ["--module", "sleepcycle", "seed-dist"]
    assert cmd[cmd.index("--deepspeed") + 1] == "zero2" and cmd[cmd.index("--metrics") + 1] == "m"
    assert "--replay" not in cmd and "--trace" not in cmd


def test_dream_command_from_config():
    cfg = load_config("tiny", ["distributed.nproc=2"])
    cmd = dream_command(cfg, Path("c.yaml"), Path("/seeded"), Path("/s"), Path("/o"), run_seed=5, trace=Path("/t"))
    assert cmd[5:8] == ["-m", "sleepcycle", "dream-dist"]
    args = dict(zip(cmd[8::2], cmd[9::2]))
    assert args == {
        "--config": "c.yaml",
        "--deepspeed": "zero2",
        "--seeded": "/seeded",
        "--snapshot": "/s",
        "--out": "/o",
        "--seed": "5",
        "--trace": "/t",
    }


def test_dream_launched_leaves_the_cycle_that_grew_the_model_alone(tmp_path, monkeypatch):
    """A grown (or given) larger self has no expert yet: nothing to dream into, nothing launched."""
    monkeypatch.setattr(launch, "dream_command", lambda *a, **k: pytest.fail("launched"))
    (tmp_path / "seeded").mkdir()
    state = {"grown": "given", "active": [], "history": [{"cycle": 1, "snapshot": "s", "expert": None}]}
    (tmp_path / "seeded" / "sleep.json").write_text(json.dumps(state))
    seeded = _manifest(str(tmp_path / "seeded"))
    cfg = load_config("tiny", ["distributed.nproc=2"])
    assert dream_launched(cfg, seeded, _manifest("s"), tmp_path / "dreamed") is seeded
    assert not (tmp_path / "dreamed").exists()


def test_distributed_section_defaults_to_one_process_and_rejects_zero_ranks():
    assert load_config("tiny").distributed.nproc == 1
    with pytest.raises(ValueError, match="distributed.nproc"):
        load_config("tiny", ["distributed.nproc=0"])


# A stand-in for the launcher: prints like ranks do, writes rank 0's metrics and a checkpoint (or fails).
FAKE_RANKS = """
import json, sys
from pathlib import Path
from sleepcycle.manifests import Manifest
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
for r in range(2):
    print(f"seed-dist rank {r}/2 (cpu): 3 of 6 items", flush=True)
with open(args["--metrics"], "a") as f:
    f.write(json.dumps({"distill/loss": 1.5, "distill/step": 0}) + "\\n")
if args.get("--fail"):
    print("Traceback: rank 1 died", file=sys.stderr)
    sys.exit(3)
out = Path(args["--out"]); tmp = out.with_name(out.name + ".partial"); tmp.mkdir(parents=True)
(tmp / "weights.bin").write_bytes(b"w")
m = Manifest.of_directory(tmp, "checkpoint", name="cycle-1", metrics={"seed/steps": 1}, meta={"world_size": 2})
m.write(tmp); tmp.rename(out)
"""


def _fake(fail: bool):
    def command(cfg, config_file, snapshot, champion, out, replay=None, metrics=None, **_):
        assert config_file.is_file() and load_config(config_file) == cfg
        assert [json.loads(x)["text"] for x in replay.read_text().splitlines()] == ["a", "a", "b"]
        cmd = [sys.executable, "-c", FAKE_RANKS, "--out", str(out), "--metrics", str(metrics)]
        return cmd + (["--fail", "1"] if fail else [])

    return command


def _manifest(uri: str) -> Manifest:
    return Manifest(kind="snapshot", uri=uri)


def test_seed_launched_streams_output_forwards_metrics_and_returns_the_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "seed_command", _fake(fail=False))
    cfg = load_config("tiny", ["distributed.nproc=2"])
    lines, logged = [], []
    work = tmp_path / "seeded"
    m = seed_launched(
        cfg, _manifest("s"), _manifest("c"), work, log=logged.append, replay=["a", "a", "b"], say=lines.append
    )
    assert m.uri == str(work) and m.kind == "checkpoint" and m.meta["world_size"] == 2
    assert Manifest.read(work).digest == m.digest
    assert any("rank 0/2" in x for x in lines) and any("rank 1/2" in x for x in lines)
    assert logged == [{"distill/loss": 1.5, "distill/step": 0}]
    assert (tmp_path / "seeded.launch" / "output.log").read_text().count("seed-dist rank") == 2


def test_seed_launched_failure_raises_with_the_end_of_the_log(tmp_path, monkeypatch):
    monkeypatch.setattr(launch, "seed_command", _fake(fail=True))
    cfg = load_config("tiny", ["distributed.nproc=2"])
    with pytest.raises(DistributedError, match=r"(?s)exited with status 3.*rank 1 died"):
        seed_launched(
            cfg, _manifest("s"), _manifest("c"), tmp_path / "seeded", replay=["a", "a", "b"], say=lambda _: None
        )
    assert not (tmp_path / "seeded").exists()


def test_launches_refuse_what_cannot_train_before_starting_ranks(tmp_path, monkeypatch):
    def never(*a, **k):
        raise AssertionError("launched")

    monkeypatch.setattr(launch, "seed_command", never)
    zero3 = load_config("tiny", ["distributed.nproc=2", "distributed.deepspeed=zero3"])
    with pytest.raises(DistributedError, match="ZeRO-3"):
        seed_launched(zero3, _manifest("s"), _manifest("c"), tmp_path / "o")
    # teacher samples only, but the activation anchor needs each rank to hold the whole expert
    sets = [
        "distributed.nproc=2",
        "distributed.deepspeed=zero3",
        "distill.lmbda=0",
        "distill.lti=false",
        "distill.anchor=20",
    ]
    with pytest.raises(DistributedError, match="activation anchor needs whole expert weights"):
        seed_launched(load_config("tiny", sets), _manifest("s"), _manifest("c"), tmp_path / "o")
    small = load_config("tiny", ["distributed.nproc=8"])  # distill.batch_size is 4
    with pytest.raises(DistributedError, match="smaller than the 8 ranks"):
        seed_launched(small, _manifest("s"), _manifest("c"), tmp_path / "o")
