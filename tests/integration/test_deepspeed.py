"""Knowledge Seeding data-parallel under DeepSpeed: 2 CPU processes over gloo (ZeRO-2), launched the way a
flow launches the stage (`torchrun -m sleepcycle seed-dist`).

- each rank trains on its own shard of the distillation items (disjoint, together all of them);
- the 2-process run matches the single-process trainer (`GeneralizedDistillation.step`) replayed on the
  same global batches: loss per step and the trained expert (lambda=0 and no LTI make it deterministic);
- frozen parameters stay bit-identical; rank 0 writes a checkpoint like `seed` does;
- the full loss (on-policy samples + LTI) and ZeRO-3 complete too.

About two minutes on 2 cores (one tiny pretraining, five 2-process runs): the system tier (`-m system`).

    .venv/bin/python -m pytest -m system tests/integration/test_deepspeed.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sleepcycle.config import load_config
from sleepcycle.distill import GeneralizedDistillation, Item, teacher_logprobs
from sleepcycle.experts import load_checkpoint
from sleepcycle.manifests import Manifest
from sleepcycle.pretrain import pretrain
from sleepcycle.snapshot import take_snapshot
from sleepcycle.world import World

pytestmark = [
    pytest.mark.integration,
    pytest.mark.system,
    pytest.mark.skipif(
        importlib.util.find_spec("deepspeed") is None,
        reason="deepspeed is not installed (pip install -e '.[distributed]')",
    ),
]

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
# Deterministic given the recorded teacher samples: teacher samples only (lambda=0), no LTI term.
EXACT = [
    "distill.steps=4",
    "distill.batch_size=4",
    "distill.lmbda=0",
    "distill.lti=false",
    "distill.questions_per_doc=2",
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    cfg = load_config("tiny")
    champion = pretrain(cfg, workdir=root / "pretrained")
    world = World(cfg.world)
    # two days of documents: enough distillation items for two shards of several items each
    snap = take_snapshot([d.record() for day in (1, 2) for d in world.documents(day)], root / "snaps", day=1)
    return root, champion, snap


def launch(
    inputs, name: str, overrides: list[str], zero: str = "zero2", nproc: int = 2, cpu: bool = True
) -> tuple[Path, Path]:
    root, champion, snap = inputs
    out, trace = root / name, root / f"{name}-trace"
    sets = [x for o in overrides for x in ("--set", o)]
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(nproc), "-m", "sleepcycle", "seed-dist"]
    cmd += ["--config", "tiny", *sets, "--deepspeed", zero, "--snapshot", snap.uri, "--champion", champion.uri]
    cmd += ["--out", str(out), "--trace", str(trace)]
    path = os.pathsep.join(p for p in (str(ROOT / "platform"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "SLEEPCYCLE_QUIET": "1", "PYTHONPATH": path}
    if cpu:
        env["DS_ACCELERATOR"] = "cpu"
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    printed = json.loads(done.stdout[done.stdout.index("{") :])
    assert printed["checkpoint"] == str(out)
    return out, trace


def ranks(trace: Path) -> list[list[dict]]:
    return [[json.loads(x) for x in p.read_text().splitlines()] for p in sorted(trace.glob("rank*.jsonl"))]


@pytest.fixture(scope="module")
def exact(inputs):
    return launch(inputs, "exact", EXACT)


def test_each_rank_trains_on_its_own_shard(exact):
    out, trace = exact
    r0, r1 = ranks(trace)
    n_items = len((trace / "items.jsonl").read_text().splitlines())
    own0, own1 = set(r0[0]["own"]), set(r1[0]["own"])
    assert r0[0]["world"] == r1[0]["world"] == 2
    assert own0 and own1 and not own0 & own1, "shards overlap"
    assert own0 | own1 == set(range(n_items)), "shards do not cover the items"
    seen0 = {i for row in r0[1:] for i in row["ids"]}
    seen1 = {i for row in r1[1:] for i in row["ids"]}
    assert seen0 <= own0 and seen1 <= own1 and not seen0 & seen1
    for a, b in zip(r0[1:], r1[1:]):  # every step: 2 items per rank = the global batch of 4
        assert a["step"] == b["step"] and len(a["ids"]) == len(b["ids"]) == 2
        assert a["global"]["loss"] == pytest.approx((a["loss"] + b["loss"]) / 2)
    assert len(r0) - 1 == 4, "4 steps ran"
    m = Manifest.read(out)
    assert m.meta["world_size"] == 2 and m.meta["zero_stage"] == 2 and m.metrics["seed/steps"] == 4
    assert len((out / "training_data.jsonl").read_text().splitlines()) == n_items


def test_frozen_parameters_stay_bit_identical(exact, inputs):
    out, trace = exact
    _, champion, _ = inputs
    frozen = json.loads((trace / "frozen.json").read_text())
    assert frozen["before"] == frozen["after"]
    assert Manifest.read(out).files["base/model.safetensors"] == champion.files["model.safetensors"]
    expert = load_file(str(out / "experts/e00/adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in expert.items()), "the expert trained"


def replay_one_process(out: Path, trace: Path, champion: Manifest) -> tuple[list[float], float]:
    """Replay a ranked ``EXACT`` run in this process with the single-process trainer (on the CPU): same items
    and teacher samples, same fresh expert, the union of the ranks' batches as each step's batch. Returns
    each step's |loss difference| (relative to the ranks' global loss) and the largest |difference| between
    the replayed expert and the one the run saved."""
    cfg = load_config("tiny", EXACT)
    bank, tok, _ = load_checkpoint(Path(champion.uri), rank=cfg.distill.rank, capacity=cfg.distill.experts_per_level)
    teacher = bank.merged()
    slot = bank.activate(bank.free_slot())
    named = dict(bank.model.named_parameters())
    with torch.no_grad():
        for name, value in torch.load(trace / "initial.pt", map_location="cpu").items():
            named[name].copy_(value)
    rows = [json.loads(x) for x in (trace / "items.jsonl").read_text().splitlines()]
    items = [Item(r["student_prompt"], r["teacher_prompt"], r["teacher"], r["sample"], kind=r["kind"]) for r in rows]
    for it, lp in zip(items, teacher_logprobs(teacher, items, [it.sample for it in items], tok.pad_token_id)):
        it.teacher_logp = lp
    trainer = GeneralizedDistillation(
        cfg.distill,
        bank.model,
        {"new": teacher, "champion": teacher},
        bank.parameters(slot),
        tok.eos_token_id,
        tok.pad_token_id,
        decode=tok.decode,
        judge=lambda a, b: 0.0,
    )
    per_rank = ranks(trace)
    diffs = []
    for steps in zip(*(r[1:] for r in per_rank)):
        batch = [items[i] for row in steps for i in row["ids"]]
        for g in trainer.opt.param_groups:
            g["lr"] = steps[0]["lr"]
        plan = {"batch": batch, "on": [False] * len(batch), "completions": [it.sample for it in batch], "lti": None}
        ref_loss = trainer.step(plan)["loss"]
        diffs.append(abs(ref_loss - steps[0]["global"]["loss"]) / max(abs(ref_loss), 1e-12))
    trained = load_file(str(out / "experts/e00/adapter_model.safetensors"))
    ours = {n: p.detach() for n, p in bank.model.named_parameters() if f".{slot}." in n}
    assert len(trained) == len(ours) and diffs
    worst = 0.0
    for key, value in trained.items():
        mine = next(v for n, v in ours.items() if n.replace(f".{slot}.", ".") == key)
        worst = max(worst, float((mine - value).abs().max()))
    return diffs, worst


def test_two_ranks_match_one_process_on_the_same_global_batches(exact, inputs):
    out, trace = exact
    diffs, worst = replay_one_process(out, trace, inputs[1])
    print(f"2-rank vs 1-process: max relative loss diff per step {max(diffs):.2e}, max |param diff| {worst:.2e}")
    assert len(diffs) == 4 and max(diffs) < 1e-4
    assert worst < 1e-5


def test_full_loss_with_on_policy_rollouts_and_lti_completes(inputs):
    out, trace = launch(inputs, "full", ["distill.steps=3", "distill.batch_size=4", "distill.lmbda=0.5"])
    r0, r1 = ranks(trace)
    assert len(r0) == len(r1) == 4
    assert all(row["global"]["tokens"] > 0 for row in r0[1:])
    m = Manifest.read(out)
    assert m.metrics["seed/steps"] == 3 and m.metrics["seed/loss"] == m.metrics["seed/loss"]  # not NaN
    frozen = json.loads((trace / "frozen.json").read_text())
    assert frozen["before"] == frozen["after"]


def test_zero3_partitions_the_student_and_still_writes_a_whole_checkpoint(inputs):
    out, trace = launch(
        inputs, "zero3", EXACT[:2] + ["distill.lmbda=0", "distill.lti=false", "distill.anchor=0"], zero="zero3"
    )
    frozen = json.loads((trace / "frozen.json").read_text())
    assert frozen["before"] == frozen["after"]
    assert Manifest.read(out).meta["zero_stage"] == 3
    bank, _, state = load_checkpoint(out)
    assert state["active"] == ["e00"]
    expert = load_file(str(out / "experts/e00/adapter_model.safetensors"))
    assert all(v.numel() > 0 for v in expert.values()), "gathered, not partitioned, weights were saved"


def test_the_flows_seed_stage_launches_two_ranks_and_publishes_their_checkpoint(inputs, tmp_path, monkeypatch):
    """``distributed.nproc=2``: the flow's seed stage (called as a plain function, no Prefect server) reads
    its inputs from the store by digest, launches `torchrun -m sleepcycle seed-dist` (replay arm included),
    streams the ranks' output, forwards rank 0's metrics, and publishes the checkpoint rank 0 wrote."""
    from types import SimpleNamespace

    monkeypatch.syspath_prepend(str(ROOT))  # flows/ sits at the repository root
    from flows import sleep_cycle
    from flows.sleep_cycle import seed_stage
    from sleepcycle.store import fetch, open_store, publish

    monkeypatch.setenv("SLEEPCYCLE_HOME", str(tmp_path / "home"))
    for k in ("SLEEPCYCLE_S3_ENDPOINT", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(k, raising=False)
    _, champion, snap = inputs
    store = open_store()
    snap_digest = publish(store, Path(snap.uri)).digest
    champion_digest = publish(store, Path(champion.uri)).digest
    cfg = load_config("tiny", ["distributed.nproc=2", "distill.steps=2", "distill.batch_size=4"])
    logged: list[dict] = []
    said: list[str] = []  # what the stage hands to the task run's logger
    monkeypatch.setattr(sleep_cycle, "_logger", lambda: SimpleNamespace(info=said.append))
    out = seed_stage.fn(
        config=cfg.model_dump(mode="json", exclude={"flow", "gate"}),
        snapshot=snap_digest,
        champion=champion_digest,
        history=[],
        run_seed=3,
        store_uri=store.uri(),
        workdir=str(tmp_path / "work" / "seeded"),
        log=logged.append,
    )
    text = "\n".join(said)
    assert "torch.distributed.run --standalone --nproc_per_node=2 -m sleepcycle seed-dist" in text
    assert "seed-dist rank 0/2" in text and "seed-dist rank 1/2" in text, text[-3000:]
    m = Manifest.model_validate(out["manifest"])
    assert m.kind == "checkpoint" and m.parents == {"snapshot": snap_digest, "champion": champion_digest}
    assert m.meta["world_size"] == 2 and m.meta["zero_stage"] == 2 and m.metrics["seed/steps"] == 2
    replay = (tmp_path / "work" / "seeded.launch" / "replay.jsonl").read_text().splitlines()
    assert replay and all(json.loads(x)["text"] for x in replay), "the replay buffer went to the ranks"
    local = fetch(store, "checkpoint", m.digest, dest=tmp_path / "fetched")
    _, _, state = load_checkpoint(Path(local.uri))
    assert state["active"] == ["e00"]
    steps = [row["distill/step"] for row in logged if "distill/step" in row]
    assert steps == [0, 1] and logged[-1]["seed/steps"] == 2, logged


@pytest.mark.parametrize("consolidation", ["sft", "distill"])
def test_dreaming_consolidates_on_two_ranks_each_on_its_share_of_every_batch(exact, inputs, tmp_path, consolidation):
    """`dream_launched` (what the flow's dream stage calls with distributed.nproc=2) on the 2-rank seeded
    checkpoint: rank 0 dreams, both ranks consolidate the newest expert on disjoint halves of each batch,
    by SFT on the dreams or by distillation from the teacher reading their documents."""
    from sleepcycle.launch import dream_launched

    seeded_dir, _ = exact
    _, _, snap = inputs
    seeded = Manifest.read(seeded_dir).model_copy(update={"uri": str(seeded_dir)})
    sets = [
        "distributed.nproc=2",
        "dream.steps=3",
        "dream.keep_top=6",
        "dream.keep_random=2",
        f"dream.consolidation={consolidation}",
    ]
    cfg = load_config("tiny", [*EXACT, *sets])
    said, logged = [], []
    trace = tmp_path / "trace"
    out = dream_launched(
        cfg, seeded, snap, tmp_path / "dreamed", log=logged.append, run_seed=1, say=said.append, trace=trace
    )
    assert out.kind == "checkpoint" and out.meta["world_size"] == 2, "\n".join(said[-40:])
    assert out.parents == {"seeded": seeded.digest, "snapshot": snap.digest}
    r0, r1 = ranks(trace)
    assert r0[0]["world"] == r1[0]["world"] == 2 and r0[0]["dreams"] == r1[0]["dreams"] > 0
    assert r0[0]["start"] == r1[0]["start"], "the engine gave every rank rank 0's expert"
    n, bs = r0[0]["dreams"], cfg.distill.batch_size
    assert len(r0) - 1 == len(r1) - 1 == 3, "3 consolidation steps on both ranks"
    for a, b in zip(r0[1:], r1[1:]):
        start = (a["step"] * bs) % n
        batch = [(start + i) % n for i in range(min(bs, 2 * n - start))]
        assert (a["ids"], b["ids"]) == (batch[0::2], batch[1::2]), "each rank takes every 2nd dream of the batch"
    assert any(set(a["ids"]) != set(b["ids"]) for a, b in zip(r0[1:], r1[1:]))
    before = load_file(str(seeded_dir / "experts/e00/adapter_model.safetensors"))
    after = load_file(str(Path(out.uri) / "experts/e00/adapter_model.safetensors"))
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert out.files["base/model.safetensors"] == seeded.files["base/model.safetensors"]
    assert any("dream/sft_loss" in row for row in logged) and logged[-1]["dream/kept"] == n
