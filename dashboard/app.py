"""The sleepcycle dashboard: what each sleep taught and what it cost, the lineage of every candidate, and
the approval desk. It reads through `sleepcycle.store.queries` only; its one write is an approval.

    streamlit run dashboard/app.py                                   # the store the environment names
    SLEEPCYCLE_APPROVER_TOKEN=secret streamlit run dashboard/app.py  # with the approval desk enabled
    python -m dashboard.fixture --home /tmp/demo && SLEEPCYCLE_HOME=/tmp/demo streamlit run dashboard/app.py

Pages (dashboard/pages/): Overview, Retention, Cycle detail, Approvals. Which store and registry: the
same environment variables as every sleepcycle process (docs/storage.md); docs/dashboard.md has more.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run` puts only this folder on sys.path; `dashboard` and `flows` are top-level folders of the
# repository (not installed packages), so the repository root goes first.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import data  # noqa: E402

st.set_page_config(page_title="sleepcycle", page_icon=":crescent_moon:", layout="wide")

navigation = st.navigation(
    [
        st.Page("pages/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("pages/retention.py", title="Retention", icon=":material/grid_on:"),
        st.Page("pages/cycle.py", title="Cycle detail", icon=":material/account_tree:"),
        st.Page("pages/approvals.py", title="Approvals", icon=":material/how_to_reg:"),
    ]
)
with st.sidebar:
    st.text_input("Model line", value=data.settings().line, key="line", help="SLEEPCYCLE_LINE by default")
    st.selectbox("Auto-refresh", list(data.REFRESH), index=2, key="refresh", help="how often live panels reread")
    st.caption(f"Reading {data.where()}")
navigation.run()
