"""Batched sampling for Llama-family models without the HF module stack: the CPU rollout fast path.

On-policy distillation spends most of a step sampling, and for the small models sleepcycle trains on a
CPU a decode step is almost all per-module Python overhead: HF's Llama (plus PEFT's LoRA wrappers on the
MLPs, one per expert slot) runs ~20 modules per layer for a [batch, 1] input. `Decoder` snapshots the
model's *effective* weights once per call (active experts folded into their MLP matrices, q/k/v and
gate/up fused into one matrix each) and runs prefill and decode as a handful of tensor ops per layer over
a pre-allocated KV cache. The arithmetic is HF's (RMSNorm in fp32, the model's own rotary frequencies and
scaling, SDPA), so logits agree with the HF forward to float rounding; `tests/unit/test_fastdecode.py`
holds it to that for plain models, grouped-query attention, attention biases and models with experts.

`Decoder.supports(model)` is the gate: Llama and Qwen2 without sliding windows, a static RoPE,
SiLU MLPs and plain LoRA experts. Anything else takes the HF loop in `sleepcycle.generate`.

    dec = Decoder.for_model(model)                     # None: not a model it knows
    logits = dec.prefill(ids, mask, max_new_tokens)   # [batch, vocab] at each prompt's last token
    logits = dec.step(tok)                             # [batch, vocab] after feeding tok [batch]
    dec.keep(rows)                                     # drop the rows that finished
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

FAMILIES = ("llama", "qwen2")
STATIC_ROPE = ("default", "linear", "llama3", "yarn")  # inv_freq fixed at init; "dynamic"/"longrope" rescale


def _inner(model: torch.nn.Module) -> torch.nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _weight(module: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight, bias) of a Linear as the forward pass sees it: a PEFT LoRA layer's active, unmerged
    adapters are folded into its base weight (B @ A * scaling, exactly what its forward adds)."""
    base = getattr(module, "base_layer", None)
    if base is None:
        return module.weight, module.bias
    weight = base.weight
    if not (module.disable_adapters or module.merged):
        for name in module.active_adapters:
            if name in module.lora_A:
                weight = weight + module.get_delta_weight(name)
    return weight, base.bias


def _unsupported(model: torch.nn.Module) -> str | None:
    inner = _inner(model)
    cfg = inner.config
    if cfg.model_type not in FAMILIES:
        return f"model type {cfg.model_type!r}"
    if getattr(cfg, "use_sliding_window", False) or (
        cfg.model_type != "qwen2" and getattr(cfg, "sliding_window", None)
    ):
        return "sliding-window attention"
    if cfg.hidden_act != "silu":
        return f"activation {cfg.hidden_act!r}"
    rotary = getattr(inner.model, "rotary_emb", None)
    if rotary is None or getattr(rotary, "rope_type", "default") not in STATIC_ROPE:
        return "rotary embedding"
    for m in inner.modules():
        if hasattr(m, "lora_A"):  # a PEFT LoRA layer: plain LoRA folds into a weight (dropout: eval mode)
            if any(getattr(m, "use_dora", {}).get(a, False) for a in m.active_adapters):
                return "DoRA adapters"
    return None


