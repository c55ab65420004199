"""Dreaming (METHOD.md section 4): the model writes its own curriculum about what it just learned, keeps
the dreams that teach, learns to write better ones, and rehearses them.

    dream(cfg, seeded, snapshot, workdir, log) -> Manifest     # the dreamed candidate checkpoint

1. Generation: from the seeded model *with* the wake context, dreams of three kinds: implications
   (restated or two-hop facts), question-answer pairs (answered with the context), rewrites. While
   sampling, each expert-bearing layer also switches on one random extra expert (``dream`` slot).
2. Selection by a gradient-based importance: [ours] the norm of the dream's SFT gradient w.r.t. the
   newest expert. Writing twice the pairs that are kept (24 a document), the norm keeps what the seeded
   student does not yet answer as the writer reading the document does, i.e. what Seeding left out
   (bench/README.md, stops 34-35). ``grad_cosine`` (the cosine to the gradient of the label-free measure
   tau, below: "does learning this dream move the model the way the context says it should?") and
   ``random`` are options; the cosine ranks true dreams over false ones no better than chance (AUC 0.49;
   `bench/dream_precision.py`) and, at 24 a document, keeps pairs that gain no multi-hop. Keep the
   top-k plus b random. Before it, every dream gets its confidence: the mean token log-probability
   tau's teacher gives it reading its document (`verify`); with ``dream.min_confidence`` set, only
   dreams at or above it are ranked.
3. Reward: each kept dream trains an isolated copy (a small LoRA delta, never a copy of the weights;
   all copies train at once in one batched pass, see `BatchedLoRA`); reward 1 if the copy's tau beats
   the model before. tau needs no labels: questions the model writes about the context, answered by
   the teacher *with* the context; tau is the copy's mean probability of those answers *without* it.
4. ReST-EM: SFT of the generator (the newest expert, in the dream-writing formats) on rewarded
   (context, dream) pairs, then dream again.
5. Consolidation: SFT of the newest expert on the kept dreams, easy to hard by the current loss (with a
   share of this cycle's Seeding replay arm when ``dream.replay_share`` > 0), under
   a KL-drift budget against the champion on a fixed reference set: exceeding it shrinks the step (or
   stops) and says so.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sleepcycle.anchor import ANCHOR_FILE, Anchor
from sleepcycle.config import Config, DreamConfig
from sleepcycle.distill import Item, _completion_logp, divergence, packable, packed_batch, teacher_logprobs
from sleepcycle.evaluate import kl_drift
from sleepcycle.experts import DREAM, ExpertBank, load_checkpoint, read_state, save_checkpoint
from sleepcycle.generate import Generator, HFGenerator, make_generator
from sleepcycle.manifests import Manifest
from sleepcycle.progress import progress
from sleepcycle.records import write_jsonl
from sleepcycle.routing import Router, self_confidence
from sleepcycle.seed import TRAINING_DATA, grounded_prefix, trained_texts, write_questions
from sleepcycle.snapshot import read_documents
from sleepcycle.trainer import Encoded, Example, Log, collate, encode, lm_loss, noop
from sleepcycle.world import DOC_PREFIX, QA_PROMPT, WRITE_IMPLICATION, WRITE_QUESTION, WRITE_REWRITE, split_qa

KIND_PROMPTS = {"implication": WRITE_IMPLICATION, "qa": WRITE_QUESTION, "rewrite": WRITE_REWRITE}


@dataclass
class Dream:
    doc: int
    kind: str
    prompt: str  # what the dream trains on without context (empty for statements)
    target: str
    importance: float = 0.0
    reward: float | None = None
    kept: bool = False
    round: int = 0
    confidence: float | None = None  # `verify`: how likely tau's teacher, reading the document, finds the dream

    @property
    def text(self) -> str:
        return self.prompt + self.target

    def example(self) -> Example:
        return Example(self.prompt, self.target)

    def generator_example(self, docs: Sequence[str]) -> Example:
        """The (context, dream) pair that ReST-EM trains the generator on."""
        written = (split_qa(self.prompt) or ("", ""))[0] if self.kind == "qa" else self.target.strip()
        return Example(DOC_PREFIX.format(d=docs[self.doc]) + KIND_PROMPTS[self.kind], " " + written)

    def teacher_example(self, docs: Sequence[str]) -> Example:
        """What `verify` scores: the dream's trained tokens (a pair's answer, a statement whole) after its
        document and its prompt (the pair's question, the statement's writing format)."""
        if self.kind == "qa":
            return Example(DOC_PREFIX.format(d=docs[self.doc]) + self.prompt, self.target)
        return self.generator_example(docs)


# ----- generation ----------------------------------------------------------------------------------


@torch.no_grad()
def arm_random_expert(bank: ExpertBank, newest: str, gen: torch.Generator, scale: float = 0.05) -> list[str]:
    """Fill the ``dream`` slot layer by layer with one random extra expert per layer.

    [ours] Sources are the other trained level-1 experts (older, unrelated knowledge). With none yet
    (the first cycles), a random low-rank expert whose update B @ A has `scale` times the Frobenius norm
    of the projection it perturbs. Returns the source chosen for each layer."""
    sources = [e for e in bank.active if e not in (newest, DREAM)]
    params = dict(bank.model.named_parameters())
    layers: dict[str, list[str]] = {}
    for name in params:
        if f".lora_A.{DREAM}." in name:
            layers.setdefault(name.split(".mlp.")[0], []).append(name)
    chosen = []
    for _layer, a_names in sorted(layers.items()):
        src = sources[int(torch.randint(len(sources), (1,), generator=gen))] if sources else None
        chosen.append(src or "random")
        for a_name in a_names:
            b_name = a_name.replace(".lora_A.", ".lora_B.")
            a, b = params[a_name], params[b_name]
            if src:
                a.copy_(params[a_name.replace(f".{DREAM}.", f".{src}.")])
                b.copy_(params[b_name.replace(f".{DREAM}.", f".{src}.")])
                continue
            module = bank.model.get_submodule(a_name.split(".lora_A.")[0])
            a.copy_(torch.randn(a.shape, generator=gen))
            b.copy_(torch.randn(b.shape, generator=gen))
            b.mul_(scale * module.base_layer.weight.norm() / (b @ a).norm().clamp(min=1e-8))
    return chosen


def generate_dreams(
    cfg: Config,
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    docs: Sequence[str],
    gen: torch.Generator,
    round_: int = 0,
    sampler: Generator | None = None,
) -> list[Dream]:
    dc = cfg.dream
    sampler = sampler or HFGenerator(tok.eos_token_id, tok.pad_token_id)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    dec = lambda ids: tok.decode([t for t in ids if t != tok.eos_token_id], skip_special_tokens=True).strip()  # noqa: E731
    jobs = [(i, dc.kinds[k % len(dc.kinds)]) for i in range(len(docs)) for k in range(dc.dreams_per_doc)]
    dreams: list[Dream] = []
    statements = [(i, kind) for i, kind in jobs if kind != "qa"]
    if statements:
        prompts = [enc(DOC_PREFIX.format(d=docs[i]) + KIND_PROMPTS[kind]) for i, kind in statements]
        outs = sampler.sample(model, prompts, 64, temperature=dc.temperature, generator=gen)
        for (i, kind), o in zip(statements, outs):
            text = dec(o)
            if dc.grounded:
                text = grounded_prefix(text.split("\n")[0], docs[i])
            if len(text.split()) >= 3 and "\n" not in text:
                dreams.append(Dream(i, kind, "", text, round=round_))
    n_qa = sum(kind == "qa" for _, kind in jobs)
    if n_qa:
        per_doc = max(1, math.ceil(n_qa / len(docs)))
        qc = cfg.distill
        questions = write_questions(
            model, tok, docs, per_doc, gen, sampler, ground=qc.grounded_questions, named=qc.named_questions
        )
        answers = sampler.sample(
            model, [enc(DOC_PREFIX.format(d=docs[i]) + QA_PROMPT.format(q=q)) for i, q in questions], 12
        )
        for (i, q), a in zip(questions, answers):
            if dec(a):
                dreams.append(Dream(i, "qa", QA_PROMPT.format(q=q), " " + dec(a), round=round_))
    return dreams


# ----- tau: label-free measure of what the context says ----------------------------------------------


@dataclass
class Tau:
    """Questions the model wrote about each document with the answers its teacher gave with the context."""

    rows: list[tuple[int, list[int], list[int]]]  # (doc, question prompt ids, answer ids incl. EOS)


def make_tau(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    docs: Sequence[str],
    questions: Sequence[tuple[int, str]],
    sampler: Generator | None = None,
) -> Tau:
    """tau's rows: each (document index, question) answered greedily by `model` with the document in its prompt."""
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    sampler = sampler or HFGenerator(tok.eos_token_id, tok.pad_token_id)
    prompts = [enc(DOC_PREFIX.format(d=docs[i]) + QA_PROMPT.format(q=q)) for i, q in questions]
    answers = sampler.sample(model, prompts, 12)
    rows = [(i, enc(QA_PROMPT.format(q=q)), a) for (i, q), a in zip(questions, answers) if len(a) > 1]
    return Tau(rows)


