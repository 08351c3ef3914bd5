"""The settings of every config model: unknown keys are errors, values are frozen, and no NaN or infinity."""

from __future__ import annotations

from pydantic import ConfigDict

__all__ = ["STRICT"]

# NaN compares false with everything: a NaN bound would be a check that can never fail.
STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
