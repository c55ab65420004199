"""Knowledge Seeding, data-parallel under DeepSpeed: the loss of `sleepcycle.seed`, one shard per rank.

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

The flow does not join the process group: its seed stage (``distributed.nproc > 1``) calls
`seed_launched`, which writes the resolved config next to the work directory, starts the launcher
(`launch_command`) as a subprocess, streams the ranks' output, forwards rank 0's metrics and returns the
manifest rank 0 wrote, so the stage publishes it exactly as it publishes `seed`'s.

DeepSpeed is an optional extra (``pip install -e '.[distributed]'``), imported only inside these
functions. Why our own loop rather than HF Trainer with a DeepSpeed config: on CPU that combination runs
2-way but the Trainer believes world_size=1, so data is not sharded and both ranks save (shared/ENV.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from sleepcycle.config import CONFIG_DIR, Config
from sleepcycle.distill import DistillStats, GeneralizedDistillation, Item
from sleepcycle.manifests import Manifest
from sleepcycle.progress import progress
from sleepcycle.seed import SeedError, prepare, write_candidate
from sleepcycle.trainer import Log, noop

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
    return stage


def shard(n: int, rank: int, world: int) -> list[int]:
    """Item indices that `rank` owns: a strided split, disjoint across ranks and covering all `n`."""
    return list(range(rank, n, world))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init(deepspeed) -> tuple[int, int, torch.device]:
    """Join the process group the launcher describes (a one-process group without a launcher)."""
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
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
    engine.backward(loss)
    engine.step()
    trainer.student.eval()
    return {"loss": float(reported), "divergence": float(div.detach()), "lti_reward": reward, "tokens": tokens}


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

    rows: list[dict] | None = [{"rank": rank, "world": world, "own": own}] if trace else None
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


# ----- launching the stage as a subprocess (what the flow's seed stage does when distributed.nproc > 1) ----


def launch_command(
    cfg: Config,
    config_file: Path,
    snapshot: Path,
    champion: Path,
    out: Path,
    replay: Path | None = None,
    run_seed: int = 0,
    metrics: Path | None = None,
    trace: Path | None = None,
    master_port: int | None = None,
    token_budget: int | None = None,
) -> list[str]:
    """The command line that runs `seed_distributed` on ``cfg.distributed.nproc`` ranks: torchrun
    (``--standalone``: a free rendezvous port on this host) or DeepSpeed's launcher, each started with
    this interpreter (``python -m torch.distributed.run`` is ``torchrun``) so the ranks see the same
    environment as the caller, whatever is on PATH."""
    d = cfg.distributed
    if d.launcher == "torchrun":
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={d.nproc}"]
        head += ["-m", "sleepcycle"]
    else:  # the deepspeed launcher listens on 29500 unless told otherwise: two stages on one host would clash
        port = master_port or _free_port()
        head = [sys.executable, "-m", "deepspeed.launcher.runner", f"--num_gpus={d.nproc}", f"--master_port={port}"]
        head += ["--module", "sleepcycle"]
    cmd = [*head, "seed-dist", "--config", str(config_file), "--deepspeed", d.deepspeed]
    cmd += ["--snapshot", str(snapshot), "--champion", str(champion), "--out", str(out), "--seed", str(run_seed)]
    for flag, path in (("--replay", replay), ("--metrics", metrics), ("--trace", trace)):
        if path is not None:
            cmd += [flag, str(path)]
    if token_budget is not None:
        cmd += ["--token-budget", str(token_budget)]
    return cmd


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class _Metrics:
    """Rank 0's metrics as they arrive in a JSONL file (``seed-dist --metrics``), handed to `log`."""

    def __init__(self, path: Path, log: Log):
        self.path, self.log, self.offset = path, log, 0

    def pump(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        done = data[: data.rfind(b"\n") + 1]  # complete lines only: rank 0 may be mid-write
        self.offset += len(done)
        for line in done.splitlines():
            if line.strip():
                self.log(json.loads(line))


def seed_launched(
    cfg: Config,
    snapshot: Manifest,
    champion: Manifest,
    workdir: Path,
    log: Log = noop,
    replay: Sequence[str] = (),
    run_seed: int = 0,
    say: Callable[[str], None] = _say,
    trace: Path | None = None,
    token_budget: int | None = None,
) -> Manifest:
    """`sleepcycle.seed.seed` on ``cfg.distributed.nproc`` ranks, launched as a subprocess: same inputs, same
    result (the candidate checkpoint written to `workdir`, its manifest returned).

    The launch files sit next to `workdir`, in ``<workdir>.launch/``: the resolved config, the replay
    records, ``output.log`` (every rank's output, also streamed line by line to `say`) and
    ``metrics.jsonl`` (rank 0's metrics, handed to `log` as they arrive). A rank that fails makes this raise
    DistributedError with the end of the log."""
    d, workdir = cfg.distributed, Path(workdir)
    local_batch = max(1, cfg.distill.batch_size // d.nproc)
    check_zero(cfg, ds_config(d.deepspeed, local_batch))  # refuse before starting N processes
    if cfg.distill.batch_size < d.nproc:
        raise DistributedError(f"distill.batch_size={cfg.distill.batch_size} is smaller than the {d.nproc} ranks")
    launch = workdir.with_name(workdir.name + ".launch")
    shutil.rmtree(launch, ignore_errors=True)
    launch.mkdir(parents=True)
    shutil.rmtree(workdir, ignore_errors=True)  # what comes back is this run's checkpoint or nothing
    config_file = launch / "config.yaml"
    config_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    replay_file = None
    if replay:  # wake JSONL; explicit ids keep repeated texts (the reader drops duplicate ids)
        replay_file = launch / "replay.jsonl"
        replay_file.write_text("".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(replay)))
    cmd = launch_command(
        cfg,
        config_file,
        Path(snapshot.uri),
        Path(champion.uri),
        workdir,
        replay=replay_file,
        run_seed=run_seed,
        metrics=launch / "metrics.jsonl",
        trace=trace,
        token_budget=token_budget,
    )
    src = str(Path(__file__).resolve().parents[1])  # the ranks import this very sleepcycle
    env = {**os.environ, "SLEEPCYCLE_QUIET": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    say(f"seed: {d.nproc} ranks ({d.launcher}, {d.deepspeed}): {shlex.join(cmd)}")
    metrics, output = _Metrics(launch / "metrics.jsonl", log), launch / "output.log"
    popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    with output.open("w") as sink, popen as proc:
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sink.write(line)
                sink.flush()
                say(line.rstrip("\n"))
                metrics.pump()
            rc = proc.wait()
        except BaseException:  # cancelled or interrupted: take the ranks down too (torchrun forwards SIGTERM)
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    metrics.pump()
    if rc != 0:
        tail = "\n".join(output.read_text(errors="replace").splitlines()[-40:])
        raise DistributedError(f"seed-dist on {d.nproc} ranks exited with status {rc}; end of {output}:\n{tail}")
    if not (workdir / "manifest.json").is_file():
        raise DistributedError(f"seed-dist exited cleanly but wrote no checkpoint to {workdir} (see {output})")
    manifest = Manifest.read(workdir)
    manifest.verify(workdir)
    return manifest.model_copy(update={"uri": str(workdir)})
