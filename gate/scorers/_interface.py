"""What a scorer is to the gate: a function from one trace's data to a ``Score``, built from its config."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["BUILDERS", "Score", "ScoreInput", "Scorer", "register", "to_score"]


@dataclass(frozen=True)
class ScoreInput:
    """What MLflow passes to a scorer: the case's inputs and expectations, the app's output, the trace."""

    inputs: Mapping[str, Any]
    outputs: Any
    expectations: Mapping[str, Any] | None
    trace: Any


@dataclass(frozen=True)
class Score:
    """One scorer's verdict on one trace. ``value`` is None when the scorer could not score it."""

    value: float | None
    rationale: str | None = None
    error: str | None = None
    raw: Any = None  # the value as the scorer returned it (bool, "yes", 4, ...), for the assessment
    source_type: Literal["CODE", "LLM_JUDGE"] = "CODE"
    usage: Mapping[str, int] = field(default_factory=dict)  # judge tokens, never counted as the app's


class Scorer(Protocol):
    """A built scorer: its name, its kind, and how to score one trace."""

    @property
    def name(self) -> str: ...

    @property
    def source_type(self) -> Literal["CODE", "LLM_JUDGE"]: ...

    def __call__(self, data: ScoreInput) -> Score: ...


Builder = Callable[[Any], Scorer]
BUILDERS: dict[str, Builder] = {}


def register(type_name: str) -> Callable[[Builder], Builder]:
    """Register the builder of a scorer type; built-ins use this too."""

    def decorate(builder: Builder) -> Builder:
        BUILDERS[type_name] = builder
        return builder

    return decorate


_TRUE = {"yes", "true", "pass", "passed", "y", "1"}
_FALSE = {"no", "false", "fail", "failed", "n", "0"}


def to_score(value: Any, source_type: Literal["CODE", "LLM_JUDGE"] = "CODE") -> Score:
    """Normalise what a scorer returned (bool, number, yes/no, MLflow ``Feedback``) to a numeric ``Score``."""
    rationale = None
    error = None
    if hasattr(value, "value") and hasattr(value, "rationale"):  # an MLflow Feedback
        rationale = value.rationale
        feedback_error = getattr(value, "error", None)
        if feedback_error is not None:
            error = str(getattr(feedback_error, "error_message", None) or feedback_error)
        value = value.value
    if error is not None:
        return Score(None, rationale, error, value, source_type)
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:  # numpy and pandas scalars (np.int64, np.bool_) become Python ones
            value = value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, bool):
        return Score(1.0 if value else 0.0, rationale, None, value, source_type)
    number: float | None = None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return Score(1.0, rationale, None, value, source_type)
        if text in _FALSE:
            return Score(0.0, rationale, None, value, source_type)
        try:
            number = float(text)
        except ValueError:
            number = None
    if number is not None:
        if not math.isfinite(number):
            return Score(None, rationale, f"not a finite number: {value!r}", value, source_type)
        return Score(number, rationale, None, value, source_type)
    return Score(
        None, rationale, f"unusable value {value!r}: return a bool, a number, yes/no or a Feedback", value, source_type
    )
