"""Causal LMs and tokenizers: the tiny Llama family, a locally trained byte-level BPE, load and save.

Checkpoints are plain HF ``save_pretrained`` directories (safetensors), so
``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained`` load them unchanged;
real models load the same way from a local path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from sleepcycle.config import ModelConfig
from sleepcycle.progress import quiet

EOS = "<|endoftext|>"
PAD = "<|pad|>"

# The family: "small" is the default student/teacher; "large" is ~3x it (grow-mode target);
# "micro" exists for unit tests only.
SIZES: dict[str, dict] = {
    "micro": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2),
    "small": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4),
    "large": dict(hidden_size=192, intermediate_size=576, num_hidden_layers=6, num_attention_heads=6),
}


class ModelLoadError(RuntimeError):
    """A checkpoint directory that does not hold a loadable causal LM + tokenizer."""


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on `texts`: any string tokenizes (bytes are the fallback alphabet)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS, pad_token=PAD, unk_token=None)


def build_model(cfg: ModelConfig, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    shape = SIZES[cfg.size]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=cfg.max_positions,
        num_key_value_heads=shape["num_attention_heads"],
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
        **shape,
    )
    return LlamaForCausalLM(config)


@contextmanager
def _library_bars(nbytes: int) -> Iterator[None]:
    """transformers' own bars ("Loading weights", "Writing model shards") only where the work takes a
    while: the tiny checkpoints load and save in milliseconds, several times a cycle."""
    was = hf_logging.is_progress_bar_enabled()
    if quiet() or nbytes < 2**30:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def load(path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load a causal LM and its tokenizer from a local directory, in eval mode, fp32 on CPU."""
    path = Path(path)
    unset = re.findall(r"\$\{(\w+)\}", str(path))
    if unset:  # a profile's ${NAME} that was not set when it loaded (sleepcycle.config.expand_env)
        raise ModelLoadError(f"{path}: ${{{unset[0]}}} is not set: export it, or give the path with --set")
    if not (path / "config.json").exists():
        raise ModelLoadError(f"{path}: not a model checkpoint (no config.json)")
    try:
        with _library_bars(sum(f.stat().st_size for f in path.glob("*.safetensors"))):
            tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except Exception as e:  # transformers raises many types; the user needs one clear line
        raise ModelLoadError(f"{path}: cannot load model or tokenizer: {e}") from e
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def save(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with _library_bars(sum(p.numel() * p.element_size() for p in model.parameters())):
        model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
