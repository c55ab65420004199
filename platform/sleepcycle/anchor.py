"""[ours] Activation anchor: keep a new expert from changing what earlier cycles' inputs produce.

Forgetting in Seeding is interference: the expert trained on day k+1 is added to the same MLP
projections that hold day k, and the old entities' answers drift to plausible values of recent days
(bench/README.md). The replay arm holds the few records of the bounded buffer; nothing holds the rest.

For every expert-bearing projection W, the anchor keeps the second moment of its inputs over the texts
earlier cycles trained on (their distillation prompts and teacher samples, as the student saw them):

    Σ = mean over cycles of E_x[x xᵀ]

A new expert ΔW = s·B·A changes that projection's output on those inputs by E‖ΔW x‖² = s²·tr(B A Σ Aᵀ Bᵀ).
Seeding adds this, relative to the projection's own output energy tr(W Σ Wᵀ) and averaged over the
projections, as a penalty with weight `distill.anchor`. It is the per-layer quadratic form of "do not
change the outputs on the old days' inputs": every old text counts, and none is kept, only one
d_in × d_in matrix per projection (`anchor.safetensors` in the checkpoint, beside the experts).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel

from sleepcycle.trainer import collate

ANCHOR_FILE = "anchor.safetensors"
_COUNT = "__cycles__"
_LAST = "last/"


class Anchor:
    """Second moments of the expert-bearing projections' inputs, averaged over earlier cycles. `last` holds the
    newest cycle's own moments, so Dreaming can anchor to the cycles before it (`earlier`)."""

    def __init__(
        self,
        moments: dict[str, torch.Tensor] | None = None,
        cycles: int = 0,
        last: dict[str, torch.Tensor] | None = None,
    ):
        self.moments = dict(moments or {})
        self.cycles = cycles
        self.last = dict(last or {})

    def __bool__(self) -> bool:
        return self.cycles > 0 and bool(self.moments)

    # ----- storage ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, checkpoint: Path) -> Anchor:
        path = Path(checkpoint) / ANCHOR_FILE
        if not path.exists():
            return cls()
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
            cycles = int(tensors.pop(_COUNT).item())
        except Exception as e:  # safetensors raises its own error types for a damaged file
            raise ValueError(f"{path}: not an activation anchor ({e})") from e
        last = {k.removeprefix(_LAST): tensors.pop(k) for k in [k for k in tensors if k.startswith(_LAST)]}
        return cls(tensors, cycles, last)

    def save(self, checkpoint: Path) -> None:
        if not self:
            return
        from safetensors.torch import save_file

        tensors = {k: v.contiguous() for k, v in sorted(self.moments.items())}
        tensors |= {_LAST + k: v.contiguous() for k, v in sorted(self.last.items())}
        save_file({**tensors, _COUNT: torch.tensor([self.cycles])}, str(Path(checkpoint) / ANCHOR_FILE))

    def earlier(self) -> Anchor:
        """The anchor without its newest cycle: what Dreaming's consolidation protects, since the newest
        cycle's texts are the ones the newest expert is meant to change. Empty after a single cycle, and for
        a checkpoint written before `last` was kept (its newest cycle cannot be taken out)."""
        if self.cycles < 2 or not self.last:
            return Anchor()
        n = self.cycles
        moments = {k: (v * n - self.last[k]) / (n - 1) for k, v in self.moments.items() if k in self.last}
        return Anchor(moments, n - 1)

    # ----- collecting ------------------------------------------------------------------------------
    @torch.no_grad()
    def update(
        self,
        model: PreTrainedModel,
        sequences: Sequence[list[int]],
        pad_id: int,
        batch_size: int = 32,
    ) -> None:
        """Add one cycle: the inputs' second moment of every LoRA-wrapped projection of `model` over the
        token sequences (padding excluded), averaged in with equal weight per cycle."""
        if not sequences:
            return
        sums: dict[str, torch.Tensor] = {}
        count = 0
        mask: torch.Tensor | None = None

        def hook(name: str):
            def pre(_module, args):
                x = args[0].detach().float()
                rows = x.reshape(-1, x.shape[-1])[mask.reshape(-1)]
                acc = rows.T @ rows
                sums[name] = sums[name] + acc if name in sums else acc

            return pre

        handles = [m.register_forward_pre_hook(hook(n)) for n, m in _projections(model)]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        try:
            order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
            for lo in range(0, len(order), batch_size):
                batch = collate(
                    [(sequences[i], [False] * len(sequences[i])) for i in order[lo : lo + batch_size]], pad_id
                )
                ids, attn = batch["input_ids"].to(device), batch["attention_mask"].to(device)
                mask = attn.bool()
                count += int(attn.sum())
                model(input_ids=ids, attention_mask=attn)
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        for name, total in sums.items():
            day = total.cpu() / max(1, count)
            old = self.moments.get(name)
            self.moments[name] = day.clone() if old is None else (old * self.cycles + day) / (self.cycles + 1)
            self.last[name] = day
        self.cycles += 1

    # ----- the penalty -----------------------------------------------------------------------------
    def penalty(self, model: PreTrainedModel, slot: str, per_cycle: bool = False) -> _Penalty:
        """The penalty on expert `slot` of `model` (call the result for the current value). `per_cycle`
        counts it once for every cycle held (times `cycles`) instead of once for their average, so that each
        earlier cycle keeps the same weight however many follow it."""
        terms = []
        for name, layer in _projections(model):
            sigma = self.moments.get(name)
            if sigma is None or slot not in layer.lora_A:
                continue
            weight = layer.get_base_layer().weight.detach().float().to(sigma.device)
            own = float(((weight @ sigma) * weight).sum())  # tr(W Σ Wᵀ)
            a, b = layer.lora_A[slot].weight, layer.lora_B[slot].weight
            terms.append((a, b, layer.scaling[slot] ** 2, sigma.to(a.device), max(own, 1e-12)))
        return _Penalty(terms, float(self.cycles) if per_cycle else 1.0)


class _Penalty:
    """Mean over projections of E_old‖ΔW x‖² / E_old‖W x‖² (times `scale`), differentiable in the expert's
    A and B."""

    def __init__(self, terms: list, scale: float = 1.0):
        self.terms = terms
        self.scale = scale

    def __bool__(self) -> bool:
        return bool(self.terms)

    def __call__(self) -> torch.Tensor:
        # tr(B A Σ Aᵀ Bᵀ) as the sum of (BᵀB) ⊙ (A Σ Aᵀ): two r x r matrices, never a d_out x d_in one
        ratios = [s2 * ((b.T @ b) * (a @ sigma @ a.T)).sum() / own for a, b, s2, sigma, own in self.terms]
        return torch.stack(ratios).mean() * self.scale


def _projections(model: torch.nn.Module) -> Iterator[tuple[str, LoraLayer]]:
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            yield _key(name), module


def _key(module_name: str) -> str:
    """The projection's name without PEFT's wrapper prefix (stable across bank reloads and deep sleeps)."""
    return module_name.removeprefix("base_model.model.")
