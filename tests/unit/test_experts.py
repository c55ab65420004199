import torch

from sleepcycle.experts import ExpertBank, load_checkpoint, load_for_inference, save_checkpoint
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
