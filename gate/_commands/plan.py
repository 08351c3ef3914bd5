"""What a run is asked to do, before anything runs: the command line's options, and the plan ``--dry-run`` prints.

Apart from ``gate._commands.run`` so that a dry run imports what ``gate validate`` does and little more: none of
the store, session, decision or verdict code a real run needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate._config.schema import VARIANTS
from gate._decide.sizes import too_small
from gate._run.prepare import prepare

__all__ = ["SESSION_ID", "RunOptions", "plan_gate"]

SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class RunOptions:
    """What the command line decides about a run."""

    config_path: Path
    simulate: bool = False
    tracking_uri: str | None = None
    session: str | None = None  # a session id chosen by the caller (shards share one); default: generated
    shard: tuple[int, int] | None = None  # (i, n): run the i-th of n deterministic slices of the cases
    baseline_from: str | None = None  # reuse the baseline traces of this session or MLflow run
    baseline_ref: str | None = None  # the baseline's code from this git revision (wins over the config's ref)
    report_only: bool = False  # a failing check exits 0 (never hides exit 2 or 3)


def plan_gate(options: RunOptions) -> dict[str, Any]:
    """What ``--dry-run`` reports: the calls a run would make, without calling any model or importing the targets."""
    prepared = prepare(options.config_path, import_targets=False)
    config = prepared.config
    calls = len(prepared.cases) * len(VARIANTS) * config.run.repeats
    calls_at_cap = len(prepared.cases) * len(VARIANTS) * config.max_repeats()
    return {
        "config": str(options.config_path),
        "cases": len(prepared.cases),
        "variants": {
            v: {"label": config.label(v), "target": config.target(v), "kind": config.kind(v), "is": config.describe(v)}
            for v in VARIANTS
        },
        "repeats": config.run.repeats,
        "calls": calls,
        # what an undecided run may spend: the adaptive cap (20 runs a case with a percentile check, else 10) and
        # run.max_calls, whichever ends first (run.max_cost_usd is in dollars, not calls: not counted here)
        "max_repeats": config.max_repeats(),
        "calls_at_most": min(calls_at_cap, config.run.max_calls or calls_at_cap),
        "concurrency": config.run.concurrency,
        "checks": [c.metric for c in config.checks],
        "too_small": too_small(config, len(prepared.cases)),  # checks these cases and repeats cannot decide
    }
