"""Knowledge Seeding and Dreaming's consolidation, data-parallel under DeepSpeed: one shard per rank.

    torchrun --nproc_per_node 2 -m sleepcycle seed-dist --snapshot S --champion C --out DIR \\
        --deepspeed zero2 --config tiny                               # CPU: gloo; GPUs: NCCL
    deepspeed --num_gpus 8 --module sleepcycle seed-dist ...        # the DeepSpeed launcher works too

What each rank does:
1. The same preparation as `seed` (`sleepcycle.seed.prepare`): rank 0 writes the distillation prompts
   and broadcasts them, so every rank holds the same item list.
2. Items are sharded like `DistributedSampler` without reshuffling between epochs: rank r owns items
   r, r+W, r+2W, ... It samples the teacher only for those (generation is split too) and trains only on
   them, with a local batch of ``distill.batch_size // W``: the global batch stays ``distill.batch_size``.
3. Every step runs `GeneralizedDistillation`'s loss (`divergence_loss`, `lti_loss`) through
   ``engine.backward`` / ``engine.step``: DeepSpeed averages the gradients over ranks (the gradient of
   the global batch mean), clips them by their global norm (``gradient_clipping`` in the config) and
   steps the client optimizer, the trainer's own AdamW, over its ZeRO partition. The Learning-to-Imitate
   term is mixed by gradient norm as in `GeneralizedDistillation.step`, with norms of the rank-averaged
   per-term gradients.
4. Rank 0 writes the candidate checkpoint exactly as `seed` does (`sleepcycle.seed.write_candidate`).

Only the new expert's parameters are handed to the optimizer; every frozen parameter stays bit-identical
(`trace` records a digest before and after). ZeRO-3 partitions the student's parameters too, and then
trains on teacher samples only (``distill.lmbda=0``, ``distill.lti=false``; refused otherwise): student
rollouts run a different number of forward passes on each rank, which hangs ZeRO-3's collective
parameter fetches, and the LTI mix reads per-term gradients that ZeRO-3 releases during the backward.
Models that need ZeRO-3 should sample their rollouts through vLLM anyway (`sleepcycle.generate`).

Dreaming's consolidation runs the same way (`dream_distributed`, ``sleepcycle dream-dist``): rank 0 writes,
selects and rewards the dreams alone (the other ranks wait), then every rank trains the newest expert on its
share of each batch of kept dreams, without ZeRO (see `dream_distributed` for why).

The flow does not join the process group: with ``distributed.nproc > 1`` its stages start these commands
as subprocesses (`sleepcycle.launch`).

DeepSpeed is an optional extra (``pip install -e '.[distributed]'``), imported only inside these
functions. Why our own loop rather than HF Trainer with a DeepSpeed config: on CPU that combination runs
2-way but the Trainer believes world_size=1, so data is not sharded and both ranks save (shared/ENV.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from sleepcycle.anchor import Anchor
from sleepcycle.config import CONFIG_DIR, Config
from sleepcycle.distill import DistillStats, GeneralizedDistillation, Item
from sleepcycle.dream import (
    Dreaming,
    DriftGuard,
    Lesson,
    anchor_penalty,
    consolidation_inputs,
    frozen_champion,
    grew_this_cycle,
    objective,
)
from sleepcycle.dream import load as load_dreaming
from sleepcycle.dream import prepare as prepare_dreaming
from sleepcycle.dream import write_candidate as write_dreamed
from sleepcycle.evaluate import kl_drift
from sleepcycle.manifests import Manifest
from sleepcycle.progress import progress
from sleepcycle.seed import SeedError, prepare, write_candidate
from sleepcycle.trainer import Example, Log, noop

DS_CONFIGS = CONFIG_DIR / "deepspeed"


class DistributedError(RuntimeError):
    """The distributed run cannot start (DeepSpeed missing, a bad ZeRO config, too few items)."""


def _deepspeed():
    """DeepSpeed, imported lazily; CPU hosts get its CPU accelerator (it would look for CUDA otherwise)."""
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ImportError as e:
        raise DistributedError("DeepSpeed is not installed: pip install -e '.[distributed]'") from e
    return deepspeed


def ds_config(name_or_path: str | Path, micro_batch: int) -> dict:
    """A shipped ZeRO config (``zero1``/``zero2``/``zero3``) or a JSON file, with the batch sizes of this
    run filled in (one micro batch per step, no accumulation) and ``_comment`` keys dropped."""
    path = Path(name_or_path)
    if not path.suffix:
        path = DS_CONFIGS / f"{name_or_path}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in DS_CONFIGS.glob("*.json")))
        raise DistributedError(f"no DeepSpeed config {str(name_or_path)!r} (shipped: {known})")
    cfg = {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}
    cfg.pop("train_batch_size", None)
    cfg["train_micro_batch_size_per_gpu"] = micro_batch
    cfg["gradient_accumulation_steps"] = 1
    cfg.setdefault("gradient_clipping", 1.0)  # what GeneralizedDistillation.step clips to
    return cfg


def check_zero(cfg: Config, engine_cfg: dict) -> int:
    """The ZeRO stage of `engine_cfg`; DistributedError when this run's loss cannot train under it."""
    stage = int(engine_cfg.get("zero_optimization", {}).get("stage", 0))
    dc = cfg.distill
    if stage == 3 and ((dc.lti and dc.alpha < 1) or dc.lmbda > 0):
        raise DistributedError(
            "ZeRO-3 trains on teacher samples only: set distill.lmbda=0 and distill.lti=false "
            "(or use zero1/zero2 for on-policy rollouts and the LTI term)"
        )
    if stage == 3 and dc.anchor > 0:
        raise DistributedError(
            "the activation anchor needs whole expert weights on every rank: set distill.anchor=0 or use zero1/zero2"
        )
    return stage


