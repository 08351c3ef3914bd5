"""Keep credentials out of everything the gate prints or writes."""

from __future__ import annotations

import os
import re

__all__ = ["redact"]

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_KEY_SHAPE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,})")


def redact(text: str) -> str:
    """Replace the value of every secret-looking environment variable, and anything shaped like an API key."""
    for name, value in os.environ.items():
        if len(value) >= 6 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "***")
    return _KEY_SHAPE.sub("sk-***", text)
