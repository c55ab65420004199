"""Grow mode: Knowledge Seeding into a genuinely larger self (METHOD.md section 2, [ours]).

- ``grow_depth``: a new block after every existing one, a copy of its neighbour with the attention and
  MLP output projections set to zero, so each new block is the identity at the start.
- ``grow_width``: HyperCloning-style replication (Samragh et al., 2024): hidden size, heads and MLP width
  doubled; every linear map W becomes [[W, W], [W, W]] / 2, embeddings [E, E], so the hidden state is
  the old one written twice and the logits are unchanged (the output head is untied to stay exact).
- ``given``: a larger model of the same family from a path; tokenizers must agree token for token on
  the seed's vocabulary (padded vocabulary sizes may differ), else seeding is refused.

Before any training `preflight` checks KL(grown || seed) <= 1e-6 on a probe batch and identical greedy
decodes, and names the first layer whose output differs when they do not.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from sleepcycle.generate import sample_ids


class GrowError(RuntimeError):
    """Growth or alignment that would not preserve the seed's function; nothing was trained."""


def _check_llama(model: PreTrainedModel) -> None:
    if model.config.model_type != "llama":
        raise GrowError(f"growth is implemented for the Llama family, not {model.config.model_type!r}")


@torch.no_grad()
def grow_depth(seed: PreTrainedModel) -> tuple[LlamaForCausalLM, list[int]]:
    """Twice the blocks; returns the model and the indices of the new (identity) blocks."""
    _check_llama(seed)
    grown = copy.deepcopy(seed)
    layers, new = [], []
    for layer in seed.model.layers:
        layers.append(copy.deepcopy(layer))
        twin = copy.deepcopy(layer)
        twin.self_attn.o_proj.weight.zero_()
        twin.mlp.down_proj.weight.zero_()
        new.append(len(layers))
        layers.append(twin)
    for i, layer in enumerate(layers):
        layer.self_attn.layer_idx = i  # the KV cache is indexed by layer
    grown.model.layers = torch.nn.ModuleList(layers)
    grown.config.num_hidden_layers = len(layers)
    if getattr(grown.config, "layer_types", None):
        grown.config.layer_types = [grown.config.layer_types[0]] * len(layers)
    return grown, new


def _clone2(w: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.cat([w, w], 1), torch.cat([w, w], 1)], 0) / 2


@torch.no_grad()
def grow_width(seed: PreTrainedModel) -> LlamaForCausalLM:
    """Hidden size, heads and MLP width doubled (head size kept), function preserved."""
    _check_llama(seed)
    c = seed.config
    cfg = LlamaConfig(
        **{
            **c.to_dict(),
            "hidden_size": 2 * c.hidden_size,
            "intermediate_size": 2 * c.intermediate_size,
            "num_attention_heads": 2 * c.num_attention_heads,
            "num_key_value_heads": 2 * c.num_key_value_heads,
            "head_dim": c.hidden_size // c.num_attention_heads,
            "tie_word_embeddings": False,
        }
    )
    grown = LlamaForCausalLM(cfg)
    src, dst = dict(seed.named_parameters()), dict(grown.named_parameters())
    for name, p in dst.items():
        w = src.get(name, src.get("model.embed_tokens.weight") if name == "lm_head.weight" else None)
        if w is None:
            raise GrowError(f"no source for {name}")
        if name == "model.embed_tokens.weight":
            p.copy_(torch.cat([w, w], 1))
        elif name == "lm_head.weight":
            p.copy_(torch.cat([w, w], 1) / 2)
        elif w.dim() == 1:  # RMSNorm weights act per coordinate
            p.copy_(torch.cat([w, w]))
        else:
            p.copy_(_clone2(w))
    grown.eval()
    return grown


def check_tokenizers(seed_tok: PreTrainedTokenizerBase, student_tok: PreTrainedTokenizerBase) -> int:
    """The shared vocabulary size, if the student's tokenizer agrees with the seed's on every seed token."""
    a, b = seed_tok.get_vocab(), student_tok.get_vocab()
    mismatched = [t for t, i in a.items() if b.get(t) != i]
    if mismatched:
        raise GrowError(
            f"the larger model's tokenizer differs from the seed's ({len(mismatched)} of {len(a)} tokens "
            f"map to other ids, e.g. {mismatched[0]!r}); cross-size seeding needs the same tokenizer"
        )
    return len(a)


@torch.no_grad()
def preflight(
    seed: PreTrainedModel,
    grown: PreTrainedModel,
    tok: PreTrainedTokenizerBase,
    texts: list[str],
    depth_map: dict[int, int] | None = None,
    tol: float = 1e-6,
) -> dict:
    """Verify function preservation before training; raise GrowError naming the first differing layer."""
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    a = seed(**enc, output_hidden_states=True)
    b = grown(**enc, output_hidden_states=True)
    vocab = a.logits.shape[-1]
    mask = enc["attention_mask"].bool()
    pa = F.log_softmax(a.logits.float(), -1)
    pb = F.log_softmax(b.logits[..., :vocab].float(), -1)
    kl = float((pb.exp() * (pb - pa)).sum(-1)[mask].mean())
    prompts = [p[: max(1, len(p) // 2)] for p in tok(texts, add_special_tokens=False)["input_ids"]]
    # greedy decodes through the HF modules themselves (fast=False): they are what the preflight checks
    da = sample_ids(seed, prompts, 12, tok.eos_token_id, tok.pad_token_id, fast=False)
    db = sample_ids(grown, prompts, 12, tok.eos_token_id, tok.pad_token_id, fast=False)
    if kl <= tol and da == db:
        return {"kl": kl, "greedy_identical": True}
    width = a.hidden_states[0].shape[-1]
    layer_of = depth_map or {i: i for i in range(len(a.hidden_states))}
    for i, h in enumerate(a.hidden_states):
        g = b.hidden_states[layer_of.get(i, i)][..., :width]
        if not torch.allclose(h, g, atol=1e-4, rtol=1e-4):
            where = "the embeddings" if i == 0 else f"layer {i - 1} (model.layers.{i - 1})"
            raise GrowError(
                f"grown model differs from the seed at {where}: KL {kl:.2e}, greedy decodes "
                f"{'identical' if da == db else 'differ'}; refusing to train"
            )
    raise GrowError(f"grown model differs from the seed at the output head: KL {kl:.2e} > {tol}")