def _answer_logprob(model: PreTrainedModel, rows: list[tuple[list[int], list[int]]], pad_id: int) -> torch.Tensor:
    """Mean log-probability per answer token for each (prompt, answer) row, as one tensor."""
    return _mean_logprob(model, collate([(p + a, [False] * len(p) + [True] * len(a)) for p, a in rows], pad_id))


def _mean_logprob(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean log-probability per labelled token of each row of a `collate`d batch."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    logp = -F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    valid = (labels != -100).float()
    return (logp * valid).sum(1) / valid.sum(1).clamp(min=1)


VERIFY_BATCH = 32
"""Dreams that one forward pass of `verify` scores."""


@torch.no_grad()
def verify(model: PreTrainedModel, tok: PreTrainedTokenizerBase, docs: Sequence[str], dreams: list[Dream]) -> None:
    """Set each dream's `confidence` (in place): the mean log-probability per token that `model`, reading the
    dream's document, gives what the dream trains (`Dream.teacher_example`, end of text included).

    [ours] `model` is tau's teacher, the seeded model: what it finds unlikely with the document in front of
    it is what the writer made up. Dreaming keeps only dreams at or above ``dream.min_confidence`` when that
    is set. On the 5-day bench (defaults, seeds 0-2) 27% of the dreams are true, their facts checked against
    the world (implications 32%, rewrites 3%, question-answer pairs 56%; `bench/dream_precision.py`).
    Neither the importance nor the reward tells the true ones apart (AUC 0.49 and 0.49); this confidence
    does (AUC 0.88).
    """
    enc = encode(tok, [d.teacher_example(docs) for d in dreams], model.config.max_position_embeddings)
    for start in range(0, len(enc), VERIFY_BATCH):
        scores = _mean_logprob(model, collate(enc[start : start + VERIFY_BATCH], tok.pad_token_id))
        for d, v in zip(dreams[start : start + VERIFY_BATCH], scores.tolist()):
            d.confidence = float(v)


# ----- isolated copies, all at once ---------------------------------------------------------------


class BatchedLoRA:
    """N independent low-rank deltas on the MLP projections of a frozen model, one per batch row group.

    Row r of a batch uses delta `index[r]`; a loss summed over rows gives every delta its own gradient,
    so N isolated copies train in one forward/backward (index -1 means no delta: the model before)."""

    def __init__(self, model: PreTrainedModel, n: int, rank: int, targets: Sequence[str], seed: int = 0):
        self.model, self.index = model, torch.zeros(0, dtype=torch.long)
        g = torch.Generator().manual_seed(seed)
        self.A, self.B, self.hooks = {}, {}, []
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in targets:
                a = torch.randn((n + 1, rank, mod.in_features), generator=g) / math.sqrt(mod.in_features)
                a[n] = 0
                self.A[name] = a.requires_grad_(True)
                self.B[name] = torch.zeros((n + 1, mod.out_features, rank), requires_grad=True)
                self.hooks.append(mod.register_forward_hook(self._hook(name)))

    def _hook(self, name: str):
        def add_delta(_mod, inputs, output):
            idx = self.index
            a, b = self.A[name][idx], self.B[name][idx]  # index -1 -> the zero delta (row n)
            return output + torch.einsum("ntr,nor->nto", torch.einsum("nti,nri->ntr", inputs[0], a), b)

        return add_delta

    def parameters(self) -> list[torch.Tensor]:
        return list(self.A.values()) + list(self.B.values())

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def score_dreams(
    cfg: Config, model: PreTrainedModel, tok: PreTrainedTokenizerBase, dreams: list[Dream], tau: Tau, seed: int
) -> tuple[int, int]:
    """Reward each dream (in place): 1 if its isolated copy raises tau on its document, else 0.
    Returns (dreams scored, training tokens spent on the copies)."""
    dc = cfg.dream
    if not dreams or not tau.rows:
        for d in dreams:
            d.reward = 0.0
        return 0, 0
    for p in model.parameters():
        p.requires_grad = False
    lora = BatchedLoRA(model, len(dreams), dc.lora_rank, ["gate_proj", "up_proj", "down_proj", "c_fc", "c_proj"], seed)
    opt = torch.optim.Adam(lora.parameters(), lr=dc.inner_lr)
    enc = encode(tok, [d.example() for d in dreams], model.config.max_position_embeddings)
    batch = collate(enc, tok.pad_token_id)
    tokens = 0
    lora.index = torch.arange(len(dreams))
    for _ in range(dc.inner_steps):
        loss = lm_loss(model, batch, reduction="none").sum()  # each row trains only its own delta
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tokens += int(batch["attention_mask"].sum())
    by_doc: dict[int, list[tuple[list[int], list[int]]]] = {}
    for doc, q, a in tau.rows:
        by_doc.setdefault(doc, []).append((q, a))
    with torch.no_grad():
        rows, owners = [], []
        for k, d in enumerate(dreams):
            for qa in by_doc.get(d.doc, []):
                rows.append(qa)
                owners.append(k)
        before_rows = [qa for doc in sorted(by_doc) for qa in by_doc[doc]]
        before_owner = [doc for doc in sorted(by_doc) for _ in by_doc[doc]]
        lora.index = torch.tensor(owners, dtype=torch.long) if rows else lora.index
        after = _answer_logprob(model, rows, tok.pad_token_id).exp() if rows else torch.zeros(0)
        lora.index = torch.full((len(before_rows),), len(dreams), dtype=torch.long)
        before = _answer_logprob(model, before_rows, tok.pad_token_id).exp()
    lora.remove()
    tau_before: dict[int, float] = {}
    for doc in sorted(by_doc):
        vals = [float(v) for v, o in zip(before, before_owner) if o == doc]
        tau_before[doc] = sum(vals) / len(vals)
    for k, d in enumerate(dreams):
        vals = [float(v) for v, o in zip(after, owners) if o == k]
        d.reward = float(bool(vals) and sum(vals) / len(vals) > tau_before.get(d.doc, 1.0) + 1e-3)
    return len(dreams), tokens


# ----- importance ------------------------------------------------------------------------------------

IMPORTANCE_BATCH = 32
"""Dreams whose gradients one forward and backward pass computes (`example_grads`)."""


def _flat_grad(model, params, batch) -> torch.Tensor:
    loss = lm_loss(model, batch)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)])


