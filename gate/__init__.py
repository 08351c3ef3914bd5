"""trace-gate: a CI quality gate that compares a baseline and a candidate LLM app from their MLflow traces.

The supported Python API (the command line is ``gate``; ``gate._cli`` maps these to exit codes)::

    import gate

    verdict = gate.run_gate(gate.RunOptions(config_path=Path("thresholds.yaml"), simulate=True))
    verdict.status, verdict.exit_code      # "pass" | "fail" | "error", 0 | 1 | 3

Names are imported on first use, so ``import gate`` stays cheap (MLflow is imported only when a run needs it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gate._version import __version__

if TYPE_CHECKING:
    from gate._commands.calibrate import CalibrateOptions, calibrate
    from gate._commands.compare import CompareOptions, compare
    from gate._commands.run import RunOptions, run_gate
    from gate._commands.score import ScoreOptions, score_session
    from gate._commands.validate import validate
    from gate._config.schema import GateConfig, load_config
    from gate._errors import ConfigError, GateError, Interrupted, RunError, Terminated
    from gate._verdict.schema import Verdict, verdict_schema

_EXPORTS = {
    "CalibrateOptions": "gate._commands.calibrate",
    "calibrate": "gate._commands.calibrate",
    "CompareOptions": "gate._commands.compare",
    "compare": "gate._commands.compare",
    "RunOptions": "gate._commands.run",
    "run_gate": "gate._commands.run",
    "ScoreOptions": "gate._commands.score",
    "score_session": "gate._commands.score",
    "validate": "gate._commands.validate",
    "GateConfig": "gate._config.schema",
    "load_config": "gate._config.schema",
    "ConfigError": "gate._errors",
    "GateError": "gate._errors",
    "Interrupted": "gate._errors",
    "RunError": "gate._errors",
    "Terminated": "gate._errors",
    "Verdict": "gate._verdict.schema",
    "verdict_schema": "gate._verdict.schema",
}

__all__ = [
    "CalibrateOptions",
    "CompareOptions",
    "ConfigError",
    "GateConfig",
    "GateError",
    "Interrupted",
    "RunError",
    "RunOptions",
    "ScoreOptions",
    "Terminated",
    "Verdict",
    "__version__",
    "calibrate",
    "compare",
    "load_config",
    "run_gate",
    "score_session",
    "validate",
    "verdict_schema",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
