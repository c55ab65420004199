"""Tables and Altair charts from the plain data of `sleepcycle.store.queries`: pure functions, no Streamlit,
so tests check the numbers a chart draws without a browser (AppTest shows charts as opaque elements).

    frame = matrix_frame(queries.accuracy_matrix("default"))
    heatmap(frame)                      # cycles x snapshots
    continual_frame(queries.cycles("default"), queries.accuracy_matrix("default"))
"""

from __future__ import annotations

import math
from typing import Any

import altair as alt
import pandas as pd

STATE_COLORS = {
    "approved": "#2e7d32",
    "awaiting_approval": "#1565c0",
    "rejected": "#c62828",
    "gate_failed": "#ef6c00",
    "failed": "#c62828",
    "rolled_back": "#6a1b9a",
    "expired": "#6d4c41",
    "running": "#757575",
}
LEARNING = ["ACC", "acquisition", "BWT"]
"""What each sleep taught (ACC, acquisition) and what it cost (BWT), drawn against the in-context ceiling."""
GENERAL = ["general_loss", "kl_drift"]
EXTRA = ["heldout_ACC", "multihop_ACC", "FWT", "forgetting", "FUAR"]


def short(digest: str | None, n: int = 8) -> str:
    return digest[:n] if digest else "—"


def params(n: int | None) -> str:
    """1234567 -> '1.23M': parameter counts as people say them."""
    if n is None:
        return "unknown"
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def number(x: Any, digits: int = 3) -> Any:
    return round(x, digits) if isinstance(x, float) and math.isfinite(x) else x


# ----- accuracy matrix --------------------------------------------------------------------------------


def matrix_frame(matrix: dict) -> pd.DataFrame:
    """One row per (cycle, snapshot) with a measured accuracy; `snapshot` labels say which cycle brought it."""
    rows = []
    for j, (digest, intro) in enumerate(zip(matrix["columns"], matrix["column_cycles"])):
        label = f"S{intro} · {short(digest)}" if intro is not None else f"base · {short(digest)}"
        for i, cycle in enumerate(matrix["rows"]):
            value = matrix["values"][i][j]
            if value is not None:
                rows.append({"cycle": cycle, "snapshot": label, "order": j, "introduced": intro, "accuracy": value})
    return pd.DataFrame(rows, columns=["cycle", "snapshot", "order", "introduced", "accuracy"])


def heatmap(frame: pd.DataFrame) -> alt.Chart:
    order = list(frame.sort_values("order")["snapshot"].drop_duplicates())
    base = alt.Chart(frame).encode(
        x=alt.X(
            "snapshot:N", sort=order, title="wake snapshot (the cycle that brought it)", axis=alt.Axis(labelAngle=0)
        ),
        y=alt.Y("cycle:O", title="after cycle"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color("accuracy:Q", scale=alt.Scale(domain=[0, 1], scheme="viridis"), title="accuracy"),
        tooltip=["cycle", "snapshot", alt.Tooltip("accuracy:Q", format=".3f")],
    )
    text = base.mark_text(fontSize=11).encode(
        text=alt.Text("accuracy:Q", format=".2f"),
        color=alt.condition("datum.accuracy > 0.55", alt.value("black"), alt.value("white")),
    )
    return (cells + text).properties(height=alt.Step(36))


def forgetting_chart(frame: pd.DataFrame) -> alt.Chart:
    """Each snapshot's accuracy from the cycle that brought it onwards: the slope is what later sleeps cost."""
    order = list(frame.sort_values("order")["snapshot"].drop_duplicates())
    return (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(
            x=alt.X("cycle:O", title="after cycle", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), title="accuracy"),
            color=alt.Color("snapshot:N", sort=order),
            tooltip=["snapshot", "cycle", alt.Tooltip("accuracy:Q", format=".3f")],
        )
    )


# ----- metrics over cycles ----------------------------------------------------------------------------