def example_grads(model: PreTrainedModel, params: Sequence[torch.Tensor], batch: dict) -> torch.Tensor | None:
    """Each row's own loss gradient w.r.t. `params`, flattened in their order: [rows, sum of sizes]; row i
    equals `_flat_grad` of row i alone, up to float rounding. One forward and backward for the batch.

    Every parameter must be the weight of a bias-free `nn.Linear` called once per forward (a LoRA expert's
    A and B): a Linear's weight gradient is a sum over positions of output-gradient x input, and with
    each row's loss its own mean, row i's output gradients are those of its own loss. None otherwise
    (call `_flat_grad` per row instead)."""
    owner = {id(m.weight): m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.bias is None}
    mods = [owner.get(id(p)) for p in params]
    if not params or any(m is None for m in mods):
        return None
    seen: dict[torch.nn.Module, list] = {m: [] for m in mods}

    def keep(m, args, out):
        x = args[0].detach()
        out.register_hook(lambda g: seen[m].append((x, g.detach())))

    handles = [m.register_forward_hook(keep) for m in seen]
    try:
        losses = lm_loss(model, batch, reduction="none")
        torch.autograd.grad(losses.sum(), list(params))
    finally:
        for h in handles:
            h.remove()
    if any(len(v) != 1 for v in seen.values()):  # a module called twice (or never): not a sum we can split
        return None
    rows = []
    for m in mods:
        x, g = seen[m][0]
        rows.append(torch.einsum("bto,bti->boi", g.flatten(1, -2), x.flatten(1, -2)).flatten(1))
    return torch.cat(rows, 1)


def importance(
    cfg: Config,
    bank: ExpertBank,
    newest: str,
    tok: PreTrainedTokenizerBase,
    dreams: list[Dream],
    tau: Tau,
    rng: random.Random,
) -> None:
    """Set each dream's importance (see the module docstring for the scalar and why)."""
    kind = cfg.dream.importance
    if kind == "random":
        for d in dreams:
            d.importance = rng.random()
        return
    params = bank.parameters(newest)
    for p in params:
        p.requires_grad = True
    max_len = bank.model.config.max_position_embeddings
    target = None
    if kind == "grad_cosine" and tau.rows:
        enc = [(q + a, [False] * len(q) + [True] * len(a)) for _, q, a in tau.rows]
        target = _flat_grad(bank.model, params, collate(enc, tok.pad_token_id))
    enc = encode(tok, [d.example() for d in dreams], max_len)
    for start in range(0, len(dreams), IMPORTANCE_BATCH):
        chunk = enc[start : start + IMPORTANCE_BATCH]
        grads = example_grads(bank.model, params, collate(chunk, tok.pad_token_id))
        if grads is None:  # parameters a batched pass cannot split by row: one backward per dream
            grads = torch.stack([_flat_grad(bank.model, params, collate([e], tok.pad_token_id)) for e in chunk])
        scores = F.cosine_similarity(grads, target[None], dim=1) if target is not None else grads.norm(dim=1)
        for d, s in zip(dreams[start : start + IMPORTANCE_BATCH], scores.tolist()):
            d.importance = float(s)