class Decoder:
    """One model's effective weights plus a KV cache, for one batch of left-padded prompts."""

    @staticmethod
    def supports(model: torch.nn.Module) -> bool:
        return _unsupported(model) is None

    @classmethod
    def for_model(cls, model: PreTrainedModel) -> Decoder | None:
        """A decoder for `model`, or None when it is not supported (checked once)."""
        return None if _unsupported(model) is not None else cls(model, checked=True)

    @torch.no_grad()
    def __init__(self, model: PreTrainedModel, checked: bool = False):
        why = None if checked else _unsupported(model)
        if why is not None:
            raise ValueError(f"the fast decoder does not support this model: {why}")
        inner = _inner(model)
        cfg, body = inner.config, inner.model
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.embed = body.embed_tokens.weight
        self.dtype, self.device = self.embed.dtype, self.embed.device
        self.layers = []
        for layer in body.layers:
            att, mlp = layer.self_attn, layer.mlp
            qkv = [_weight(getattr(att, n)) for n in ("q_proj", "k_proj", "v_proj")]
            gate, up = _weight(mlp.gate_proj), _weight(mlp.up_proj)
            biases = [b for _, b in qkv]
            self.layers.append(
                dict(
                    norm1=(layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
                    qkv=torch.cat([w for w, _ in qkv]),
                    qkv_b=None
                    if all(b is None for b in biases)
                    else torch.cat(
                        [
                            b if b is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
                            for (w, _), b in zip(qkv, biases)
                        ]
                    ),
                    o=_weight(att.o_proj),
                    norm2=(layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon),
                    gate_up=torch.cat([gate[0], up[0]]),
                    gate_up_b=None if gate[1] is None else torch.cat([gate[1], up[1]]),
                    down=_weight(mlp.down_proj),
                )
            )
        self.norm = (body.norm.weight, body.norm.variance_epsilon)
        self.head = _weight(inner.lm_head)
        self.inv_freq = body.rotary_emb.inv_freq.to(self.device, torch.float32)
        self.rope_scale = float(body.rotary_emb.attention_scaling)
        self.window = cfg.max_position_embeddings

    # ----- pieces ------------------------------------------------------------------------------------
    @staticmethod
    def _rms(x: torch.Tensor, norm: tuple[torch.Tensor, float]) -> torch.Tensor:
        return norm[0] * F.rms_norm(x.float(), x.shape[-1:], eps=norm[1]).to(x.dtype)

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and a signed sin [B, T, 1, hd] such that rope(x) = x*cos + swap_halves(x)*sin."""
        freqs = positions[..., None].float() * self.inv_freq
        cos = torch.cat([freqs, freqs], -1).cos() * self.rope_scale
        sin = torch.cat([-freqs, freqs], -1).sin() * self.rope_scale  # sin(-f) = -sin(f): rotate_half's sign
        return cos.to(self.dtype)[:, :, None], sin.to(self.dtype)[:, :, None]

    def _forward(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, T, d] of the new tokens at `positions`, whose keys/values go to cache slots
        [self.len, self.len + T); `mask` [B, 1, T, len + T] says which cached/new keys each query sees."""
        b, t, _ = x.shape
        start, end = self.len, self.len + t
        cos, sin = self._rope(positions)
        nq, nqk, half = self.heads * self.head_dim, (self.heads + self.kv_heads) * self.head_dim, self.head_dim // 2
        for i, L in enumerate(self.layers):
            h = F.linear(self._rms(x, L["norm1"]), L["qkv"], L["qkv_b"])
            qk = h[..., :nqk].view(b, t, self.heads + self.kv_heads, self.head_dim)  # q and k rotate together
            qk = qk * cos + torch.cat([qk[..., half:], qk[..., :half]], -1) * sin
            q = qk[:, :, : self.heads].transpose(1, 2)
            self.k[i][:, :, start:end] = qk[:, :, self.heads :].transpose(1, 2)
            self.v[i][:, :, start:end] = h[..., nqk:].view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
            att = F.scaled_dot_product_attention(
                q,
                self.k[i][:, :, :end],
                self.v[i][:, :, :end],
                attn_mask=mask,
                enable_gqa=self.kv_heads != self.heads,
            )
            x = x + F.linear(att.transpose(1, 2).reshape(b, t, nq), *L["o"])
            gate, up = F.linear(self._rms(x, L["norm2"]), L["gate_up"], L["gate_up_b"]).chunk(2, -1)
            x = x + F.linear(F.silu(gate) * up, *L["down"])
        self.len = end
        return x

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._rms(x, self.norm), *self.head)

    # ----- public ------------------------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Run left-padded prompts `ids` [B, T] (`mask` 1 on real tokens) and make room for
        `max_new_tokens` more; logits [B, vocab] at each prompt's last position."""
        b, t = ids.shape
        total = t + max_new_tokens
        shape = (b, self.kv_heads, total, self.head_dim)
        self.k = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.v = [torch.empty(shape, dtype=self.dtype, device=self.device) for _ in self.layers]
        self.keys = torch.zeros((b, total), dtype=torch.bool, device=self.device)
        self.keys[:, :t] = mask.bool()
        self.positions = (mask.cumsum(1) - 1).clamp(min=0)
        self.len = 0
        causal = torch.ones((t, t), dtype=torch.bool, device=self.device).tril()
        # a padding query sees itself too: a row with no visible key would give NaN values in the cache
        see = (causal & self.keys[:, None, :t]) | torch.eye(t, dtype=torch.bool, device=self.device)
        x = self._forward(F.embedding(ids, self.embed), self.positions, see[:, None])
        self.last = self.positions[:, -1]
        return self._logits(x[:, -1])

    @torch.no_grad()
    def keep(self, rows: torch.Tensor) -> None:
        """Go on with these batch rows (their caches, masks and positions): the ones still decoding, or
        copies of rows (an index may repeat: one prefilled prompt sampled several times)."""
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]
        self.keys, self.last = self.keys.index_select(0, rows), self.last.index_select(0, rows)

    @torch.no_grad()
    def step(self, tok: torch.Tensor) -> torch.Tensor:
        """Feed one token per row; logits [B, vocab] for the next one."""
        self.keys[:, self.len] = True
        self.last = self.last + 1
        see = self.keys[:, None, None, : self.len + 1]
        x = self._forward(F.embedding(tok[:, None], self.embed), self.last[:, None], see)
        return self._logits(x[:, -1])