def _from_matrix(matrix: dict) -> dict[int, dict[str, float]]:
    """ACC, BWT, acquisition and forgetting per cycle from the matrix, for records that do not carry them
    (METHOD.md section 5: BWT compares each earlier snapshot now against right after its own cycle)."""
    rows, cols, intro = matrix["rows"], matrix["columns"], matrix["column_cycles"]
    at = {c: dict(zip(cols, vals)) for c, vals in zip(rows, matrix["values"])}
    out: dict[int, dict[str, float]] = {}
    for t in rows:
        now = {d: v for d, v in at[t].items() if v is not None}
        m: dict[str, float] = {}
        if now:
            m["ACC"] = sum(now.values()) / len(now)
        earlier = [(d, c) for d, c in zip(cols, intro) if d in now and c is not None and c < t and c in at]
        bwt = [now[d] - at[c][d] for d, c in earlier if at[c].get(d) is not None]
        if bwt:
            m["BWT"] = sum(bwt) / len(bwt)
            peaks = [
                max(at[k][d] for k in rows if c <= k < t and at[k].get(d) is not None) - now[d] for d, c in earlier
            ]
            m["forgetting"] = sum(peaks) / len(peaks)
        newest = [now[d] for d, c in zip(cols, intro) if c == t and d in now]
        if newest:
            m["acquisition"] = newest[0]
        out[t] = m
    return out


def continual_frame(cycles: list[dict], matrix: dict) -> pd.DataFrame:
    """One row per cycle: the record's own metrics, with ACC/BWT/acquisition/forgetting filled in from the
    accuracy matrix where the record lacks them (`derived` lists which)."""
    derived = _from_matrix(matrix)
    rows = []
    for c in cycles:
        m = {k: v for k, v in (c.get("metrics") or {}).items() if isinstance(v, int | float)}
        filled = {k: v for k, v in derived.get(c["cycle"], {}).items() if k not in m}
        rows.append({"cycle": c["cycle"], "state": c["state"], **m, **filled, "derived": ", ".join(sorted(filled))})
    return pd.DataFrame(rows)


