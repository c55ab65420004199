"""`sleepcycle.bench.run_bench` end to end on the tiny profile: the result's matrix, ceilings per probe kind and
metrics fit together (no number is asserted beyond its range: benchmarks are never tests)."""

import math
from pathlib import Path

import pytest

from sleepcycle.bench import PROBE_KINDS, default_workdir, run_bench, run_workdir
from sleepcycle.config import WorldConfig, load_config
from sleepcycle.world import World


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLEEPCYCLE_HOME", str(root / "home"))
        return run_bench(load_config("tiny"), "sft", days=2, seed=0, workdir=root / "work")


def test_matrix_rows_are_cycles_and_columns_are_days(result):
    m = result["matrix"]
    assert len(m) == 3 and all(len(row) == 3 for row in m), "base + 2 days, before and after each cycle"
    assert all(0 <= x <= 1 for row in m for x in row)
    for kind in ("heldout", "multihop"):
        assert len(result["matrices"][kind]) == 3


def test_ceilings_come_per_probe_kind_and_the_matrix_one_is_what_acquisition_reads(result):
    by_kind = result["in_context_ceilings_by_kind"]
    assert set(by_kind) == set(PROBE_KINDS) and all(len(v) == 2 for v in by_kind.values())
    assert result["in_context_ceilings"] == by_kind["matrix"]
    metrics = result["metrics"]
    assert metrics["in_context_ceiling"] == pytest.approx(sum(by_kind["matrix"]) / 2)
    for kind in ("heldout", "multihop"):
        known = [v for v in by_kind[kind] if not math.isnan(v)]
        assert all(0 <= v <= 1 for v in known)
        expected = sum(known) / len(known) if known else math.nan
        assert metrics[f"{kind}_ceiling"] == pytest.approx(expected, nan_ok=True)
    assert by_kind["heldout"] and not any(math.isnan(v) for v in by_kind["heldout"]), "every day has held-out probes"


def test_the_full_heldout_and_multihop_sets_are_scored_on_the_last_model(result):
    world = World(WorldConfig(**result["config"]["world"]))
    every = [p for day in (1, 2) for p in world.every_probe(day, as_of=2)]
    assert result["full_probes"] == {k: sum(p.kind == k for p in every) for k in ("heldout", "multihop")}
    assert all(n > 0 for n in result["full_probes"].values())
    assert all(0 <= result["metrics"][f"{k}_full_ACC"] <= 1 for k in ("heldout", "multihop"))
    # per wording: every probe counted once under its template, and the tallies add up to the accuracy
    for kind, by_template in result["full_by_template"].items():
        templates = {p.template for p in every if p.kind == kind}
        assert set(by_template) == templates and all("{s}" in t for t in templates)
        right, asked = (sum(v[i] for v in by_template.values()) for i in (0, 1))
        assert asked == result["full_probes"][kind] and all(0 <= r <= n for r, n in by_template.values())
        assert right / asked == pytest.approx(result["metrics"][f"{kind}_full_ACC"])


def test_a_sleep_method_routes_its_experts_and_reports_every_experts_row_beside(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPCYCLE_HOME", str(tmp_path / "home"))
    routed = run_bench(load_config("tiny"), "sleep-nodream", days=3, seed=0, workdir=tmp_path / "work")
    # every row after a day: the base is keyed by its pretraining corpus, so one expert already has two routes
    assert routed["routing"] == {"mode": "entity", "routed_rows": 3}
    every = routed["matrices"]["all_experts"]
    assert set(every) == set(PROBE_KINDS) and len(every["matrix"]) == 4 and len(every["matrix"][0]) == 4
    assert set(routed["metrics_all_experts"]) <= set(routed["metrics"])
    # the row before any expert is the same row
    assert every["matrix"][:1] == routed["matrix"][:1]


def test_a_method_without_experts_reports_no_second_row(result):
    assert result["routing"]["routed_rows"] == 0
    assert "all_experts" not in result["matrices"] and "metrics_all_experts" not in result


def test_runs_that_differ_only_in_their_sets_keep_their_checkpoints_apart_and_the_result_says_where(
    result, tmp_path, monkeypatch
):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    cfg, other = load_config("tiny"), load_config("tiny", ["distill.named_questions=true"])
    assert default_workdir(cfg, "sleep", 0) == default_workdir(load_config("tiny"), "sleep", 0)
    assert default_workdir(cfg, "sleep", 0) != default_workdir(other, "sleep", 0)
    assert default_workdir(cfg, "sleep", 0).parent == tmp_path
    assert run_workdir(result) == Path(result["workdir"]) and Path(result["workdir"]).name == "work"  # as given
    # a result written before runs recorded their workdir: where those runs kept their checkpoints
    assert run_workdir({"method": "sleep", "seed": 3}) == tmp_path / "sleepcycle-bench-sleep-3"
