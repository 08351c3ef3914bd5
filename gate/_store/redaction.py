"""Keep credentials out of the stored traces: a span processor that redacts secrets before a span is exported.

A provider that echoes the API key in an error message would otherwise have the key written to the store
in the span's exception event and status. MLflow's public ``mlflow.tracing.configure(span_processors=...)``
runs this on every span as it ends; events and status live on the OpenTelemetry span, reached through
``LiveSpan._span`` (guarded: if that changes, attributes are still redacted and a warning says so).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from gate._secrets import redact, secret_values

__all__ = ["install_span_redaction", "redact_span"]

_log = logging.getLogger("gate")


def _redact_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        return value
    cleaned = redact(text, secrets)
    return value if cleaned == text else json.loads(cleaned)


def redact_span(span: Any) -> None:
    """Redact secrets in a live span's attributes, exception events and status description."""
    secrets = secret_values()  # once per span, not per attribute: reading the environment costs ~0.1 ms
    for key, value in list(span.attributes.items()):
        cleaned = _redact_value(value, secrets)
        if cleaned != value:
            span.set_attribute(key, cleaned)
    otel = getattr(span, "_span", None)
    try:
        from opentelemetry.sdk.trace import Event
        from opentelemetry.sdk.util import BoundedList
        from opentelemetry.trace import Status

        events = list(getattr(otel, "_events", None) or [])
        if any(_redact_value(dict(e.attributes or {}), secrets) != dict(e.attributes or {}) for e in events):
            redacted = [Event(e.name, _redact_value(dict(e.attributes or {}), secrets), e.timestamp) for e in events]
            otel._events = BoundedList.from_seq(otel._events._dq.maxlen, redacted)  # type: ignore[union-attr]
        status = getattr(otel, "_status", None)
        if status is not None and status.description and redact(status.description, secrets) != status.description:
            otel._status = Status(status.status_code, redact(status.description, secrets))  # type: ignore[union-attr]
    except (AttributeError, ImportError, TypeError) as exc:  # MLflow or OpenTelemetry internals moved
        _log.warning("gate: could not redact span events (%s); attributes were redacted", exc)


def install_span_redaction() -> None:
    """Add ``redact_span`` to MLflow's span processors (keeping any the app configured)."""
    import mlflow
    from mlflow.tracing.config import get_config

    current = list(get_config().span_processors)
    if redact_span not in current:
        mlflow.tracing.configure(span_processors=[*current, redact_span])