def select(dreams: list[Dream], top: int, extra: int, rng: random.Random) -> list[Dream]:
    """Top-k by importance plus b at random from the rest."""
    ranked = sorted(dreams, key=lambda d: d.importance, reverse=True)
    kept = ranked[:top]
    rest = ranked[top:]
    kept += rng.sample(rest, min(extra, len(rest)))
    for d in kept:
        d.kept = True
    return kept


def restem_examples(dreams: Sequence[Dream], docs: Sequence[str]) -> list[Example]:
    """ReST-EM's M-step data: the (context, dream) pairs whose dream earned reward 1, nothing else."""
    return [d.generator_example(docs) for d in dreams if d.reward == 1.0]


# ----- budgets -----------------------------------------------------------------------------------------


def diversity(texts: Sequence[str]) -> dict[str, float]:
    """distinct-1/2 (unique n-grams over all n-grams) and the mean pairwise Jaccard distance of word sets."""
    out: dict[str, float] = {}
    for n in (1, 2):
        grams = [tuple(t.split()[i : i + n]) for t in texts for i in range(max(0, len(t.split()) - n + 1))]
        out[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    sets = [set(t.lower().split()) for t in texts]
    pairs = [(a, b) for i, a in enumerate(sets) for b in sets[i + 1 :]][:2000]
    out["spread"] = sum(1 - len(a & b) / max(1, len(a | b)) for a, b in pairs) / len(pairs) if pairs else 0.0
    return out


def champion_reference(
    bank: ExpertBank,
    newest: str,
    tok: PreTrainedTokenizerBase,
    n: int,
    seed: int,
    sampler: Generator | None = None,
) -> list[Example]:
    """[ours] A fixed, label-free reference set: the champion's own samples from an empty prompt."""
    others = [e for e in bank.active if e != newest]
    gen = torch.Generator().manual_seed(seed)
    sampler = sampler or HFGenerator(tok.eos_token_id, tok.pad_token_id)
    with bank.using(others) as champ:
        outs = sampler.sample(champ, [[tok.eos_token_id]] * n, 48, 1.0, gen)
    return [Example("", tok.decode(o, skip_special_tokens=True)) for o in outs if len(o) > 4]


# ----- the stage -----------------------------------------------------------------------------------------


def consolidation_order(
    cfg: Config, bank: ExpertBank, tok: PreTrainedTokenizerBase, dreams: list[Dream], rng: random.Random
) -> list[Dream]:
    """The kept dreams in training order: easy -> hard by the model's current loss (``dream.curriculum``),
    else shuffled."""
    order = list(dreams)
    if cfg.dream.curriculum and order:
        with torch.no_grad():
            enc = encode(tok, [d.example() for d in order], bank.model.config.max_position_embeddings)
            losses = lm_loss(bank.model, collate(enc, tok.pad_token_id), reduction="none")
        order = [d for _, d in sorted(zip(losses.tolist(), order), key=lambda x: x[0])]
    else:
        rng.shuffle(order)
    return order


def seeding_replay(seeded: Manifest) -> list[Example]:
    """The replay arm of this cycle's Seeding, from the seeded checkpoint's training data: the champion's
    closed-book answers to questions about the bounded buffer's records (and its continuations of their
    openings). Nothing beyond what Seeding already drew from the buffer."""
    path = Path(seeded.uri) / TRAINING_DATA
    if not path.exists():
        return []
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    out = []
    for r in rows:
        if r.get("teacher") != "champion":
            continue
        qa = split_qa(r["text"]) if r.get("kind") == "qa" else None
        out.append(Example(QA_PROMPT.format(q=qa[0]), qa[1]) if qa else Example("", r["text"]))
    return out


def with_replay(examples: list[Example], replay: Sequence[Example], share: float, rng: random.Random) -> list[Example]:
    """`examples` in their order with replay examples spread evenly between them, `share` of the whole
    (as many as `replay` holds), so that every consolidation batch carries about that share."""
    if share <= 0 or not replay or not examples:
        return list(examples)
    m = min(len(replay), round(len(examples) * share / (1 - share)))
    picked = rng.sample(list(replay), m)
    keyed = [((i + 0.5) / len(examples), 0, x) for i, x in enumerate(examples)]
    keyed += [((j + 0.5) / m, 1, x) for j, x in enumerate(picked)]
    return [x for _, _, x in sorted(keyed, key=lambda k: (k[0], k[1]))]


def consolidation_examples(
    cfg: Config,
    seeded: Manifest,
    bank: ExpertBank,
    tok: PreTrainedTokenizerBase,
    dreams: list[Dream],
    rng: random.Random,
) -> list[Example]:
    """What consolidation trains on, in order: the kept dreams (`consolidation_order`) with the Seeding
    replay arm spread between them at ``dream.replay_share``."""
    order = consolidation_order(cfg, bank, tok, dreams, rng)
    replay = seeding_replay(seeded) if cfg.dream.replay_share > 0 else []
    return with_replay([d.example() for d in order], replay, cfg.dream.replay_share, rng)


OPENING_WORDS = 2
"""Words of a statement dream that distilled consolidation gives its student as the prompt, as Seeding
does with its rewrite openings (`seed.write_openings`): what follows the name is what is learnt."""


@dataclass(frozen=True)
class Lesson:
    """One sequence of distilled consolidation: the student reads `student`, the teacher `teacher` (the
    same text with the dream's document and writing prompt in front, or `student` itself for a replayed
    record), and both score `target`, the dream's own continuation."""

    student: str
    teacher: str
    target: str
    by: Literal["context", "champion"]


def lesson(d: Dream, docs: Sequence[str]) -> Lesson:
    """A kept dream as distilled consolidation trains it (a question's answer, a statement past its opening)."""
    context = DOC_PREFIX.format(d=docs[d.doc])
    if d.kind == "qa":
        return Lesson(d.prompt, context + d.prompt, d.target, "context")
    words = d.target.split()
    opening = " ".join(words[:OPENING_WORDS])
    return Lesson(
        opening, context + KIND_PROMPTS[d.kind] + " " + opening, " " + " ".join(words[OPENING_WORDS:]), "context"
    )


def consolidation_lessons(
    cfg: Config,
    seeded: Manifest,
    bank: ExpertBank,
    tok: PreTrainedTokenizerBase,
    dreams: list[Dream],
    docs: Sequence[str],
    rng: random.Random,
) -> list[Lesson]:
    """`consolidation_examples` for ``dream.consolidation=distill``: the same dreams in the same order, each
    a `lesson`; a replayed record keeps its champion teacher without context."""
    order = consolidation_order(cfg, bank, tok, dreams, rng)
    replay = seeding_replay(seeded) if cfg.dream.replay_share > 0 else []
    replayed = [Lesson(x.prompt, x.prompt, x.target, "champion") for x in replay]
    return with_replay([lesson(d, docs) for d in order], replayed, cfg.dream.replay_share, rng)


class DistilledLoss:
    """[ours] Consolidation as distillation (``dream.consolidation=distill``): the newest expert, without
    context, matches the teacher's full next-token distribution over each dream's continuation, the teacher
    reading the dream's document (Seeding's context teacher, ``distill.teacher``), with
    ``distill.divergence``. The dream chooses *what* is rehearsed, the teacher says what the document makes
    of it: a garbled name or a wrong value in a dream is not learnt as written, and everywhere the document
    says nothing the target is the teacher's own distribution, so the expert does not drift where SFT on
    sampled tokens does (on the 5-day bench SFT without the drift budget moved KL from the champion by
    +0.75 nats; with it, the budget reverted most of every consolidation run)."""

    def __init__(
        self, cfg: Config, bank: ExpertBank, tok: PreTrainedTokenizerBase, lessons: Sequence[Lesson], champion
    ):
        enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        self.cfg, self.model, self.pad = cfg, bank.model, tok.pad_token_id
        self.student = [enc(x.student) or [tok.eos_token_id] for x in lessons]
        self.targets = [enc(x.target) + [tok.eos_token_id] for x in lessons]
        reader = bank.unloaded() if cfg.distill.teacher == "base" else champion
        self.teacher_logp: list[torch.Tensor] = [torch.empty(0)] * len(lessons)
        for by, teacher in (("context", reader), ("champion", champion)):
            idx = [i for i, x in enumerate(lessons) if x.by == by]
            if not idx:
                continue
            items = [
                Item(self.student[i], enc(lessons[i].teacher) if by == "context" else self.student[i], by) for i in idx
            ]
            for i, lp in zip(idx, teacher_logprobs(teacher, items, [self.targets[i] for i in idx], self.pad)):
                self.teacher_logp[i] = lp

    def __len__(self) -> int:
        return len(self.targets)

    def tokens(self, idx: Sequence[int]) -> int:
        return sum(len(self.student[i]) + len(self.targets[i]) for i in idx)

    def __call__(self, idx: Sequence[int]) -> torch.Tensor:
        dc = self.cfg.distill
        s_logp = _completion_logp(self.model, [self.student[i] for i in idx], [self.targets[i] for i in idx], self.pad)
        per_seq = [divergence(self.teacher_logp[i], s, dc.divergence, dc.beta).mean() for i, s in zip(idx, s_logp)]
        return torch.stack(per_seq).mean()


def frozen_champion(bank: ExpertBank, newest: str) -> PreTrainedModel:
    """A frozen copy of the model without its newest expert: what the KL-drift budget compares against."""
    with torch.no_grad(), bank.using([e for e in bank.active if e != newest]) as champ:
        return _frozen_copy(champ)


def anchor_penalty(cfg: Config, anchor: Anchor | None, model: PreTrainedModel, slot: str):
    """The earlier cycles' anchor on consolidating expert `slot` (weight `distill.anchor`), or None when there
    is none or its weight is 0. Single-process and data-parallel consolidation both take it from here."""
    if not anchor or cfg.distill.anchor <= 0:
        return None
    return anchor.penalty(model, slot, per_cycle=cfg.distill.anchor_per_cycle)


def consolidation_inputs(cfg: Config, seeded: Manifest, d: Dreaming) -> list[Example] | list[Lesson]:
    """What consolidation trains on for ``dream.consolidation``: `consolidation_lessons` (distill) or
    `consolidation_examples` (sft). In-process and data-parallel consolidation both take them from here."""
    if cfg.dream.consolidation == "distill":
        return consolidation_lessons(cfg, seeded, d.bank, d.tok, d.kept, d.docs, d.rng)
    return consolidation_examples(cfg, seeded, d.bank, d.tok, d.kept, d.rng)


def objective(
    cfg: Config,
    bank: ExpertBank,
    tok: PreTrainedTokenizerBase,
    examples: list[Example] | list[Lesson],
    champion: PreTrainedModel | None,
) -> tuple[int, Callable[[Sequence[int]], torch.Tensor], Callable[[Sequence[int]], int]]:
    """(how many sequences, the loss of a batch of their indices, the tokens that batch costs): SFT on
    examples, or `DistilledLoss` on lessons (`champion` teaches replayed lessons, and reads the documents
    when ``distill.teacher`` is not the base)."""
    if examples and isinstance(examples[0], Lesson):
        distilled = DistilledLoss(cfg, bank, tok, examples, champion)  # type: ignore[arg-type]
        return len(distilled), distilled, distilled.tokens
    enc = encode(tok, examples, bank.model.config.max_position_embeddings)  # type: ignore[arg-type]
    return (
        len(enc),
        lambda idx: sft_loss(bank.model, [enc[i] for i in idx], tok.pad_token_id),
        lambda idx: sum(len(enc[i][0]) for i in idx),
    )


def consolidate(
    cfg: Config,
    bank: ExpertBank,
    newest: str,
    tok: PreTrainedTokenizerBase,
    examples: list[Example] | list[Lesson],
    reference: list[Example],
    log: Log,
    token_budget: int | None = None,
    anchor: Anchor | None = None,
) -> dict:
    """The newest expert learns `examples` under the KL-drift budget (see module doc), plus the activation
    anchor of the cycles before this one (`Anchor.earlier`) with weight `distill.anchor`: SFT on
    `consolidation_examples`, or distillation (`DistilledLoss`) on `consolidation_lessons`."""
    dc = cfg.dream
    if not examples:
        return {"tokens": 0, "kl_drift": 0.0, "drift_history": [], "drift_note": "no dreams kept"}
    params = bank.parameters(newest)
    for p in params:
        p.requires_grad = True
    opt = torch.optim.AdamW(params, lr=dc.lr, weight_decay=0.0)
    tokens, bs = 0, cfg.distill.batch_size
    champion = frozen_champion(bank, newest)
    penalty = anchor_penalty(cfg, anchor, bank.model, newest)
    size, loss_of, tokens_of = objective(cfg, bank, tok, examples, champion)

    def measure() -> float:
        return kl_drift(bank.model, champion, tok, reference) if reference else 0.0

    guard = DriftGuard(dc, params, opt.param_groups, measure, log)

    with progress(total=dc.steps, desc="dream consolidation", unit="step") as bar:
        for step in range(dc.steps):
            if token_budget is not None and tokens >= token_budget:
                break
            start = (step * bs) % size
            chunk = [(start + k) % size for k in range(min(bs, size))]
            bank.model.train()
            loss = loss_of(chunk)
            if penalty:
                loss = loss + cfg.distill.anchor * penalty()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            bank.model.eval()
            tokens += tokens_of(chunk)
            bar.update(1)
            spent = token_budget is not None and tokens >= token_budget
            if guard.check(step, float(loss.detach()), last=spent) == "stop" or spent:
                break
    return guard.result(tokens)


def sft_loss(model: PreTrainedModel, chunk: Sequence[Encoded], pad_id: int) -> torch.Tensor:
    """`lm_loss` of the padded batch of `chunk`, computed with the sequences packed into rows where the
    model allows it (`distill.pack`: positions restart, attention stays inside each sequence): the same
    loss up to float rounding, without the padding. Kept dreams run from a few tokens to the context's
    length, and the curriculum orders them by loss, not length."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if len(chunk) < 2 or not packable(inner):
        return lm_loss(model, collate(chunk, pad_id))
    ids, pos, mask, where = packed_batch([s for s, _ in chunk], pad_id)
    labels = torch.full_like(ids, -100)
    for (r, at), (s, trained) in zip(where, chunk):
        row = torch.tensor(s).masked_fill(~torch.tensor(trained), -100)
        row[0] = -100  # predicted from the end of the sequence before it in the row: in a row of its own, never
        labels[r, at : at + len(s)] = row
    dev = next(model.parameters()).device
    batch = {"input_ids": ids.to(dev), "attention_mask": mask.to(dev), "labels": labels.to(dev)}
    return lm_loss(model, batch, position_ids=pos.to(dev))


class DriftGuard:
    """The KL-drift budget of a consolidation run, shared by in-process and data-parallel consolidation.

    `check(step, loss)` after every optimizer step measures the drift every `dc.steps // 6` steps and on the
    last one (the last of `dc.steps`, or the step that spends the token budget). Within the budget the
    parameters are kept as the last good copy ("ok"); over it they go back to that copy and the run either
    halves its lr ("shrink", while lr > dc.lr / 8) or stops ("stop").

    The budget is the drift Dreaming *adds*: KL(champion || model) may grow by `drift_budget` over the
    seeded model's own drift, measured once here. Knowledge Seeding already moved the model from the
    champion (0.06-0.31 nats on the 5-day bench), so an absolute budget below that reverted every step of
    every consolidation run and Dreaming trained nothing."""

    def __init__(self, dc: DreamConfig, params, param_groups, measure: Callable[[], float], log: Log):
        self.dc, self.params, self.groups, self.measure, self.log = dc, params, param_groups, measure, log
        self.lr, self.drift, self.history, self.note = dc.lr, 0.0, [], ""
        self.good = [p.detach().clone() for p in params]
        self.every = max(1, dc.steps // 6)
        self.start = measure()
        self.limit = self.start + dc.drift_budget

    def check(self, step: int, loss: float, last: bool = False) -> str:
        """`last`: the run ends after this step (its token budget is spent), so it is measured whatever
        the schedule; otherwise the steps since the last check would stand unmeasured."""
        dc = self.dc
        if not last and (step + 1) % self.every and step != dc.steps - 1:
            return "ok"
        drift = self.drift = self.measure()
        self.history.append({"step": step + 1, "kl_drift": drift, "lr": self.lr, "loss": loss})
        self.log({"dream/kl_drift": drift, "dream/sft_loss": loss, "dream/step": step + 1})
        if drift <= self.limit:
            self.good = [p.detach().clone() for p in self.params]
            return "ok"
        with torch.no_grad():
            for p, g in zip(self.params, self.good):
                p.copy_(g)
        if dc.on_drift == "shrink" and self.lr > dc.lr / 8:
            self.lr /= 2
            for group in self.groups:
                group["lr"] = self.lr
            self.log({"dream/drift_event": 1.0})
            self.note = f"KL drift {drift:.4f} > budget {self.limit:.4f}: reverted and halved lr to {self.lr:g}"
            return "shrink"
        self.note = f"KL drift {drift:.4f} > budget {self.limit:.4f}: stopped at step {step + 1}"
        return "stop"

    def result(self, tokens: int) -> dict:
        """The run's drift summary (after a revert, the drift of the reverted parameters)."""
        drift = self.measure() if self.note else self.drift
        return {
            "tokens": tokens,
            "kl_drift": drift,
            "seeded_kl_drift": self.start,
            "drift_history": self.history,
            "drift_note": self.note,
        }


def _frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    import copy

    m = copy.deepcopy(model)
    m.eval()
    return m


def grew_this_cycle(seeded: Manifest) -> bool:
    """Whether `seeded` is the checkpoint of the cycle that grew the model (``grow_depth``, ``grow_width``,
    ``given``): all of the larger self trained and it has no expert yet, so there is nothing to dream into.
    Dreaming resumes in the next cycle, on the expert that cycle adds."""
    state = read_state(Path(seeded.uri))
    last = (state.get("history") or [{}])[-1]
    return bool(state.get("grown")) and last.get("expert") is None and not state.get("active")


@dataclass
class Dreaming:
    """A Dreaming run up to consolidation (steps 1-4 of the module docstring): the bank with its newest
    expert, the dreams written and kept, the reference set of the drift budget. `dream` consolidates it in
    this process; `sleepcycle.distributed.dream_distributed` does so data-parallel."""

    docs: list[str]
    bank: ExpertBank
    tok: PreTrainedTokenizerBase
    state: dict
    newest: str
    rng: random.Random
    ref: list[Example]
    all_dreams: list[Dream] = field(default_factory=list)
    kept: list[Dream] = field(default_factory=list)
    rounds: list[dict] = field(default_factory=list)
    gen_tokens: int = 0
    scoring_tokens: int = 0
    scored: int = 0
    scoring_s: float = 0.0


def dream_writers(
    cfg: Config, bank: ExpertBank, state: dict, newest: str, docs: Sequence[str], writers: list[str]
) -> list[tuple[list[str], list[int]]]:
    """Which experts write each document's dreams, as (experts, document indices) groups.

    ``dream.writer=routed`` [ours]: the newest expert on top of the route that the model's router
    (`routing.Router`, without the newest expert) gives the document, so that an implication about someone
    the document names, say the new person's mentor, is written from the expert that learnt that person
    (the base for a day-0 person, the expert of the day that introduced or updated them) and not from the
    base alone, which never met them. Seeding's teacher reads the document with the base; combining it
    with what the model learnt since is Dreaming's. Otherwise every document gets `writers`."""
    if cfg.dream.writer != "routed":
        return [(writers, list(range(len(docs))))]
    full = Router.from_state(state, cfg.distill.routing_keys)
    # what the model knew before this cycle: the newest expert keyed by nothing, so that a route is always
    # a prefix of older experts, and None (no key named) means the base alone
    older = Router(tuple((e, frozenset() if e == newest else k) for e, k in full.experts), full.base)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, doc in enumerate(docs):
        groups.setdefault(tuple(older.route(doc) or ()), []).append(i)
    return [([e for e in bank.active if e in route or e == newest], idx) for route, idx in groups.items()]


def load(seeded: Manifest, run_seed: int) -> tuple[ExpertBank, PreTrainedTokenizerBase, dict, str]:
    """The seeded checkpoint as a bank whose newest expert trains: (bank, tokenizer, state, newest)."""
    torch.manual_seed(run_seed)  # before loading: slot initialisation draws from the global generator
    bank, tok, state = load_checkpoint(Path(seeded.uri))
    newest = (state.get("history") or [{}])[-1].get("expert") or (bank.active[-1] if bank.active else None)
    if newest is None:
        raise ValueError(f"{seeded.uri}: no expert to dream into (seed the snapshot first)")
    bank.trainable = newest
    return bank, tok, state, newest


def prepare(
    cfg: Config,
    seeded: Manifest,
    snapshot: Manifest,
    log: Log = noop,
    run_seed: int = 0,
    reference: Sequence[str] = (),
) -> Dreaming:
    """Steps 1-4: write dreams, keep the important ones, reward them, ReST-EM; everything but consolidation."""
    dc = cfg.dream
    docs = read_documents(snapshot)
    bank, tok, state, newest = load(seeded, run_seed)
    rng = random.Random(run_seed)
    gen = torch.Generator().manual_seed(run_seed)
    torch.manual_seed(run_seed)
    sampler = make_generator(cfg.generation, tok.eos_token_id, tok.pad_token_id, vocab=len(tok))
    ref = [Example("", t) for t in reference] or champion_reference(bank, newest, tok, 32, run_seed, sampler)
    d = Dreaming(docs, bank, tok, state, newest, rng, ref)
    for round_ in range(dc.restem_rounds + 1):
        sources = []
        if dc.random_expert:
            sources = arm_random_expert(bank, newest, gen, dc.random_expert_scale)
        writers = [newest] if dc.writer in ("base", "routed") else bank.active
        dreams = []
        for experts, idx in dream_writers(cfg, bank, state, newest, docs, writers):
            with bank.using(experts + ([DREAM] if dc.random_expert else [])) as writer:
                part = generate_dreams(cfg, writer, tok, [docs[i] for i in idx], gen, round_, sampler)
            dreams += [replace(x, doc=idx[x.doc]) for x in part]
        with torch.no_grad(), bank.using(writers) as writer:
            questions = write_questions(
                writer,
                tok,
                docs,
                2,
                gen,
                sampler,
                ground=cfg.distill.grounded_questions,
                named=cfg.distill.named_questions,
            )
        with torch.no_grad():
            tau = make_tau(bank.model, tok, docs, questions, sampler)
        verify(bank.model, tok, docs, dreams)
        pool = [x for x in dreams if dc.min_confidence is None or x.confidence >= dc.min_confidence]
        importance(cfg, bank, newest, tok, pool, tau, rng)
        kept = select(pool, dc.keep_top, dc.keep_random, rng)
        ts = time.time()
        n, toks = score_dreams(cfg, _frozen_copy(bank.merged()), tok, kept, tau, run_seed + round_)
        d.scoring_s += time.time() - ts
        d.scored += n
        d.scoring_tokens += toks
        rewarded = [x for x in kept if x.reward]
        d.rounds.append(
            {
                "round": round_,
                "dreams": len(dreams),
                "verified": len(pool),
                "kept": len(kept),
                "rewarded": len(rewarded),
                "random_expert_sources": sources,
                **diversity([x.text for x in dreams]),
            }
        )
        log(
            {
                "dream/round": round_,
                "dream/generated": len(dreams),
                "dream/verified": len(pool),
                "dream/rewarded": len(rewarded),
                **{f"dream/{k}": v for k, v in diversity([x.text for x in dreams]).items()},
            }
        )
        d.all_dreams += dreams
        if round_ < dc.restem_rounds and rewarded:  # ReST-EM M-step: SFT the generator on rewarded pairs
            gen_examples = [x.generator_example(docs) for x in rewarded]
            from sleepcycle.trainer import train

            out = train(
                bank.model,
                tok,
                gen_examples,
                steps=max(1, len(gen_examples) // 4),
                batch_size=4,
                lr=dc.lr,
                seed=run_seed + round_,
                params=bank.parameters(newest),
                desc="ReST-EM",
            )
            d.gen_tokens += out["tokens"]
        d.kept = kept
    return d


def write_candidate(
    d: Dreaming,
    result: dict,
    seeded: Manifest,
    snapshot: Manifest,
    workdir: Path,
    t0: float,
    log: Log = noop,
    meta: dict | None = None,
) -> Manifest:
    """Write the dreamed checkpoint (atomically) with its dreams and drift history; return its manifest."""
    bank, tok, state = d.bank, d.tok, d.state
    bank.freeze()
    if state.get("history") and state["history"][-1].get("confidence") is not None:
        # the newest expert changed: how sure its route now is of what it learnt (`routing.Router.reference`)
        with torch.no_grad():
            sure = self_confidence(bank.model.eval(), tok, trained_texts(Path(seeded.uri)))
        state["history"] = [*state["history"][:-1], {**state["history"][-1], "confidence": sure}]
    out = Path(workdir)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    base_dir = Path(seeded.uri) / "base"
    save_checkpoint(
        bank,
        tok,
        tmp,
        {k: v for k, v in state.items() if k not in ("active", "capacity", "rank")},
        base_dir=base_dir if base_dir.is_dir() else None,
    )
    if (Path(seeded.uri) / ANCHOR_FILE).exists():  # the anchor's moments pass on to the next cycle
        shutil.copy2(Path(seeded.uri) / ANCHOR_FILE, tmp / ANCHOR_FILE)
    write_jsonl(
        tmp / "dreams.jsonl",
        [
            {
                "text": x.text,
                "kind": x.kind,
                "importance": x.importance,
                "reward": x.reward,
                "confidence": x.confidence,
                "kept": x.kept,
                "round": x.round,
                "doc": x.doc,
            }
            for x in d.all_dreams
        ],
    )
    kept_rewards = [x.reward for x in d.kept if x.reward is not None]
    sure = [x.confidence for x in d.kept if x.confidence is not None]
    metrics = {
        "dream/generated": len(d.all_dreams),
        "dream/kept": len(d.kept),
        "dream/reward_rate": sum(kept_rewards) / len(kept_rewards) if kept_rewards else 0.0,
        "dream/kept_confidence": sum(sure) / len(sure) if sure else 0.0,
        "dream/dreams_per_s": d.scored / d.scoring_s if d.scoring_s else 0.0,
        "dream/tokens": result["tokens"] + d.gen_tokens,
        "dream/scoring_tokens": d.scoring_tokens,
        "dream/kl_drift": result["kl_drift"],
        "dream/seeded_kl_drift": result.get("seeded_kl_drift", result["kl_drift"]),
        "dream/wall_clock_s": time.time() - t0,
        **{f"dream/{k}": v for k, v in diversity([x.text for x in d.kept]).items()},
    }
    notes = {"drift_note": result["drift_note"], "drift_history": result["drift_history"], "rounds": d.rounds}
    # A hashed file holds what the run computed, not how long it took: timings stay in the manifest's metrics,
    # so the same inputs and seed give the same checkpoint digest (a resumed flow run finds the same one).
    timed = ("dream/dreams_per_s", "dream/wall_clock_s")
    stable = {k: v for k, v in metrics.items() if k not in timed}
    (tmp / "dream_stats.json").write_text(json.dumps({"metrics": stable, **notes}, indent=2))
    manifest = Manifest.of_directory(
        tmp,
        "checkpoint",
        name=f"cycle-{state.get('cycle', 0)}-dreamed",
        parents={"seeded": seeded.digest, "snapshot": snapshot.digest},
        metrics=metrics,
        meta={"expert": d.newest, **notes, **(meta or {})},
    )
    manifest = manifest.publish(tmp, out)
    log(metrics)
    return manifest


def dream(
    cfg: Config,
    seeded: Manifest,
    snapshot: Manifest,
    workdir: Path,
    log: Log = noop,
    run_seed: int = 0,
    reference: Sequence[str] = (),
    token_budget: int | None = None,
) -> Manifest:
    """Dreaming for one snapshot on top of the seeded candidate; returns the dreamed candidate (the seeded
    one unchanged in the cycle that grew the model: `grew_this_cycle`).

    `token_budget` caps the training tokens of ReST-EM and consolidation (the bench's per-day budget)."""
    t0 = time.time()
    if grew_this_cycle(seeded):
        return seeded
    d = prepare(cfg, seeded, snapshot, log=log, run_seed=run_seed, reference=reference)
    left = None if token_budget is None else max(0, token_budget - d.gen_tokens)
    anchor = Anchor.load(Path(seeded.uri)).earlier()
    examples = consolidation_inputs(cfg, seeded, d)
    result = consolidate(cfg, d.bank, d.newest, d.tok, examples, d.ref, log, token_budget=left, anchor=anchor)
    return write_candidate(d, result, seeded, snapshot, workdir, t0, log)


def dream_records(manifest: Manifest) -> list[dict]:
    path = Path(manifest.uri) / "dreams.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