def _long(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    present = [n for n in names if n in frame]
    if not present:
        return pd.DataFrame(columns=["cycle", "metric", "value"])
    return frame.melt(id_vars=["cycle"], value_vars=present, var_name="metric", value_name="value").dropna()


def learning_chart(frame: pd.DataFrame) -> alt.Chart:
    lines = (
        alt.Chart(_long(frame, LEARNING + EXTRA[:2]))
        .mark_line(point=True)
        .encode(
            x=alt.X("cycle:O", title="cycle", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("value:Q", title="accuracy / transfer"),
            color=alt.Color("metric:N", title="metric"),
            tooltip=["cycle", "metric", alt.Tooltip("value:Q", format=".3f")],
        )
    )
    ceiling = _long(frame, ["in_context_ceiling"])
    if ceiling.empty:
        return lines
    rule = (
        alt.Chart(ceiling)
        .mark_line(strokeDash=[6, 4], color="gray")
        .encode(x="cycle:O", y="value:Q", tooltip=["cycle", alt.Tooltip("value:Q", format=".3f", title="ceiling")])
    )
    label = (
        alt.Chart(ceiling.tail(1))
        .mark_text(align="left", dx=6, dy=-6, color="gray")
        .encode(x="cycle:O", y="value:Q", text=alt.value("in-context ceiling"))
    )
    return lines + rule + label


def general_chart(frame: pd.DataFrame) -> alt.HConcatChart:
    """General ability (held-out LM loss) and KL drift from the champion: two scales, side by side."""
    panels = []
    for name, title in (("general_loss", "general LM loss"), ("kl_drift", "KL drift from the champion")):
        data = _long(frame, [name])
        panels.append(
            alt.Chart(data)
            .mark_line(point=True)
            .encode(
                x=alt.X("cycle:O", axis=alt.Axis(labelAngle=0)),
                y=alt.Y("value:Q", title=title, scale=alt.Scale(zero=False)),
                tooltip=["cycle", alt.Tooltip("value:Q", format=".4f")],
            )
            .properties(title=title, width=320, height=200)
        )
    return alt.hconcat(*panels)


def size_frame(sizes: list[dict]) -> pd.DataFrame:
    cols = ["cycle", "role", "active_parameters", "n_experts", "capacity", "experts", "digest"]
    rows = [{**{k: s.get(k) for k in cols}, "experts": ", ".join(s.get("experts") or [])} for s in sizes]
    return pd.DataFrame(rows, columns=cols)


def size_chart(frame: pd.DataFrame) -> alt.LayerChart:
    base = alt.Chart(frame).encode(x=alt.X("cycle:O", title="cycle", axis=alt.Axis(labelAngle=0)))
    bars = base.mark_bar(opacity=0.35, color="#ef6c00").encode(
        y=alt.Y("n_experts:Q", title="active experts", axis=alt.Axis(titleColor="#ef6c00", tickMinStep=1)),
        tooltip=["cycle", "role", "n_experts", "capacity", "experts"],
    )
    line = base.mark_line(point=True, color="#1565c0").encode(
        y=alt.Y(
            "active_parameters:Q",
            title="active parameters",
            scale=alt.Scale(zero=False),
            axis=alt.Axis(titleColor="#1565c0", format="~s"),
        ),
        tooltip=["cycle", "role", alt.Tooltip("active_parameters:Q", format=",")],
    )
    return alt.layer(bars, line).resolve_scale(y="independent")


# ----- one cycle --------------------------------------------------------------------------------------

STAGES = ["snapshot", "seed", "dream", "evaluate", "gate"]


def timings_frame(timings: dict[str, float]) -> pd.DataFrame:
    order = [s for s in STAGES if s in timings] + sorted(s for s in timings if s not in STAGES)
    return pd.DataFrame({"stage": order, "seconds": [float(timings[s]) for s in order]})


def timings_chart(frame: pd.DataFrame) -> alt.Chart:
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y("stage:N", sort=list(frame["stage"]), title=None),
            x=alt.X("seconds:Q", title="seconds"),
            tooltip=["stage", alt.Tooltip("seconds:Q", format=".1f")],
        )
    )


def gate_frame(gate: dict | None) -> pd.DataFrame:
    checks = (gate or {}).get("checks") or {}
    rows = [
        {
            "check": name,
            "value": number(c.get("value"), 4),
            "rule": f"{c.get('rule', '')} {c.get('threshold', '')}".strip(),
            "result": "pass" if c.get("ok") else "FAIL",
        }
        for name, c in checks.items()
    ]
    return pd.DataFrame(rows, columns=["check", "value", "rule", "result"])


def dreams_frame(samples: list[dict]) -> pd.DataFrame:
    cols = ["text", "kind", "importance", "reward", "kept", "round", "doc"]
    return pd.DataFrame([{k: s.get(k) for k in cols} for s in samples], columns=cols)


def cycles_frame(cycles: list[dict], metrics: tuple[str, ...] = ("acquisition", "retention_delta", "kl_drift")):
    rows = []
    for c in reversed(cycles):  # newest first: what people look for
        m = c.get("metrics") or {}
        rows.append(
            {
                "cycle": c["cycle"],
                "state": c["state"],
                "started": (c.get("created") or "")[:19].replace("T", " "),
                "candidate": f"v{c['candidate_version']}" if c.get("candidate_version") is not None else "—",
                "gate": {True: "pass", False: "fail"}.get(c.get("gate_passed"), "—"),
                **{k: number(m.get(k), 4) for k in metrics},
                "decided by": c.get("decision_by") or "",
            }
        )
    return pd.DataFrame(rows)