def shard(n: int, rank: int, world: int) -> list[int]:
    """Item indices that `rank` owns: a strided split, disjoint across ranks and covering all `n`."""
    return list(range(rank, n, world))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(deepspeed) -> tuple[int, int, torch.device]:
    """Join the process group the launcher describes (a one-process group without a launcher)."""
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        # Ranks wait in a collective while rank 0 alone writes the distillation prompts or the dreams, which on
        # a real model can outlast DeepSpeed's default 10 minutes: DEEPSPEED_TIMEOUT (minutes), default 2 hours.
        timeout = timedelta(minutes=int(os.environ.get("DEEPSPEED_TIMEOUT", "120")))
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", timeout=timeout)
    return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local) if cuda else torch.device("cpu")


def _broadcast(obj):
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _digest(params: Sequence[torch.nn.Parameter]) -> str:
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().cpu().contiguous().flatten().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@contextmanager
def _full(deepspeed, model: torch.nn.Module, zero3: bool) -> Iterator[None]:
    """ZeRO-3 keeps only a shard of each parameter on a rank: gather them for generation and saving
    (collective: every rank enters). A no-op for stages 1 and 2, which keep whole parameters."""
    ctx = deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None) if zero3 else nullcontext()
    with ctx:
        yield


# ----- one step ------------------------------------------------------------------------------------


def _norm_ratio(div: torch.Tensor, lti: torch.Tensor, params: Sequence[torch.nn.Parameter], world: int) -> float:
    """|g_div| / |g_lti| of the rank-averaged gradients of the two terms (0 when g_lti is zero)."""

    def grads(loss: torch.Tensor) -> torch.Tensor:
        if not loss.requires_grad:
            return torch.zeros(sum(p.numel() for p in params), device=params[0].device)
        gs = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gs, params)])

    both = torch.stack([grads(div), grads(lti)])
    dist.all_reduce(both)
    both /= world
    n_div, n_lti = both.norm(dim=1).tolist()
    return n_div / n_lti if n_lti > 0 else 0.0


