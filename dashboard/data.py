"""What the pages read: cached calls into `sleepcycle.store.queries`, the dashboard's only way to the store.

The store and registry are opened once per process (per set of endpoints) and every answer is cached for
a few seconds, so auto-refreshing panels in many browser tabs cost one round of queries, not one per tab.
`forget()` drops the answers after the dashboard's one write (an approval), so the next run shows it.
Which store: the environment decides (sleepcycle.store.settings), as for every other sleepcycle process.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from sleepcycle.store import open_registry, open_store, queries
from sleepcycle.store.settings import Settings
from sleepcycle.store.settings import load as load_settings

TTL_S = 5
"""Seconds an answer is reused: short enough that a refresh shows a cycle's progress."""


def settings() -> Settings:
    return load_settings()


def _key(s: Settings) -> tuple:
    # Everything that picks the backend (not the secrets themselves: the access key names the account).
    return (str(s.home), s.s3_endpoint, s.s3_secure, s.s3_bucket, s.access_key, s.tracking_uri)


@st.cache_resource(show_spinner=False)
def _backend(key: tuple, _s: Settings):
    store = open_store(_s)
    return store, open_registry(_s, store=store)


def _kw() -> tuple[tuple, dict[str, Any]]:
    s = settings()
    store, registry = _backend(_key(s), s)
    return _key(s), {"store": store, "registry": registry}


def where() -> str:
    """One line naming the store and registry the dashboard reads, for the sidebar."""
    s = settings()
    store = f"S3 {s.s3_url}/{s.s3_bucket}" if s.s3_endpoint else f"local store {s.home / 'store'}"
    registry = f"MLflow {s.tracking_uri}" if s.tracking_uri else "registry in the store"
    return f"{store} · {registry}"


# Each query is cached under the backend key and its own arguments; the store objects ride along unhashed.
@st.cache_data(ttl=TTL_S, show_spinner=False)
def _champion(key: tuple, line: str, _kw: dict) -> dict | None:
    return queries.champion(line, **_kw)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _cycles(key: tuple, line: str, _kw: dict) -> list[dict]:
    return queries.cycles(line, **_kw)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _cycle(key: tuple, line: str, n: int, samples: int, _kw: dict) -> dict:
    return queries.cycle(line, n, dream_samples=samples, **_kw)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _matrix(key: tuple, line: str, _kw: dict) -> dict:
    return queries.accuracy_matrix(line, **_kw)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _pending(key: tuple, line: str, _kw: dict) -> list[dict]:
    return queries.pending_approvals(line, **_kw)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _history(key: tuple, line: str, _kw: dict) -> list[dict]:
    return queries.alias_history(line, **_kw)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _versions(key: tuple, line: str, _kw: dict) -> list[dict]:
    return queries.versions(line, **_kw)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _sizes(key: tuple, line: str, _kw: dict) -> list[dict]:
    return queries.model_sizes(line, store=_kw["store"])


@st.cache_data(show_spinner=False)  # a digest names immutable content: no expiry
def _size(key: tuple, digest: str, _kw: dict) -> dict | None:
    return queries.model_size(digest, store=_kw["store"])


@st.cache_data(ttl=TTL_S, show_spinner=False)
def _pressure(key: tuple, line: str) -> dict | None:
    return queries.sleep_pressure(line)


def champion(line: str) -> dict | None:
    key, kw = _kw()
    return _champion(key, line, kw)


def cycles(line: str) -> list[dict]:
    key, kw = _kw()
    return _cycles(key, line, kw)


def cycle(line: str, n: int, samples: int = 20) -> dict:
    key, kw = _kw()
    return _cycle(key, line, n, samples, kw)


def accuracy_matrix(line: str) -> dict:
    key, kw = _kw()
    return _matrix(key, line, kw)


def pending_approvals(line: str) -> list[dict]:
    key, kw = _kw()
    return _pending(key, line, kw)


def alias_history(line: str) -> list[dict]:
    key, kw = _kw()
    return _history(key, line, kw)


def versions(line: str) -> list[dict]:
    key, kw = _kw()
    return _versions(key, line, kw)


def model_sizes(line: str) -> list[dict]:
    key, kw = _kw()
    return _sizes(key, line, kw)


def model_size(digest: str | None) -> dict | None:
    if not digest:
        return None
    key, kw = _kw()
    return _size(key, digest, kw)


def sleep_pressure(line: str) -> dict | None:
    return _pressure(_kw()[0], line)


def forget() -> None:
    """Drop cached answers (after an approval): the next run reads the store again."""
    st.cache_data.clear()


def line() -> str:
    """The model line the sidebar selected (default: SLEEPCYCLE_LINE)."""
    return st.session_state.get("line") or settings().line


@contextmanager
def answering(what: str) -> Iterator[None]:
    """Show a store or registry failure as a message that says what to check, not as a traceback."""
    try:
        yield
    except Exception as exc:  # any backend failure; Streamlit's reruns and stops are BaseException, not caught
        st.error(f"Could not read {what}: {type(exc).__name__}: {exc}")
        st.caption(
            f"Reading from {where()}. Check that the endpoints in the environment answer "
            "(SLEEPCYCLE_S3_ENDPOINT, MLFLOW_TRACKING_URI) and that the credentials are right."
        )
        with st.expander("details"):
            st.code("".join(traceback.format_exception(exc)), language="text")


REFRESH = {"off": None, "5 s": 5, "15 s": 15, "60 s": 60}
"""Auto-refresh choices in the sidebar; the live panels rerun alone (st.fragment), not the whole page."""


def live(panel: Callable[[], None]) -> Callable[[], None]:
    """`panel` as a fragment that reruns every sidebar-chosen interval (or only on interaction when off)."""
    return st.fragment(run_every=REFRESH.get(st.session_state.get("refresh", "15 s")))(panel)
