"""Overview: the champion (version, size, who promoted it and when), the cycles and their states, what waits
for approval, and sleep pressure. Every panel here is live (reruns on the sidebar's auto-refresh)."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data

line = data.line()
st.title("Overview")
st.caption(f"Model line **{line}**: each sleep cycle turns a wake snapshot into a candidate; a person promotes it.")


def promoted(champion: dict, history: list[dict]) -> dict:
    """The alias move that made the current champion (covers a first champion set by hand, too)."""
    moves = [m for m in history if m["alias"] == "champion" and m["to_version"] == champion["version"]]
    return moves[-1] if moves else {}


def champion_panel(champion: dict) -> None:
    size = data.model_size(champion["digest"]) or {}
    move = promoted(champion, data.alias_history(line))
    tags = champion.get("tags") or {}
    st.subheader("Champion")
    c = st.columns(4)
    c[0].metric("version", f"v{champion['version']}", help=f"digest {champion['digest']}")
    c[0].caption(f"from cycle {champion['cycle']}")
    c[1].metric("active parameters", charts.params(size.get("active_parameters")))
    c[1].caption(
        f"base {charts.params(size.get('base_parameters'))} + experts {charts.params(size.get('expert_parameters'))}"
    )
    experts = size.get("n_experts")
    cap = size.get("capacity")
    c[2].metric("experts", "unknown" if experts is None else f"{experts}" + (f" / {cap}" if cap else ""))
    c[2].caption(", ".join(size.get("experts") or []) or "none active")
    when = move.get("when") or tags.get("decision_at") or ""
    c[3].metric("promoted", when[:10] or "unknown")
    c[3].caption(f"{when[11:16]} UTC by {move.get('who') or tags.get('decision_by') or 'unknown'}")
    note = tags.get("decision_note") or move.get("reason")
    if note:
        st.caption(f"Note: {note}")


def pressure_panel() -> None:
    st.subheader("Sleep pressure")
    with data.answering("the wake buffer"):  # its own guard: a wake-buffer problem leaves the rest standing
        status = data.sleep_pressure(line)
        if status is None:
            st.info("No wake buffer yet: records the model reads awake will show here as sleep pressure.")
            return
        count, threshold = status.get("records", 0), status.get("threshold") or 0
        if threshold > 0:
            st.progress(min(1.0, count / threshold), text=f"{count} of {threshold} wake records before the next sleep")
        else:
            st.caption(f"{count} wake records waiting (no pressure threshold set)")
        due = "a sleep is due" if status.get("due") else "not due yet"
        n = status.get("segments", 0)
        st.caption(
            f"{n} segment{'' if n == 1 else 's'} waiting · {due} · {status.get('quarantined', 0)} lines "
            f"quarantined · last claimed by cycle {status.get('last_claim') or '—'}"
        )
        if not count:
            st.caption("Feed it with `sleepcycle wake add FILE.jsonl`.")


def panels() -> None:
    with data.answering("the model line"):
        champion = data.champion(line)
        cycles = data.cycles(line)
        pending = data.pending_approvals(line)
        if champion is None and not cycles:
            st.info(
                "No cycles yet: run `sleepcycle cycle run` to sleep once (or `make demo` for a few cycles on the "
                "built-in world). Each cycle's candidate, its retention and its lineage will appear here."
            )
            pressure_panel()
            return
        if champion:
            champion_panel(champion)
        else:
            st.warning("No champion yet: approve a candidate on the Approvals page (or `sleepcycle approve CYCLE`).")

        st.subheader("Waiting for approval")
        if pending:
            st.dataframe(
                [
                    {
                        "cycle": p["cycle"],
                        "candidate": f"v{p['version']}",
                        "registered": p["created"][:16].replace("T", " "),
                        **{k: charts.number(p["cycle_metrics"].get(k), 4) for k in ("acquisition", "retention_delta")},
                    }
                    for p in pending
                ],
                hide_index=True,
            )
            st.page_link("pages/approvals.py", label="Decide on the Approvals page", icon=":material/how_to_reg:")
        else:
            st.caption("Nothing waits for a decision.")

        st.subheader("Cycles")
        if cycles:
            counts = {}
            for c in cycles:
                counts[c["state"]] = counts.get(c["state"], 0) + 1
            st.caption(" · ".join(f"{n} {state.replace('_', ' ')}" for state, n in counts.items()))
            st.dataframe(charts.cycles_frame(cycles), hide_index=True)
        else:
            st.info("No cycles yet: run `sleepcycle cycle run`.")
        pressure_panel()


data.live(panels)()
