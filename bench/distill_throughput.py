"""Throughput of our Generalized Distillation step against TRL's `DistillationTrainer`, and the MFU of our step.

    .venv/bin/python bench/distill_throughput.py              # the measurement (~5 min on 2 cores)
    .venv/bin/python bench/distill_throughput.py --quick      # a smoke run for development (~1 min)
    .venv/bin/python bench/distill_throughput.py --steps 80 --out /tmp/dt

Writes bench/results/distill_throughput.json and .md and prints the table.

What is compared, in one process on one machine, one after the other after an untimed warm-up step of each:
- **ours** (`sleepcycle.distill.GeneralizedDistillation`) at TRL's settings: pure on-policy (lambda = 1), no
  Learning-to-Imitate, no rollout reuse (fresh student samples every step), every rollout allowed the full
  `max_new_tokens` (our `_limit` otherwise caps a student rollout at the teacher sample's length + 4, and
  pure on-policy has no teacher sample), the generalised JSD with TRL's `beta` (0 = forward KL).
- **trl**: `trl.DistillationTrainer` (the stable on-policy trainer), `use_cpu=True`, `bf16=False`, no vLLM,
  no gradient checkpointing (TRL turns it on by default; off is its faster setting and matches ours).
- **ours, defaults** (second row, not an equal-settings comparison): our `DistillConfig` defaults for the
  method (lambda = 0.25 with teacher samples drawn first, LTI on, rollout reuse 4, temperature 0.7, forward
  KL); only batch size, completion length, learning rate and step count are kept equal.

Why the first two are fair: the same teacher and the same initial student (one copy each), the same prompts
(the same strings; TRL tokenises them to the same ids, checked), one pass over them in shuffled order, the
same batch size, completion length, sampling temperature (1.0 by default: TRL also divides the logits by the
temperature inside its loss, so only at 1.0 do the two optimise the same divergence), learning rate and
schedule (cosine to 10%, no warm-up), AdamW (0.9, 0.98, no weight decay), gradient clipping at 1.0, number of
optimizer steps, and both train the full student. Remaining difference: TRL averages the divergence over the
batch's tokens, ours over each sequence's tokens then over sequences (a weighting, not a cost).
Tokens counted: completion tokens the divergence trains on (EOS included, padding not) and total tokens =
prompt + completion of those sequences (for ours-defaults the trainer's own count, which adds LTI rollouts).

"Final quality at equal settings": forward KL(teacher || student) per token on teacher samples (T = 1) of
held-out prompts (never trained on), before and after training, for every system.

Also measured: this machine's matmul peak (best of several `torch.mm` on square matrices, fp32 and bf16) and
our training step's achieved FLOP/s on a fixed [batch, seq] token batch without generation, fp32 and under
bf16 autocast: FLOPs = 6 N T + 12 L d S T for the student (forward + backward; N = parameters with the tied
head counted once, as the head is a real matmul and the embedding lookup is not; the second term is the
attention scores and values of PaLM's appendix B, counted in full, not halved for the causal mask) plus
2 N_t T + 4 L_t d_t S T for the teacher's forward in the full step. Plus decode-step timings at several batch
sizes and an operator profile of one step: the evidence for what limits the numbers.

Benchmarks are never tests: tests/unit/test_bench_throughput.py only checks the result's shape.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import platform as host
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import transformers
import trl
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PrinterCallback, TrainerCallback
from trl import DistillationConfig, DistillationTrainer

from sleepcycle import models
from sleepcycle.bench import cpu_info
from sleepcycle.config import DistillConfig, ModelConfig, load_config
from sleepcycle.distill import GeneralizedDistillation, Item, divergence, teacher_logprobs
from sleepcycle.generate import sample_ids
from sleepcycle.pretrain import CORPUS_VERSION, Corpus, home, pretrain
from sleepcycle.seed import make_judge
from sleepcycle.world import World

RESULTS = Path(__file__).resolve().parent / "results"
REUSE = DistillConfig().rollout_reuse


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that shapes the measurement; written into the JSON."""

    steps: int = 40
    batch_size: int = 16
    max_new_tokens: int = 32
    temperature: float = 1.0
    lr: float = 1e-3
    beta: float = 0.0
    """TRL's generalised-JSD beta, ours the same (0 = forward KL, 1 = reverse KL)."""
    seed: int = 0
    student_size: str = "large"
    """The student is the larger self (METHOD.md); teacher = the pretrained `small` model."""
    heldout: int = 64
    matmul_n: int = 2048
    repeats: int = 5
    """Best-of repeats for the peak and the fixed-batch step timings."""
    mfu_batch: int = 16
    mfu_seq: int = 128
    decode_batches: tuple[int, ...] = (1, 16, 64)
    bf16: bool | None = None
    """Measure the bf16 peak and the bf16-autocast MFU rows. None: only on a CPU with native bf16 matmuls
    (AVX512-BF16 or AMX). Elsewhere torch emulates bf16: a 2048² product ran at 0.3 GFLOP/s on an AVX2 EPYC
    (fp32: 165), so "of peak" there divides by a number that is not a peak, and the rows cost minutes."""

    @classmethod
    def quick(cls, **kw) -> Settings:
        base = dict(
            steps=4,
            batch_size=8,
            max_new_tokens=16,
            heldout=16,
            matmul_n=1024,
            repeats=2,
            mfu_batch=8,
            mfu_seq=64,
            decode_batches=(1, 16),
        )
        return cls(**(base | kw))


