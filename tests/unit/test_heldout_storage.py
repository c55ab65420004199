"""`bench/heldout_storage.py`: which facts it asks, in which wordings and groups, and how it tallies them (the
scoring itself is `routed_accuracy`, tested in test_routing; benchmarks are never tests)."""

import json
from pathlib import Path

import pytest

from sleepcycle.config import load_config
from sleepcycle.pretrain import Corpus
from sleepcycle.world import RELATIONS, World
from unit.helpers import bench_script


def test_every_kept_fact_is_asked_in_every_wording_of_its_relation_and_grouped_by_how_it_was_learnt():
    hs = bench_script("heldout_storage")
    cfg = load_config("tiny")
    world, days = World(cfg.world), cfg.world.days
    rows = hs.fact_rows(world, cfg, days)
    woken = {f.subject for d in range(1, days + 1) for f in world.facts_of_day(d)}
    asked = set(Corpus(world, cfg).qa_people)
    facts: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        facts.setdefault((r["subject"], r["relation"]), []).append(r)
    assert {r["group"] for r in rows} <= set(hs.GROUPS) and {"day0/qa", "new_entity"} <= {r["group"] for r in rows}
    for (subject, relation), rs in facts.items():
        rel = RELATIONS[relation]
        assert sorted(r["template"] for r in rs) == sorted((*rel.ask, *rel.probe, *rel.heldout))
        assert all(r["question"].answer == world.current(subject, relation, days) for r in rs)
        group = rs[0]["group"]
        if group.startswith("day0/"):
            assert subject not in woken and group == ("day0/qa" if subject in asked else "day0/bios")
    wake = {(f.subject, f.relation) for d in range(1, days + 1) for f in world.facts_of_day(d)}
    assert wake <= set(facts)


def test_known_counts_only_facts_right_in_every_ask_and_probe_wording():
    hs = bench_script("heldout_storage")

    def fact(subject, ask, probe, heldout, group="new_entity"):
        return [
            {"group": group, "subject": subject, "relation": "city", "wording": w, "template": f"{w}{k}", "hit": h}
            for w, hits in (("ask", ask), ("probe", probe), ("heldout", heldout))
            for k, h in enumerate(hits)
        ]

    rows = fact("A", [1, 1], [1, 1], [1, 0]) + fact("B", [1, 1], [1, 0], [1, 1]) + fact("C", [1, 1], [1, 1], [0, 0])
    tab = hs.tabulate(rows + fact("D", [1], [1], [1], group="day0/qa"))
    assert tab["known"]["new_entity"] == [2, 1, 4]  # A and C: one of their four held-out questions right
    assert tab["known"]["day0/qa"] == [1, 1, 1]
    assert tab["by_wording"]["new_entity"] == {"ask": [6, 6], "probe": [5, 6], "heldout": [3, 6]}
    assert tab["by_template"]["heldout0"]["new_entity"] == [2, 3] and tab["by_template"]["heldout0"]["update"] == [0, 0]
    text = hs.table(tab)
    assert "| heldout | 1/1 (1.000) | — | 3/6 (0.500) |" in text and "1/4 (0.250), 2 facts" in text


def test_a_run_whose_checkpoints_are_gone_is_refused_naming_the_workdir(tmp_path):
    hs = bench_script("heldout_storage")
    cfg = load_config("tiny")
    run = tmp_path / "run.json"
    run.write_text(json.dumps({"method": "sleep", "seed": 0, "days": 2, "config": cfg.model_dump(mode="json")}))
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit, match=f"{tmp_path / 'gone'}: no cycle-2 checkpoint"):
        hs.main([str(run), "--workdir", str(tmp_path / "gone"), "--json", str(out)])
    assert not out.exists()


def test_a_finished_run_is_scored_from_the_workdir_it_recorded_and_a_checkpoint_not_its_own_is_refused(
    tmp_path, monkeypatch
):
    from sleepcycle.bench import run_bench

    monkeypatch.setenv("SLEEPCYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    hs = bench_script("heldout_storage")
    result = run_bench(load_config("tiny"), "sleep-nodream", days=2, seed=0)
    run = tmp_path / "run.json"
    run.write_text(json.dumps(result))
    out = tmp_path / "out.json"
    scored = hs.main([str(run), "--json", str(out)])
    assert json.loads(out.read_text())["checkpoint"] == str(Path(result["workdir"]) / "cycle-2" / "seeded")
    wake = [sum(c[g][i] for c in scored["by_template"].values() for g in hs.GROUPS[2:]) for i in (0, 1)]
    full = result["full_by_template"]["heldout"]
    assert wake == [sum(v[0] for v in full.values()), sum(v[1] for v in full.values())]
    # the same workdir, but a record that does not match its weights (as when a later run overwrote them)
    first = next(iter(full))
    full[first] = [full[first][0] + 1, full[first][1]]
    run.write_text(json.dumps(result))
    out.unlink()
    with pytest.raises(SystemExit, match="not this run's checkpoint"):
        hs.main([str(run), "--json", str(out)])
    assert not out.exists()
