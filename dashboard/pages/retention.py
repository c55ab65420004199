"""Retention: the accuracy matrix (cycles x wake snapshots), each snapshot's forgetting curve, what each sleep
taught (ACC, acquisition) and cost (BWT) against the in-context ceiling, general ability and KL drift, and
model size (active parameters, experts) over cycles."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data

line = data.line()
st.title("Retention")
st.caption("What each sleep taught and what it cost, cycle after cycle.")


def panels() -> None:
    with data.answering("the accuracy matrix"):
        matrix = data.accuracy_matrix(line)
        cycles = data.cycles(line)
        if not cycles:
            st.info("No cycles yet: run `sleepcycle cycle run`. Each cycle adds a row to the accuracy matrix.")
            return
        frame = charts.matrix_frame(matrix)

        st.subheader("Accuracy matrix")
        if frame.empty:
            st.info("No cycle has been evaluated yet: the matrix fills in when a cycle reaches its evaluation.")
        else:
            st.caption(
                "Row: the candidate after cycle i. Column: the probes of a wake snapshot. Down a column is forgetting."
            )
            st.altair_chart(charts.heatmap(frame), width="stretch")
            st.subheader("Forgetting curves")
            st.altair_chart(charts.forgetting_chart(frame), width="stretch")
            with st.expander("matrix as a table"):
                st.dataframe(frame.pivot(index="cycle", columns="snapshot", values="accuracy"))

        curves = charts.continual_frame(cycles, matrix)
        st.subheader("Learning against the in-context ceiling")
        st.caption(
            "ACC: mean accuracy over every snapshot so far; acquisition: the newest snapshot; BWT: change on "
            "earlier snapshots since their own cycle (negative is forgetting). Dashed: what the teacher gets "
            "with the document in its context."
        )
        st.altair_chart(charts.learning_chart(curves), width="stretch")
        st.subheader("General ability and drift")
        st.altair_chart(charts.general_chart(curves), width="stretch")
        with st.expander("metrics per cycle"):
            st.dataframe(curves, hide_index=True)
            if curves.get("derived") is not None and curves["derived"].astype(bool).any():
                st.caption("`derived`: computed here from the accuracy matrix because the record did not carry it.")

        st.subheader("Model size")
        sizes = charts.size_frame(data.model_sizes(line))
        if sizes.empty:
            st.info("No published checkpoint to measure yet.")
        else:
            st.altair_chart(charts.size_chart(sizes), width="stretch")
            with st.expander("size per cycle"):
                st.dataframe(sizes, hide_index=True)


data.live(panels)()
