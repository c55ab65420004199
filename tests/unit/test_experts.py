import json

import pytest
import torch

from sleepcycle import models
from sleepcycle.experts import (
    SLEEP_JSON,
    ExpertBank,
    load_checkpoint,
    load_for_inference,
    save_checkpoint,
    stored_base,
)
from unit.helpers import batch, micro_model


def logits(model, tok):
    ids, mask = batch(tok)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_activating_a_fresh_expert_preserves_the_function_bit_for_bit():
    model, tok = micro_model()
    before = logits(model, tok)
    bank = ExpertBank(model, rank=4, capacity=3)
    assert torch.equal(logits(bank.model, tok), before)
    bank.activate(bank.free_slot())
    assert torch.equal(logits(bank.model, tok), before)


def test_only_the_newest_expert_trains_and_old_ones_are_frozen():
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    first = bank.activate(bank.free_slot())
    with torch.no_grad():
        for p in bank.parameters(first):
            p.add_(torch.randn_like(p) * 0.1)
    second = bank.activate(bank.free_slot())
    trainable = {n for n, p in bank.model.named_parameters() if p.requires_grad}
    assert trainable and all(f".{second}." in n for n in trainable)
    assert bank.active == [first, second]
    # the teacher view (without the new expert) and back
    with bank.using([first]):
        assert bank.active == [first]
    assert bank.active == [first, second] and bank.trainable == second


def test_checkpoint_roundtrip_and_merged_view(tmp_path):
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    name = bank.activate(bank.free_slot())
    with torch.no_grad():
        for p in bank.parameters(name):
            p.add_(torch.randn_like(p) * 0.2)
    expected = logits(bank.model, tok)
    save_checkpoint(bank, tok, tmp_path / "ckpt", state={"cycle": 1})
    assert (tmp_path / "ckpt" / "experts" / name / "adapter_model.safetensors").exists()
    bank2, tok2, state = load_checkpoint(tmp_path / "ckpt")
    assert state["active"] == [name] and state["cycle"] == 1
    assert torch.allclose(logits(bank2.model, tok2), expected, atol=1e-6)
    merged, _ = load_for_inference(tmp_path / "ckpt")
    assert torch.allclose(logits(merged, tok2), expected, atol=1e-5)


def test_a_plain_champion_directory_is_copied_as_the_base_model_files_only(tmp_path):
    # The first cycle's champion is a plain model directory: its model files become base/ byte for byte
    # (no second serialisation; in a fresh process that pulled in DeepSpeed through accelerate, ~2-4 s);
    # what else such a directory holds stays out.
    model, tok = micro_model()
    plain = models.save(model, tok, tmp_path / "plain")
    (plain / "manifest.json").write_text("{}")
    (plain / "training_data.jsonl").write_text("")
    (plain / "original").mkdir()
    (plain / "original" / "consolidated.pth").write_bytes(b"x" * 10)
    (plain / "pytorch_model.bin").write_bytes(b"x" * 10)  # another format beside the safetensors
    assert stored_base(plain) == plain
    bank, tok2, state = load_checkpoint(plain)
    name = bank.activate(bank.free_slot())
    with torch.no_grad():
        for p in bank.parameters(name):
            p.add_(torch.randn_like(p) * 0.2)
    expected = logits(bank.model, tok2)
    save_checkpoint(bank, tok2, tmp_path / "ckpt", state, base_dir=stored_base(plain))
    base = tmp_path / "ckpt" / "base"
    assert stored_base(tmp_path / "ckpt") == base
    model_files = {p.name for p in plain.iterdir()} - {"manifest.json", "training_data.jsonl", "original"}
    assert {p.name for p in base.iterdir()} == model_files - {"pytorch_model.bin"}
    assert "model.safetensors" in model_files and "config.json" in model_files
    assert (base / "model.safetensors").read_bytes() == (plain / "model.safetensors").read_bytes()
    bank2, tok3, _ = load_checkpoint(tmp_path / "ckpt")
    assert torch.allclose(logits(bank2.model, tok3), expected, atol=1e-6)


def test_reset_frees_the_slot_and_restores_the_function():
    model, tok = micro_model()
    base = logits(model, tok)
    bank = ExpertBank(model, rank=4, capacity=2)
    name = bank.activate(bank.free_slot())
    with torch.no_grad():
        for p in bank.parameters(name):
            p.add_(torch.randn_like(p) * 0.2)
    assert not torch.allclose(logits(bank.model, tok), base)
    bank.reset(name)
    assert name not in bank.active and bank.free_slot() == name
    bank.activate(name)
    assert torch.equal(logits(bank.model, tok), base)


def test_the_merged_view_of_a_bank_without_experts_is_a_plain_model_that_saves_and_loads(tmp_path):
    # Regression: it used to be PEFT's base model with the (inactive) expert slots still injected, whose
    # weights save as `...base_layer.weight`: a plain from_pretrained then re-initialised those layers.
    from sleepcycle import models

    model, tok = micro_model()
    plain_keys = set(model.state_dict())
    before = logits(model, tok)
    merged = ExpertBank(model, rank=4, capacity=3).merged()
    assert set(merged.state_dict()) == plain_keys
    assert torch.equal(logits(merged, tok), before)
    models.save(merged, tok, tmp_path / "m")
    again, _ = models.load(tmp_path / "m")
    assert torch.equal(logits(again, tok), before)


