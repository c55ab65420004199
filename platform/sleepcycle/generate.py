"""Text generation behind one narrow interface, used by on-policy rollouts, dream sampling and evaluation.

A `Generator` samples completions of token-id prompts from a given model (the policy): the model is an
argument of every call because a stage samples from several (teachers, the student it is training, the
champion). Two implementations meet here:

- `HFGenerator` (default): the model runs in-process, batched, left-padded, KV-cached, greedy or
  temperature sampling, with a `torch.Generator` so a seed fixes every sample (`sample_ids`).
- `VLLMGenerator` (``generation.backend: vllm``, GPU only): a vLLM engine or an OpenAI-compatible vLLM
  server; experts are served as LoRA adapters. It lives in `sleepcycle.vllm_backend`, imported lazily.

    gen = make_generator(cfg.generation, tok.eos_token_id, tok.pad_token_id)
    ids = gen.sample(model, [tok("Question: ...", add_special_tokens=False)["input_ids"]], 12)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

if TYPE_CHECKING:
    from sleepcycle.config import GenerationConfig


class Generator(Protocol):
    def sample(
        self,
        model: PreTrainedModel,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        """Completion token ids of `model` per prompt: EOS included when it was produced, nothing after
        it; greedy when temperature is 0. `max_new_tokens` may be one limit per prompt; `generator`
        seeds the sampling (a backend that cannot take a torch.Generator draws its seed from it)."""
        ...


class HFGenerator:
    """In-process generation with the HF model itself (the default backend; see `sample_ids`)."""

    def __init__(self, eos_id: int, pad_id: int, batch_size: int = 64):
        self.eos_id, self.pad_id, self.batch_size = eos_id, pad_id, batch_size

    def sample(
        self,
        model: PreTrainedModel,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        return sample_ids(
            model, prompts, max_new_tokens, self.eos_id, self.pad_id, temperature, generator, self.batch_size
        )


def make_generator(cfg: GenerationConfig | None, eos_id: int, pad_id: int) -> Generator:
    """The backend that `cfg.backend` names (HF when no config is given)."""
    if cfg is not None and cfg.backend == "vllm":
        from sleepcycle.vllm_backend import VLLMGenerator  # needs vllm and CUDA: imported only when chosen

        return VLLMGenerator(cfg, eos_id, pad_id)
    return HFGenerator(eos_id, pad_id, batch_size=cfg.batch_size if cfg is not None else 64)


def complete(
    gen: Generator,
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    temperature: float = 0.0,
    seed: int | None = None,
) -> list[str]:
    """Text in, text out: one completion per prompt, decoded without its EOS."""
    if not prompts:
        return []
    ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    outs = gen.sample(model, ids, max_new_tokens, temperature, rng)
    eos = tokenizer.eos_token_id
    return [tokenizer.decode([t for t in o if t != eos], skip_special_tokens=True) for o in outs]


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
    dev = next(model.parameters()).device
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    res = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    past, logits = getattr(res, kw), res.logits[:, -1]
    last = positions[:, -1]
    done = torch.zeros(n, dtype=torch.bool, device=dev)
    limit = torch.tensor(limits, device=dev)
    new = []
    for t in range(max_new_tokens):
        if temperature > 0:
            probs = torch.softmax(logits.float() / temperature, dim=-1)
            if generator is not None and generator.device != probs.device:  # a CPU seed for a GPU model
                tok = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(dev)
            else:
                tok = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            tok = logits.argmax(-1)
        tok = torch.where(done, torch.full_like(tok, pad_id), tok)
        new.append(tok)
        done |= (tok == eos_id) | (limit <= t + 1)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long, device=dev)], dim=1)
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
