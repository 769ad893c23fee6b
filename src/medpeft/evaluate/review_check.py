"""Do `predict`'s review flags find the failures? Checked on labelled cases, where Dice is known.

A failure is an organ with Dice under ``FAILED_BELOW``; the flag is `predict`'s (confidence under
the threshold, or the organ not found). ``medpeft evaluate`` prints the check on the user's own
test cases; ``benchmarks/review_flags.py`` measures it on the phantom at several thresholds.
"""
from __future__ import annotations

import math

from medpeft.infer.review import REVIEW_BELOW, needs_review

FAILED_BELOW = 0.5


def review_check(rows: list[dict], *, below: float = REVIEW_BELOW) -> dict:
    """Counts over the rows with a Dice (organs the labels contain): failures, failures flagged
    ("caught"), good organs, good organs flagged ("false_alarms")."""
    scored = [r for r in rows if not math.isnan(r["dice"])]
    flagged = [bool(needs_review(r["confidence"], below)) for r in scored]
    failed = [r["dice"] < FAILED_BELOW for r in scored]
    return {"below": below, "organs": len(scored), "failed": sum(failed),
            "caught": sum(f and g for f, g in zip(failed, flagged)),
            "false_alarms": sum(g and not f for f, g in zip(failed, flagged))}


def review_check_line(check: dict) -> str:
    """The check in one line, for the command line."""
    good = check["organs"] - check["failed"]
    return (f"review flags (confidence under {check['below']:.2f} or not found): "
            f"{check['caught']} of {check['failed']} failed organs (Dice < {FAILED_BELOW}) flagged, "
            f"{check['false_alarms']} of {good} good organs flagged")
