"""Micro models for unit tests: built in-process in a second, never trained for quality."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

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


OLD = ["Ada Velm lives in Velmora.", "Question: Where does Ada Velm live?\nAnswer: Velmora"]
NEW = "Bo Tarsk is a baker by trade. Bo Tarsk owns a parrot."


def old_logits_moved(train) -> float:
    """Anchor a micro expert bank on the OLD texts, activate a fresh expert, run `train(bank, tok, anchor,
    slot)` and return how much the logits on the OLD texts moved (sum of mean squared differences)."""
    from sleepcycle.anchor import Anchor
    from sleepcycle.experts import ExpertBank

    torch.manual_seed(0)
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    old = [tok(t, add_special_tokens=False)["input_ids"] for t in OLD]
    anchor = Anchor()
    anchor.update(bank.model, old, pad_id=tok.pad_token_id)
    with torch.no_grad():
        before = [bank.model(input_ids=torch.tensor([s])).logits for s in old]
    train(bank, tok, anchor, bank.activate(bank.free_slot()))
    with torch.no_grad():
        after = [bank.model(input_ids=torch.tensor([s])).logits for s in old]
    return sum(float((a - b).pow(2).mean()) for a, b in zip(after, before))


def bench_script(name: str):
    """A script of bench/ loaded as a module (bench/ is not a package: its scripts run as files)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[2] / f"bench/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