def test_folding_the_frozen_experts_keeps_the_function_and_trains_the_same_expert():
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    old = [bank.activate(bank.free_slot()) for _ in range(2)]
    with torch.no_grad():
        for name in old:
            for p in bank.parameters(name):
                p.add_(torch.randn_like(p) * 0.1)
    new = bank.activate(bank.free_slot())
    with torch.no_grad():
        for p in bank.parameters(new):
            p.add_(torch.randn_like(p) * 0.1)
    weights = {n: p.detach().clone() for n, p in bank.model.named_parameters()}
    ids, mask = batch(tok)

    def loss_and_grads():
        out = bank.model(input_ids=ids, attention_mask=mask, labels=ids)
        bank.model.zero_grad(set_to_none=True)
        out.loss.backward()
        return out.logits.detach(), {n: p.grad.clone() for n, p in bank.model.named_parameters() if p.grad is not None}

    plain, plain_grads = loss_and_grads()
    with bank.folded():
        assert bank.active == [new]
        inside = {n: p.detach().clone() for n, p in bank.model.named_parameters() if "base_layer" in n}
        folded, folded_grads = loss_and_grads()
    assert inside and any(not torch.equal(w, weights[n]) for n, w in inside.items()), "the old experts are folded in"
    assert bank.active == [*old, new] and bank.trainable == new
    assert (folded - plain).abs().max() < 1e-5, "the same function"
    assert plain_grads.keys() == folded_grads.keys() and all(f".{new}." in n for n in plain_grads)
    assert all(torch.allclose(plain_grads[n], folded_grads[n], atol=1e-5) for n in plain_grads)
    after = dict(bank.model.named_parameters())
    assert all(torch.equal(after[n], w) for n, w in weights.items()), "every weight restored bit-exactly"


def test_saving_and_loading_a_small_checkpoint_print_no_bar_or_library_warning(tmp_path, capfd, recwarn):
    # a flow saves and loads the tiny checkpoints several times a cycle: transformers' bars and PEFT's
    # deprecation warning filled the demo's log
    from transformers.utils import logging as hf_logging

    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    bank.activate(bank.free_slot())
    capfd.readouterr()
    save_checkpoint(bank, tok, tmp_path / "ckpt", {"active": bank.active})
    load_checkpoint(tmp_path / "ckpt")
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err, err
    assert not [w for w in recwarn if "is_gradient_checkpointing" in str(w.message)]
    assert hf_logging.is_progress_bar_enabled(), "the library's bars are left as they were"


def test_experts_on_the_attention_as_well_are_fresh_bit_for_bit_and_keep_their_layout_through_a_checkpoint(tmp_path):
    model, tok = micro_model()
    before = logits(model, tok)
    bank = ExpertBank(model, rank=4, capacity=3, modules="mlp+attention")
    name = bank.activate(bank.free_slot())
    assert torch.equal(logits(bank.model, tok), before)
    adapted = {n.split(".lora_A.")[0].rsplit(".", 1)[-1] for n, _ in bank.model.named_parameters() if ".lora_A." in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    with torch.no_grad():
        for p in bank.parameters(name):
            p.add_(torch.randn_like(p) * 0.2)
    expected = logits(bank.model, tok)
    save_checkpoint(bank, tok, tmp_path / "ckpt", state={"cycle": 1})
    bank2, tok2, state = load_checkpoint(tmp_path / "ckpt", modules="mlp+attention")
    assert state["modules"] == "mlp+attention" and bank2.modules == "mlp+attention"
    assert torch.allclose(logits(bank2.model, tok2), expected, atol=1e-6)
    with pytest.raises(ValueError, match="sit on 'mlp\\+attention', not 'mlp'"):
        load_checkpoint(tmp_path / "ckpt", modules="mlp")


def test_a_checkpoint_without_a_stored_layout_has_its_experts_on_the_mlp_and_unknown_layouts_are_refused(tmp_path):
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    bank.activate(bank.free_slot())
    save_checkpoint(bank, tok, tmp_path / "old", state={"cycle": 1})
    stored = json.loads((tmp_path / "old" / SLEEP_JSON).read_text())
    del stored["modules"]  # as written before the layout was stored
    (tmp_path / "old" / SLEEP_JSON).write_text(json.dumps(stored))
    assert load_checkpoint(tmp_path / "old")[0].modules == "mlp"
    with pytest.raises(ValueError, match="not 'mlp\\+attention'"):
        load_checkpoint(tmp_path / "old", modules="mlp+attention")
    with pytest.raises(ValueError, match="unknown expert modules 'attention'"):
        ExpertBank(micro_model()[0], rank=4, capacity=3, modules="attention")
