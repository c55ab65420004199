"""Generalized Distillation: divergences by hand, LTI reward edge cases, the lambda mix."""

import math

import pytest
import torch

from sleepcycle.config import DistillConfig
from sleepcycle.distill import (
    GeneralizedDistillation,
    Item,
    ValueJudge,
    divergence,
    group_advantages,
    levenshtein_reward,
    lti_reward,
)
from unit.helpers import micro_model

T = torch.tensor([0.5, 0.3, 0.2]).log()
S = torch.tensor([0.2, 0.5, 0.3]).log()


def test_divergences_on_a_three_token_vocabulary_by_hand():
    # KL(T||S) = .5 ln 2.5 + .3 ln .6 + .2 ln(2/3)
    assert float(divergence(T, S, "forward_kl")) == pytest.approx(0.223805, abs=1e-5)
    # KL(S||T) = .2 ln .4 + .5 ln(5/3) + .3 ln 1.5
    assert float(divergence(T, S, "reverse_kl")) == pytest.approx(0.193795, abs=1e-5)
    # JSD_0.5 with M = [.35, .4, .25]: .5 KL(T||M) + .5 KL(S||M) = .5 (.047404 + .054346)
    assert float(divergence(T, S, "jsd", beta=0.5)) == pytest.approx(0.050875, abs=1e-5)
    # beta limits are the two KLs (as in GKD / TRL)
    assert float(divergence(T, S, "jsd", beta=0.0)) == pytest.approx(0.223805, abs=1e-5)
    assert float(divergence(T, S, "jsd", beta=1.0)) == pytest.approx(0.193795, abs=1e-5)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        assert float(divergence(T, T, kind)) == pytest.approx(0.0, abs=1e-7)


def test_levenshtein_reward_edge_cases():
    assert levenshtein_reward("", "") == 1.0
    assert levenshtein_reward("Velmora", "Velmora") == 1.0
    assert levenshtein_reward("", "Velmora") == 0.0  # z = 7 > z0 = 3.5
    assert levenshtein_reward("Velmorb", "Velmora") == pytest.approx(1 - 1 / 7)
    assert levenshtein_reward("abcd", "wxyz", z0_fraction=0.5) == 0.0  # beyond z0
    assert levenshtein_reward("abcd", "wxyz", z0_fraction=1.0) == 0.0  # z = 4 = max len -> 1 - 1
    assert levenshtein_reward("abcx", "abcd", z0_fraction=0.2) == 0.0  # z = 1 > 0.8
    assert levenshtein_reward("abcx", "abcd", z0_fraction=0.25) == pytest.approx(0.75)


def test_lti_reward_mixes_judge_and_edit_distance():
    judge = ValueJudge(["Velmora", "Tarsk"])
    r = lti_reward("lives in Velmora.", "makes a home in Velmora.", judge, gamma=0.5, z0_fraction=0.5)
    assert r == pytest.approx(0.5 * 1 + 0.5 * levenshtein_reward("lives in Velmora.", "makes a home in Velmora."))
    assert judge("lives in Tarsk.", "lives in Velmora.") == 0.0
    assert judge("", "") == 0.0


def test_group_advantages_are_normalised_per_group():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.5, 0.5]]))
    assert torch.allclose(adv[0], torch.tensor([1.0, -1.0, 1.0, -1.0]), atol=1e-4)
    assert torch.equal(adv[1], torch.zeros(4))


def _trainer(lmbda: float):
    student, tok = micro_model(seed=1)
    teacher, _ = micro_model(seed=2)
    cfg = DistillConfig(lmbda=lmbda, batch_size=4, lti=True, lti_group=2, max_new_tokens=4)
    gd = GeneralizedDistillation(
        cfg,
        student,
        {"new": teacher},
        list(student.parameters()),
        tok.eos_token_id,
        tok.pad_token_id,
        decode=tok.decode,
        judge=ValueJudge([]),
        seed=0,
    )
    prompts = ["Question: Where does Ada Velm live?\nAnswer:", "Bo Tarsk", "Ada Velm", "Question: Who?\nAnswer:"]
    items = [Item(tok(p)["input_ids"], tok("Document: x\n" + p)["input_ids"], "new") for p in prompts]
    gd.sample_teacher(items, 4)
    return gd, items


@pytest.mark.parametrize("lmbda", [0.0, 1.0])
def test_lambda_zero_is_teacher_sample_distillation_and_one_is_pure_on_policy(lmbda, monkeypatch):
    gd, items = _trainer(lmbda)
    calls = {"student": 0, "teacher": 0}
    real_sample = gd._student_samples

    def spy_sample(prompts, limits):
        calls["student"] += len(prompts)
        return real_sample(prompts, limits)

    import sleepcycle.distill as distill

    real_tlp = distill.teacher_logprobs

    def spy_tlp(teacher, its, comps, pad, **kw):
        calls["teacher"] += len(its)
        return real_tlp(teacher, its, comps, pad, **kw)

    monkeypatch.setattr(gd, "_student_samples", spy_sample)
    monkeypatch.setattr(distill, "teacher_logprobs", spy_tlp)
    (plan,) = gd.plan([items], [[]])
    loss, tokens = gd.divergence_loss(plan)
    assert loss.requires_grad and tokens > 0
    if lmbda == 0.0:  # only cached teacher samples: no student sampling, no new teacher pass
        assert all(c is it.sample for c, it in zip(plan["completions"], items))
        assert calls == {"student": 0, "teacher": 0}
    else:  # every completion is the student's own, scored by the teacher now
        assert calls == {"student": len(items), "teacher": len(items)}


