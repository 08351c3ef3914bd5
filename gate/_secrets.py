"""Keep credentials out of everything the gate prints or writes."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact", "secret_values"]

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_KEY_SHAPE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,})")


def secret_values() -> list[str]:
    """The values of the secret-looking environment variables, now (read once per batch of texts: it is not cheap)."""
    return [value for name, value in os.environ.items() if len(value) >= 6 and _SECRET_NAME.search(name)]


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Replace the value of every secret-looking environment variable, and anything shaped like an API key."""
    for value in secret_values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, "***")
    return _KEY_SHAPE.sub("sk-***", text)


def redact_uri(uri: str) -> str:
    """Hide a password in a URI (``http://user:***@host``)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
