"""Text generation behind one narrow interface, used by evaluation, on-policy rollouts and dreaming.

`HFGenerator` runs the model in-process: batched, left-padded, KV-cached, greedy or temperature
sampling, with a `torch.Generator` so a seed fixes every sample. The vLLM backend (GPU only) implements
the same `Generator` protocol in `sleepcycle.vllm_backend` and is imported lazily.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase


class Generator(Protocol):
    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, temperature: float = 0.0, seed: int | None = None
    ) -> list[str]:
        """One completion per prompt, cut at the end-of-text token; greedy when temperature is 0."""
        ...


@torch.no_grad()
def sample_ids(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int | Sequence[int],
    eos_id: int,
    pad_id: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
) -> list[list[int]]:
    """Completion token ids per prompt (EOS included when it was produced, nothing after it).

    `max_new_tokens` may be one limit per prompt; prompts are batched by limit, then length."""
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    out: list[list[int] | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (limits[i], len(prompts[i])))
    was_training = model.training
    model.eval()
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        batch = [prompts[i] for i in idx]
        for i, ids in zip(
            idx, _sample_batch(model, batch, [limits[i] for i in idx], eos_id, pad_id, temperature, generator)
        ):
            out[i] = ids
    model.train(was_training)
    return out  # type: ignore[return-value]


def _cache_kw(model: PreTrainedModel) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); support both names across 5.16-5.24."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(inner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _sample_batch(model, prompts, limits, eos_id, pad_id, temperature, generator):
    kw = _cache_kw(model)
    max_new_tokens = max(limits)
    n, width = len(prompts), max(len(p) for p in prompts)
    window = model.config.max_position_embeddings
    if width + max_new_tokens > window:  # keep the end of over-long prompts (the question lives there)
        width = window - max_new_tokens
        prompts = [p[-width:] for p in prompts]
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    res = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    past, logits = getattr(res, kw), res.logits[:, -1]
    last = positions[:, -1]
    done = torch.zeros(n, dtype=torch.bool)
    limit = torch.tensor(limits)
    new = []
    for t in range(max_new_tokens):
        if temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            tok = logits.argmax(-1)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        new.append(tok)
        done |= (tok == eos_id) | (limit <= t + 1)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
        last = last + 1
        res = model(
            input_ids=tok[:, None], attention_mask=mask, position_ids=last[:, None], use_cache=True, **{kw: past}
        )
        past, logits = getattr(res, kw), res.logits[:, -1]
    gen = torch.stack(new, 1).tolist()
    result = []
    for row, lim in zip(gen, limits):
        row = row[:lim]
        cut = row.index(eos_id) + 1 if eos_id in row else len(row)
        result.append(row[:cut])
    return result


class HFGenerator:
    """In-process generation with a HF causal LM (the default backend)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def generate(
        self, prompts: Sequence[str], max_new_tokens: int, temperature: float = 0.0, seed: int | None = None
    ) -> list[str]:
        if not prompts:
            return []
        tok = self.tokenizer
        ids = tok(list(prompts), add_special_tokens=False)["input_ids"]
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        outs = sample_ids(
            self.model, ids, max_new_tokens, tok.eos_token_id, tok.pad_token_id, temperature, gen, self.batch_size
        )
        return [tok.decode([t for t in o if t != tok.eos_token_id], skip_special_tokens=True) for o in outs]
