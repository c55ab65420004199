"""The activation anchor: its moments, its penalty against a direct computation, and what it protects."""

import torch

from sleepcycle.anchor import Anchor
from sleepcycle.experts import ExpertBank
from unit.helpers import NEW as NEW_TEXT
from unit.helpers import OLD, micro_model, old_logits_moved

NEW = [NEW_TEXT]


def _ids(tok, texts):
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def _inputs(bank, seqs):
    """Every LoRA-wrapped projection's inputs over the sequences, one row per token (no padding)."""
    rows: dict = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, a, n=n: rows.setdefault(n, []).append(a[0].reshape(-1, a[0].shape[-1])))
        for n, m in bank.model.named_modules()
        if hasattr(m, "lora_A")
    ]
    with torch.no_grad():
        for s in seqs:  # one at a time: no padding to leave out
            bank.model(input_ids=torch.tensor([s]))
    for h in hooks:
        h.remove()
    return {n.removeprefix("base_model.model."): torch.cat(r) for n, r in rows.items()}


def test_moments_are_the_mean_input_second_moment_averaged_per_cycle():
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    day1, day2 = _ids(tok, OLD), _ids(tok, NEW)
    anchor = Anchor()
    anchor.update(bank.model, day1, pad_id=tok.pad_token_id)
    anchor.update(bank.model, day2, pad_id=tok.pad_token_id)
    x1, x2 = _inputs(bank, day1), _inputs(bank, day2)
    assert anchor.cycles == 2 and anchor.moments.keys() == x1.keys() and len(x1) > 0
    for name, sigma in anchor.moments.items():
        m1, m2 = x1[name].T @ x1[name] / len(x1[name]), x2[name].T @ x2[name] / len(x2[name])
        torch.testing.assert_close(sigma, (m1 + m2) / 2, rtol=1e-4, atol=1e-6)


def test_earlier_takes_the_newest_cycle_out_and_survives_a_reload(tmp_path):
    """Dreaming anchors to the cycles before the one it rehearses: `earlier` is the anchor before the last update."""
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    one = Anchor()
    one.update(bank.model, _ids(tok, OLD), pad_id=tok.pad_token_id)
    assert not one.earlier(), "one cycle: nothing before it"
    two = Anchor(dict(one.moments), one.cycles, dict(one.last))
    two.update(bank.model, _ids(tok, NEW), pad_id=tok.pad_token_id)
    two.save(tmp_path)
    for anchor in (two, Anchor.load(tmp_path)):
        before = anchor.earlier()
        assert before.cycles == 1 and before.moments.keys() == one.moments.keys()
        for name, sigma in before.moments.items():
            torch.testing.assert_close(sigma, one.moments[name], rtol=1e-4, atol=1e-6)
        assert not torch.allclose(anchor.moments[name], one.moments[name]), "the full anchor holds day 2 too"
    legacy = Anchor(dict(two.moments), two.cycles)  # written before `last` was kept: cannot take a cycle out
    assert not legacy.earlier()


def test_penalty_is_the_relative_output_change_on_old_inputs(tmp_path):
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    old = _ids(tok, OLD)
    anchor = Anchor()
    anchor.update(bank.model, old, pad_id=tok.pad_token_id)
    Anchor.load(tmp_path).save(tmp_path)  # an empty anchor writes nothing
    assert not (tmp_path / "anchor.safetensors").exists()
    anchor.save(tmp_path)
    anchor = Anchor.load(tmp_path)
    assert anchor.cycles == 1 and len(anchor.moments) == 6
    x = _inputs(bank, old)  # what the projections saw then
    slot = bank.activate(bank.free_slot())
    penalty = anchor.penalty(bank.model, slot)
    assert float(penalty().detach()) == 0.0  # B = 0: a fresh expert changes nothing
    with torch.no_grad():
        for p in bank.parameters(slot):
            p.add_(torch.randn_like(p) * 0.1)
    ratios = []
    for name, layer in bank.model.named_modules():
        if not hasattr(layer, "lora_A"):
            continue
        rows = x[name.removeprefix("base_model.model.")]
        delta = layer.lora_B[slot](layer.lora_A[slot](rows)) * layer.scaling[slot]
        ratios.append(float((delta**2).sum().detach() / (layer.get_base_layer()(rows) ** 2).sum().detach()))
    value = penalty()
    assert abs(float(value.detach()) - sum(ratios) / len(ratios)) < 1e-4 * max(ratios)
    value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in bank.parameters(slot))


def test_per_cycle_counts_the_penalty_once_for_every_cycle_held():
    model, tok = micro_model()
    bank = ExpertBank(model, rank=4, capacity=3)
    anchor = Anchor()
    anchor.update(bank.model, _ids(tok, OLD), pad_id=tok.pad_token_id)
    anchor.update(bank.model, _ids(tok, NEW), pad_id=tok.pad_token_id)
    slot = bank.activate(bank.free_slot())
    with torch.no_grad():
        for p in bank.parameters(slot):
            p.add_(torch.randn_like(p) * 0.1)
    mean = float(anchor.penalty(bank.model, slot)().detach())
    summed = float(anchor.penalty(bank.model, slot, per_cycle=True)().detach())
    assert anchor.cycles == 2 and mean > 0
    assert abs(summed - 2 * mean) < 1e-6 * summed


def _train_new_expert(weight: float) -> float:
    """Fit a fresh expert to the NEW text; return how much the logits on the OLD texts moved."""

    def train(bank, tok, anchor, slot):
        new = torch.tensor(_ids(tok, NEW))
        penalty = anchor.penalty(bank.model, slot)
        opt = torch.optim.Adam(bank.parameters(slot), lr=1e-2)
        for _ in range(30):
            loss = bank.model(input_ids=new, labels=new).loss + weight * penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()

    return old_logits_moved(train)


def test_the_anchor_keeps_old_outputs_closer_while_a_new_expert_trains():
    free, anchored = _train_new_expert(0.0), _train_new_expert(100.0)
    assert free > 0 and anchored < 0.5 * free
