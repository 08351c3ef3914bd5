"""``gate validate``: the config, the dataset and the targets, checked without calling anything (and fast)."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from gate._config.schema import load_config
from gate._decide.sizes import too_small
from gate._run.prepare import prepare

__all__ = ["validate"]


def validate(config_path: Path, import_targets: bool = False) -> str:
    """What is valid, as one line; raises ``ConfigError`` (exit 2) naming each problem.

    Targets are located in their source, without running the app's code or importing MLflow, unless
    ``import_targets`` asks for the real import.
    """
    config = load_config(config_path)
    seats = [config.variant(v) for v in ("baseline", "candidate")]
    if all(seat is not None and seat.target is None and seat.traces is not None for seat in seats):
        return (
            f"{config_path} is valid for gate compare: {len(config.checks)} checks, a trace selector for "
            "both versions (no targets: gate run needs them)"
        )
    with contextlib.redirect_stdout(sys.stderr):
        prepared = prepare(config_path, config, import_targets=import_targets)
    hows = {found.how for found in prepared.located.values()}
    python = len(prepared.located) if not import_targets else len(prepared.targets)
    noun = "both targets" if python == 2 else "the target"
    targets = (
        f"{noun} import"
        if import_targets
        else f"{noun} defined (found in their source, not imported; --import imports them)"
        if hows == {"static"}
        else f"{noun} found (where the source could not tell, by importing them)"
    )
    others = [
        f"{v}: {config.kind(v)} {config.describe(v)}" for v in ("baseline", "candidate") if config.kind(v) != "target"
    ]
    versions = "; ".join(([targets] if python else []) + others)
    line = f"{config_path} is valid: {len(prepared.cases)} cases, {len(prepared.config.checks)} checks, {versions}"
    return "\n".join([line, *(f"warning: {w}" for w in too_small(prepared.config, len(prepared.cases)))])
