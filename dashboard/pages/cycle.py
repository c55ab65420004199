"""Cycle detail: one cycle's stage timings, gate report, dream samples (importance, reward) and lineage
(snapshot -> seeded model -> dreams -> evaluation -> decision) as a graph. `?cycle=N` opens cycle N."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data

line = data.line()
st.title("Cycle detail")


def show(n: int) -> None:
    detail = data.cycle(line, n)
    state = detail["state"]
    color = charts.STATE_COLORS.get(state, "#757575")
    st.markdown(
        f"**Cycle {n}** · <span style='color:{color}'>{state.replace('_', ' ')}</span> · "
        f"started {(detail.get('created') or '')[:19].replace('T', ' ')}",
        unsafe_allow_html=True,
    )
    if detail.get("error"):
        st.error(f"The cycle failed: {detail['error']}")

    st.subheader("Lineage")
    st.graphviz_chart(charts.lineage_dot(detail), width="stretch")
    lin = detail["lineage"]
    with st.expander("digests and links"):
        st.dataframe([{"what": k, "value": "" if v is None else str(v)} for k, v in lin.items()], hide_index=True)

    left, right = st.columns(2)
    with left:
        st.subheader("Stage timings")
        timings = charts.timings_frame(detail.get("timings") or {})
        if timings.empty:
            st.caption("No stage has finished yet.")
        else:
            st.altair_chart(charts.timings_chart(timings), width="stretch")
            st.caption(f"total {timings['seconds'].sum():.1f} s")
    with right:
        st.subheader("Gate report")
        gate = detail.get("gate")
        if not gate:
            st.caption("The gate has not run yet.")
        else:
            if gate.get("passed"):
                st.success("Passed: eligible for promotion once a person approves.")
            else:
                st.error("Failed: this candidate is never promoted.")
            st.dataframe(charts.gate_frame(gate), hide_index=True)

    st.subheader("Dream samples")
    dreams = charts.dreams_frame(detail.get("dream_samples") or [])
    if dreams.empty:
        st.caption("No dreams recorded for this cycle (Dreaming off, or not reached yet).")
    else:
        st.dataframe(
            dreams,
            hide_index=True,
            column_config={
                "text": st.column_config.TextColumn(width="large"),
                "importance": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f"),
                "reward": st.column_config.NumberColumn(format="%.2f"),
            },
        )

    size = detail.get("size")
    if size:
        st.caption(
            f"Candidate size: {charts.params(size.get('active_parameters'))} active parameters, "
            f"experts {', '.join(size.get('experts') or []) or 'none'}"
        )


def panels() -> None:
    with data.answering("the cycle"):
        cycles = data.cycles(line)
        if not cycles:
            st.info("No cycles yet: run `sleepcycle cycle run`. Its stages, gate report and dreams will show here.")
            return
        numbers = [c["cycle"] for c in reversed(cycles)]
        states = {c["cycle"]: c["state"] for c in cycles}
        asked = st.query_params.get("cycle")
        index = numbers.index(int(asked)) if asked and asked.isdigit() and int(asked) in numbers else 0
        n = st.selectbox(
            "Cycle",
            numbers,
            index=index,
            format_func=lambda c: f"cycle {c} · {states[c].replace('_', ' ')}",
            key="cycle_n",
        )
        show(n)


data.live(panels)()