# ----- models and prompts --------------------------------------------------------------------------------


def find_teacher(path: str | None, allow_pretrain: bool) -> Path | None:
    """The pretrained `small` checkpoint: `path`, else the default profile's cache, else any cached `small`."""
    if path:
        return Path(path)
    cfg = load_config("default")
    cache = home() / "pretrained"
    exact = cache / (cfg.digest("world", "model", "pretrain") + f"-v{CORPUS_VERSION}")
    if (exact / "manifest.json").exists():
        return exact
    for manifest in sorted(cache.glob("*/manifest.json")):
        if json.loads(manifest.read_text()).get("meta", {}).get("size") == "small":
            return manifest.parent
    return Path(pretrain(cfg).uri) if allow_pretrain else None


def load_models(settings: Settings, teacher_path: Path | None, corpus: Corpus):
    """(teacher, initial student, tokenizer, teacher description). Without a checkpoint the teacher is a
    random `small` model: throughput does not depend on weights, but the KL column then means little."""
    if teacher_path is not None:
        teacher, tok = models.load(teacher_path)
        source = str(teacher_path)
    else:
        tok = models.train_tokenizer(corpus.tokenizer_texts(), ModelConfig().vocab_size)
        teacher = models.build_model(ModelConfig(size="small"), tok, seed=settings.seed + 1)
        source = "random init (no pretrained checkpoint found; run with --pretrain for a trained teacher)"
    student_cfg = ModelConfig(
        size=settings.student_size, vocab_size=len(tok), max_positions=teacher.config.max_position_embeddings
    )
    student = models.build_model(student_cfg, tok, seed=settings.seed)
    teacher.eval()
    student.eval()
    return teacher, student, tok, source


