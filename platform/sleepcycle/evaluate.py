"""Evaluation harness: probe accuracy (closed-book and in-context), LM loss, KL drift, continual metrics.

Accuracy is greedy decoding scored by normalised exact match against the answer or any alias. The
continual-learning metrics follow METHOD.md section 5 on an accuracy matrix ``R`` whose rows are "after
cycle i" (row 0: the champion before any sleep) and whose columns are snapshots (column 0: the day-0
base knowledge; columns 1..T: wake days):

- ACC = mean_j R[T][j]; BWT = mean_{j<T} (R[T][j] - R[j][j]); FWT = mean_{j>1} (R[j-1][j] - b_j) with
  b_j = R[0][j]; forgetting f_j = max_{j<=l<T} R[l][j] - R[T][j] (mean over j<T); all over wake columns.
- FUAR = forgotten / (updated + acquired): the probe mass that was right before a cycle and wrong after
  it (wake *and* base columns, summed over cycles), over the mass acquired, R[i][i], summed over cycles.
  Below 1 a method learns more than it forgets.

    sleepcycle eval --model PATH --probes FILE [--json]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sleepcycle.generate import Generator, HFGenerator, complete
from sleepcycle.trainer import Example, collate, encode
from sleepcycle.world import DOC_PREFIX, QA_PROMPT, normalize_answer


@dataclass(frozen=True)
class Question:
    """What evaluation needs of a probe: the question, accepted answers and optional documents."""

    question: str
    answer: str
    aliases: tuple[str, ...] = ()
    kind: str = "fact"
    docs: tuple[str, ...] = ()


def prompt_for(q: Question, with_docs: bool) -> str:
    prefix = "".join(DOC_PREFIX.format(d=d) for d in q.docs) if with_docs else ""
    return prefix + QA_PROMPT.format(q=q.question)


def is_correct(prediction: str, answer: str, aliases: Sequence[str] = ()) -> bool:
    pred = normalize_answer(prediction)
    return bool(pred) and any(pred == normalize_answer(a) for a in (answer, *aliases))


def answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[Question],
    with_docs: bool = False,
    max_new_tokens: int = 8,
    batch_size: int = 64,
    generator: Generator | None = None,
) -> list[str]:
    """Greedy answers; `generator` is the generation backend (in-process HF when None)."""
    gen = generator or HFGenerator(tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=batch_size)
    return complete(gen, model, tokenizer, [prompt_for(q, with_docs) for q in questions], max_new_tokens)


@torch.no_grad()
def scored_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[Question],
    with_docs: bool = False,
    max_new_tokens: int = 8,
    batch_size: int = 64,
    generator: Generator | None = None,
) -> list[tuple[str, float]]:
    """Greedy answers with the model's confidence in each: the mean log-probability of its tokens (the EOS
    that ends it included), -inf for an empty answer. Scored by a forward pass of this model, whichever
    backend generated."""
    gen = generator or HFGenerator(tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=batch_size)
    prompts = tokenizer([prompt_for(q, with_docs) for q in questions], add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    outs = []
    for o in gen.sample(model, prompts, max_new_tokens, 0.0, None):
        o = list(o)
        outs.append(o[: o.index(eos) + 1] if eos in o else o)
    scores = []
    for b in range(0, len(prompts), batch_size):
        seqs = [p + o for p, o in zip(prompts[b : b + batch_size], outs[b : b + batch_size])]
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, seq in enumerate(seqs):  # right-padded: every row's positions start at 0
            ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), 1
        logp = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
        for i, (p, o) in enumerate(zip(prompts[b : b + batch_size], outs[b : b + batch_size])):
            if not o:
                scores.append(float("-inf"))
                continue
            steps = logp[i, len(p) - 1 : len(p) - 1 + len(o)]
            scores.append(float(steps.gather(-1, torch.tensor(o).unsqueeze(-1)).mean()))
    texts = [tokenizer.decode([t for t in o if t != eos], skip_special_tokens=True) for o in outs]
    return list(zip(texts, scores))


def accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[Question],
    with_docs: bool = False,
    max_new_tokens: int = 8,
    batch_size: int = 64,
    generator: Generator | None = None,
) -> tuple[float, list[bool]]:
    """Fraction answered correctly by greedy decoding, and the per-question outcome."""
    if not questions:
        return float("nan"), []
    preds = answers(model, tokenizer, questions, with_docs, max_new_tokens, batch_size, generator)
    hits = [is_correct(p, q.answer, q.aliases) for p, q in zip(preds, questions)]
    return sum(hits) / len(hits), hits


@torch.no_grad()
def token_logprobs(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log-softmax over the vocabulary at every label position: [batch, len-1, vocab]."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.log_softmax(logits[:, :-1].float(), dim=-1)


@torch.no_grad()
def lm_loss(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], batch_size: int = 32
) -> float:
    """Mean target-token negative log-likelihood (nats) over `examples`."""
    enc = encode(tokenizer, examples, model.config.max_position_embeddings)
    total, count = 0.0, 0
    for b in range(0, len(enc), batch_size):
        batch = collate(enc[b : b + batch_size], tokenizer.pad_token_id)
        logp = token_logprobs(model, batch)
        labels = batch["labels"][:, 1:]
        valid = labels != -100
        nll = -logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        total += float(nll[valid].sum())
        count += int(valid.sum())
    return total / max(1, count)


@torch.no_grad()
def kl_drift(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    batch_size: int = 32,
) -> float:
    """Mean per-token KL(reference || model) over the target positions of a fixed reference set."""
    enc = encode(tokenizer, examples, model.config.max_position_embeddings)
    total, count = 0.0, 0
    device = next(model.parameters()).device  # a data-parallel rank's model may sit on its GPU
    for b in range(0, len(enc), batch_size):
        batch = {k: v.to(device) for k, v in collate(enc[b : b + batch_size], tokenizer.pad_token_id).items()}
        p_ref, p_mod = token_logprobs(reference, batch), token_logprobs(model, batch)
        valid = batch["labels"][:, 1:] != -100
        kl = (p_ref.exp() * (p_ref - p_mod)).sum(-1)
        total += float(kl[valid].sum())
        count += int(valid.sum())
    return total / max(1, count)


# ----- continual-learning metrics on the accuracy matrix --------------------------------------------


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def continual_metrics(R: Sequence[Sequence[float]]) -> dict[str, float]:
    """ACC, BWT, FWT, forgetting, FUAR and acquisition from a (T+1)x(T+1) matrix (see module doc)."""
    T = len(R) - 1
    if T < 1 or any(len(row) != T + 1 for row in R):
        raise ValueError(f"accuracy matrix must be square with at least 2 rows, got {len(R)} rows")
    wake = range(1, T + 1)
    acc = _mean([R[T][j] for j in wake])
    bwt = _mean([R[T][j] - R[j][j] for j in range(1, T)])
    fwt = _mean([R[j - 1][j] - R[0][j] for j in range(2, T + 1)])
    forgetting = _mean([max(R[k][j] for k in range(j, T)) - R[T][j] for j in range(1, T)])
    forgotten = sum(max(0.0, R[i - 1][j] - R[i][j]) for i in wake for j in range(0, i))
    acquired = sum(R[i][i] for i in wake)
    fuar = forgotten / acquired if acquired > 0 else float("inf")
    return {
        "ACC": acc,
        "BWT": bwt,
        "FWT": fwt if T > 1 else float("nan"),
        "forgetting": forgetting,
        "FUAR": fuar,
        "acquisition": _mean([R[i][i] for i in wake]),
        "base_retention": R[T][0] - R[0][0],
    }
