"""The fused decoder computes what the HF forward computes: same logits (to float rounding) at prefill and
at every decode step, with left padding, grouped-query attention, attention biases and active experts;
the sampler built on it gives the HF loop's greedy decodes and falls back for models it does not know."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sleepcycle.experts import ExpertBank
from sleepcycle.fastdecode import Decoder
from sleepcycle.generate import _draw, sample_ids

VOCAB = 97


def _llama(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=VOCAB, hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4)
    cfg.update(kw)
    return LlamaForCausalLM(LlamaConfig(max_position_embeddings=128, **cfg)).eval()


def _qwen2():
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises biases to zero; make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    return model


def _with_experts():
    return _bank().model.eval()


def _with_attention_experts():
    return _bank("mlp+attention").model.eval()


def _bank(modules: str = "mlp"):
    bank = ExpertBank(_llama(), rank=4, capacity=3, modules=modules)
    bank.activate("e00")
    bank.activate("e01")
    with torch.no_grad():
        for name, p in bank.model.named_parameters():
            if "lora_B" in name:  # B = 0 would make the experts invisible
                p.normal_(0, 0.2)
    bank.deactivate("e01")  # an inactive slot with weights must not count
    bank.model.eval()
    return bank


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, VOCAB, (5, 11), generator=g)
    mask = torch.ones_like(ids)
    for row, pad in enumerate([0, 3, 1, 7, 10]):  # left padding, one prompt of a single token
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


def _hf_last_logits(model, ids, mask):
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1]


@pytest.mark.parametrize(
    "make", [_llama, lambda: _llama(num_key_value_heads=2), _qwen2, _with_experts, _with_attention_experts]
)
def test_prefill_and_every_step_match_the_hf_forward(make):
    model = make()
    assert Decoder.supports(model)
    ids, mask = _batch()
    dec = Decoder(model)
    got = dec.prefill(ids, mask, max_new_tokens=4)
    torch.testing.assert_close(got, _hf_last_logits(model, ids, mask), atol=1e-5, rtol=1e-5)
    g = torch.Generator().manual_seed(2)
    for _ in range(4):
        tok = torch.randint(3, VOCAB, (ids.shape[0],), generator=g)
        ids, mask = torch.cat([ids, tok[:, None]], 1), torch.cat([mask, torch.ones_like(tok)[:, None]], 1)
        got = dec.step(tok)
        torch.testing.assert_close(got, _hf_last_logits(model, ids, mask), atol=1e-5, rtol=1e-5)


def test_dropping_finished_rows_keeps_the_others_exact():
    model = _with_experts()
    ids, mask = _batch()
    dec = Decoder(model)
    dec.prefill(ids, mask, max_new_tokens=3)
    tok = torch.tensor([11, 12, 13, 14, 15])
    dec.step(tok)
    ids, mask = torch.cat([ids, tok[:, None]], 1), torch.cat([mask, torch.ones_like(tok)[:, None]], 1)
    rows = torch.tensor([1, 3, 4])  # rows 0 and 2 finished
    dec.keep(rows)
    nxt = torch.tensor([21, 22, 23])
    got = dec.step(nxt)
    ids, mask = torch.cat([ids[rows], nxt[:, None]], 1), torch.cat([mask[rows], torch.ones_like(nxt)[:, None]], 1)
    torch.testing.assert_close(got, _hf_last_logits(model, ids, mask), atol=1e-5, rtol=1e-5)


def test_experts_are_read_at_construction_time():
    bank = _bank()
    ids, mask = _batch()
    with_experts = Decoder(bank.model).prefill(ids, mask, 1)
    with bank.using([]) as model:  # every slot off: the base model's logits
        plain = Decoder(model).prefill(ids, mask, 1)
        torch.testing.assert_close(plain, _hf_last_logits(model, ids, mask), atol=1e-5, rtol=1e-5)
    assert (with_experts - plain).abs().max() > 1e-2


def test_sampler_greedy_decodes_equal_the_hf_loop_and_sampling_is_seeded():
    model = _with_experts()
    ids, mask = _batch()
    prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    limits = [6, 9, 3, 9, 9]
    fast = sample_ids(model, prompts, limits, eos_id=1, pad_id=0, fast=True)
    hf = sample_ids(model, prompts, limits, eos_id=1, pad_id=0, fast=False)
    assert fast == hf
    assert all(len(o) == lim or (len(o) < lim and o[-1] == 1) for o, lim in zip(fast, limits))

    def sampled(seed, fast):
        return sample_ids(model, prompts, 8, 1, 0, 1.0, torch.Generator().manual_seed(seed), fast=fast)

    assert sampled(5, True) == sampled(5, True)
    assert sampled(5, True) != sampled(6, True)
    # one uniform per live row on either path: while no row finishes early (no EOS id, one limit) the
    # fused sampler draws exactly the HF loop's tokens; after that it drops finished rows and draws fewer
    same = [sample_ids(model, prompts, 8, -1, 0, 1.0, torch.Generator().manual_seed(5), fast=f) for f in (1, 0)]
    assert same[0] == same[1]


def test_a_repeated_prompt_is_prefilled_once_and_sampled_independently(monkeypatch):
    model = _with_experts()
    ids, mask = _batch()
    prompts = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    repeated = [prompts[1]] * 4 + [prompts[3]] * 3 + [prompts[0]]
    prefilled = []
    real_prefill = Decoder.prefill
    monkeypatch.setattr(
        Decoder, "prefill", lambda self, i, m, n: prefilled.append(len(i)) or real_prefill(self, i, m, n)
    )

    def run(fast):
        return sample_ids(model, repeated, 8, -1, 0, 1.0, torch.Generator().manual_seed(3), fast=fast)

    fast = run(True)
    assert prefilled == [3]  # three distinct prompts, one prefill row each
    assert fast == run(False)  # the HF loop prefills all eight rows: the same draws, row by row
    assert len({tuple(o) for o in fast[:4]}) > 1  # copies of one prompt are sampled independently
    greedy = sample_ids(model, repeated, 8, 1, 0, fast=True)
    assert greedy == sample_ids(model, repeated, 8, 1, 0, fast=False)


def test_models_it_does_not_know_take_the_hf_loop():
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=2, n_positions=64)).eval()
    assert not Decoder.supports(gpt2)
    with pytest.raises(ValueError, match="model type 'gpt2'"):
        Decoder(gpt2)
    out = sample_ids(gpt2, [[5, 6, 7], [8]], 4, eos_id=1, pad_id=0)
    assert [len(o) <= 4 for o in out] == [True, True]


def test_draw_follows_the_distribution_and_never_picks_a_token_without_mass():
    logits = torch.log(torch.tensor([[0.7, 0.3, 0.0, 0.0]] * 4000))
    toks = _draw(logits, 1.0, torch.Generator().manual_seed(0))
    assert set(toks.tolist()) <= {0, 1}
    assert abs((toks == 0).float().mean().item() - 0.7) < 0.03  # 4000 draws: s.d. 0.007
    hot = _draw(torch.tensor([[2.0, 0.0]] * 4000), 0.5, torch.Generator().manual_seed(0))  # T sharpens
    p0 = torch.softmax(torch.tensor([4.0, 0.0]), -1)[0].item()
    assert abs((hot == 0).float().mean().item() - p0) < 0.02


@pytest.mark.parametrize("fast", [True, False])
def test_a_model_padded_beyond_the_tokenizer_never_samples_a_padding_row(fast):
    model = _llama(vocab_size=VOCAB + 8)
    with torch.no_grad():
        model.lm_head.weight[VOCAB:] = 5 * model.lm_head.weight[VOCAB:].sign()  # padding rows dominate
    prompts = [[5, 6, 7], [8, 9]] * 8

    def sampled(vocab):
        g = torch.Generator().manual_seed(0)
        return sum(sample_ids(model, prompts, 6, 1, 0, 1.0, g, fast=fast, vocab=vocab), [])

    assert max(sampled(None)) >= VOCAB, "the padding rows are likely: without the cut they are sampled"
    assert max(sampled(VOCAB)) < VOCAB