def make_prompts(corpus: Corpus, n: int, seed: int) -> list[str]:
    """Distillation-style prompts: closed-book questions and the openings (4-8 words) of bios, half each."""
    rng = random.Random(f"distill-throughput-{seed}")
    questions = sorted({e.prompt for e in corpus.qa_examples})
    openings = sorted({" ".join(d.split()[: rng.randint(4, 8)]) for d in corpus.base_docs})
    k = min(len(openings), n // 2)
    pool = rng.sample(openings, k) + rng.sample(questions, n - k)
    rng.shuffle(pool)
    return pool


def encode(tok: PreTrainedTokenizerBase, prompts: list[str]) -> list[list[int]]:
    return tok(prompts, add_special_tokens=False)["input_ids"]


# ----- the systems -----------------------------------------------------------------------------------------


class _ClockedDistillation(GeneralizedDistillation):
    """Our trainer with clocks around rollouts and updates. `full_length` lets every student rollout run
    to `max_new_tokens`, as TRL's do (the only behaviour change; see the module docstring)."""

    def __init__(self, *args, full_length: bool = False, **kw):
        super().__init__(*args, **kw)
        self.full_length = full_length
        self.clock = {"generate_s": 0.0, "update_s": 0.0, "completion_tokens": 0, "total_tokens": 0}

    def _limit(self, it: Item) -> int:
        return self.cfg.max_new_tokens if self.full_length else super()._limit(it)

    def _student_samples(self, prompts, limits):
        # the sampling call itself: planning also scores on-policy samples with the teacher, which is not
        # generation
        t0 = time.perf_counter()
        out = super()._student_samples(prompts, limits)
        self.clock["generate_s"] += time.perf_counter() - t0
        return out

    def step(self, plan: dict) -> dict:
        t0 = time.perf_counter()
        out = super().step(plan)
        self.clock["update_s"] += time.perf_counter() - t0
        self.clock["completion_tokens"] += sum(len(c) for c in plan["completions"])
        self.clock["total_tokens"] += out["tokens"]
        return out


def run_ours(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    s: Settings,
    defaults: bool = False,
    reuse: int = 1,
    steps: int | None = None,
) -> dict:
    """Our trainer: at TRL's settings (`reuse` > 1 draws the rollouts of that many steps in one batch), or
    with our method's defaults."""
    steps = steps or s.steps
    equal = dict(batch_size=s.batch_size, lr=s.lr, max_new_tokens=s.max_new_tokens, steps=steps)
    if defaults:
        cfg = DistillConfig(**equal)
    else:
        kind = "forward_kl" if s.beta == 0 else "reverse_kl" if s.beta == 1 else "jsd"
        cfg = DistillConfig(
            **equal, lmbda=1.0, lti=False, rollout_reuse=reuse, temperature=s.temperature, divergence=kind, beta=s.beta
        )
    items = [Item(ids, ids, "new") for ids in encode(tok, prompts)]
    gd = _ClockedDistillation(
        cfg,
        student,
        {"new": teacher},
        list(student.parameters()),
        tok.eos_token_id,
        tok.pad_token_id,
        decode=tok.decode,
        judge=make_judge([]),
        seed=s.seed,
        full_length=not defaults,
    )
    t0, cpu0 = time.perf_counter(), time.process_time()
    teacher_s = 0.0
    if defaults:  # teacher samples are part of our method's cost (TRL, pure on-policy, needs none)
        gd.sample_teacher(items, cfg.max_new_tokens)
        teacher_s = time.perf_counter() - t0
    stats = gd.fit(items, steps)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    c = gd.clock
    return _rates(
        steps=stats.steps,
        sequences=stats.steps * cfg.batch_size,
        wall_s=wall,
        cpu_s=cpu,
        generate_s=c["generate_s"] + teacher_s,
        update_s=c["update_s"],
        completion_tokens=c["completion_tokens"],
        total_tokens=c["total_tokens"],
        settings=cfg.model_dump(mode="json", include=set(equal) | {"lmbda", "lti", "rollout_reuse", "temperature"})
        | {"divergence": cfg.divergence, "beta": cfg.beta, "full_length_rollouts": not defaults},
    )


class _ClockedTRL(DistillationTrainer):
    """TRL's trainer with a clock around generation and a count of the tokens it generates and trains on."""

    def _generate(self, prompts: list):
        t0 = time.perf_counter()
        out = super()._generate(prompts)
        prompt_ids, completion_ids = out[0], out[1]
        self.clock["generate_s"] += time.perf_counter() - t0
        self.clock["completion_tokens"] += sum(len(c) for c in completion_ids)
        self.clock["total_tokens"] += sum(len(p) for p in prompt_ids) + sum(len(c) for c in completion_ids)
        return out


class _TrainClock(TrainerCallback):
    """Wall and CPU clocks from the first step (optimizer already built) to the end of the last."""

    def on_train_begin(self, args, state, control, **kw):
        self.t0, self.cpu0 = time.perf_counter(), time.process_time()

    def on_train_end(self, args, state, control, **kw):
        self.wall, self.cpu = time.perf_counter() - self.t0, time.process_time() - self.cpu0


def run_trl(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    prompts: list[str],
    s: Settings,
    steps: int | None = None,
) -> dict:
    steps = steps or s.steps
    with tempfile.TemporaryDirectory() as out:
        args = DistillationConfig(
            output_dir=out,
            use_cpu=True,
            bf16=False,
            use_vllm=False,
            per_device_train_batch_size=s.batch_size,
            gradient_accumulation_steps=1,
            max_steps=steps,
            learning_rate=s.lr,
            lr_scheduler_type="cosine_with_min_lr",  # = ours: cosine decay to 10%, no warm-up
            lr_scheduler_kwargs={"min_lr_rate": 0.1},
            warmup_steps=0,
            adam_beta1=0.9,
            adam_beta2=0.98,
            weight_decay=0.0,
            max_grad_norm=1.0,
            beta=s.beta,
            temperature=s.temperature,
            max_completion_length=s.max_new_tokens,
            gradient_checkpointing=False,
            report_to="none",
            save_strategy="no",
            logging_steps=steps,
            disable_tqdm=True,
            seed=s.seed,
            dataloader_num_workers=0,
        )
        tok.padding_side = "left"  # TRL's requirement; ours pads by hand and does not read it
        trainer = _ClockedTRL(
            model=student,
            teacher_model=teacher,
            args=args,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tok,
        )
        trainer.remove_callback(PrinterCallback)
        trainer.clock = {"generate_s": 0.0, "completion_tokens": 0, "total_tokens": 0}
        clock = _TrainClock()
        trainer.add_callback(clock)
        result = trainer.train()
    student.eval()
    c = trainer.clock
    return _rates(
        steps=result.global_step,
        sequences=result.global_step * s.batch_size,
        wall_s=clock.wall,
        cpu_s=clock.cpu,
        generate_s=c["generate_s"],
        update_s=clock.wall - c["generate_s"],
        completion_tokens=c["completion_tokens"],
        total_tokens=c["total_tokens"],
        settings={"gradient_checkpointing": False, "use_vllm": False, "bf16": False, "beta": s.beta},
    )


def _rates(steps, sequences, wall_s, cpu_s, generate_s, update_s, completion_tokens, total_tokens, settings) -> dict:
    return {
        "steps": steps,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "s_per_step": wall_s / max(steps, 1),
        "generate_s": generate_s,
        "update_s": update_s,
        "generate_share": generate_s / wall_s,
        "completion_tokens": completion_tokens,
        "total_tokens": total_tokens,
        "completion_tokens_per_s": completion_tokens / wall_s,
        "total_tokens_per_s": total_tokens / wall_s,
        "completion_tokens_per_cpu_s": completion_tokens / cpu_s,
        "mean_completion_len": completion_tokens / max(sequences, 1),
        "settings": settings,
    }


# ----- quality ---------------------------------------------------------------------------------------------


class HeldOut:
    """Teacher samples (T = 1) of held-out prompts, and the teacher's log-probs on them, computed once."""

    def __init__(self, teacher, tok, prompts: list[str], max_new_tokens: int, seed: int):
        ids = encode(tok, prompts)
        gen = torch.Generator().manual_seed(seed)
        comps = sample_ids(teacher, ids, max_new_tokens, tok.eos_token_id, tok.pad_token_id, 1.0, gen)
        self.items = [Item(p, p, "new") for p in ids]
        self.comps = [c or [tok.eos_token_id] for c in comps]
        self.pad = tok.pad_token_id
        self.t_logp = teacher_logprobs(teacher, self.items, self.comps, self.pad)

    def kl(self, student: PreTrainedModel) -> float:
        """Forward KL(teacher || student), mean over all completion tokens."""
        student.eval()
        s_logp = teacher_logprobs(student, self.items, self.comps, self.pad)
        per_token = torch.cat([divergence(t, s, "forward_kl") for t, s in zip(self.t_logp, s_logp)])
        return float(per_token.mean())


# ----- machine peak and the MFU of our step ----------------------------------------------------------------


def _best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: allocations, oneDNN primitive creation
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(dtype: torch.dtype, n: int, repeats: int) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return 2 * n**3 / _best_of(lambda: torch.mm(a, b), repeats)


def _params(model: PreTrainedModel) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields the tied head once


def step_flops(student: PreTrainedModel, teacher: PreTrainedModel | None, batch: int, seq: int) -> float:
    tokens = batch * seq
    c = student.config
    flops = (6 * _params(student) + 12 * c.num_hidden_layers * c.hidden_size * seq) * tokens
    if teacher is not None:
        t = teacher.config
        flops += (2 * _params(teacher) + 4 * t.num_hidden_layers * t.hidden_size * seq) * tokens
    return flops


BF16_SKIPPED = "no native bf16 matmul on this CPU (AVX512-BF16 or AMX); --bf16 measures it anyway"

FLOP_FORMULA = (
    "student fwd+bwd: (6*N + 12*L*d*S) * B*S; full GD step adds the teacher forward (2*N_t + 4*L_t*d_t*S) * B*S; "
    "N = parameters (tied head counted once), L layers, d hidden size, S sequence length, B batch"
)


def _fixed_batch(tok, batch: int, seq: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(2, len(tok), (batch, seq), generator=g)  # no pad/EOS: every position is real


def native_bf16(isa: list[str]) -> bool:
    """Whether this CPU multiplies bf16 natively (otherwise torch converts, far below the fp32 rate)."""
    return "avx512_bf16" in isa or "amx_bf16" in isa


def measure_mfu(student, teacher, tok, s: Settings, peaks: dict[str, float | None]) -> dict:
    """Time (best of `repeats`) our step on a fixed token batch, no generation, in fp32 and bf16 autocast:
    - `student_step`: student forward, full-vocabulary divergence to fixed teacher log-probs, backward, AdamW;
    - `gd_step`: `GeneralizedDistillation.step` on a fixed on-policy plan (adds the teacher's forward and the
      per-sequence slicing of our loss): the training half of what the throughput rows run."""
    ids = _fixed_batch(tok, s.mfu_batch, s.mfu_seq, s.seed)
    with torch.no_grad():
        t_logp = torch.log_softmax(teacher(input_ids=ids).logits[:, :-1].float(), -1)
    out = {"batch": s.mfu_batch, "seq": s.mfu_seq, "formula": FLOP_FORMULA}
    for name in ("student_step", "gd_step"):
        out[name] = {}
        for precision in ("fp32", "bf16"):
            if peaks[precision] is None:
                out[name][precision] = {"skipped": BF16_SKIPPED}
                continue
            model = copy.deepcopy(student).train()
            if name == "student_step":
                opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.98), weight_decay=0.0)

                def one(model=model, opt=opt):
                    logits = model(input_ids=ids).logits[:, :-1].float()
                    loss = divergence(t_logp, torch.log_softmax(logits, -1), "forward_kl").mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                flops = step_flops(student, None, s.mfu_batch, s.mfu_seq)
            else:
                gd, plan = _fixed_plan(model, teacher, tok, ids)

                def one(gd=gd, plan=plan):
                    gd.step(plan)

                flops = step_flops(student, teacher, s.mfu_batch, s.mfu_seq)
            if precision == "bf16":
                step = one

                def one(step=step):
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        step()

            secs = _best_of(one, s.repeats)
            out[name][precision] = {
                "s_per_step": secs,
                "tokens_per_s": s.mfu_batch * s.mfu_seq / secs,
                "flop_per_s": flops / secs,
                "mfu": flops / secs / peaks[precision],
            }
    return out


