"""Reporters: ``--report FORMAT[:PATH]`` renders the verdict as markdown, junit, github, html or json.

Each reporter is a pure function of the verdict (``gate.reporters.REPORTERS[name](verdict) -> str``), so a
report can be rebuilt later from a saved verdict JSON.
"""

from __future__ import annotations

from gate.reporters import _builtin, _html  # noqa: F401 - importing registers the built-in formats
from gate.reporters._interface import REPORTERS, Reporter, register

__all__ = ["REPORTERS", "Reporter", "register"]
