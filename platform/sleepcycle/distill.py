"""Generalized Distillation (METHOD.md section 3): the divergences, the Learning-to-Imitate reward, the step.

Why our own loop rather than TRL's trainers: the teacher is the *same* network with privileged context
(documents in its prompt) or with fast weights, and the student sees a different prompt for the same
completion; teacher log-probabilities of teacher samples never change, so they are computed once and
reused across epochs (TRL recomputes them every step); and the LTI term needs group rollouts from
random prefixes of teacher samples, which no trainer offers. bench/distill_throughput.py compares the
two on equal settings.

Loss, minimised (the paper's L_KS is maximised; same thing with the sign flipped):

    L = alpha * [ (1-lambda) D(teacher || student)(teacher samples) + lambda D(...)(student samples) ]
        + (1-alpha) * L_LTI,   L_LTI = - mean_i A_i * mean_t log p_student(y_i,t | prefix_i, y_i,<t)

with A_i the reward of completion i normalised within its group of completions of the same prefix,
r = gamma * r_sem + (1-gamma) * r_abs, r_abs = 1 - z / max(|a|, |b|) if z <= z0 else 0 (z: Levenshtein).
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from rapidfuzz.distance import Levenshtein
from transformers import PreTrainedModel

from sleepcycle.config import DistillConfig
from sleepcycle.generate import Generator, HFGenerator
from sleepcycle.progress import progress
from sleepcycle.trainer import Log, noop
from sleepcycle.world import normalize_answer

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]


# ----- divergences over the full vocabulary --------------------------------------------------------


def divergence(
    teacher_logp: torch.Tensor, student_logp: torch.Tensor, kind: Divergence, beta: float = 0.5
) -> torch.Tensor:
    """Per-position divergence between two log-distributions [..., vocab] -> [...].

    forward_kl = KL(teacher || student); reverse_kl = KL(student || teacher); jsd = generalised JSD_beta
    as in GKD (Agarwal et al.) and TRL: beta * KL(T || M) + (1-beta) * KL(S || M), M = beta*T + (1-beta)*S,
    with beta = 0 and 1 taken as the forward and reverse KL limits."""
    if kind == "forward_kl" or (kind == "jsd" and beta == 0):
        return (teacher_logp.exp() * (teacher_logp - student_logp)).sum(-1)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1):
        return (student_logp.exp() * (student_logp - teacher_logp)).sum(-1)
    if kind != "jsd":
        raise ValueError(f"unknown divergence {kind!r}")
    log_b, log_1b = math.log(beta), math.log(1 - beta)
    mix = torch.logsumexp(torch.stack([teacher_logp + log_b, student_logp + log_1b]), dim=0)
    kl_t = (teacher_logp.exp() * (teacher_logp - mix)).sum(-1)
    kl_s = (student_logp.exp() * (student_logp - mix)).sum(-1)
    return beta * kl_t + (1 - beta) * kl_s


# ----- Learning to Imitate: reward and advantages --------------------------------------------------


def levenshtein_reward(pred: str, ref: str, z0_fraction: float = 0.5) -> float:
    """r_abs = 1 - z / max(|pred|, |ref|) when the edit distance z <= z0, else 0 (z0 = fraction * max len)."""
    longest = max(len(pred), len(ref))
    if longest == 0:
        return 1.0
    z = Levenshtein.distance(pred, ref)
    if z > z0_fraction * longest:
        return 0.0
    return 1.0 - z / longest


class ValueJudge:
    """The built-in world's semantic judge: two texts agree when they state the same facts, i.e. their
    normalised forms are equal, or they mention the same non-empty set of known values (cities,
    companies, people, ...) in their first sentence. Exact and cheap; free text needs `EmbeddingJudge`."""

    def __init__(self, values: Sequence[str]):
        ordered = sorted({v for v in values if v}, key=len, reverse=True)
        self.pattern = re.compile(r"\b(" + "|".join(re.escape(v) for v in ordered) + r")\b") if ordered else None

    def mentions(self, text: str) -> frozenset[str]:
        first = re.split(r"(?<=[.?!])\s|\n", text.strip(), maxsplit=1)[0]
        return frozenset(self.pattern.findall(first)) if self.pattern else frozenset()

    def __call__(self, pred: str, ref: str) -> float:
        if normalize_answer(pred) == normalize_answer(ref) and normalize_answer(ref):
            return 1.0
        a, b = self.mentions(pred), self.mentions(ref)
        return float(bool(b) and a == b)


class EmbeddingJudge:
    """Semantic agreement for free text: cosine similarity of sentence embeddings above a threshold.
    Uses a sentence-embedding model that ships inside a PyPI package (works offline)."""

    def __init__(self, threshold: float = 0.8, model: str = "all-MiniLM-L6-v2"):
        from sentence_transformers import SentenceTransformer  # optional dependency, imported lazily

        self.model, self.threshold = SentenceTransformer(model), threshold

    def __call__(self, pred: str, ref: str) -> float:
        emb = self.model.encode([pred, ref], normalize_embeddings=True)
        return float(float(emb[0] @ emb[1]) >= self.threshold)


def lti_reward(pred: str, ref: str, judge: Callable[[str, str], float], gamma: float, z0_fraction: float) -> float:
    return gamma * judge(pred, ref) + (1 - gamma) * levenshtein_reward(pred, ref, z0_fraction)


def group_advantages(rewards: torch.Tensor, min_std: float = 0.1) -> torch.Tensor:
    """Normalise rewards within each group (rows): (r - mean) / max(std, min_std); a flat group gives zeros.

    [ours] The floor keeps near-ties (rewards differing by a few edit-distance points) from being blown
    up to full-size advantages, which with tiny groups turned the RL term into noise."""
    mean = rewards.mean(dim=1, keepdim=True)
    std = rewards.std(dim=1, keepdim=True, unbiased=False)
    return (rewards - mean) / std.clamp(min=min_std)


# ----- distillation data -------------------------------------------------------------------------


@dataclass
class Item:
    """One distillation prompt with its teacher sample.

    The student sees `student_prompt`; the teacher `teacher` sees `teacher_prompt` (the student prompt
    with the privileged context in front, or the same prompt for fast-weight and replay teachers)."""

    student_prompt: list[int]
    teacher_prompt: list[int]
    teacher: str
    sample: list[int] = field(default_factory=list)
    teacher_logp: torch.Tensor | None = None  # cached [len(sample), vocab] log-probs of the teacher
    kind: str = "qa"


PLAIN_HEAD = ("llama", "qwen2", "mistral", "gpt2")
"""Causal LMs whose logits are exactly `lm_head(base_model(...).last_hidden_state)` (no soft-capping or
logit scaling in the wrapper), so `_completion_logp` may apply the head to the positions it needs only."""

PACKABLE = ("llama", "qwen2", "mistral")
"""Rotary-position models whose SDPA attention takes a custom 4D mask as given: `_completion_logp` packs
several sequences into one row for them (positions restart, attention stays within each sequence)."""


def pack(lengths: Sequence[int]) -> list[list[int]]:
    """Rows of sequence indices, each row's lengths summing to at most the longest sequence (first fit,
    longest first). [ours] Distillation batches mix three-token answers with thirty-token rewrites: padded
    to the longest, half of a batch's positions were padding (bench/README.md)."""
    width = max(lengths, default=0)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        k = next((k for k, r in enumerate(room) if r >= lengths[i]), len(rows))
        if k == len(rows):
            rows.append([])
            room.append(width)
        rows[k].append(i)
        room[k] -= lengths[i]
    return rows


