"""The eval gate: bless a candidate against the current champion, or reject it, with reasons.

    decision = decide(cfg.gate, report)      # report from sleepcycle.cycle.evaluate_candidate

Thresholds (config `gate`): minimum acquisition of the new snapshot, minimum retention change (BWT
against the champion on earlier snapshots), maximum rise of the general LM loss, maximum KL drift from
the champion on the fixed reference set. A passed gate only makes a candidate *eligible*: promotion
still waits for a person.
"""

from __future__ import annotations

from pydantic import BaseModel

from sleepcycle.config import GateConfig


class GateDecision(BaseModel):
    passed: bool
    checks: dict[str, dict]
    """name -> {"value", "threshold", "ok", "rule"}"""

    @property
    def reasons(self) -> list[str]:
        return [
            f"{k}: {c['value']:.4f} violates {c['rule']} {c['threshold']}"
            for k, c in self.checks.items()
            if not c["ok"]
        ]

    def markdown(self, title: str = "Gate report") -> str:
        rows = "\n".join(
            f"| {k} | {c['value']:.4f} | {c['rule']} {c['threshold']} | {'pass' if c['ok'] else 'FAIL'} |"
            for k, c in self.checks.items()
        )
        verdict = "**passed**: awaiting approval" if self.passed else "**rejected**: " + "; ".join(self.reasons)
        return f"## {title}\n\n{verdict}\n\n| check | value | rule | result |\n|---|---|---|---|\n{rows}\n"


def decide(cfg: GateConfig, report: dict) -> GateDecision:
    """`report` needs acquisition, retention_delta, general_loss_delta and kl_drift (see evaluate_candidate)."""
    rules = {
        "acquisition": (report["acquisition"], ">=", cfg.min_acquisition),
        "retention_delta": (report["retention_delta"], ">=", cfg.min_bwt),
        "general_loss_delta": (report["general_loss_delta"], "<=", cfg.max_general_loss_delta),
        "kl_drift": (report["kl_drift"], "<=", cfg.max_kl_drift),
    }
    checks = {}
    for name, (value, rule, threshold) in rules.items():
        ok = value >= threshold if rule == ">=" else value <= threshold
        checks[name] = {"value": float(value), "threshold": threshold, "ok": bool(ok), "rule": rule}
    return GateDecision(passed=all(c["ok"] for c in checks.values()), checks=checks)
