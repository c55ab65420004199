"""The dashboard in-process (streamlit.testing AppTest): every page on a five-cycle fixture lineage, the empty
state, a store that answers garbage, and the approval desk (refused, approved, rejected). No servers, no
browser: AppTest shows charts as opaque elements, so the tests decode the data each chart was given.

    .venv/bin/python -m pytest tests/unit/test_dashboard.py
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pyarrow as pa
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # dashboard/ and flows/ are top-level folders, not installed packages

import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from dashboard import charts, desk, fixture  # noqa: E402
from sleepcycle.store import LocalRegistry, LocalStore, queries, write_cycle_record  # noqa: E402

APP = str(ROOT / "dashboard" / "app.py")
TOKEN = "s3cret-approver-token"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An embedded-default environment (local store + local registry) with the approver token set."""
    for var in ("MLFLOW_TRACKING_URI", "SLEEPCYCLE_S3_ENDPOINT", "SLEEPCYCLE_LINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLEEPCYCLE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(desk.TOKEN_ENV, TOKEN)
    # Streamlit's caches live in this process across AppTests: each test starts from a clean one.
    st.cache_data.clear()
    st.cache_resource.clear()
    desk._wrong.clear()
    return tmp_path / "home"


@pytest.fixture
def backend(home):
    store = LocalStore(home / "store")
    return store, LocalRegistry(store)


@pytest.fixture
def lineage(backend, tmp_path) -> dict:
    store, registry = backend
    return fixture.build(store, registry, "default", tmp_path / "lineage")


@pytest.fixture
def approval_path():
    """The approval path the desk calls: flows.approval (the same one the CLI and the flow use)."""
    return importlib.import_module("flows.approval")


def run(page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def chart_data(at: AppTest) -> list[tuple[dict, list]]:
    """(Vega-Lite spec, [DataFrame per dataset]) of every Altair chart on the page."""
    out = []
    for el in at.get("vega_lite_chart"):
        frames = [pa.ipc.open_stream(d.data.data).read_pandas() for d in el.proto.datasets]
        out.append((json.loads(el.proto.spec), frames))
    return out


def texts(elements) -> str:
    return " ".join(str(e.value) for e in elements)


# ----- pages on the fixture lineage ---------------------------------------------------------------------


def test_overview_shows_champion_cycles_and_pending(lineage):
    at = run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["version"] == f"v{lineage['champion_version']}"
    assert metrics["experts"] == "2 / 4" and metrics["active parameters"] == "164k"
    assert "UTC by ana" in texts(at.caption)
    pending, cycles = at.dataframe[0].value, at.dataframe[1].value
    assert list(pending["cycle"]) == lineage["pending"] == [5]
    assert list(cycles["cycle"]) == [5, 4, 3, 2, 1]
    assert list(cycles["state"]) == ["awaiting_approval", "gate_failed", "approved", "rejected", "approved"]


def test_overview_shows_sleep_pressure(lineage):
    wake = pytest.importorskip("sleepcycle.wake")
    wake.add_records([{"text": f"Ada Velm read note {i}."} for i in range(30)], line="default")
    threshold = wake.status("default")["threshold"]
    at = run()
    [bar] = at.get("progress")
    assert bar.proto.text == f"30 of {threshold} wake records before the next sleep"
    assert "1 segment waiting" in texts(at.caption)


def test_overview_without_a_wake_buffer_module(lineage, monkeypatch):
    monkeypatch.setitem(sys.modules, "sleepcycle.wake", None)  # as before platform/sleepcycle/wake.py existed
    at = run()
    assert "No wake buffer yet" in texts(at.info)


def test_retention_draws_matrix_curves_and_size(lineage, backend):
    store, registry = backend
    at = run("retention")
    drawn = chart_data(at)
    assert len(drawn) == 5  # heatmap, forgetting curves, learning, general ability + drift, model size
    heat = drawn[0][1][0]
    matrix = queries.accuracy_matrix("default", store=store)
    assert len(heat) == sum(v is not None for row in matrix["values"] for v in row) == 15
    last = heat[heat["cycle"] == 5].sort_values("order")
    assert list(last["accuracy"]) == matrix["values"][-1]
    learning = pd_concat(drawn[2][1])
    assert {"ACC", "acquisition", "BWT"} <= set(learning["metric"])
    assert "in-context ceiling" in json.dumps(drawn[2][0])
    sizes = drawn[4][1][0]
    assert list(sizes["cycle"]) == [0, 1, 2, 3, 4, 5] and list(sizes["n_experts"]) == [0, 1, 2, 2, 3, 3]
    assert sizes["active_parameters"].is_monotonic_increasing
    table = at.dataframe[0].value  # the matrix as a table
    assert table.shape == (5, 5)


def test_cycle_detail_has_timings_gate_dreams_and_lineage(lineage):
    at = run("cycle")
    assert at.selectbox[-1].value == 5  # newest first
    at.selectbox[-1].select(3).run()
    assert not at.exception
    gate = next(df.value for df in at.dataframe if "check" in df.value)
    assert set(gate["check"]) == {"acquisition", "retention_delta", "general_loss_delta", "kl_drift"}
    assert set(gate["result"]) == {"pass"}
    dreams = next(df.value for df in at.dataframe if "importance" in df.value)
    assert len(dreams) == len(fixture.DREAMS) and {"reward", "kept"} <= set(dreams)
    timings = chart_data(at)[0][1][0]
    assert list(timings["stage"]) == ["snapshot", "seed", "dream", "evaluate", "gate"]
    dot = at.get("graphviz_chart")[0].proto.spec
    for step in ("wake snapshot", "seeded model", "dreams", "candidate v4", "evaluation", "gate: passed"):
        assert step in dot
    assert "approved by ana" in dot


def test_cycle_detail_of_a_gate_failure(lineage):
    at = run("cycle")
    at.selectbox[-1].select(4).run()
    assert "Failed: this candidate is never promoted." in texts(at.error)
    assert "gate: failed" in at.get("graphviz_chart")[0].proto.spec


def test_approvals_compares_candidate_with_champion(lineage):
    at = run("approvals")
    assert at.selectbox[-1].value == 5
    assert [m.value for m in at.metric] == [f"v{lineage['champion_version']}", "v5"]
    side = next(df.value for df in at.dataframe if "change" in df.value).set_index("metric")
    assert side.loc["acquisition", "champion"] == pytest.approx(0.62)
    assert side.loc["acquisition", "candidate"] == pytest.approx(0.72)
    assert side.loc["acquisition", "change"] == pytest.approx(0.1)
    assert "The request expires at" in texts(at.caption)


# ----- the approval desk -----------------------------------------------------------------------------


def fill(at: AppTest, who: str, note: str, token: str) -> AppTest:
    at.text_input(key="desk_who").input(who)
    at.text_area(key="desk_note").input(note)
    at.text_input(key="desk_token").input(token)
    return at


def audit_lines(home: Path) -> list[dict]:
    path = home / desk.AUDIT
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("typed", ["wrong-token", ""])
def test_wrong_or_missing_token_is_refused_and_logged(lineage, backend, home, typed, approval_path):
    store, registry = backend
    at = click(fill(run("approvals"), "mallory", "let me in", typed), "Approve and promote")
    assert "Refused" in texts(at.error)
    assert registry.champion("default").version == lineage["champion_version"]
    [entry] = audit_lines(home)
    assert entry["outcome"] == "refused" and entry["who"] == "mallory" and entry["cycle"] == 5
    assert entry["reason"] == ("wrong approver token" if typed else "no approver token given")
    assert TOKEN not in (home / desk.AUDIT).read_text() and "wrong-token" not in (home / desk.AUDIT).read_text()


def test_desk_is_locked_without_a_configured_token(lineage, backend, home, monkeypatch, approval_path):
    monkeypatch.delenv(desk.TOKEN_ENV)
    at = run("approvals")
    assert "approval desk is locked" in texts(at.warning)
    at = click(fill(at, "ana", "ok", TOKEN), "Approve and promote")
    assert "Refused" in texts(at.error)
    assert backend[1].champion("default").version == lineage["champion_version"]
    assert audit_lines(home)[0]["reason"].startswith("no approver token is configured")


def test_approve_with_the_right_token_moves_champion(lineage, backend, home, approval_path):
    store, registry = backend
    at = click(fill(run("approvals"), "ana", "retention holds", TOKEN), "Approve and promote")
    assert "Cycle 5 approved" in texts(at.success)
    champion = registry.champion("default")  # checked in the registry, not through the dashboard
    assert champion.version == 5 and champion.cycle == 5
    assert champion.tags["decision_by"] == "ana" and champion.tags["decision_note"] == "retention holds"
    [entry] = audit_lines(home)
    assert entry["outcome"] == "done" and entry["action"] == "approve" and entry["result"]["cycle"] == 5
    assert "Nothing waits for approval" in texts(at.info)  # the page reread the store after the write


def test_a_decision_taken_elsewhere_meanwhile_is_not_overridden(lineage, backend, home, approval_path):
    store, registry = backend
    at = fill(run("approvals"), "ana", "looks fine", TOKEN)
    registry.reject("default", 5, who="bob", note="via the CLI, a minute earlier")
    at = click(at, "Approve and promote")
    assert "did not go through" in texts(at.error)
    assert registry.champion("default").version == lineage["champion_version"]
    assert audit_lines(home)[0]["outcome"] == "error"


def test_reject_leaves_champion(lineage, backend, home, approval_path):
    store, registry = backend
    click(fill(run("approvals"), "ana", "drifts too far", TOKEN), "Reject")
    assert registry.champion("default").version == lineage["champion_version"]
    assert registry.get("default", 5).status == "rejected"
    assert audit_lines(home)[0]["action"] == "reject"


def test_guessing_the_token_locks_the_client_out(lineage, backend, home, approval_path, monkeypatch):
    monkeypatch.setattr(desk, "MAX_WRONG", 3)
    for _ in range(3):
        with pytest.raises(desk.Refused, match="wrong approver token"):
            desk.submit("default", 5, True, "eve", "", token="guess", client="10.0.0.9")
    with pytest.raises(desk.Refused, match="too many wrong tokens"):  # even the right token, for a while
        desk.submit("default", 5, True, "eve", "", token=TOKEN, client="10.0.0.9")
    assert backend[1].champion("default").version == lineage["champion_version"]
    result = desk.submit("default", 5, True, "ana", "checked", token=TOKEN, client="10.0.0.7")  # others still can
    assert backend[1].champion("default").version == 5 and result
    assert [e["outcome"] for e in audit_lines(home)] == ["refused"] * 4 + ["done"]


# ----- empty and broken stores ------------------------------------------------------------------------


@pytest.mark.parametrize("page", [None, "retention", "cycle", "approvals"])
def test_empty_store_tells_what_to_do(home, page):
    at = run(page)
    assert "sleepcycle cycle run" in texts(at.info)
    assert not at.error


def test_running_and_failed_cycles_render(lineage, backend):
    """A cycle mid-way (no candidate yet) and one that crashed: shown as they are, nothing invented."""
    store, _ = backend
    write_cycle_record(
        store, "default", 6, {"state": "failed", "error": "seed: out of memory", "timings": {"snapshot": 0.5}}
    )
    write_cycle_record(
        store,
        "default",
        7,
        {"state": "running", "snapshot": "ab" * 32, "champion": "cd" * 32, "timings": {"snapshot": 0.4}},
    )
    at = run()
    assert list(at.dataframe[1].value["state"])[:2] == ["running", "failed"]
    at = run("cycle")
    assert at.selectbox[-1].value == 7
    assert at.get("graphviz_chart")[0].proto.spec.count("dashed") == 6
    at.selectbox[-1].select(6).run()
    assert "The cycle failed: seed: out of memory" in texts(at.error)
    for page in ("retention", "approvals"):
        run(page)


def test_a_broken_record_is_a_message_not_a_traceback(lineage, backend):
    store, _ = backend
    store.put_bytes("lines/default/cycles/00006.json", b"{ not json")
    for page in (None, "retention", "cycle", "approvals"):
        at = run(page)
        assert "Could not read" in texts(at.error), page


# ----- the pure parts ----------------------------------------------------------------------------------


def pd_concat(frames):
    import pandas as pd

    return pd.concat(frames, ignore_index=True)


def test_continual_metrics_from_the_matrix_by_hand():
    # Columns a, b, c brought by cycles 1, 2, 3; the records carry no ACC/BWT, so they are derived.
    matrix = {
        "rows": [1, 2, 3],
        "columns": ["a", "b", "c"],
        "column_cycles": [1, 2, 3],
        "values": [[0.8, None, None], [0.6, 0.9, None], [0.5, 0.7, 0.4]],
    }
    cycles = [{"cycle": n, "state": "approved", "metrics": {}} for n in (1, 2, 3)]
    frame = charts.continual_frame(cycles, matrix).set_index("cycle")
    assert frame.loc[3, "ACC"] == pytest.approx((0.5 + 0.7 + 0.4) / 3)
    assert frame.loc[3, "BWT"] == pytest.approx(((0.5 - 0.8) + (0.7 - 0.9)) / 2)
    assert frame.loc[3, "forgetting"] == pytest.approx(((0.8 - 0.5) + (0.9 - 0.7)) / 2)
    assert frame.loc[2, "acquisition"] == 0.9 and "BWT" in frame.loc[2, "derived"]
    recorded = [{"cycle": 1, "state": "approved", "metrics": {"ACC": 0.5}}]
    assert charts.continual_frame(recorded, matrix).loc[0, "ACC"] == 0.5  # the record's own value wins


def test_lineage_of_a_running_cycle_draws_what_is_missing_dashed():
    detail = {
        "state": "running",
        "metrics": {},
        "gate": None,
        "lineage": {"snapshot": "ab" * 32, "champion": "cd" * 32, "parent_version": 3},
    }
    dot = charts.lineage_dot(detail)
    assert dot.startswith("digraph") and dot.count("dashed") == 6  # seeded, dreams, candidate, eval, gate, decision
    assert "champion v3" in dot
    decided = {**detail, "state": "approved", "version": {"tags": {"decision_by": 'Ann "the approver"'}}}
    assert 'approved by Ann \\"the approver\\"' in charts.lineage_dot(decided)  # quotes cannot end a label


def test_parameter_counts_read_like_people_say_them():
    assert [charts.params(n) for n in (None, 950, 163_840, 5_200_000, 1_500_000_000)] == [
        "unknown",
        "950",
        "164k",
        "5.2M",
        "1.5B",
    ]
