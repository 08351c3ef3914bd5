"""Scorers: per-trace quality values that become metrics ``<name>/<aggregation>``, gated like latency.

A scorer type is a builder registered with ``register("type")``; the built-ins register the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gate.scorers import _builtin, _judges  # noqa: F401 - importing registers the built-in types
from gate.scorers._interface import BUILDERS, Score, ScoreInput, Scorer, register, to_score
from gate.scorers._models import SCORER_TYPES, ScorerConfig

__all__ = [
    "BUILDERS",
    "SCORER_TYPES",
    "Score",
    "ScoreInput",
    "Scorer",
    "ScorerConfig",
    "build_scorers",
    "register",
    "to_score",
]


def build_scorers(configs: Sequence[Any], search_path: Sequence[Path]) -> list[Scorer]:
    """Build every configured scorer (raises ``ConfigError`` for one that cannot be built)."""
    _judges.SEARCH_PATH[:] = list(search_path)
    return [BUILDERS[cfg.type](cfg) for cfg in configs]