def _fixed_plan(student, teacher, tok, ids: torch.Tensor):
    cfg = DistillConfig(batch_size=ids.shape[0], lmbda=1.0, lti=False, rollout_reuse=1, lr=1e-5)
    gd = GeneralizedDistillation(
        cfg,
        student,
        {"new": teacher},
        list(student.parameters()),
        tok.eos_token_id,
        tok.pad_token_id,
        decode=tok.decode,
        judge=make_judge([]),
    )
    rows = ids.tolist()
    cut = 8  # an 8-token prompt, the rest is the completion the divergence trains on
    batch = [Item(r[:cut], r[:cut], "new") for r in rows]
    return gd, {"batch": batch, "on": [True] * len(rows), "completions": [r[cut:] for r in rows], "lti": None}


def profile_step(student, teacher, tok, s: Settings, top: int = 10) -> list[dict]:
    """Operator profile of one fp32 `GeneralizedDistillation.step` on the fixed batch: where a step goes."""
    gd, plan = _fixed_plan(copy.deepcopy(student).train(), teacher, tok, _fixed_batch(tok, s.mfu_batch, s.mfu_seq, 0))
    gd.step(plan)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        gd.step(plan)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return [
        {"op": e.key, "self_ms": e.self_cpu_time_total / 1e3, "share": e.self_cpu_time_total / total, "calls": e.count}
        for e in events[:top]
    ]


