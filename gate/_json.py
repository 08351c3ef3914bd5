"""Values made safe for JSON: what the app returns or a scorer reads may be anything."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["json_safe"]


def json_safe(value: Any) -> Any:
    """The value itself when JSON can hold it, else its text (for inputs and scores echoed into the verdict)."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)
