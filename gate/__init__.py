"""trace-gate: a CI quality gate that compares a baseline and a candidate LLM app from their MLflow traces."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
