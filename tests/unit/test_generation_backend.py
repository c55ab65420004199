"""The `Generator` contract, run against every backend: in-process HF here; vLLM (marked gpu) where CUDA and
vllm exist, skipped cleanly otherwise (also under `-m gpu` on a CPU machine).

    .venv/bin/python -m pytest tests/unit/test_generation_backend.py          # HF
    .venv/bin/python -m pytest tests/unit/test_generation_backend.py -m gpu   # vLLM, on a GPU machine
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sleepcycle import models
from sleepcycle.config import ConfigError, GenerationConfig, load_config
from sleepcycle.distill import GeneralizedDistillation, Item
from sleepcycle.evaluate import Question, accuracy
from sleepcycle.experts import load_checkpoint
from sleepcycle.generate import HFGenerator, complete, make_generator
from sleepcycle.vllm_backend import stack_experts, write_adapter
from unit.helpers import micro_model

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["Ada Velm lives in", "Question: Where does Bo Tarsk live?\nAnswer:", "Bo"]


def _vllm_ready() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    """A micro model saved to disk (vLLM loads bases from a directory) with one trained-looking expert."""
    model, tok = micro_model(seed=1)
    path = models.save(model, tok, tmp_path_factory.mktemp("gen") / "base")
    bank, tok, _ = load_checkpoint(path, rank=4, capacity=2)
    slot = bank.activate(bank.free_slot())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in bank.parameters(slot):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    bank.freeze()
    return bank, tok


@pytest.fixture(params=["hf", pytest.param("vllm", marks=pytest.mark.gpu)])
def backend(request, bank):
    _, tok = bank
    if request.param == "vllm":
        if not _vllm_ready():
            pytest.skip("vLLM backend needs CUDA and vllm (pip install -e '.[gpu]')")
        cfg = GenerationConfig(backend="vllm", gpu_memory_utilization=0.2)
        return make_generator(cfg, tok.eos_token_id, tok.pad_token_id)
    return make_generator(GenerationConfig(), tok.eos_token_id, tok.pad_token_id)


def _ids(tok, texts=PROMPTS):
    return tok(list(texts), add_special_tokens=False)["input_ids"]


# ----- the contract ------------------------------------------------------------------------------------


def test_one_completion_per_prompt_within_its_own_limit_and_nothing_after_eos(backend, bank):
    model, tok = bank
    limits = [1, 5, 12]
    outs = backend.sample(model.model, _ids(tok), limits, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert len(outs) == len(PROMPTS)
    for out, lim in zip(outs, limits):
        assert 1 <= len(out) <= lim and all(isinstance(t, int) for t in out)
        assert tok.eos_token_id not in out[:-1]
    assert backend.sample(model.model, [], 4) == []


def test_greedy_is_deterministic_and_a_seed_fixes_the_samples(backend, bank):
    model, tok = bank
    ids = _ids(tok)
    assert backend.sample(model.model, ids, 8) == backend.sample(model.model, ids, 8)

    def draw(seed):
        return backend.sample(model.model, ids * 4, 8, temperature=1.0, generator=torch.Generator().manual_seed(seed))

    first = draw(3)
    assert draw(3) == first
    assert draw(4) != first, "another seed, other samples"


def test_a_model_with_experts_generates_what_its_merged_form_generates(backend, bank):
    """The vLLM backend serves experts as a stacked LoRA adapter; the HF one runs them in place."""
    model, tok = bank
    reference = HFGenerator(tok.eos_token_id, tok.pad_token_id).sample(model.merged(), _ids(tok), 10)
    assert backend.sample(model.model, _ids(tok), 10) == reference


def test_text_completion_decodes_without_eos(backend, bank):
    model, tok = bank
    texts = complete(backend, model.model, tok, PROMPTS, 6)
    assert len(texts) == len(PROMPTS) and all(isinstance(t, str) and "<|endoftext|>" not in t for t in texts)


# ----- the vLLM adapter export, checked on CPU -------------------------------------------------------------


def test_stacked_experts_are_one_peft_adapter_equal_to_the_merged_model(bank, tmp_path):
    from peft import PeftModel

    bank_, tok = bank
    second = bank_.activate(bank_.free_slot())
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in bank_.parameters(second):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    try:
        tensors, config = stack_experts(bank_.model)
        assert config["r"] == 2 * 4  # two experts of rank 4
        path = write_adapter(tmp_path, tensors, config)
        assert write_adapter(tmp_path, tensors, config) == path, "an unchanged expert set reuses its adapter"
        base, _ = models.load(config["base_model_name_or_path"])
        served = PeftModel.from_pretrained(base, str(path))
        ids = torch.tensor(_ids(tok, ["Ada Velm lives in Velmora. Ada"]))
        with torch.no_grad():
            want, got = bank_.merged()(ids).logits, served(ids).logits
        assert torch.allclose(want, got, atol=1e-5)
    finally:
        bank_.deactivate(second)
    bank_.freeze()


# ----- configuration, laziness, wiring ------------------------------------------------------------------


def test_backend_is_a_config_choice_defaulting_to_hf():
    assert load_config("tiny").generation.backend == "hf"
    assert load_config("tiny", ["generation.backend=vllm"]).generation.backend == "vllm"
    with pytest.raises(ConfigError, match="generation.backend"):
        load_config("tiny", ["generation.backend=tgi"])


def test_vllm_and_deepspeed_are_imported_only_when_used():
    code = (
        "import sys\n"
        "import sleepcycle.generate, sleepcycle.vllm_backend, sleepcycle.distributed, sleepcycle.seed\n"
        "import sleepcycle.dream, sleepcycle.evaluate, sleepcycle.cycle, sleepcycle.cli\n"
        "print(sorted(m for m in ('vllm', 'deepspeed') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(_vllm_ready(), reason="vllm and CUDA are here")
def test_choosing_vllm_without_it_fails_in_one_clear_line(monkeypatch):
    from sleepcycle.vllm_backend import GenerationError

    monkeypatch.delenv("SLEEPCYCLE_VLLM_URL", raising=False)
    with pytest.raises(GenerationError, match="vllm|CUDA"):
        make_generator(GenerationConfig(backend="vllm"), 0, 1)


class Counting:
    """A backend that counts its calls and delegates to HF (results unchanged)."""

    def __init__(self, tok):
        self.inner, self.calls = HFGenerator(tok.eos_token_id, tok.pad_token_id), 0

    def sample(self, *args, **kwargs):
        self.calls += 1
        return self.inner.sample(*args, **kwargs)


def test_rollouts_and_evaluation_go_through_the_backend(bank):
    bank_, tok = bank
    cfg = load_config("tiny").distill
    spy = Counting(tok)
    model = bank_.merged()
    params = [p.requires_grad_(True) for p in model.parameters()]
    trainer = GeneralizedDistillation(
        cfg,
        model,
        {"new": model},
        params,
        tok.eos_token_id,
        tok.pad_token_id,
        tok.decode,
        lambda a, b: 0.0,
        sampler=spy,
    )
    items = [Item(p, p, "new") for p in _ids(tok)]
    trainer.sample_teacher(items, 6)
    assert spy.calls == 1 and all(it.sample for it in items)
    spy.calls = 0
    acc, hits = accuracy(model, tok, [Question("Where does Ada Velm live?", "Velmora")], generator=spy)
    assert spy.calls == 1 and len(hits) == 1
    plain, _ = accuracy(model, tok, [Question("Where does Ada Velm live?", "Velmora")])
    assert acc == plain