def packable(inner: PreTrainedModel) -> bool:
    cfg = inner.config
    return (
        cfg.model_type in PACKABLE
        and getattr(cfg, "_attn_implementation", None) == "sdpa"
        and not getattr(cfg, "use_sliding_window", False)
        and not (cfg.model_type != "qwen2" and getattr(cfg, "sliding_window", None))
    )


def packed_batch(seqs: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """ids, position ids and a boolean attention mask [rows, 1, width, width] for `pack`ed sequences,
    plus each sequence's (row, offset)."""
    rows = pack([len(s) for s in seqs])
    width = max(len(s) for s in seqs)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    pos = torch.zeros_like(ids)
    segment = torch.full_like(ids, -1)
    where = [(0, 0)] * len(seqs)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            n = len(seqs[i])
            ids[r, at : at + n] = torch.tensor(seqs[i])
            pos[r, at : at + n] = torch.arange(n)
            segment[r, at : at + n] = i
            where[i] = (r, at)
            at += n
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    same = (segment[:, :, None] == segment[:, None, :]) & (segment[:, None, :] >= 0)
    # a padding query sees itself (a row of the mask with no key would give NaN)
    mask = (same & causal) | torch.eye(width, dtype=torch.bool)
    return ids, pos, mask[:, None], where


def _completion_logp(
    model: PreTrainedModel,
    prompts: Sequence[list[int]],
    completions: Sequence[list[int]],
    pad_id: int,
    vocab: int | None = None,
) -> list[torch.Tensor]:
    """Log-distributions [len(completion), vocab] at the positions predicting each completion token.

    `vocab` cuts the logits to a shared vocabulary first (models of one family pad their vocabulary
    sizes differently; the padding rows are not tokens)."""
    seqs = [p + c for p, c in zip(prompts, completions)]
    dev = next(model.parameters()).device
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if inner.config.model_type in PLAIN_HEAD and packable(inner):
        ids, pos, mask, where = packed_batch(seqs, pad_id)
        hidden = inner.base_model(
            input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev)
        ).last_hidden_state
        starts = [(r, at + len(p) - 1) for (r, at), p in zip(where, prompts)]
    else:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        if inner.config.model_type not in PLAIN_HEAD:
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits
            return [
                F.log_softmax(logits[i, len(p) - 1 : len(p) - 1 + len(c), :vocab].float(), dim=-1)
                for i, (p, c) in enumerate(zip(prompts, completions))
            ]
        hidden = inner.base_model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).last_hidden_state
        starts = [(i, len(p) - 1) for i, p in enumerate(prompts)]
    # [ours] The LM head only where a completion token is predicted: prompts (the teacher's carry the
    # wake documents) are most positions, and the head is a quarter of the tiny models' forward FLOPs.
    rows = torch.cat([hidden[r, at : at + len(c)] for (r, at), c in zip(starts, completions)])
    logp = F.log_softmax(inner.get_output_embeddings()(rows)[:, :vocab].float(), dim=-1)
    return list(logp.split([len(c) for c in completions]))