def decode_timings(student, tok, prompts: list[str], s: Settings) -> dict:
    """Seconds per decoding step for our sampler (fused decoder) at several batch sizes, and at the training
    batch size our sampler on the HF forward (``generation.fast_decode: false``) and HF `generate` (TRL's
    path): if a step costs nearly the same for 1 row as for 64, decoding is overhead-bound."""
    ids = encode(tok, prompts)
    n = s.max_new_tokens
    rows = []
    runs = [("ours", b, True) for b in s.decode_batches] + [("ours, HF forward", s.batch_size, False)]
    for name, b, fast in runs:
        batch = [ids[i % len(ids)] for i in range(b)]
        g = torch.Generator().manual_seed(0)

        def one(batch=batch, g=g, fast=fast):
            # eos_id -1 never matches: every row decodes all n tokens, so the step count is fixed
            return sample_ids(student, batch, n, -1, tok.pad_token_id, 1.0, g, fast=fast)

        secs = _best_of(one, s.repeats)
        rows.append({"sampler": name, "batch": b, "s_per_decode_step": secs / n, "tokens_per_s": b * n / secs})
    batch = ids[: s.batch_size]
    width = max(len(p) for p in batch)
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in batch])
    mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p) for p in batch])[:, None]).long()
    kw = dict(max_new_tokens=n, min_new_tokens=n, do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    kw |= dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, disable_compile=True)
    with torch.no_grad():
        secs = _best_of(lambda: student.generate(input_ids=input_ids, attention_mask=mask, **kw), s.repeats)
    rows.append(
        {
            "sampler": "hf_generate",
            "batch": len(batch),
            "s_per_decode_step": secs / n,
            "tokens_per_s": len(batch) * n / secs,
        }
    )
    return {"max_new_tokens": n, "rows": rows}


