"""vLLM behind the `Generator` interface (``generation.backend: vllm``; GPU only, the ``gpu`` extra).

    gen = make_generator(cfg.generation, eos_id, pad_id)   # -> VLLMGenerator
    ids = gen.sample(bank.model, prompts, 32, temperature=0.7, generator=torch_gen)

What vLLM serves for a model handed to `sample`:
- An expert bank's model (a PEFT model: base + active experts): the base directory it was loaded from,
  plus the active experts stacked into ONE LoRA adapter, since vLLM applies one adapter per request.
  Experts have lora_alpha = r (scaling 1), so stacking along the rank is exact:
  sum_i B_i A_i = [B_1 ... B_n] [A_1; ...; A_n]. The adapter is written under a name that is the hash of
  its weights: an unchanged expert set is loaded once, a trained one gets a new adapter id.
- A plain model (a merged champion, a grown student): saved once per model object (again after its
  trainable weights change) and served by an engine of its own. Prefer handing the bank's model.

Where it runs: an offline `vllm.LLM` engine per base directory in this process, or, when
``SLEEPCYCLE_VLLM_URL`` is set, an OpenAI-compatible vLLM server (started with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``; it must see the adapter directories, e.g. a shared volume
set by ``SLEEPCYCLE_VLLM_ADAPTERS``). A server serves its own base model and LoRA adapters only.

vllm is imported inside the engine code only: vllm 0.33 pins torch==2.14.0 and transformers<5.21 and
has no CPU wheel, so nothing else may depend on it. `stack_experts` needs only torch and runs anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import PreTrainedModel

from sleepcycle.config import GenerationConfig


class GenerationError(RuntimeError):
    """The vLLM backend cannot serve this request (vllm missing, no CUDA, a model a server cannot hold)."""


# ----- what to serve -------------------------------------------------------------------------------


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def stack_experts(model) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The active experts of a PEFT model as one LoRA adapter: (PEFT-format tensors, adapter config),
    or None when no expert is active (the base alone)."""
    active = model.base_model.active_adapters if hasattr(model.base_model, "active_adapters") else []
    active = [a for a in active if a in model.peft_config]
    if not active:
        return None
    parts: dict[str, dict[str, list[torch.Tensor]]] = {}
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A") or not hasattr(module, "scaling"):
            continue
        for a in active:
            if a not in module.lora_A:
                continue
            scale = module.scaling[a]
            entry = parts.setdefault(name, {"A": [], "B": []})
            entry["A"].append(module.lora_A[a].weight.detach().float().cpu())
            entry["B"].append(module.lora_B[a].weight.detach().float().cpu() * scale)  # fold scaling into B
    tensors = {}
    for name, p in parts.items():  # PEFT's saved-key format: <module path>.lora_A.weight
        tensors[f"{name}.lora_A.weight"] = torch.cat(p["A"], dim=0).contiguous()
        tensors[f"{name}.lora_B.weight"] = torch.cat(p["B"], dim=1).contiguous()
    rank = next(iter(tensors.values())).shape[0]
    first = model.peft_config[active[0]]
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": rank,  # scaling 1: each expert's own scaling is folded into its B
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": sorted(first.target_modules),
        "base_model_name_or_path": str(_base_dir(model)),
    }
    return tensors, config


