"""User scorers for tests/test_scorers.py, imported through `target: gate_test_scorers:<name>`."""

from __future__ import annotations

import json
from typing import Any

from mlflow.entities import Feedback
from mlflow.genai.scorers import scorer


def answer_length(outputs: Any) -> int:
    """Takes only outputs: the gate must not pass it anything else."""
    return len(outputs)


def echo_all(inputs: Any, outputs: Any, expectations: Any) -> Feedback:
    """Echoes what it was given in the rationale, so a test can see all three arrived."""
    given = {"inputs": inputs, "outputs": outputs, "expectations": expectations}
    return Feedback(value=True, rationale=json.dumps(given, sort_keys=True))


def trace_duration(trace: Any) -> float:
    """Takes only the trace."""
    return float(trace.info.execution_duration)


def echo_kwargs(**kwargs: Any) -> Feedback:
    """Takes anything by keyword, as many scorer helpers do."""
    return Feedback(value=1, rationale=",".join(sorted(kwargs)))


@scorer
def mentions_refund(outputs: Any) -> Feedback:
    """An MLflow @scorer returning a Feedback with a rationale."""
    found = "refund" in str(outputs).lower()
    return Feedback(value=found, rationale="mentions a refund" if found else "no refund mentioned")


def takes_text(text: str) -> bool:
    """Takes none of inputs, outputs, expectations, trace: not a scorer."""
    return bool(text)


def explodes(outputs: Any) -> bool:
    """A scorer with a bug: raises on every call."""
    raise RuntimeError(f"scorer bug on {outputs!r}")
