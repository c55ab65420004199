"""The approval desk's one write: check the approver token, hand the decision to `flows.approval.decide` (the
same path as `sleepcycle approve|reject`: it resumes the paused flow run, or records the decision in the
registry when no run waits), and keep an audit line for every attempt, refused ones included.

    SLEEPCYCLE_APPROVER_TOKEN   the secret an approver types; unset -> every attempt is refused
    $SLEEPCYCLE_HOME/audit/dashboard-approvals.jsonl    one JSON object per attempt (never the typed token)

    result = submit("default", cycle=5, approve=True, who="ana", note="retention holds", token=typed)
"""

from __future__ import annotations

import hmac
import importlib
import json
import os
import threading
import time
from collections import defaultdict, deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sleepcycle.store.settings import load as load_settings

TOKEN_ENV = "SLEEPCYCLE_APPROVER_TOKEN"
AUDIT = Path("audit") / "dashboard-approvals.jsonl"
MAX_WRONG, WINDOW_S = 5, 600.0
"""A client that types MAX_WRONG wrong tokens within WINDOW_S seconds is refused until the oldest ages out:
the token is the desk's only lock, so guessing it must be slow."""

_wrong: dict[str, deque[float]] = defaultdict(deque)  # client -> times of wrong tokens (this process)
_wrong_lock = threading.Lock()  # Streamlit runs each session in its own thread


class Refused(PermissionError):
    """The attempt was not authorised or not complete; nothing was decided (the audit says why)."""


class Unavailable(RuntimeError):
    """The approval path (flows.approval) is not installed in this deployment."""


def configured() -> bool:
    return bool(os.environ.get(TOKEN_ENV))


def audit_path() -> Path:
    return load_settings().home / AUDIT


def audit(entry: dict[str, Any]) -> None:
    """Append one line; O_APPEND keeps lines whole when several sessions write at once."""
    path = audit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"when": datetime.now(UTC).isoformat(), **entry}, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def approval_path():
    """`flows.approval` or Unavailable: the desk never decides by itself, so there is no fallback."""
    try:
        return importlib.import_module("flows.approval")
    except ImportError as exc:
        raise Unavailable(f"flows.approval is not importable here ({exc}); the desk cannot decide") from None


def _locked_out(client: str, now: float) -> bool:
    with _wrong_lock:
        times = _wrong[client]
        while times and now - times[0] > WINDOW_S:
            times.popleft()
        return len(times) >= MAX_WRONG


def _refusal(token: str, who: str, client: str) -> str | None:
    expected = os.environ.get(TOKEN_ENV, "")
    if not expected:
        return f"no approver token is configured on this server ({TOKEN_ENV})"
    if not token:
        return "no approver token given"
    now = time.monotonic()
    if _locked_out(client, now):
        return f"too many wrong tokens from this client; try again in {WINDOW_S / 60:.0f} minutes"
    # Constant-time comparison: response time says nothing about how much of a guess was right.
    if not hmac.compare_digest(token.encode(), expected.encode()):
        with _wrong_lock:
            _wrong[client].append(now)
        return "wrong approver token"
    if not who.strip():
        return "a decision needs the approver's name"
    return None


def submit(
    line: str, cycle: int, approve: bool, who: str, note: str, token: str, client: str | None = None
) -> dict[str, Any]:
    """Authorise, decide through flows.approval, audit. Raises Refused or Unavailable (both audited)."""
    action = "approve" if approve else "reject"
    entry = {"line": line, "cycle": cycle, "action": action, "who": who.strip(), "note": note, "client": client}
    reason = _refusal(token, who, client or "unknown")
    if reason:
        audit({**entry, "outcome": "refused", "reason": reason})
        raise Refused(reason)
    try:
        decide = approval_path().decide
    except Unavailable as exc:
        audit({**entry, "outcome": "unavailable", "reason": str(exc)})
        raise
    try:
        result = decide(line=line, cycle=cycle, approve=approve, who=who.strip(), note=note)
    except Exception as exc:
        audit({**entry, "outcome": "error", "reason": f"{type(exc).__name__}: {exc}"})
        raise
    audit({**entry, "outcome": "done", "result": result})
    return result
