"""Supervised language-model training on (prompt, target) examples: batching, loss masks, the loop.

Used by pretraining, the fine-tuning baselines, fast weights and Dreaming's SFT. Knowledge Seeding has
its own step (`sleepcycle.distill`) because its loss is a divergence between two models, not a label.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sleepcycle.progress import progress

Log = Callable[[dict], None]


def noop(_: dict) -> None:
    return None


@dataclass(frozen=True)
class Example:
    """Train on `target` given `prompt` (loss on target tokens and the closing EOS only).

    `turns` appends more (prompt, target) pairs to the same sequence, each target trained: several
    questions about one document cost one pass over the document."""

    prompt: str
    target: str
    turns: tuple[tuple[str, str], ...] = ()


Encoded = tuple[list[int], list[bool]]  # token ids, and which of them are trained


def encode(tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_len: int) -> list[Encoded]:
    """Token ids (prompt + target [+ turns] + EOS) and the trained positions of each example.
    Over-long examples are cut from the left so the targets survive."""
    segments = [((e.prompt, e.target),) + e.turns for e in examples]
    flat = [text for segs in segments for pair in segs for text in pair]
    ids_flat = iter(tokenizer(flat, add_special_tokens=False)["input_ids"]) if flat else iter(())
    out = []
    for segs in segments:
        ids: list[int] = []
        trained: list[bool] = []
        for _ in segs:
            p, t = next(ids_flat), next(ids_flat)
            ids += p + t
            trained += [False] * len(p) + [True] * len(t)
        ids.append(tokenizer.eos_token_id)
        trained.append(True)
        if len(ids) > max_len:
            ids, trained = ids[-max_len:], trained[-max_len:]
        out.append((ids, trained))
    return out


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded input ids, attention mask and labels (-100 where not trained)."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (ids, trained) in enumerate(batch):
        row = torch.tensor(ids)
        input_ids[i, : len(ids)] = row
        labels[i, : len(ids)] = torch.where(torch.tensor(trained), row, torch.full_like(row, -100))
        mask[i, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def batches(encoded: list, batch_size: int, rng: random.Random, bucket: int = 32) -> Iterable[list]:
    """Shuffled batches with similar lengths grouped together (less padding, same data)."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = batch_size * bucket
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: len(encoded[i][0]))
        groups = [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(groups)
        for g in groups:
            yield [encoded[i] for i in g]


def lm_loss(
    model: PreTrainedModel,
    batch: dict[str, torch.Tensor],
    reduction: str = "mean",
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean next-token cross-entropy over label positions (per row if reduction='none'). `position_ids`
    with a 4D attention mask: packed rows (`dream.sft_loss`)."""
    extra = {} if position_ids is None else {"position_ids": position_ids}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **extra).logits
    logits, labels = logits[:, :-1], batch["labels"][:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    valid = (labels != -100).float()
    if reduction == "none":
        return (nll * valid).sum(1) / valid.sum(1).clamp(min=1)
    return (nll * valid).sum() / valid.sum().clamp(min=1)


def cosine_lr(step: int, done: float, warmup: int, floor: float = 0.1) -> float:
    """Linear warmup over `warmup` steps, then cosine from 1 to `floor` as `done` goes 0 -> 1."""
    ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return ramp * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, done))))


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    *,
    steps: int | None = None,
    token_budget: int | None = None,
    batch_size: int = 16,
    lr: float = 1e-3,
    warmup: int = 0,
    weight_decay: float = 0.0,
    seed: int = 0,
    params: Iterable[torch.nn.Parameter] | None = None,
    log: Log = noop,
    desc: str = "train",
    batch_source: Callable[[random.Random], Iterable[list]] | None = None,
) -> dict:
    """Train for `steps` optimizer steps or until `token_budget` tokens have been trained on,
    cycling through `examples` (or batches from `batch_source`). Returns {steps, tokens, loss}."""
    if steps is None and token_budget is None:
        raise ValueError("give steps or token_budget")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    max_len = model.config.max_position_embeddings
    encoded = encode(tokenizer, examples, max_len) if examples else []
    if batch_source is None:
        if not encoded:
            raise ValueError("no training examples")

        def batch_source(r: random.Random) -> Iterable[list]:
            while True:
                yield from batches(encoded, batch_size, r)

    params = [p for p in (params if params is not None else model.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    model.train()
    tokens, step, ema = 0, 0, None
    source = iter(batch_source(rng))
    with progress(total=steps or token_budget, desc=desc, unit="step" if steps else "tok") as bar:
        while (steps is None or step < steps) and (token_budget is None or tokens < token_budget):
            batch = collate(next(source), tokenizer.pad_token_id)
            scale = cosine_lr(step, step / steps if steps else tokens / token_budget, warmup)
            for g in opt.param_groups:
                g["lr"] = lr * scale
            loss = lm_loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            # The budget counts every token through forward+backward (prompt and target, not padding):
            # that is the compute a method spends, whatever it puts its loss on.
            n_tok = int(batch["attention_mask"].sum())
            tokens += n_tok
            step += 1
            ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
            bar.update(1 if steps else n_tok)
            bar.set_postfix(loss=f"{ema:.3f}")
            if step % 50 == 0:
                log({"train/loss": ema, "train/step": step, "train/tokens": tokens})
    model.eval()
    return {"steps": step, "tokens": tokens, "loss": ema}
