"""When adaptive repeats stop: a pure rule over what a session has gathered so far."""

from __future__ import annotations

from collections.abc import Sequence

from gate._config.schema import PERCENTILE_MAX_REPEATS, GateConfig
from gate._decide.evaluate import Evaluation, undecided
from gate._traces.rows import CallResult

__all__ = ["look_cap", "stop_reason"]


def look_cap(config: GateConfig, calls_per_repeat: int) -> int:
    """Runs per case the adaptive loop can reach: ``run.max_repeats``, or fewer when ``run.max_calls`` allows fewer
    (the looks are scheduled up to it, so the last look is one the budget can pay for)."""
    cap = config.max_repeats()
    if config.run.max_calls is not None and calls_per_repeat > 0:
        cap = min(cap, config.run.max_calls // calls_per_repeat)
    return max(cap, config.run.repeats)


def stop_reason(
    config: GateConfig,
    evaluation: Evaluation,
    results: Sequence[CallResult],
    problems: Sequence[str],
    *,
    repeats: int,
    next_repeats: int,
    calls_per_repeat: int,
    cost_usd: float | None,
) -> str | None:
    """None while adaptive repeats may go on; else the reason they stop. ``next_repeats``: the runs per case the next
    round would add (the loop looks at gate/_decide/sequential.py's schedule, not after every run)."""
    if problems or all(r.error for r in results):
        return "run error"
    if not undecided(evaluation):
        return "all checks decided"
    failed = [c.metric for c in evaluation.checks if c.status == "fail"]
    if (failed or any(r.golden for r in evaluation.regressions)) and not config.run.decide_all:
        # more repeats cannot turn exit 1 into a pass worth trusting: stop spending (run.decide_all goes on)
        return f"a check failed ({', '.join(failed) or 'a golden case regressed'}); the exit code is settled"
    if repeats >= config.max_repeats():
        return f"run.max_repeats ({config.max_repeats()}{_default_cap(config)}) reached"
    if config.run.max_calls is not None:
        # next_repeats 0: the looks were scheduled to end where max_calls does (look_cap), and they have
        if next_repeats <= 0 or len(results) + calls_per_repeat * next_repeats > config.run.max_calls:
            return f"run.max_calls ({config.run.max_calls}) reached"
    if config.run.max_cost_usd is not None:
        if cost_usd is None:
            return "run.max_cost_usd is set but the cost is unknown (add the model to `pricing`)"
        if cost_usd + cost_usd / max(repeats, 1) * next_repeats > config.run.max_cost_usd:
            return f"run.max_cost_usd ({config.run.max_cost_usd:g}) reached"
    return None


def _default_cap(config: GateConfig) -> str:
    """How a cap the config did not set came about, for the stop reason (empty when it set one)."""
    if config.run.max_repeats or config.max_repeats() == config.run.repeats:
        return ""
    return f", the default {'with' if config.max_repeats() == PERCENTILE_MAX_REPEATS else 'without'} a percentile check"
