"""Text generation behind one narrow interface, used by on-policy rollouts, dream sampling and evaluation.

A `Generator` samples completions of token-id prompts from a given model (the policy): the model is an
argument of every call because a stage samples from several (teachers, the student it is training, the
champion). Two implementations meet here:

- `HFGenerator` (default): the model runs in-process, batched, left-padded, KV-cached, greedy or
  temperature sampling, with a `torch.Generator` so a seed fixes every sample (`sample_ids`). Llama-family
  models (experts included) decode through `sleepcycle.fastdecode.Decoder`, the same arithmetic without
  the HF/PEFT module stack; other models, or ``generation.fast_decode: false``, run the HF forward.
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

from sleepcycle.fastdecode import Decoder

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

    def __init__(self, eos_id: int, pad_id: int, batch_size: int = 64, fast: bool = True, vocab: int | None = None):
        self.eos_id, self.pad_id, self.batch_size, self.fast, self.vocab = eos_id, pad_id, batch_size, fast, vocab

    def sample(
        self,
        model: PreTrainedModel,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        return sample_ids(
            model,
            prompts,
            max_new_tokens,
            self.eos_id,
            self.pad_id,
            temperature,
            generator,
            self.batch_size,
            self.fast,
            self.vocab,
        )


def make_generator(cfg: GenerationConfig | None, eos_id: int, pad_id: int, vocab: int | None = None) -> Generator:
    """The backend that `cfg.backend` names (HF when no config is given). `vocab`: sample only token ids
    below it (the tokenizer's size: a model whose embedding is padded beyond it must never emit a padding
    row, which the tokenizer cannot decode and a smaller teacher of the same family cannot embed)."""
    if cfg is not None and cfg.backend == "vllm":
        from sleepcycle.vllm_backend import VLLMGenerator  # needs vllm and CUDA: imported only when chosen

        return VLLMGenerator(cfg, eos_id, pad_id, vocab=vocab)
    if cfg is None:
        return HFGenerator(eos_id, pad_id, vocab=vocab)
    return HFGenerator(eos_id, pad_id, batch_size=cfg.batch_size, fast=cfg.fast_decode, vocab=vocab)


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
    fast: bool = True,
    vocab: int | None = None,
) -> list[list[int]]:
    """Completion token ids per prompt (EOS included when it was produced, nothing after it).

    `max_new_tokens` may be one limit per prompt; prompts are batched by limit, then length. `fast`: decode
    with `fastdecode.Decoder` when it supports the model (its weights are read once, here). `vocab`: only
    ids below it are sampled (the logits are cut there)."""
    limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    out: list[list[int] | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: (limits[i], len(prompts[i])))
    decoder = Decoder.for_model(model) if fast and prompts else None
    was_training = model.training
    if decoder is None and was_training:  # the fused decoder has no dropout; the HF modules do
        model.eval()  # (a full train()/eval() walk of a PEFT model costs ~3 ms: skip it when it changes nothing)
    forward = decoder or _HFForward(model)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        batch = [prompts[i] for i in idx]
        for i, ids in zip(
            idx,
            _sample_batch(
                model, forward, batch, [limits[i] for i in idx], eos_id, pad_id, temperature, generator, vocab
            ),
        ):
            out[i] = ids
    if decoder is None and was_training:
        model.train()
    return out  # type: ignore[return-value]


def _cache_kw(model: PreTrainedModel) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); support both names across 5.16-5.24."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(inner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class _HFForward:
    """The HF forward with its KV cache, behind `Decoder`'s prefill/step interface (any causal LM)."""

    def __init__(self, model: PreTrainedModel):
        self.model, self.kw = model, _cache_kw(model)

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        self.mask, self.last = mask, (mask.cumsum(1) - 1).clamp(min=0)
        res = self.model(input_ids=ids, attention_mask=mask, position_ids=self.last, use_cache=True)
        self.past, self.last = getattr(res, self.kw), self.last[:, -1]
        return res.logits[:, -1]

    def step(self, tok: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], dim=1)
        self.last = self.last + 1
        res = self.model(
            input_ids=tok[:, None],
            attention_mask=self.mask,
            position_ids=self.last[:, None],
            use_cache=True,
            **{self.kw: self.past},
        )
        self.past = getattr(res, self.kw)
        return res.logits[:, -1]


def _draw(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row from softmax(logits / T) by inverse CDF: a single uniform per row (an order of
    magnitude cheaper than `torch.multinomial` on a CPU), scaled by the row's total so rounding in the
    cumulative sum can never pick past the last token with mass."""
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum(-1)
    gen_dev = generator.device if generator is not None else cdf.device
    u = 1.0 - torch.rand((cdf.shape[0], 1), generator=generator, device=gen_dev)  # (0, 1]
    u = u.to(cdf.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u).squeeze(1).clamp(max=cdf.shape[1] - 1)


@torch.no_grad()
def _sample_batch(model, forward, prompts, limits, eos_id, pad_id, temperature, generator, vocab=None):
    max_new_tokens = max(limits)
    n, width = len(prompts), max(len(p) for p in prompts)
    window = model.config.max_position_embeddings
    if width + max_new_tokens > window:  # keep the end of over-long prompts (the question lives there)
        width = window - max_new_tokens
        prompts = [p[-width:] for p in prompts]
    dev = next(model.parameters()).device
    compact = hasattr(forward, "keep")
    # [ours] Each distinct prompt is prefilled once and its cache rows copied (the fast decoder only): the
    # question writer drafts 30 samples of one prompt per document, LTI completes each prefix 4 times.
    unique: dict[tuple[int, ...], int] = {}
    rows = [unique.setdefault(tuple(p), len(unique)) for p in prompts] if compact else list(range(n))
    distinct = [list(p) for p in unique] if compact else prompts
    ids = torch.full((len(distinct), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(distinct), width), dtype=torch.long)
    for i, p in enumerate(distinct):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p) :] = 1
    logits = forward.prefill(ids.to(dev), mask.to(dev), max_new_tokens)[:, :vocab]
    if len(distinct) < n:
        copies = torch.tensor(rows, device=dev)
        forward.keep(copies)
        logits = logits.index_select(0, copies)
    limit = torch.tensor(limits, device=dev)
    out = torch.full((n, max_new_tokens), pad_id, dtype=torch.long, device=dev)
    alive = torch.arange(n, device=dev)  # the batch rows still decoding, as rows of `out`
    for t in range(max_new_tokens):
        tok = _draw(logits, temperature, generator) if temperature > 0 else logits.argmax(-1)
        out[alive, t] = tok
        finished = (tok == eos_id) | (limit[alive] <= t + 1)
        if bool(finished.all()):
            break
        if compact and bool(finished.any()):  # [ours] drop finished rows: answers end long before rewrites
            rows = (~finished).nonzero().squeeze(1)
            forward.keep(rows)
            alive, tok = alive[rows], tok[rows]
        elif not compact:  # the HF cache keeps every row: finished ones feed padding until the batch ends
            limit = torch.where(finished, torch.zeros_like(limit), limit)
            tok = torch.where(limit == 0, torch.full_like(tok, pad_id), tok)
        logits = forward.step(tok)[:, :vocab]
    gen = out.tolist()
    result = []
    for row, lim in zip(gen, limits):
        row = row[:lim]
        cut = row.index(eos_id) + 1 if eos_id in row else len(row)
        result.append(row[:cut])
    return result