def compare_frame(champion: dict[str, Any], candidate: dict[str, Any]) -> pd.DataFrame:
    """Metric by metric: champion, candidate and the change (candidate minus champion)."""
    names = [n for n in [*LEARNING, *GENERAL, "retention_delta", "general_loss_delta", *EXTRA] if n in candidate]
    names += sorted(n for n in candidate if n not in names and isinstance(candidate[n], int | float))
    rows = []
    for n in names:
        a, b = champion.get(n), candidate.get(n)
        both = isinstance(a, int | float) and isinstance(b, int | float)
        rows.append(
            {
                "metric": n,
                "champion": number(a, 4),
                "candidate": number(b, 4),
                "change": number(b - a, 4) if both else None,
            }
        )
    return pd.DataFrame(rows, columns=["metric", "champion", "candidate", "change"])


def _dot(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"')


def lineage_dot(detail: dict) -> str:
    """snapshot -> seeded model -> dreams -> candidate -> evaluation -> gate -> decision, as Graphviz DOT.
    Steps a cycle has not reached yet are drawn dashed."""
    lin, m, gate = detail["lineage"], detail.get("metrics") or {}, detail.get("gate") or {}
    state, version = detail["state"], detail.get("version") or {}
    tags = version.get("tags") or {}

    def node(name: str, label: str, done: bool, color: str = "#e3f2fd") -> str:
        style = 'style="rounded,filled"' if done else 'style="rounded,dashed", fontcolor="gray50"'
        return f'  {name} [label="{_dot(label)}", {style}, fillcolor="{color}"];'

    parent = f"v{lin['parent_version']}" if lin.get("parent_version") is not None else ""
    evaluated = bool(m)
    decided = state in ("approved", "rejected", "rolled_back", "expired")
    if decided:
        decision = (
            f"{state} by {tags.get('decision_by', '?')}\n{(tags.get('decision_at') or '')[:16].replace('T', ' ')}"
        )
    elif state == "gate_failed":
        decision = "not promoted\n(gate failed)"
    elif state == "awaiting_approval":
        decision = "awaiting approval"
    elif state == "failed":
        decision = f"failed\n{(detail.get('error') or '')[:40]}"
    else:
        decision = state
    cand = f"candidate v{lin['candidate_version']}" if lin.get("candidate_version") is not None else "candidate"
    gate_label = "gate" if not gate else ("gate: passed" if gate.get("passed") else "gate: failed")
    metrics = "\n".join(
        f"{k} {m[k]:.3f}" for k in ("acquisition", "retention_delta", "kl_drift") if isinstance(m.get(k), int | float)
    )
    lines = [
        "digraph lineage {",
        '  rankdir=LR; bgcolor="transparent";',
        '  node [shape=box, fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9, color="gray40"];',
        node("champion", f"champion {parent}\n{short(lin.get('champion'))}", bool(lin.get("champion")), "#f5f5f5"),
        node("snapshot", f"wake snapshot\n{short(lin.get('snapshot'))}", bool(lin.get("snapshot")), "#fff8e1"),
        node("seeded", f"seeded model\n{short(lin.get('seeded'))}", bool(lin.get("seeded") or lin.get("candidate"))),
        node("dreams", f"dreams\n{short(lin.get('dreams'))}", bool(lin.get("dreams")), "#f3e5f5"),
        node("candidate", f"{cand}\n{short(lin.get('candidate'))}", bool(lin.get("candidate"))),
        node("evaluation", f"evaluation\n{metrics}" if metrics else "evaluation", evaluated, "#e8f5e9"),
        node("gate", gate_label, bool(gate), "#e8f5e9" if gate.get("passed") else "#fbe9e7"),
        node("decision", decision, decided or state == "gate_failed", STATE_COLORS.get(state, "#f5f5f5") + "33"),
        '  champion -> seeded [label="Knowledge Seeding"];',
        "  snapshot -> seeded;",
        '  seeded -> dreams [label="Dreaming"];',
        "  dreams -> candidate;",
        "  candidate -> evaluation;",
        "  snapshot -> evaluation [style=dotted];",
        "  evaluation -> gate;",
        "  gate -> decision;",
        "}",
    ]
    return "\n".join(lines)
