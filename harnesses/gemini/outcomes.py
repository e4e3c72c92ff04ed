"""What the ``gemini`` loop does with each finish reason and each safety decision: pure
functions over the reply's dict form, so that every outcome is a row of data.

Finish reasons (https://ai.google.dev/api/generate-content#FinishReason): ``STOP`` (and an
unset reason) continue as usual; ``MALFORMED_FUNCTION_CALL`` with nothing else in the turn
is asked again, as Google's reference loop does
(https://github.com/google-gemini/computer-use-preview, ``agent.py``), up to
:data:`MALFORMED_RETRIES` times; every other reason (``MAX_TOKENS``, ``SAFETY``,
``RECITATION``...) ends the run with that reason, and the turn's function calls, possibly
cut short or blocked, are never executed. A prompt blocked outright (no candidate, a
``promptFeedback.blockReason``) ends it the same way.

Safety decisions (https://ai.google.dev/gemini-api/docs/computer-use, "Safety decision"):
a call carrying ``safety_decision`` ``require_confirmation`` runs under ``safety=acknowledge``
(the default, as unattended evals need; its response then says
``safety_acknowledgement: "true"``) and ends the run unexecuted under ``safety=stop``, with
the stop reason ``safety_check`` (as on ``openai``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONTINUE, RETRY, END = "continue", "retry", "end"
MALFORMED_RETRIES = 3
FINISH_REASONS: dict[str | None, str] = {
    None: CONTINUE, "FINISH_REASON_UNSPECIFIED": CONTINUE, "STOP": CONTINUE,
    "MALFORMED_FUNCTION_CALL": RETRY,
    # any other reason ends the run; listed for the reader, the default says the same
    "MAX_TOKENS": END, "SAFETY": END, "RECITATION": END, "LANGUAGE": END, "OTHER": END,
    "BLOCKLIST": END, "PROHIBITED_CONTENT": END, "SPII": END, "IMAGE_SAFETY": END,
    "UNEXPECTED_TOOL_CALL": END,
}


@dataclass(slots=True)
class Outcome:
    """What to do with one reply: ``action`` (continue, retry, end), the finish reason
    (or block reason) it comes from, and the safety checks of its calls, each with its
    decision (``acknowledged`` or ``stopped``)."""

    action: str
    reason: str | None
    checks: list[dict[str, Any]] = field(default_factory=list)


def finish_reason(reply: dict[str, Any]) -> str | None:
    """The first candidate's finish reason, or the prompt's block reason (``BLOCKED_...``)."""
    candidates = reply.get("candidates") or []
    if candidates:
        reason = candidates[0].get("finish_reason")
        return str(getattr(reason, "value", reason)) if reason is not None else None
    blocked = (reply.get("prompt_feedback") or {}).get("block_reason")
    return f"BLOCKED_{getattr(blocked, 'value', blocked)}" if blocked else "NO_CANDIDATE"


def outcome(reply: dict[str, Any], calls: list[dict[str, Any]], text: str | None,
            safety: str) -> Outcome:
    """The outcome of a reply (its dict form) whose turn reads as ``calls`` and ``text``."""
    reason = finish_reason(reply)
    action = FINISH_REASONS.get(reason, END)
    if action == RETRY and (calls or text):
        action = END  # the reference retries only an empty turn; a malformed call never runs
    checks = safety_checks(calls, safety)
    if action == CONTINUE and any(c["decision"] == "stopped" for c in checks):
        return Outcome(END, "safety_check", checks)
    return Outcome(action, reason, checks if action == CONTINUE else [])


def safety_checks(calls: list[dict[str, Any]], safety: str) -> list[dict[str, Any]]:
    """One record per call that carries a ``safety_decision``, with what ``safety`` decides."""
    checks = []
    for call in calls:
        check = call["arguments"].get("safety_decision")
        if not check:
            continue
        asked = check.get("decision") if isinstance(check, dict) else str(check)
        stop = safety == "stop" and asked == "require_confirmation"
        checks.append({"call_id": call["id"], "name": call["name"], "check": asked,
                       "explanation": check.get("explanation") if isinstance(check, dict)
                       else None, "decision": "stopped" if stop else "acknowledged"})
    return checks