# ----- the comparison ------------------------------------------------------------------------------------


def compare(
    teacher: PreTrainedModel,
    student: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    train_prompts: list[str],
    heldout_prompts: list[str],
    s: Settings,
    say: Callable[[str], None] = print,
) -> dict:
    """Run every measurement; return the result (see `write` for the files)."""
    assert len(teacher.get_output_embeddings().weight) == len(student.get_output_embeddings().weight), "vocab"
    trl_ids = tok(train_prompts[: s.batch_size])["input_ids"]  # how TRL tokenises (special tokens on)
    if trl_ids != encode(tok, train_prompts[: s.batch_size]):
        raise RuntimeError("TRL would tokenise the prompts differently from ours: not a fair comparison")
    threads = torch.get_num_threads()

    say("held-out teacher samples ...")
    heldout = HeldOut(teacher, tok, heldout_prompts, s.max_new_tokens, s.seed)
    kl_initial = heldout.kl(student)

    say("warm-up (one untimed step of each) ...")
    run_ours(copy.deepcopy(student), teacher, tok, train_prompts[: s.batch_size], s, steps=1)
    run_trl(copy.deepcopy(student), teacher, tok, train_prompts[: s.batch_size], s, steps=1)

    systems = {}
    for name, label, run in (
        ("ours", "ours, TRL's settings", lambda m: run_ours(m, teacher, tok, train_prompts, s)),
        ("trl", "TRL DistillationTrainer", lambda m: run_trl(m, teacher, tok, train_prompts, s)),
        (
            "ours_reuse",
            f"ours, TRL's settings + rollout reuse {REUSE} (samples up to {REUSE - 1} updates old)",
            lambda m: run_ours(m, teacher, tok, train_prompts, s, reuse=REUSE),
        ),
        (
            "ours_defaults",
            "ours, defaults (λ=0.25 + teacher samples, LTI, reuse 4, T=0.7): not equal settings",
            lambda m: run_ours(m, teacher, tok, train_prompts, s, defaults=True),
        ),
    ):
        say(f"{name}: {s.steps} steps ...")
        model, load = copy.deepcopy(student), os.getloadavg()[0]
        systems[name] = {"label": label} | run(model) | {"heldout_kl": heldout.kl(model), "load_avg_1m": load}
        del model

    say("matmul peak, MFU, decode timings, profile ...")
    bf16 = native_bf16(cpu_info()["cpu_isa"]) if s.bf16 is None else s.bf16
    peaks = {
        "fp32": matmul_peak(torch.float32, s.matmul_n, s.repeats),
        "bf16": matmul_peak(torch.bfloat16, s.matmul_n, s.repeats) if bf16 else None,
    }
    mfu = measure_mfu(student, teacher, tok, s, peaks)
    decode = decode_timings(student, tok, train_prompts, s)
    profile = profile_step(student, teacher, tok, s)

    ours, ref = systems["ours"], systems["trl"]
    ratio = {key: ours[key] / ref[key] for key in ("completion_tokens_per_s", "total_tokens_per_s") if ref[key] > 0} | {
        "steps_per_s": ref["s_per_step"] / ours["s_per_step"]
    }
    ratio["completion_tokens_per_cpu_s"] = ours["completion_tokens_per_cpu_s"] / ref["completion_tokens_per_cpu_s"]
    for name in ("ours_reuse", "ours_defaults"):
        ratio[f"{name}_completion_tokens_per_s"] = (
            systems[name]["completion_tokens_per_s"] / ref["completion_tokens_per_s"]
        )
    return {
        "bench": "distill_throughput",
        "schema": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(threads),
        "settings": dataclasses.asdict(s),
        "models": {
            "teacher": {"params": _params(teacher), **_shape(teacher)},
            "student": {"params": _params(student), "size": s.student_size, **_shape(student)},
        },
        "systems": systems,
        "ratio_vs_trl": ratio,
        "quality": {"metric": "forward KL(teacher||student) per token, held-out prompts", "initial": kl_initial}
        | {name: r["heldout_kl"] for name, r in systems.items()},
        "peak_flop_per_s": peaks | {"matmul_n": s.matmul_n},
        "mfu": mfu,
        "decode": decode,
        "profile_gd_step_fp32": profile,
        "goals": {
            "ratio_ge_2x": ratio["completion_tokens_per_s"] >= 2,
            "mfu_fp32_ge_50pct_or_bf16_ge_30pct": mfu["gd_step"]["fp32"]["mfu"] >= 0.5
            or mfu["gd_step"]["bf16"].get("mfu", 0.0) >= 0.3,
        },
    }