def step(trainer: GeneralizedDistillation, engine, plan: dict, world: int) -> dict:
    """`GeneralizedDistillation.step` through a DeepSpeed engine (which reduces, clips and steps)."""
    cfg = trainer.cfg
    trainer.student.train()
    div, tokens = trainer.divergence_loss(plan)
    loss, reported, reward = div, div.detach(), float("nan")
    if cfg.lti and plan["lti"] and cfg.alpha < 1:
        lti, reward, lti_tokens = trainer.lti_loss(plan["lti"])
        tokens += lti_tokens
        scale = _norm_ratio(div, lti, trainer.params, world)
        a = cfg.alpha
        # Same direction as g = a g_div + (1-a) g_lti |g_div| / |g_lti|, as one loss DeepSpeed can reduce.
        loss = a * div + (1 - a) * scale * lti.to(div.device)
        reported = a * div.detach() + (1 - a) * lti.detach().to(div.device)
    penalty, anchor = trainer.anchor_term()
    if penalty is not None:  # the same on every rank: DeepSpeed's mean of it is itself
        loss = loss + penalty.to(div.device)
    engine.backward(loss)
    engine.step()
    trainer.student.eval()
    return {
        "loss": float(reported),
        "divergence": float(div.detach()),
        "lti_reward": reward,
        "anchor": anchor,
        "tokens": tokens,
    }


# ----- the loop ------------------------------------------------------------------------------------


def fit(
    trainer: GeneralizedDistillation,
    engine,
    items: list[Item],
    own: list[int],
    local_batch: int,
    steps: int,
    token_budget: int | None = None,
    log: Log = noop,
    trace: list[dict] | None = None,
) -> DistillStats:
    """`GeneralizedDistillation.fit` on this rank's shard: same batching, rollout reuse, cosine lr;
    metrics and the token budget are global (summed over ranks), so every rank stops at the same step."""
    cfg, world, rank = trainer.cfg, dist.get_world_size(), dist.get_rank()
    stats, t0 = DistillStats(), time.time()
    order: list[int] = []
    n_lti = max(1, local_batch // (2 * cfg.lti_group)) if cfg.lti else 0

    def next_batch() -> tuple[list[int], list[Item], list[Item]]:
        nonlocal order
        if len(order) < local_batch:
            fresh = list(own)
            trainer.rng.shuffle(fresh)
            order += fresh
        ids, order = order[:local_batch], order[local_batch:]
        batch = [items[i] for i in ids]
        pool = [it for it in batch if it.teacher == "new"] or batch
        return ids, batch, trainer.rng.sample(pool, min(n_lti, len(pool))) if n_lti else []

    k = 0
    with progress(total=steps, desc=f"seed (rank {rank}/{world})", unit="step") as bar:
        while k < steps and (token_budget is None or stats.tokens < token_budget):
            chunk = [next_batch() for _ in range(min(cfg.rollout_reuse, steps - k))]
            plans = trainer.plan([b for _, b, _ in chunk], [lt for _, _, lt in chunk])
            for (ids, _, _), plan in zip(chunk, plans):
                if token_budget is not None and stats.tokens >= token_budget:
                    break
                lr = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / max(1, steps))))
                for g in engine.optimizer.param_groups:  # cosine decay to 10%, as in fit()
                    g["lr"] = lr
                out = step(trainer, engine, plan, world)
                has_reward = out["lti_reward"] == out["lti_reward"]
                local = [out["loss"], out["divergence"], out["tokens"], out["lti_reward"] if has_reward else 0.0]
                total = torch.tensor(local + [float(has_reward)], dtype=torch.float64, device=_device(engine))
                dist.all_reduce(total)
                loss, div, tokens, reward_sum, rewarded = total.tolist()
                merged = {
                    "loss": loss / world,
                    "divergence": div / world,
                    "lti_reward": reward_sum / rewarded if rewarded else float("nan"),
                    "anchor": out["anchor"],  # the same on every rank
                    "tokens": int(tokens),
                }
                if trace is not None:
                    trace.append({"step": k, "rank": rank, "ids": ids, "lr": lr, **out, "global": merged})
                stats.steps += 1
                stats.tokens += merged["tokens"]
                stats.history.append(merged)
                bar.update(1)
                if rank == 0:
                    log({f"distill/{k_}": v for k_, v in merged.items() if v == v} | {"distill/step": k})
                k += 1
    if not stats.history:
        raise SeedError("the token budget was spent before the first step")
    last = stats.history[-10:]
    stats.loss = sum(h["loss"] for h in last) / len(last)
    stats.divergence = sum(h["divergence"] for h in last) / len(last)
    stats.anchor = sum(h["anchor"] for h in last) / len(last)
    rewards = [h["lti_reward"] for h in stats.history if h["lti_reward"] == h["lti_reward"]]
    stats.lti_reward = sum(rewards) / len(rewards) if rewards else float("nan")
    stats.wall_clock_s = time.time() - t0
    return stats


