"""bench/distill_throughput.py: the comparison runs end to end on micro models and writes its stable shape.

No timing is asserted: benchmarks are never tests; this only keeps the script from rotting."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from unit.helpers import micro_model

pytest.importorskip("trl")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "distill_throughput.py"


def _bench():
    spec = importlib.util.spec_from_file_location("distill_throughput", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through the module's entry
    spec.loader.exec_module(module)
    return module


def test_comparison_produces_the_result_shape(tmp_path):
    bench = _bench()
    student, tok = micro_model(seed=1)
    teacher, _ = micro_model(seed=2)
    prompts = ["Question: Where does Ada Velm live?\nAnswer:", "Bo Tarsk is a", "Ada Velm works at", "Bo Tarsk"]
    s = bench.Settings.quick(
        steps=2,
        batch_size=2,
        max_new_tokens=4,
        heldout=2,
        matmul_n=64,
        repeats=1,
        mfu_batch=2,
        mfu_seq=16,
        decode_batches=(1, 2),
        student_size="micro",
    )
    result = bench.compare(teacher, student, tok, prompts * 2, prompts[:2], s, say=lambda _: None)
    js, md = bench.write(result, tmp_path)

    data = json.loads(js.read_text())
    assert {"settings", "machine", "models", "systems", "ratio_vs_trl", "quality", "peak_flop_per_s", "mfu"} <= set(
        data
    )
    assert data["machine"]["torch_threads"] >= 1
    for name in ("ours", "trl", "ours_reuse", "ours_defaults"):
        row = data["systems"][name]
        assert row["steps"] == 2
        assert row["completion_tokens"] > 0 and row["total_tokens"] >= row["completion_tokens"]
        for key in ("completion_tokens_per_s", "total_tokens_per_s", "heldout_kl", "wall_s"):
            assert row[key] >= 0
    assert {"completion_tokens_per_s", "total_tokens_per_s", "steps_per_s"} <= set(data["ratio_vs_trl"])
    native = data["machine"]["avx512_bf16"] or data["machine"]["amx"]
    for name in ("student_step", "gd_step"):
        assert 0 < data["mfu"][name]["fp32"]["mfu"]
        # bf16 is measured where the CPU multiplies it natively, and said to be skipped elsewhere
        bf16 = data["mfu"][name]["bf16"]
        assert 0 < bf16["mfu"] if native else "no native bf16" in bf16["skipped"]
    assert data["peak_flop_per_s"]["fp32"] > 0
    assert (data["peak_flop_per_s"]["bf16"] or 0) > 0 if native else data["peak_flop_per_s"]["bf16"] is None
    assert ("bf16 not measured" in md.read_text()) is not native
    table = md.read_text()
    assert "TRL DistillationTrainer" in table and "| ours, TRL's settings" in table


def test_bf16_is_measured_only_where_the_cpu_has_it():
    bench = _bench()
    assert bench.native_bf16(["avx2", "avx512f", "avx512_bf16"]) and bench.native_bf16(["amx_bf16"])
    assert not bench.native_bf16(["avx2", "avx512f"])