def _shape(model: PreTrainedModel) -> dict:
    c = model.config
    return {"layers": c.num_hidden_layers, "hidden": c.hidden_size, "vocab": c.vocab_size}


def machine_info(threads: int) -> dict:
    cpu = cpu_info()  # the bench runner's reading of /proc/cpuinfo: model, family/model, vector ISA
    return {
        "cpu": cpu["cpu_model"],
        "cpu_family_model": cpu["cpu_family_model"],
        "cpu_isa": cpu["cpu_isa"],
        "avx512_bf16": "avx512_bf16" in cpu["cpu_isa"],
        "amx": "amx_bf16" in cpu["cpu_isa"],
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "load_avg_1m": os.getloadavg()[0],
        "python": host.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
    }


# ----- output ----------------------------------------------------------------------------------------------


def render(r: dict) -> str:
    s, q = r["settings"], r["quality"]
    m = r["models"]
    lines = [
        "# Distillation throughput: ours vs TRL `DistillationTrainer`",
        "",
        f"Teacher {m['teacher']['params'] / 1e6:.2f}M params (pretrained small), student "
        f"{m['student']['params'] / 1e6:.2f}M ({s['student_size']}, fresh init); batch {s['batch_size']}, "
        f"{s['max_new_tokens']} new tokens, T={s['temperature']}, beta={s['beta']}, lr={s['lr']}, "
        f"{s['steps']} steps. {r['machine']['cpu']}, {r['machine']['torch_threads']} torch threads, "
        f"load {r['machine']['load_avg_1m']:.1f} at the end. Command: `{r['command']}`",
        "",
        "| system | s/step | generation share | completion tok/s | total tok/s | vs TRL (completion tok/s) "
        "| completion tok per CPU-s | held-out KL(T‖S) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ref = r["systems"]["trl"]["completion_tokens_per_s"]
    for row in r["systems"].values():
        lines.append(
            f"| {row['label']} | {row['s_per_step']:.2f} | {row['generate_share']:.0%} | "
            f"{row['completion_tokens_per_s']:.0f} | {row['total_tokens_per_s']:.0f} | "
            f"{row['completion_tokens_per_s'] / ref:.2f}× | {row['completion_tokens_per_cpu_s']:.0f} | "
            f"{row['heldout_kl']:.3f} |"
        )
    lines += [
        f"| initial student | | | | | | | {q['initial']:.3f} |",
        "",
        f"Matmul peak ({r['peak_flop_per_s']['matmul_n']}²): fp32 {r['peak_flop_per_s']['fp32'] / 1e9:.1f} GFLOP/s, "
        "bf16 "
        + (
            f"{bf16_peak / 1e9:.1f} GFLOP/s."
            if (bf16_peak := r["peak_flop_per_s"]["bf16"])
            else f"not measured: {BF16_SKIPPED}."
        ),
        "",
        f"| training step, no generation ([{r['mfu']['batch']}, {r['mfu']['seq']}] tokens) | precision | s/step "
        "| tokens/s | GFLOP/s | of peak |",
        "|---|---|---|---|---|---|",
    ]
    names = {"student_step": "student fwd+bwd+AdamW", "gd_step": "our full GD step (+ teacher fwd)"}
    for name in ("student_step", "gd_step"):
        for precision in ("fp32", "bf16"):
            x = r["mfu"][name][precision]
            if "skipped" in x:
                continue
            lines.append(
                f"| {names[name]} | {precision} | {x['s_per_step']:.3f} | {x['tokens_per_s']:.0f} | "
                f"{x['flop_per_s'] / 1e9:.1f} | {x['mfu']:.0%} |"
            )
    lines += [
        "",
        f"FLOPs: {r['mfu']['formula']}.",
        "",
        "| decoding | batch | ms/step | tokens/s |",
        "|---|---|---|---|",
    ]
    for row in r["decode"]["rows"]:
        lines.append(
            f"| {row['sampler']} | {row['batch']} | {row['s_per_decode_step'] * 1e3:.1f} | {row['tokens_per_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def write(result: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "distill_throughput.json", out / "distill_throughput.md"
    js.write_text(json.dumps(result, indent=2) + "\n")
    md.write_text(render(result))
    return js, md


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="a few small steps, for development")
    ap.add_argument("--steps", type=int, help="optimizer steps per system")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--teacher", help="a pretrained checkpoint directory (default: the cached small model)")
    ap.add_argument("--pretrain", action="store_true", help="pretrain the default small model if none is cached")
    ap.add_argument("--student-size", choices=["micro", "small", "large"])
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice, the cores)")
    ap.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        help="measure the bf16 peak and autocast rows (default: only on a CPU with native bf16 matmuls)",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    over = {
        k: v
        for k, v in {"steps": args.steps, "student_size": args.student_size, "bf16": args.bf16}.items()
        if v is not None
    }
    s = Settings.quick(**over) if args.quick else Settings(**over)

    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("SLEEPCYCLE_QUIET", "1")
    cfg = load_config("default")
    corpus = Corpus(World(cfg.world), cfg)
    teacher, student, tok, source = load_models(s, find_teacher(args.teacher, args.pretrain), corpus)
    prompts = make_prompts(corpus, s.steps * s.batch_size + s.heldout, s.seed)
    train_prompts, heldout_prompts = prompts[s.heldout :], prompts[: s.heldout]
    result = compare(teacher, student, tok, train_prompts, heldout_prompts, s, say=lambda m: print(m, flush=True))
    result["models"]["teacher"]["source"] = source
    js, md = write(result, args.out)
    print(render(result))
    print(f"wrote {js} and {md}")
    return result


if __name__ == "__main__":
    main()