@torch.no_grad()
def teacher_logprobs(
    teacher: PreTrainedModel,
    items: Sequence[Item],
    completions: Sequence[list[int]],
    pad_id: int,
    batch_size: int = 32,
    vocab: int | None = None,
) -> list[torch.Tensor]:
    order = sorted(range(len(items)), key=lambda i: len(items[i].teacher_prompt) + len(completions[i]))
    res: dict[int, torch.Tensor] = {}
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        logps = _completion_logp(
            teacher, [items[i].teacher_prompt for i in idx], [completions[i] for i in idx], pad_id, vocab
        )
        res.update(zip(idx, logps))
    return [res[i] for i in range(len(items))]


# ----- the trainer ---------------------------------------------------------------------------------


@dataclass
class DistillStats:
    steps: int = 0
    tokens: int = 0
    loss: float = float("nan")
    divergence: float = float("nan")
    lti_reward: float = float("nan")
    anchor: float = float("nan")
    """The anchor penalty's value at the end (mean of the last 10 steps; NaN without an anchor)."""
    wall_clock_s: float = 0.0
    history: list[dict] = field(default_factory=list)


class GeneralizedDistillation:
    """Trains `params` of `student` to imitate `teachers` on `items` (see the module docstring)."""

    def __init__(
        self,
        cfg: DistillConfig,
        student: PreTrainedModel,
        teachers: dict[str, PreTrainedModel],
        params: Sequence[torch.nn.Parameter],
        eos_id: int,
        pad_id: int,
        decode: Callable[[list[int]], str],
        judge: Callable[[str, str], float],
        seed: int = 0,
        vocab: int | None = None,
        sampler: Generator | None = None,
    ):
        self.cfg, self.student, self.teachers = cfg, student, teachers
        self.sampler = sampler or HFGenerator(eos_id, pad_id, vocab=vocab)  # rollouts: in-process HF, or vLLM
        self.params = [p for p in params if p.requires_grad]
        if not self.params:
            raise ValueError("nothing to train: no parameter requires grad")
        self.eos, self.pad, self.decode, self.judge = eos_id, pad_id, decode, judge
        self.vocab = vocab  # shared vocabulary of teacher and student (None: identical heads)
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
        self.regularizer: Callable[[], torch.Tensor] | None = None
        """A penalty on the trained parameters added to every update with weight `cfg.anchor`
        (`sleepcycle.anchor`); its gradient joins after the two terms are mixed."""

    def anchor_term(self) -> tuple[torch.Tensor | None, float]:
        """The weighted penalty to add to this update (None when off or without one) and its value
        (logged even at weight 0: how far the new expert moves the old inputs' outputs)."""
        if self.regularizer is None:
            return None, float("nan")
        reg = self.regularizer()
        weighted = self.cfg.anchor * reg if self.cfg.anchor > 0 and reg.requires_grad else None
        return weighted, float(reg.detach())

    # -- rollouts --
    def sample_teacher(self, items: list[Item], max_new_tokens: int) -> None:
        """Teacher samples for every item that has none yet, and every item's cached teacher log-probs
        (computed once)."""
        by_teacher: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            by_teacher.setdefault(it.teacher, []).append(i)
        for name, idx in by_teacher.items():
            teacher = self.teachers[name]
            todo = [i for i in idx if not items[i].sample]
            outs = (
                self.sampler.sample(
                    teacher,
                    [items[i].teacher_prompt for i in todo],
                    max_new_tokens,
                    temperature=self.cfg.temperature,
                    generator=self.gen,
                )
                if todo
                else []
            )
            for i, o in zip(todo, outs):
                items[i].sample = o or [self.eos]
            logps = teacher_logprobs(
                teacher, [items[i] for i in idx], [items[i].sample for i in idx], self.pad, vocab=self.vocab
            )
            for i, lp in zip(idx, logps):
                items[i].teacher_logp = lp

    def _student_samples(self, prompts: list[list[int]], limits: list[int]) -> list[list[int]]:
        outs = self.sampler.sample(self.student, prompts, limits, temperature=self.cfg.temperature, generator=self.gen)
        return [o or [self.eos] for o in outs]

    def _limit(self, it: Item) -> int:
        """A student completion needs little more room than the teacher's sample of the same prompt."""
        return min(self.cfg.max_new_tokens, len(it.sample) + 4)

    # -- rollouts for several steps at once --
    def plan(self, batches: list[list[Item]], lti_batches: list[list[Item]]) -> list[dict]:
        """Decide and sample everything the next steps need, in one generation call.

        [ours] Rollout reuse: on-policy samples and LTI completions for `rollout_reuse` consecutive
        steps are drawn together from the current student, so later steps of a chunk use samples a few
        updates old. On CPU a decoding step costs about the same for 8 rows as for 64, so this is where
        most of the wall-clock goes (bench/distill_throughput.py)."""
        lo, hi = self.cfg.prefix_range
        g = self.cfg.lti_group
        plans, prompts, limits, owners = [], [], [], []
        for b, (batch, lti_items) in enumerate(zip(batches, lti_batches)):
            on = [self.rng.random() < self.cfg.lmbda for _ in batch]
            plan = {"batch": batch, "on": on, "completions": [it.sample for it in batch], "lti": None}
            for i, it in enumerate(batch):
                if on[i]:
                    prompts.append(it.student_prompt)
                    limits.append(self._limit(it))
                    owners.append((b, "div", i))
            prefixes, refs = [], []
            for it in lti_items:
                sample = [t for t in it.sample if t != self.eos]
                cut = round(self.rng.uniform(lo, hi) * len(sample)) if len(sample) > 3 else 0
                prefixes.append(it.student_prompt + sample[:cut])
                refs.append(self.decode(sample[cut:]))
                for _ in range(g):
                    prompts.append(prefixes[-1])
                    limits.append(self._limit(it))
                    owners.append((b, "lti", len(prefixes) - 1))
            if lti_items:
                plan["lti"] = {"prefixes": prefixes, "refs": refs, "comps": [[] for _ in range(len(prefixes) * g)]}
            plans.append(plan)
        outs = self._student_samples(prompts, limits) if prompts else []
        lti_fill: dict[tuple[int, int], int] = {}
        for (b, what, i), out in zip(owners, outs):
            if what == "div":
                plans[b]["completions"][i] = out
            else:
                k = lti_fill.get((b, i), 0)
                plans[b]["lti"]["comps"][i * g + k] = out
                lti_fill[(b, i)] = k + 1
        self._score_samples(plans)
        return plans

    def _score_samples(self, plans: list[dict]) -> None:
        """Each plan's teacher log-probs [len(completion), vocab] per item: the cached ones of teacher
        samples, and the on-policy samples scored now by their teacher. [ours] One teacher call for the
        whole chunk instead of one per step: the teachers are frozen, so the numbers are the same, and
        a call over four steps' samples costs little more than one over a step's."""
        todo: dict[str, list[tuple[int, int]]] = {}
        for b, plan in enumerate(plans):
            plan["t_logp"] = [None if o else it.teacher_logp for it, o in zip(plan["batch"], plan["on"])]
            for i, (it, o) in enumerate(zip(plan["batch"], plan["on"])):
                if o:
                    todo.setdefault(it.teacher, []).append((b, i))
        for name, where in todo.items():
            logps = teacher_logprobs(
                self.teachers[name],
                [plans[b]["batch"][i] for b, i in where],
                [plans[b]["completions"][i] for b, i in where],
                self.pad,
                vocab=self.vocab,
            )
            for (b, i), lp in zip(where, logps):
                plans[b]["t_logp"][i] = lp

    # -- one step --
    def divergence_loss(self, plan: dict) -> tuple[torch.Tensor, int]:
        """The lambda-mixed GKD term on a batch: items marked on-policy use the student's own sample
        (scored by their teacher when the chunk was planned; no gradient flows through sampling), the
        others their cached teacher sample and teacher log-probs."""
        items, completions = plan["batch"], plan["completions"]
        if "t_logp" not in plan:
            self._score_samples([plan])
        t_logp = plan["t_logp"]
        s_logp = _completion_logp(self.student, [it.student_prompt for it in items], completions, self.pad, self.vocab)
        # Mean over each sequence's tokens, then over sequences: a three-token answer weighs as much as
        # a fifty-token rewrite (a token mean let long statements drown the answers).
        per_seq = torch.stack(
            [divergence(t, s, self.cfg.divergence, self.cfg.beta).mean() for t, s in zip(t_logp, s_logp)]
        )
        tokens = sum(len(it.student_prompt) + len(c) for it, c in zip(items, completions))
        return per_seq.mean(), tokens

    def lti_loss(self, lti: dict) -> tuple[torch.Tensor, float, int]:
        """Learning to Imitate on planned rollouts: each teacher sample was cut at a random point (a
        uniform fraction of its tokens in `prefix_range`; short samples such as answers at their
        start) and completed `lti_group` times by the student; reward each completion against the rest
        of the teacher's sample, normalise within the group, policy-gradient step."""
        g = self.cfg.lti_group
        comps = [c or [self.eos] for c in lti["comps"]]
        rollout_prompts = [p for p in lti["prefixes"] for _ in range(g)]
        rewards = torch.tensor(
            [
                lti_reward(
                    self.decode([t for t in c if t != self.eos]),
                    lti["refs"][k // g],
                    self.judge,
                    self.cfg.gamma,
                    self.cfg.z0_fraction,
                )
                for k, c in enumerate(comps)
            ]
        ).view(len(lti["prefixes"]), g)
        adv = group_advantages(rewards).view(-1)
        keep = [k for k in range(len(comps)) if adv[k] != 0]
        tokens = sum(len(rollout_prompts[k]) + len(comps[k]) for k in keep)
        if not keep:
            return torch.zeros(()), float(rewards.mean()), 0
        logps = _completion_logp(
            self.student, [rollout_prompts[k] for k in keep], [comps[k] for k in keep], self.pad, self.vocab
        )
        seq_logp = torch.stack(
            [lp.gather(-1, torch.tensor(comps[k], device=lp.device).unsqueeze(-1)).mean() for lp, k in zip(logps, keep)]
        )
        loss = -(adv[keep].to(seq_logp.device) * seq_logp).sum() / len(comps)
        return loss, float(rewards.mean()), tokens

    def step(self, plan: dict) -> dict:
        """One update. The two terms' gradients are combined by norm, not by raw loss value:

        [ours] g = alpha * g_div + (1 - alpha) * g_lti * |g_div| / |g_lti|. A divergence between two
        close distributions has small gradients while a policy-gradient term with unit-scale advantages
        has large, noisy ones; mixed by raw value (and then clipped) the RL term drowned the
        distillation signal on the tiny models. By norm, alpha is the share of the update direction
        each term gets, whatever their scales."""
        if not self.student.training:  # fit() leaves it in training mode between steps
            self.student.train()
        div, tokens = self.divergence_loss(plan)
        self.opt.zero_grad(set_to_none=True)
        div.backward()
        reward = float("nan")
        loss = div.detach()
        if self.cfg.lti and plan["lti"] and self.cfg.alpha < 1:
            g_div = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]
            self.opt.zero_grad(set_to_none=True)
            lti, reward, lti_tokens = self.lti_loss(plan["lti"])
            tokens += lti_tokens
            if lti.requires_grad:
                lti.backward()
            g_lti = [p.grad.detach() if p.grad is not None else torch.zeros_like(p) for p in self.params]
            n_div = torch.sqrt(sum((g * g).sum() for g in g_div))
            n_lti = torch.sqrt(sum((g * g).sum() for g in g_lti))
            scale = n_div / n_lti if n_lti > 0 else torch.tensor(0.0)
            a = self.cfg.alpha
            for p, gd, gl in zip(self.params, g_div, g_lti):
                p.grad = a * gd + (1 - a) * gl * scale
            loss = a * div.detach() + (1 - a) * lti.detach()
        penalty, anchor = self.anchor_term()
        if penalty is not None:
            penalty.backward()  # accumulates onto the mixed gradient
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        return {
            "loss": float(loss),
            "divergence": float(div.detach()),
            "lti_reward": reward,
            "anchor": anchor,
            "tokens": tokens,
        }

    def fit(
        self, items: list[Item], steps: int, token_budget: int | None = None, log: Log = noop, desc: str = "distill"
    ) -> DistillStats:
        """Run up to `steps` steps (or until `token_budget` student tokens), cycling through `items`."""
        if not items:
            raise ValueError("no distillation items")
        stats, t0 = DistillStats(), time.time()
        order: list[int] = []
        n_lti = max(1, self.cfg.batch_size // (2 * self.cfg.lti_group)) if self.cfg.lti else 0
        base_lr = self.cfg.lr

        def next_batch() -> tuple[list[Item], list[Item]]:
            nonlocal order
            if len(order) < self.cfg.batch_size:
                fresh = list(range(len(items)))
                self.rng.shuffle(fresh)
                order += fresh
            batch = [items[i] for i in order[: self.cfg.batch_size]]
            order = order[self.cfg.batch_size :]
            pool = [it for it in batch if it.teacher == "new"] or batch  # imitate the new knowledge
            return batch, self.rng.sample(pool, min(n_lti, len(pool))) if n_lti else []

        step = 0
        with progress(total=steps, desc=desc, unit="step") as bar:
            while step < steps and (token_budget is None or stats.tokens < token_budget):
                n = min(self.cfg.rollout_reuse, steps - step)
                if token_budget is not None and stats.history:  # no rollouts for steps the budget will not run
                    per_step = stats.tokens / len(stats.history)
                    n = max(1, min(n, math.ceil((token_budget - stats.tokens) / per_step)))
                chunk = [next_batch() for _ in range(n)]
                for plan in self.plan([b for b, _ in chunk], [lt for _, lt in chunk]):
                    if token_budget is not None and stats.tokens >= token_budget:
                        break
                    for g in self.opt.param_groups:  # cosine decay to 10%
                        g["lr"] = base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, steps))))
                    out = self.step(plan)
                    stats.steps += 1
                    stats.tokens += out["tokens"]
                    stats.history.append(out)
                    bar.update(1)
                    bar.set_postfix(loss=f"{out['loss']:.3f}")
                    log({f"distill/{k}": v for k, v in out.items() if v == v} | {"distill/step": step})
                    step += 1
        self.student.eval()
        last = stats.history[-10:]
        stats.loss = sum(h["loss"] for h in last) / len(last)
        stats.divergence = sum(h["divergence"] for h in last) / len(last)
        stats.anchor = sum(h["anchor"] for h in last) / len(last)
        rewards = [h["lti_reward"] for h in stats.history if h["lti_reward"] == h["lti_reward"]]
        stats.lti_reward = sum(rewards) / len(rewards) if rewards else float("nan")
        stats.wall_clock_s = time.time() - t0
        return stats
