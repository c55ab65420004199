"""Low-rank experts on the MLP blocks, pre-allocated and masked until activated; the checkpoint layout.

An expert is a PEFT LoRA adapter on the MLP projections of every block (gate/up/down for Llama and
Qwen, c_fc/c_proj for GPT-2). An `ExpertBank` creates all of its slots up front (``e00``..``eNN`` for
level 1, ``fast`` for level-0 fast weights, ``dream`` for Dreaming's random extra expert), each with
B = 0, and keeps a mask of the active ones: activating a fresh slot leaves every logit unchanged, no
tensor is ever resized, and only the newest expert is trainable.

A checkpoint is a directory:

    base/                 HF save_pretrained (model + tokenizer), untouched by a sleep
    experts/<slot>/       PEFT adapter (adapter_config.json + adapter_model.safetensors) per active expert
    sleep.json            active slots in order, capacity, rank, cycle, deep-sleep history

so a cycle adds megabytes (its expert), not a model, and plain transformers + PEFT load it:
``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("base"), "experts/e00")``.
When level 1 is full, a deep sleep merges its experts into the base and frees the level.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sleepcycle import models

FAST, DREAM = "fast", "dream"
SLEEP_JSON = "sleep.json"

# MLP projection names by model family; anything else falls back to Linear layers under an "mlp" module.
_MLP_TARGETS = {
    "llama": ["gate_proj", "up_proj", "down_proj"],
    "qwen2": ["gate_proj", "up_proj", "down_proj"],
    "qwen3": ["gate_proj", "up_proj", "down_proj"],
    "mistral": ["gate_proj", "up_proj", "down_proj"],
    "gpt2": ["mlp.c_fc", "mlp.c_proj"],
}
_ATTENTION_TARGETS = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "gpt2": ["attn.c_attn", "attn.c_proj"],
}
EXPERT_MODULES = ("mlp", "mlp+attention")
"""Where an expert's low-rank deltas sit (`distill.expert_modules`): the MLP projections, or the attention
projections as well."""


def mlp_targets(model: PreTrainedModel) -> list[str]:
    known = _MLP_TARGETS.get(model.config.model_type)
    if known:
        return known
    names = sorted(
        {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".mlp." in f".{n}"}
    )
    if not names:
        raise ValueError(f"cannot find MLP projections in a {model.config.model_type!r} model")
    return names


def expert_targets(model: PreTrainedModel, modules: str = "mlp") -> list[str]:
    """The projections an expert adapts for `modules` (`EXPERT_MODULES`): `mlp_targets`, with the attention
    projections before them for ``mlp+attention`` (known families only: a guess could adapt the wrong layers)."""
    if modules not in EXPERT_MODULES:
        raise ValueError(f"unknown expert modules {modules!r} ({' or '.join(EXPERT_MODULES)})")
    targets = mlp_targets(model)
    if modules == "mlp":
        return targets
    attention = _ATTENTION_TARGETS.get(model.config.model_type)
    if not attention:
        raise ValueError(
            f"the attention projections of a {model.config.model_type!r} model are not known: use expert modules mlp"
        )
    return attention + targets


def slot_name(k: int) -> str:
    return f"e{k:02d}"


class ExpertBank:
    """A base model with pre-allocated low-rank expert slots and a mask of the active ones. `modules` says
    where every slot's deltas sit (`expert_targets`); a checkpoint stores it beside the rank."""

    def __init__(
        self,
        base: PreTrainedModel,
        rank: int,
        capacity: int,
        active: list[str] | None = None,
        modules: str = "mlp",
    ):
        self.rank, self.capacity, self.modules = rank, capacity, modules
        self.slots = [slot_name(k) for k in range(capacity)] + [FAST, DREAM]
        config = LoraConfig(
            r=rank,
            lora_alpha=rank,
            lora_dropout=0.0,
            target_modules=expert_targets(base, modules),
            bias="none",
            init_lora_weights=True,
        )
        with warnings.catch_warnings():  # PEFT reads transformers' deprecated alias; nothing for a user to do
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            self.model: PeftModel = get_peft_model(base, config, adapter_name=self.slots[0])
        for name in self.slots[1:]:
            self.model.add_adapter(name, config)
        self.active: list[str] = []
        self.trainable: str | None = None
        self._apply(list(active or []))

    # ----- the mask --------------------------------------------------------------------------------
    def _layers(self) -> Iterator[LoraLayer]:
        return (m for m in self.model.modules() if isinstance(m, LoraLayer))

    def _apply(self, names: list[str]) -> None:
        unknown = set(names) - set(self.slots)
        if unknown:
            raise KeyError(f"no expert slot {sorted(unknown)}")
        for layer in self._layers():
            layer.set_adapter(names)  # PEFT toggles requires_grad here; we reset it just below
        self.model.base_model.active_adapter = names
        for p in self.model.parameters():
            p.requires_grad = False
        if self.trainable:
            for p in self.parameters(self.trainable):
                p.requires_grad = True
        self.active = names

    def parameters(self, name: str) -> list[torch.nn.Parameter]:
        return [p for n, p in self.model.named_parameters() if f".{name}." in n and "lora_" in n]

    def free_slot(self) -> str | None:
        return next((s for s in self.slots[: self.capacity] if s not in self.active), None)

    def activate(self, name: str, trainable: bool = True) -> str:
        """Switch `name` on (it must be fresh: B = 0, so the function is unchanged) and make it the only
        trainable expert."""
        if name in self.active:
            raise ValueError(f"expert {name} is already active")
        self.trainable = name if trainable else None
        self._apply(self.active + [name])
        return name

    def freeze(self) -> None:
        self.trainable = None
        self._apply(self.active)

    def deactivate(self, name: str) -> None:
        if self.trainable == name:
            self.trainable = None
        self._apply([a for a in self.active if a != name])

    @contextmanager
    def folded(self) -> Iterator[PeftModel]:
        """Run with the frozen active experts folded into the base weights and only the trainable one
        switched on: the same function up to float rounding, without a frozen expert's two small matmuls
        per projection in every forward and backward pass. [ours] For Seeding's training loop, where they
        were half of the PEFT layers' time by day 5. The base weights are restored bit-exactly after."""
        frozen = [n for n in self.active if n != self.trainable]
        if self.trainable is None or not frozen:
            yield self.model
            return
        saved = []
        with torch.no_grad():
            for layer in self._layers():
                names = [n for n in frozen if n in layer.lora_A]
                if names:
                    weight = layer.get_base_layer().weight
                    saved.append((weight, weight.detach().clone()))
                    for n in names:
                        weight += layer.get_delta_weight(n).to(weight.dtype)
        active = list(self.active)
        self._apply([self.trainable])
        try:
            yield self.model
        finally:
            with torch.no_grad():
                for weight, original in saved:
                    weight.copy_(original)
            self._apply(active)

    @contextmanager
    def using(self, names: list[str]) -> Iterator[PeftModel]:
        """Temporarily run with another set of active experts (e.g. the teacher without the new one)."""
        saved, saved_trainable = list(self.active), self.trainable
        self.trainable = saved_trainable if saved_trainable in names else None
        self._apply(list(names))
        try:
            yield self.model
        finally:
            self.trainable = saved_trainable
            self._apply(saved)

    @torch.no_grad()
    def reset(self, name: str) -> None:
        """Re-initialise a slot (fresh A, B = 0) and switch it off: its capacity is free again."""
        for layer in self._layers():
            if name in layer.lora_A:
                layer.reset_lora_parameters(name, init_lora_weights=True)
        self.deactivate(name)

    @torch.no_grad()
    def load_delta(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        """Set slot `name` from another bank's `delta(...)` (used by dreaming's random extra expert)."""
        own = dict(self.model.named_parameters())
        for key, value in tensors.items():
            own[key.replace(".{slot}.", f".{name}.")].copy_(value)

    def delta(self, name: str) -> dict[str, torch.Tensor]:
        return {
            n.replace(f".{name}.", ".{slot}."): p.detach().clone()
            for n, p in self.model.named_parameters()
            if f".{name}." in n and "lora_" in n
        }

    # ----- views -----------------------------------------------------------------------------------
    def merged(self) -> PreTrainedModel:
        """A plain model with the active experts folded into the weights (for evaluation and serving)."""
        if not self.active:  # unload, not get_base_model(): that keeps the empty slots injected
            return self.unloaded()
        model = copy.deepcopy(self.model)
        model.base_model.set_adapter(self.active)
        return model.merge_and_unload(adapter_names=self.active)

    def unloaded(self) -> PreTrainedModel:
        """A copy of the base model without any expert (the weights that base/ stores)."""
        return copy.deepcopy(self.model).unload()


# ----- checkpoints ---------------------------------------------------------------------------------


NOT_MODEL_FILES = ("manifest.json", SLEEP_JSON, "anchor.safetensors", "*.jsonl", "README.md")
"""What a checkpoint directory holds beside its model files (never copied into a base/)."""


def stored_base(path: Path) -> Path:
    """The directory holding a checkpoint's base weights: its base/, or a plain model directory itself."""
    return path / "base" if (path / "base").is_dir() else path


def _model_files_only(directory: str, names: list[str]) -> set[str]:
    """A `shutil.copytree` ignore: subdirectories, checkpoint metadata, and other weight formats beside
    safetensors (hub folders may ship both)."""
    root = Path(directory)
    skip = {n for n in names if (root / n).is_dir() or any(fnmatch.fnmatch(n, p) for p in NOT_MODEL_FILES)}
    if any(n.endswith(".safetensors") and n not in skip for n in names):
        skip |= {n for n in names if n.endswith((".bin", ".pt", ".pth", ".h5", ".msgpack"))}
    return skip


def save_checkpoint(
    bank: ExpertBank, tokenizer: PreTrainedTokenizerBase, path: Path, state: dict, base_dir: Path | None = None
) -> Path:
    """Write base/, experts/, sleep.json. base/ is a copy of the model files in `base_dir` when given
    (a champion's base/, or a plain model directory: the weights stay byte-identical, and a first cycle
    does not serialise the base again), else the bank's base saved."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if base_dir is not None:
        shutil.copytree(base_dir, path / "base", dirs_exist_ok=True, ignore=_model_files_only)
    else:
        models.save(bank.unloaded(), tokenizer, path / "base")
    trained = [s for s in bank.active]
    if trained:
        bank.model.save_pretrained(path / "experts", selected_adapters=trained)
        _portable_adapters(path / "experts")
    state = {**state, "active": bank.active, "capacity": bank.capacity, "rank": bank.rank, "modules": bank.modules}
    (path / SLEEP_JSON).write_text(json.dumps(state, indent=2))
    return path


def _portable_adapters(experts: Path) -> None:
    """PEFT records where the base model was loaded from (and writes a model card naming it): a path of
    the machine that trained it. The checkpoint's own base/ is the base, so the field says so, and the
    same weights get the same digest wherever, and by whichever process, they were written."""
    for card in experts.rglob("README.md"):
        card.unlink()
    for cfg_path in experts.rglob("adapter_config.json"):
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = "../base"
        if isinstance(cfg.get("target_modules"), list):  # a set inside PEFT: its order follows the hash seed
            cfg["target_modules"] = sorted(cfg["target_modules"])
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def read_state(path: Path) -> dict:
    p = Path(path) / SLEEP_JSON
    return json.loads(p.read_text()) if p.exists() else {"active": [], "cycle": 0}


def load_checkpoint(
    path: Path, rank: int | None = None, capacity: int | None = None, modules: str | None = None
) -> tuple[ExpertBank, PreTrainedTokenizerBase, dict]:
    """Load base + experts into a bank. A plain HF directory (no base/) loads as a bank with no experts.
    What the checkpoint stored wins over `rank`, `capacity` and `modules`, which apply to a checkpoint that
    stored none (a pretrained base); a checkpoint written before `modules` existed has its experts on the MLP.
    Asking for `modules` other than the stored ones is an error: a line's experts keep one layout."""
    path = Path(path)
    base, tok = models.load(stored_base(path))
    state = read_state(path)
    stored = state.get("modules", "mlp" if state.get("active") else None)
    if modules is not None and stored is not None and modules != stored:
        raise ValueError(f"{path}: its experts sit on {stored!r}, not {modules!r} (a line keeps one layout)")
    bank = ExpertBank(
        base,
        rank=state.get("rank", rank or 16),
        capacity=state.get("capacity", capacity or 5),
        modules=stored or modules or "mlp",
    )
    for name in state.get("active", []):
        adapter_dir = path / "experts" / name
        if not adapter_dir.is_dir():
            raise models.ModelLoadError(f"{path}: expert {name} is listed active but {adapter_dir} is missing")
        _load_adapter_weights(bank, name, adapter_dir)
        bank.activate(name, trainable=False)
    bank.freeze()
    return bank, tok, state


def _load_adapter_weights(bank: ExpertBank, name: str, adapter_dir: Path) -> None:
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(bank.model, weights, adapter_name=name)
    missing = [k for k in result.unexpected_keys]
    if missing:
        raise models.ModelLoadError(f"{adapter_dir}: adapter does not fit this base ({missing[0]} ...)")


def load_for_inference(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The champion as one plain model (experts merged), for evaluation, teachers and generation."""
    path = Path(path)
    if not (path / "base").is_dir():
        return models.load(path)
    bank, tok, _ = load_checkpoint(path)
    model = bank.merged()
    model.eval()
    return model, tok
