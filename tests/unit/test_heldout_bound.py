"""`bench/heldout_bound.py` on the tiny profile: every day-0 fact asked in every held-out and probe wording,
closed-book and with its bio, and a bench result's per-wording tallies set beside (no number is asserted beyond
its range: benchmarks are never tests)."""

import json

import pytest

from sleepcycle.config import load_config
from sleepcycle.world import RELATIONS, World
from unit.helpers import bench_script


def test_every_day0_fact_is_asked_in_every_wording_and_a_runs_tallies_sit_beside(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SLEEPCYCLE_HOME", str(tmp_path / "home"))
    world = World(load_config("tiny").world)
    template = RELATIONS["city"].heldout[0]
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"method": "sleep", "seed": 3, "full_by_template": {"heldout": {template: [2, 5]}}}))
    out = tmp_path / "bound.json"
    bench_script("heldout_bound").main(
        ["--profile", "tiny", "--json", str(out), "--md", str(tmp_path / "t.md"), "--runs", str(run)]
    )
    result = json.loads(out.read_text())

    facts = [f for f in world.facts_of_day(0) if world.current(f.subject, f.relation, 0) is not None]
    per_relation = {rel: sum(f.relation == rel for f in facts) for rel in RELATIONS}
    expected = {(t, b): per_relation[name] for name, rel in RELATIONS.items() for t in (*rel.probe, *rel.heldout)
                for b in (False, True)}  # fmt: skip
    assert {(r["template"], r["with_bio"]): r["n"] for r in result["rows"]} == expected
    assert all(0 <= r["correct"] <= r["n"] for r in result["rows"])
    summary = result["summary"]
    assert summary["heldout/sleep s3"] == {"n": 5, "ACC": pytest.approx(0.4)}
    assert 0 <= summary["heldout/wake mix at day-0 rates"]["ACC"] <= 1
    assert summary["probe/closed"]["n"] == sum(per_relation[n] * len(r.probe) for n, r in RELATIONS.items())
    assert f"| heldout | {template} |" in capsys.readouterr().out and "2/5" in (tmp_path / "t.md").read_text()


def test_a_run_written_before_the_per_wording_tallies_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("SLEEPCYCLE_HOME", str(tmp_path / "home"))
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"method": "sleep", "seed": 0, "full_probes": {"heldout": 10}}))
    out = tmp_path / "bound.json"
    with pytest.raises(SystemExit, match="no full_by_template"):
        bench_script("heldout_bound").main(["--profile", "tiny", "--json", str(out), "--runs", str(old)])
    assert not out.exists()