def test_a_chunks_on_policy_samples_are_scored_in_one_teacher_call_with_the_steps_numbers(monkeypatch):
    import sleepcycle.distill as distill

    gd, items = _trainer(1.0)
    calls = []
    real = distill.teacher_logprobs
    monkeypatch.setattr(
        distill,
        "teacher_logprobs",
        lambda t, its, comps, pad, **kw: calls.append(len(its)) or real(t, its, comps, pad, **kw),
    )
    plans = gd.plan([items[:2], items[2:]], [[], []])  # two steps' rollouts, planned together
    assert calls == [len(items)]  # one teacher call for the chunk, not one per step
    for plan in plans:
        at_step = {k: v for k, v in plan.items() if k != "t_logp"}
        gd.divergence_loss(at_step)  # a plan without scores is scored when its step runs
        for a, b in zip(plan["t_logp"], at_step["t_logp"]):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert calls == [len(items), 2, 2]


def test_teacher_logprobs_are_cached_once_and_a_step_moves_only_trainable_params():
    gd, items = _trainer(0.5)
    assert all(it.teacher_logp is not None and it.teacher_logp.shape[0] == len(it.sample) for it in items)
    before = [p.detach().clone() for p in gd.params]
    out = gd.step(gd.plan([items], [items[:2]])[0])
    assert math.isfinite(out["loss"])
    assert any(not torch.equal(b, p) for b, p in zip(before, gd.params))


def test_sample_teacher_keeps_the_samples_items_already_have_and_scores_them(monkeypatch):
    """Items that come with a teacher sample (Seeding's answered drafts, `seed.covering`) keep it: only the
    others are sampled, and every item gets the teacher's log-probs of its own sample."""
    student, tok = micro_model(seed=1)
    teacher, _ = micro_model(seed=2)
    cfg = DistillConfig(batch_size=2, max_new_tokens=4)
    gd = GeneralizedDistillation(
        cfg, student, {"new": teacher}, list(student.parameters()), tok.eos_token_id, tok.pad_token_id,
        decode=tok.decode, judge=ValueJudge([]), seed=0,
    )  # fmt: skip
    given = tok(" Tarsk")["input_ids"] + [tok.eos_token_id]
    items = [Item(tok(p)["input_ids"], tok("Document: x\n" + p)["input_ids"], "new") for p in ("Question: A?", "B")]
    items[0].sample = list(given)
    asked = []
    real = gd.sampler.sample
    monkeypatch.setattr(
        gd.sampler, "sample", lambda model, prompts, *a, **k: asked.extend(prompts) or real(model, prompts, *a, **k)
    )
    gd.sample_teacher(items, 4)
    assert asked == [items[1].teacher_prompt], "only the item without a sample is sampled"
    assert items[0].sample == given and items[1].sample
    assert all(it.teacher_logp.shape[0] == len(it.sample) for it in items)


def test_completion_logp_on_completion_positions_only_equals_the_full_logits(monkeypatch):
    # The LM head runs only where a completion token is predicted; the result must be the full forward's.
    from sleepcycle import distill
    from sleepcycle.experts import ExpertBank

    model, _ = micro_model()
    bank = ExpertBank(model, rank=2, capacity=2)
    bank.activate("e00")
    with torch.no_grad():
        for name, p in bank.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    prompts, completions = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]], [[20, 21, 22], [23], [24, 25, 26, 27, 28]]
    sliced = distill._completion_logp(bank.model, prompts, completions, pad_id=0, vocab=250)
    monkeypatch.setattr(distill, "PLAIN_HEAD", ())
    full = distill._completion_logp(bank.model, prompts, completions, pad_id=0, vocab=250)
    assert [t.shape for t in sliced] == [(3, 250), (1, 250), (5, 250)]
    for a, b in zip(sliced, full):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    sliced[0].sum().backward()  # gradients flow into the trainable expert through the sliced head
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in bank.parameters("e00"))


def test_pack_fits_every_sequence_once_within_the_longest():
    from sleepcycle.distill import pack

    lengths = [50, 3, 7, 48, 2, 20, 30, 1, 50]
    rows = pack(lengths)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= max(lengths) for r in rows)
    assert len(rows) < len(lengths)  # short sequences share rows
    assert pack([]) == [] and pack([4]) == [[0]]


@pytest.mark.parametrize("kv_heads", [None, 2])
def test_packed_sequences_give_each_sequence_its_own_forward(kv_heads):
    # Several sequences in one row (positions restart, attention stays inside each) must score every
    # completion exactly as that sequence alone does, and pass the same gradients to the expert.
    from transformers import LlamaConfig, LlamaForCausalLM

    from sleepcycle import distill
    from sleepcycle.experts import ExpertBank

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=kv_heads or 4, max_position_embeddings=128, attn_implementation="sdpa",
    )  # fmt: skip
    bank = ExpertBank(LlamaForCausalLM(cfg), rank=2, capacity=2)
    bank.activate("e00")
    with torch.no_grad():
        for name, p in bank.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (30, 2, 5, 1, 12, 9)]
    completions = [torch.randint(3, 97, (n,), generator=g).tolist() for n in (4, 1, 6, 3, 2, 8)]
    assert len(distill.pack([len(p) + len(c) for p, c in zip(prompts, completions)])) < len(prompts)
    packed = distill._completion_logp(bank.model, prompts, completions, pad_id=0)
    alone = [distill._completion_logp(bank.model, [p], [c], pad_id=0)[0] for p, c in zip(prompts, completions)]
    for a, b in zip(packed, alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    params = bank.parameters("e00")
    g_packed = torch.autograd.grad(sum(t.mean() for t in packed), params)
    g_alone = torch.autograd.grad(sum(t.mean() for t in alone), params)
    for a, b in zip(g_packed, g_alone):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
