"""Approvals: a waiting candidate beside the champion, metric by metric, and the desk to approve or reject it.
The desk needs SLEEPCYCLE_APPROVER_TOKEN on the server and the same token typed here; every attempt is
audited, and every decision goes through flows.approval.decide, the path the CLI takes."""

from __future__ import annotations

import streamlit as st

from dashboard import charts, data, desk

line = data.line()
st.title("Approvals")
if flash := st.session_state.pop("desk_flash", None):
    st.success(flash)
    with st.expander("what the approval path answered"):
        st.json(st.session_state.pop("desk_result", None))


def card(title: str, version: dict | None, metrics: dict) -> None:
    st.subheader(title)
    if version is None:
        st.caption("none yet")
        return
    size = data.model_size(version["digest"]) or {}
    st.metric("version", f"v{version['version']}", help=f"digest {version['digest']}")
    st.caption(
        f"cycle {version['cycle']} · registered {version['created'][:16].replace('T', ' ')} · "
        f"{charts.params(size.get('active_parameters'))} active parameters · "
        f"{size.get('n_experts', '?')} experts ({', '.join(size.get('experts') or []) or 'none'})"
    )
    headline = {k: charts.number(metrics.get(k), 4) for k in ("acquisition", "retention_delta", "kl_drift")}
    st.dataframe([headline], hide_index=True)


def client_ip() -> str | None:
    ip = getattr(st.context, "ip_address", None)
    return ip if isinstance(ip, str) else None  # None outside a browser session (AppTest, bare mode)


def desk_form(candidate: dict) -> None:
    st.subheader(f"Decide on cycle {candidate['cycle']} (v{candidate['version']})")
    if deadline := candidate.get("approval_deadline"):
        st.caption(f"The request expires at {deadline[:16].replace('T', ' ')} UTC: after that, nothing is promoted.")
    if not desk.configured():
        st.warning(
            f"The approval desk is locked: no approver token is configured on this server ({desk.TOKEN_ENV}). "
            "Attempts are refused and logged; the CLI (`sleepcycle approve|reject`) still works for operators."
        )
    with st.form("desk", clear_on_submit=False):
        who = st.text_input("Your name", key="desk_who")
        note = st.text_area("Note (why)", key="desk_note", placeholder="what you checked, what worried you")
        token = st.text_input("Approver token", type="password", key="desk_token")
        approve_col, reject_col = st.columns(2)
        approve = approve_col.form_submit_button("Approve and promote", type="primary")
        reject = reject_col.form_submit_button("Reject")
    if not (approve or reject):
        return
    try:
        result = desk.submit(
            line,
            candidate["cycle"],
            approve=approve,
            who=who,
            note=note,
            token=token,
            client=client_ip(),
        )
    except desk.Refused as exc:
        st.error(f"Refused: {exc}. The attempt was logged.")
        return
    except desk.Unavailable as exc:
        st.error(str(exc))
        return
    except Exception as exc:  # the decision path failed: say so, keep the page
        st.error(f"The decision did not go through: {type(exc).__name__}: {exc}")
        return
    data.forget()
    verb = "approved: champion is now" if approve else "rejected:"
    st.session_state["desk_flash"] = f"Cycle {candidate['cycle']} {verb} v{candidate['version']}."
    st.session_state["desk_result"] = result
    st.rerun()


def recent(versions: list[dict]) -> None:
    decided = [v for v in versions if v["status"] != "pending"]
    if not decided:
        return
    st.subheader("Decisions so far")
    st.dataframe(
        [
            {
                "version": f"v{v['version']}",
                "cycle": v["cycle"],
                "decision": v["status"],
                "by": v["tags"].get("decision_by") or v["tags"].get("rolled_back_by", ""),
                "when": (v["tags"].get("decision_at") or "")[:16].replace("T", " "),
                "note": v["tags"].get("decision_note", ""),
            }
            for v in reversed(decided)
        ],
        hide_index=True,
    )


with data.answering("the approvals"):
    pending = data.pending_approvals(line)
    cycles = {c["cycle"]: c for c in data.cycles(line)}
    if not pending:
        st.info(
            "Nothing waits for approval. A candidate appears here when its cycle passes the eval gate "
            "(`sleepcycle cycle run` starts one)."
        )
    else:
        by_cycle = {p["cycle"]: p for p in pending}
        n = st.selectbox(
            "Candidate",
            list(by_cycle),
            format_func=lambda c: f"cycle {c} · v{by_cycle[c]['version']}",
            key="desk_cycle",
        )
        candidate = by_cycle[n]
        champion = data.champion(line)
        champion_metrics = {}
        if champion:
            champion_metrics = (cycles.get(champion["cycle"]) or {}).get("metrics") or champion.get("metrics") or {}
        candidate_metrics = candidate.get("cycle_metrics") or candidate.get("metrics") or {}
        left, right = st.columns(2)
        with left:
            card("Champion", champion, champion_metrics)
        with right:
            card("Candidate", candidate, candidate_metrics)
        st.subheader("Side by side")
        side = charts.compare_frame(champion_metrics, candidate_metrics)
        st.dataframe(side, hide_index=True, height=35 * (len(side) + 1) + 3)  # every metric, no inner scroll
        with st.expander("gate report", expanded=False):
            st.dataframe(charts.gate_frame(candidate.get("gate")), hide_index=True)
        st.page_link("pages/cycle.py", label="Lineage and dreams of this cycle", query_params={"cycle": n})
        desk_form(candidate)
    recent(data.versions(line))