def _base_dir(model) -> Path:
    inner = model.get_base_model() if _is_peft(model) else model
    path = Path(str(getattr(inner.config, "_name_or_path", "") or ""))
    if not (path / "config.json").is_file():
        raise GenerationError(f"the base model's directory is unknown ({path!s}): load it from a local path")
    return path


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def write_adapter(root: Path, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """A PEFT adapter directory vLLM (and PEFT) can load: adapter_model.safetensors + adapter_config.json."""
    path = Path(root) / f"experts-{_digest(tensors)}"
    if not (path / "adapter_config.json").is_file():
        path.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path / "adapter_model.safetensors"))
        (path / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return path


# ----- the backend -----------------------------------------------------------------------------------


class VLLMGenerator:
    """The `Generator` on vLLM: an offline engine per base directory, or a server at SLEEPCYCLE_VLLM_URL."""

    def __init__(self, cfg: GenerationConfig, eos_id: int, pad_id: int, vocab: int | None = None):
        self.cfg, self.eos_id, self.pad_id, self.vocab = cfg, eos_id, pad_id, vocab
        self.url = os.environ.get("SLEEPCYCLE_VLLM_URL", "").rstrip("/")
        self.root = Path(os.environ.get("SLEEPCYCLE_VLLM_ADAPTERS") or tempfile.mkdtemp(prefix="sleepcycle-vllm-"))
        self.engines: dict[str, object] = {}
        self.lora_ids: dict[str, int] = {}
        self.exported: dict[int, tuple[str, Path]] = {}
        if not self.url:
            try:
                import vllm  # noqa: F401
            except ImportError as e:
                raise GenerationError(
                    "generation.backend=vllm needs vllm (pip install -e '.[gpu]', CUDA only) "
                    "or SLEEPCYCLE_VLLM_URL pointing at a vLLM server"
                ) from e
            if not torch.cuda.is_available():
                raise GenerationError("generation.backend=vllm needs a CUDA GPU; use generation.backend=hf")

    def _serving(self, model) -> tuple[Path, Path | None]:
        """(base directory, LoRA adapter directory or None) that reproduce `model`."""
        if _is_peft(model):
            stacked = stack_experts(model)
            return _base_dir(model), write_adapter(self.root, *stacked) if stacked else None
        if self.url:
            raise GenerationError("a vLLM server holds its base model and LoRA adapters only, not a merged model")
        trained = [p for p in model.parameters() if p.requires_grad]
        version = _digest({str(i): p.detach().float().cpu() for i, p in enumerate(trained)}) if trained else "frozen"
        cached = self.exported.get(id(model))
        if cached is None or cached[0] != version:
            path = self.root / f"model-{id(model)}-{version}"
            model.save_pretrained(path, safe_serialization=True)
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(_base_dir(model)).save_pretrained(path)
            self.exported[id(model)] = (version, path)
        return self.exported[id(model)][1], None

    def _lora_id(self, adapter: Path) -> int:
        return self.lora_ids.setdefault(adapter.name, len(self.lora_ids) + 1)

    def sample(
        self,
        model: PreTrainedModel,
        prompts: Sequence[Sequence[int]],
        max_new_tokens: int | Sequence[int],
        temperature: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> list[list[int]]:
        if not prompts:
            return []
        limits = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        seeds = (
            torch.randint(0, 2**31 - 1, (len(prompts),), generator=generator).tolist()
            if generator is not None and temperature > 0
            else [None] * len(prompts)
        )
        # a model padded beyond the tokenizer samples only real tokens (`make_generator`'s `vocab`)
        allowed = list(range(self.vocab)) if self.vocab and model.config.vocab_size > self.vocab else None
        base, adapter = self._serving(model)
        run = self._server if self.url else self._offline
        outs = run(base, adapter, [list(p) for p in prompts], limits, temperature, seeds, allowed)
        return [self._cut(o, lim) for o, lim in zip(outs, limits)]

    def _cut(self, ids: list[int], limit: int) -> list[int]:
        ids = list(ids)[:limit]
        return ids[: ids.index(self.eos_id) + 1] if self.eos_id in ids else ids

    # -- an engine in this process --
    def _offline(self, base, adapter, prompts, limits, temperature, seeds, allowed=None) -> list[list[int]]:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        key = str(base)
        if key not in self.engines:
            self.engines[key] = LLM(
                model=key,
                enable_lora=True,
                max_lora_rank=self.cfg.max_lora_rank,
                max_loras=self.cfg.max_loras,
                gpu_memory_utilization=self.cfg.gpu_memory_utilization,
                seed=0,
            )
        params = [
            SamplingParams(
                temperature=temperature,
                max_tokens=lim,
                seed=seed,
                stop_token_ids=[self.eos_id],
                skip_special_tokens=False,
                detokenize=False,
                allowed_token_ids=allowed,
            )
            for lim, seed in zip(limits, seeds)
        ]
        lora = LoRARequest(adapter.name, self._lora_id(adapter), str(adapter)) if adapter else None
        results = self.engines[key].generate(
            [{"prompt_token_ids": p} for p in prompts], params, lora_request=lora, use_tqdm=False
        )
        return [self._with_eos(r.outputs[0].token_ids, r.outputs[0].finish_reason) for r in results]

    def _with_eos(self, ids, finish_reason: str | None) -> list[int]:
        """vLLM may leave the stop token out of token_ids; the contract keeps EOS when it was produced."""
        ids = list(ids)
        if finish_reason == "stop" and (not ids or ids[-1] != self.eos_id):
            ids.append(self.eos_id)
        return ids

    # -- an OpenAI-compatible server --
    def _post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=600) as r:
            text = r.read().decode()
        return json.loads(text) if text.strip().startswith("{") else {}

    def _server_model(self, adapter: Path | None) -> str:
        if adapter is None:
            with urllib.request.urlopen(self.url + "/v1/models", timeout=60) as r:
                return json.loads(r.read())["data"][0]["id"]
        if adapter.name not in self.lora_ids:
            self._post("/v1/load_lora_adapter", {"lora_name": adapter.name, "lora_path": str(adapter)})
            self._lora_id(adapter)
        return adapter.name

    def _server(self, base, adapter, prompts, limits, temperature, seeds, allowed=None) -> list[list[int]]:
        from concurrent.futures import ThreadPoolExecutor

        name = self._server_model(adapter)

        def one(job: tuple[list[int], int, int | None]) -> list[int]:  # own limit and seed per request
            p, lim, seed = job
            body = {"model": name, "prompt": p, "max_tokens": lim, "temperature": temperature}
            body |= {"stop_token_ids": [self.eos_id], "skip_special_tokens": False, "return_token_ids": True}
            if seed is not None:
                body["seed"] = seed
            if allowed is not None:
                body["allowed_token_ids"] = allowed
            choice = self._post("/v1/completions", body)["choices"][0]
            return self._with_eos(choice["token_ids"], choice.get("finish_reason"))

        with ThreadPoolExecutor(max_workers=16) as pool:  # the server batches concurrent requests
            return list(pool.map(one, zip(prompts, limits, seeds)))