def _device(engine) -> torch.device:
    return next(engine.module.parameters()).device


# ----- the stage -----------------------------------------------------------------------------------


def seed_distributed(
    cfg: Config,
    snapshot: Manifest,
    champion: Manifest,
    workdir: Path,
    deepspeed_config: str | Path = "zero2",
    log: Log = noop,
    replay: Sequence[str] = (),
    token_budget: int | None = None,
    run_seed: int = 0,
    trace: Path | None = None,
) -> Manifest:
    """Knowledge Seeding on every rank of the launcher's process group (see the module docstring).

    Returns the candidate's manifest on every rank; rank 0 wrote it. `trace` is a directory for an
    audit of the run: per rank the items it owns and the ids, losses and lr of every step
    (``rank{r}.jsonl``); from rank 0 the items with their teacher samples (``items.jsonl``), the trained
    parameters before the first step (``initial.pt``) and digests of the frozen ones before and after."""
    t0 = time.time()
    deepspeed = _deepspeed()
    rank, world, device = init(deepspeed)
    log = log if rank == 0 else noop
    dc = cfg.distill
    local_batch = dc.batch_size // world
    if local_batch < 1:
        raise DistributedError(f"distill.batch_size={dc.batch_size} is smaller than the {world} ranks")
    engine_cfg = ds_config(deepspeed_config, local_batch)
    zero3 = check_zero(cfg, engine_cfg) == 3

    s = prepare(cfg, snapshot, champion, log=log, replay=replay, run_seed=run_seed, write_prompts=rank == 0)
    s.items = _broadcast(s.items if rank == 0 else None)
    s.n_new = _broadcast(s.n_new)
    if len(s.items) < world:
        raise SeedError(f"{len(s.items)} distillation items cannot be shared by {world} ranks")
    for m in {id(m): m for m in (*s.teachers.values(), s.student)}.values():
        m.to(device)
    if dc.memory == "fast_weights":  # each rank trained its own fast expert: all take rank 0's teacher
        for p in s.teachers["new"].parameters():
            dist.broadcast(p.data, src=0)
    trained = {id(p) for p in s.params}
    frozen = [p for p in s.student.parameters() if id(p) not in trained]

    # Rank 0 keeps the single-process seed (world size 1 reproduces `seed`); the others draw their own.
    trainer = s.trainer(cfg, run_seed + 1_000_003 * rank)
    engine, *_ = deepspeed.initialize(
        model=s.student, model_parameters=trainer.params, optimizer=trainer.opt, config=engine_cfg
    )  # also broadcasts rank 0's weights, so every rank starts from the same fresh expert

    own = shard(len(s.items), rank, world)
    # One line per rank: the launching stage streams it, so its log shows which ranks joined.
    print(f"seed-dist rank {rank}/{world} ({device}): {len(own)} of {len(s.items)} items", file=sys.stderr, flush=True)
    trainer.sample_teacher([s.items[i] for i in own], dc.max_new_tokens)
    samples = [None] * world
    dist.all_gather_object(samples, {i: s.items[i].sample for i in own})  # for training_data.jsonl
    for part in samples:
        for i, sample in part.items():
            s.items[i].sample = sample

    rows: list[dict] | None = [{"rank": rank, "world": world, "device": str(device), "own": own}] if trace else None
    initial, frozen_before = {}, ""
    if trace:
        with _full(deepspeed, s.student, zero3):
            if rank == 0:
                initial = {n: p.detach().cpu().clone() for n, p in s.student.named_parameters() if id(p) in trained}
                frozen_before = _digest(frozen)
    stats = fit(trainer, engine, s.items, own, local_batch, dc.steps, token_budget=token_budget, log=log, trace=rows)

    manifest = None
    with _full(deepspeed, s.student, zero3):
        if rank == 0:
            if not zero3:  # whole weights on rank 0: its forward pass needs no other rank
                s.remember()
            meta = {"world_size": world, "zero_stage": int(engine_cfg.get("zero_optimization", {}).get("stage", 0))}
            manifest = write_candidate(s, snapshot, champion, workdir, stats, t0, log, meta=meta)
            if trace:
                _write_trace(Path(trace), s.items, initial, frozen_before, _digest(frozen))
    if trace:
        Path(trace).mkdir(parents=True, exist_ok=True)
        (Path(trace) / f"rank{rank}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows or []))
    manifest = _broadcast(manifest)
    dist.barrier()
    return manifest


def _write_trace(root: Path, items: list[Item], initial: dict, before: str, after: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    torch.save(initial, root / "initial.pt")
    rows = [
        {"id": i, "student_prompt": it.student_prompt, "teacher_prompt": it.teacher_prompt, "teacher": it.teacher}
        | {"kind": it.kind, "sample": it.sample}
        for i, it in enumerate(items)
    ]
    (root / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "frozen.json").write_text(json.dumps({"before": before, "after": after}))


# ----- Dreaming's consolidation, data-parallel -------------------------------------------------------------


def dream_distributed(
    cfg: Config,
    seeded: Manifest,
    snapshot: Manifest,
    workdir: Path,
    deepspeed_config: str | Path = "zero2",
    log: Log = noop,
    run_seed: int = 0,
    token_budget: int | None = None,
    trace: Path | None = None,
) -> Manifest:
    """Dreaming with its consolidation on every rank of the launcher's process group.

    Rank 0 runs steps 1-4 (`sleepcycle.dream.prepare`: writing, selecting and rewarding dreams, ReST-EM)
    while the others load the same checkpoint and wait; it puts the kept dreams in curriculum order (with
    the Seeding replay share: `consolidation_inputs`, as SFT examples or distillation lessons) and
    broadcasts them, and `deepspeed.initialize` broadcasts its weights. Then each global batch of
    ``distill.batch_size`` dreams (the same batches as `sleepcycle.dream.consolidate`) is split across the
    ranks, rank r taking every W-th, each rank computing the same objective (`sleepcycle.dream.objective`:
    distilled, every rank scores the teacher distributions of all the lessons once, before the first step); DeepSpeed averages the
    gradients of the newest expert and clips them globally (the step's loss is the mean of the ranks'
    means). Rank 0 measures the KL drift and broadcasts it, so all ranks revert, halve
    the lr or stop at the same step. Rank 0 writes the candidate as `dream` does (``meta`` adds
    ``world_size``).

    Only the newest expert trains (megabytes), so ZeRO partitioning buys nothing here, and a drift revert
    must write whole parameters that the optimizer steps in place: the engine runs without ZeRO (stage 0:
    gradients averaged, the trainer's AdamW on every rank), whatever stage `deepspeed_config` names.
    `trace` gets ``rank{r}.jsonl``: the dreams each rank trained on at every step, and a digest of the
    newest expert after the engine started (equal on every rank)."""
    if grew_this_cycle(seeded):  # nothing to dream into, as in `dream`
        return seeded
    t0 = time.time()
    deepspeed = _deepspeed()
    rank, world, device = init(deepspeed)
    log = log if rank == 0 else noop
    bs = cfg.distill.batch_size
    if bs < world:
        raise DistributedError(f"distill.batch_size={bs} is smaller than the {world} ranks")
    engine_cfg = ds_config(deepspeed_config, max(1, bs // world)) | {"zero_optimization": {"stage": 0}}

    if rank == 0:
        d = prepare_dreaming(cfg, seeded, snapshot, log=log, run_seed=run_seed)
        examples = consolidation_inputs(cfg, seeded, d)
    else:
        bank, tok, state, newest = load_dreaming(seeded, run_seed)
        d, examples = Dreaming([], bank, tok, state, newest, random.Random(run_seed), []), None
    examples, gen_tokens = _broadcast((examples, d.gen_tokens))
    # rank 0 measures the drift against the champion; with distilled consolidation every rank's loss needs it
    # too (it teaches replayed lessons, and reads the documents unless the base does)
    distilled = cfg.dream.consolidation == "distill"
    champion = frozen_champion(d.bank, d.newest).to(device) if rank == 0 or distilled else None
    params = d.bank.parameters(d.newest)
    for p in params:
        p.requires_grad = True
    d.bank.model.to(device)
    opt = torch.optim.AdamW(params, lr=cfg.dream.lr, weight_decay=0.0)
    engine, *_ = deepspeed.initialize(model=d.bank.model, model_parameters=params, optimizer=opt, config=engine_cfg)
    rows: list[dict] = [
        {"rank": rank, "world": world, "device": str(device), "dreams": len(examples), "start": _digest(params)}
    ]
    left = None if token_budget is None else max(0, token_budget - gen_tokens)
    anchor = Anchor.load(Path(seeded.uri)).earlier()  # every rank: the penalty's gradient is the same on each
    result = _consolidate(cfg, d, engine, examples, champion, device, log, left, rows, anchor)

    manifest = None
    if rank == 0:
        d.bank.model.to("cpu")
        manifest = write_dreamed(d, result, seeded, snapshot, workdir, t0, log, meta={"world_size": world})
    if trace:
        Path(trace).mkdir(parents=True, exist_ok=True)
        (Path(trace) / f"rank{rank}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    manifest = _broadcast(manifest)
    dist.barrier()
    return manifest


def _consolidate(
    cfg: Config,
    d: Dreaming,
    engine,
    examples: list[Example] | list[Lesson],
    champion: torch.nn.Module | None,
    device: torch.device,
    log: Log,
    token_budget: int | None,
    rows: list[dict],
    anchor: Anchor | None = None,
) -> dict:
    """`sleepcycle.dream.consolidate`'s loop on this rank's share of every batch, through the engine."""
    dc, world, rank = cfg.dream, dist.get_world_size(), dist.get_rank()
    if not examples:
        return {"tokens": 0, "kl_drift": 0.0, "drift_history": [], "drift_note": "no dreams kept"}
    bank, tok, params = d.bank, d.tok, d.bank.parameters(d.newest)
    size, loss_of, tokens_of = objective(cfg, bank, tok, examples, champion)
    tokens, bs = 0, cfg.distill.batch_size
    penalty = anchor_penalty(cfg, anchor, bank.model, d.newest)

    def measure() -> float:
        mine = kl_drift(bank.model, champion, tok, d.ref) if rank == 0 and d.ref and champion is not None else 0.0
        return float(_broadcast(mine))

    guard = DriftGuard(dc, params, engine.optimizer.param_groups, measure, log)

    with progress(total=dc.steps, desc=f"dream consolidation (rank {rank}/{world})", unit="step") as bar:
        for step in range(dc.steps):
            if token_budget is not None and tokens >= token_budget:
                break
            start = (step * bs) % size  # the global batch of the single-process loop: (seqs + seqs)[start:+bs]
            ids = [(start + i) % size for i in range(min(bs, 2 * size - start))]
            mine = ids[rank::world] or [ids[rank % len(ids)]]
            bank.model.train()
            loss = loss_of(mine)
            if penalty:
                loss = loss + cfg.distill.anchor * penalty()
            engine.backward(loss)
            engine.step()
            bank.model.eval()
            total = torch.tensor([float(tokens_of(mine)), float(loss.detach())], dtype=torch.float64)
            total = total.to(device)
            dist.all_reduce(total)
            tokens += int(total[0])
            mean_loss = float(total[1]) / world
            rows.append({"step": step, "rank": rank, "ids": mine, "loss": float(loss.detach()), "lr": guard.lr})
            bar.update(1)
            spent = token_budget is not None and tokens >= token_budget  # the same on every rank
            if guard.check(step, mean_loss, last=spent) == "stop" or spent:
                break
    return guard.result(tokens)
