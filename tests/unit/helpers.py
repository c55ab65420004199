"""Micro models for unit tests: built in-process in a second, never trained for quality."""

from __future__ import annotations

import functools

import torch

from sleepcycle import models
from sleepcycle.config import ModelConfig

TEXTS = [
    "Ada Velm lives in Velmora. Ada Velm works at Corvid Systems.",
    "Question: Where does Ada Velm live?\nAnswer: Velmora",
    "Bo Tarsk is a baker by trade. Bo Tarsk owns a parrot.",
] * 20


@functools.lru_cache(maxsize=4)
def tokenizer(vocab: int = 300):
    return models.train_tokenizer(TEXTS, vocab)


def micro_model(seed: int = 0, size: str = "micro", vocab: int = 300):
    tok = tokenizer(vocab)
    model = models.build_model(ModelConfig(size=size, vocab_size=vocab, max_positions=128), tok, seed=seed)
    # Random (not zero) weights everywhere so that function-preservation checks are not trivially true.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.eval()
    return model, tok


def batch(tok, texts=("Ada Velm lives in", "Question: Where does Bo Tarsk live?\nAnswer:")):
    enc = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    return enc["input_ids"], enc["attention_mask"]
