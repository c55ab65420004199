"""Function-preserving growth, the preflight that guards it, and tokenizer refusal."""

import pytest
import torch

from sleepcycle import models
from sleepcycle.grow import GrowError, check_tokenizers, grow_depth, grow_width, preflight
from unit.helpers import batch, micro_model

TEXTS = ["Ada Velm lives in Velmora.", "Question: Where does Bo Tarsk live?\nAnswer:"]


def _logits(model, tok):
    ids, mask = batch(tok)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def test_depth_growth_preserves_the_function_and_passes_preflight():
    seed, tok = micro_model(size="small")
    grown, new = grow_depth(seed)
    assert grown.config.num_hidden_layers == 2 * seed.config.num_hidden_layers and new == [1, 3, 5, 7]
    assert torch.allclose(_logits(grown, tok), _logits(seed, tok), atol=1e-5)
    depth_map = {i: 2 * i for i in range(seed.config.num_hidden_layers + 1)}
    report = preflight(seed, grown, tok, TEXTS, depth_map=depth_map)
    assert report["kl"] <= 1e-6 and report["greedy_identical"]


def test_width_growth_preserves_the_function_and_passes_preflight():
    seed, tok = micro_model(size="small")
    grown = grow_width(seed)
    assert grown.config.hidden_size == 2 * seed.config.hidden_size
    assert models.count_parameters(grown) > 3 * models.count_parameters(seed)
    assert torch.allclose(_logits(grown, tok), _logits(seed, tok), atol=1e-4)
    assert preflight(seed, grown, tok, TEXTS)["greedy_identical"]


def test_preflight_names_the_layer_that_differs():
    seed, tok = micro_model(size="small")
    grown, _ = grow_depth(seed)
    with torch.no_grad():
        grown.model.layers[5].mlp.down_proj.weight.add_(0.5)  # a "new" block that is not the identity
    depth_map = {i: 2 * i for i in range(seed.config.num_hidden_layers + 1)}
    with pytest.raises(GrowError, match=r"layer 2 \(model.layers.2\)"):
        preflight(seed, grown, tok, TEXTS, depth_map=depth_map)


def test_a_different_tokenizer_is_refused():
    _, tok = micro_model()
    other = models.train_tokenizer(["completely different text corpus"] * 30, 300)
    with pytest.raises(GrowError, match="tokenizer differs"):
        check_tokenizers(tok, other)
    assert check_tokenizers(tok, tok) == len(tok.get_vocab())


def test_a_line_starts_from_a_given_model_directory_copied_as_its_base(tmp_path, tiny_cfg):
    """``model.path`` (the gpu profile): the model there becomes the base checkpoint, nothing is trained."""
    from sleepcycle.config import load_config
    from sleepcycle.manifests import Manifest
    from sleepcycle.pretrain import pretrain

    model, tok = micro_model()
    src = models.save(model, tok, tmp_path / "Micro-1")
    (src / "pytorch_model.bin").write_bytes(b"pickled copy")  # left behind: safetensors exist
    (src / "original").mkdir()
    cfg = load_config("tiny", [f"model.path={src}"])
    base = pretrain(cfg, workdir=tmp_path / "base")
    assert base.name == "base-Micro-1" and base.meta["source"] == str(src)
    assert "model.safetensors" in base.files and "config.json" in base.files
    assert not any(f.startswith(("pytorch_model", "original")) for f in base.files)
    Manifest.read(tmp_path / "base").verify(tmp_path / "base")
    loaded, _ = models.load(base.uri)
    assert base.metrics["parameters"] == models.count_parameters(loaded) == models.count_parameters(model)
    with pytest.raises(models.ModelLoadError, match="no config.json"):
        pretrain(load_config("tiny", [f"model.path={tmp_path / 'missing'}"]), workdir=tmp_path / "b2")
