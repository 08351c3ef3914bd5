"""One gate run, in the order the data flows: config → cases → calls → traces → metrics → checks → verdict."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from gate import __version__
from gate._checks import CheckResult, evaluate_checks
from gate._config import DEFAULT_TRACKING_URI, GateConfig, load_config
from gate._dataset import Case, load_cases
from gate._errors import RunError
from gate._metrics import SUMMARY_KEYS, compute_metrics
from gate._runner import VARIANTS, Call, CallResult, Variant, import_target, plan_calls, run_calls
from gate._secrets import redact
from gate._traces import TAG_PREFIX, match_traces, prepare_environment, redact_uri, resolve_tracking_uri
from gate._verdict import CheckReport, MlflowReport, VariantReport, Verdict

__all__ = ["Prepared", "RunOptions", "plan_gate", "prepare", "run_gate"]


@dataclass(frozen=True)
class RunOptions:
    """What the command line decides about a run."""

    config_path: Path
    simulate: bool = False
    tracking_uri: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A validated config with its cases and imported targets, ready to run."""

    config: GateConfig
    cases: list[Case]
    targets: dict[Variant, Callable[..., Any]]


def prepare(options: RunOptions, config: GateConfig | None = None) -> Prepared:
    """Validate the config, load the cases and import both targets (raises ``ConfigError``)."""
    config = config or load_config(options.config_path)
    cases = load_cases(config, options.config_path)
    search_path = [options.config_path.resolve().parent, Path.cwd()]
    targets: dict[Variant, Callable[..., Any]] = {
        "baseline": import_target(config.baseline.target, f"{options.config_path}: baseline.target", search_path),
        "candidate": import_target(config.candidate.target, f"{options.config_path}: candidate.target", search_path),
    }
    return Prepared(config, cases, targets)


@contextmanager
def _endpoint(config: GateConfig, simulate: bool) -> Iterator[str]:
    """Point the app at the simulator when asked (before targets are imported); yield what to report."""
    if not simulate:
        yield redact_uri(os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"))
        return
    from gate.simulator import SimulatorSettings, running_simulator

    settings = SimulatorSettings(**config.simulator.model_dump())
    saved = {name: os.environ.get(name) for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    with running_simulator(settings) as base_url:
        os.environ["OPENAI_BASE_URL"] = base_url
        os.environ["OPENAI_API_KEY"] = "sk-simulated-no-real-key"
        try:
            yield "simulated"
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _first_errors(results: list[CallResult], limit: int = 3) -> list[str]:
    seen: list[str] = []
    for result in results:
        if result.error and result.error not in seen:
            seen.append(result.error)
        if len(seen) == limit:
            break
    return seen


def _metric_keys(config: GateConfig) -> list[str]:
    keys = list(SUMMARY_KEYS)
    keys += [c.metric for c in config.checks if c.metric not in keys]
    return keys


def run_gate(options: RunOptions, progress: Callable[[CallResult], None] | None = None) -> Verdict:
    """Run both versions and return the verdict. Raises ``ConfigError``/``RunError`` for exits 2/3."""
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    config = load_config(options.config_path)
    prepare_environment()
    with _endpoint(config, options.simulate) as endpoint:
        prepared = prepare(options, config)  # after the endpoint is set: a client made at import time sees it
        from gate._traces import open_store

        tracking_uri = resolve_tracking_uri(options.tracking_uri, config.tracking_uri, DEFAULT_TRACKING_URI)
        store = open_store(tracking_uri, config.experiment)
        if config.run.autolog:
            _enable_openai_autolog()
        session = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        run_ids = {
            v: store.start_run(
                f"gate-{session}-{v}",
                {f"{TAG_PREFIX}session": session, f"{TAG_PREFIX}variant": v, f"{TAG_PREFIX}label": config.label(v)},
            )
            for v in VARIANTS
        }

        def context_for(call: Call) -> Any:
            tags = {
                f"{TAG_PREFIX}session": session,
                f"{TAG_PREFIX}variant": call.variant,
                f"{TAG_PREFIX}label": config.label(call.variant),
                f"{TAG_PREFIX}case_id": call.case.id,
                f"{TAG_PREFIX}repeat": str(call.repeat),
            }
            return store.tracing_context(tags, run_ids[call.variant])

        calls = plan_calls(prepared.cases, config.run.repeats)
        calls_started = time.monotonic()
        results = run_calls(
            calls, prepared.targets, context_for, config.run.concurrency, config.run.timeout_s, progress
        )
        calls_s = time.monotonic() - calls_started
    traces = store.fetch_traces(session)
    rows, problems = match_traces(traces, results, config.pricing)
    keys = _metric_keys(config)
    metrics = {v: compute_metrics([r.values for r in rows if r.variant == v], keys) for v in VARIANTS}
    failed = all(r.error for r in results)
    for v in VARIANTS:
        store.finish_run(run_ids[v], metrics[v], "FAILED" if failed or problems else "FINISHED")

    variants = {
        v: VariantReport(
            label=config.label(v),
            target=(config.baseline if v == "baseline" else config.candidate).target,
            mlflow_run_id=run_ids[v],
            calls=sum(r.call.variant == v for r in results),
            traces=sum(row.trace_id is not None for row in rows if row.variant == v),
            errors=sum(1 for row in rows if row.variant == v and row.values.get("error")),
        )
        for v in VARIANTS
    }
    checks = evaluate_checks(config.checks, metrics["baseline"], metrics["candidate"])
    mlflow_report = MlflowReport(
        tracking_uri=redact_uri(tracking_uri),
        experiment=config.experiment,
        experiment_id=store.experiment_id,
        session=session,
    )
    status, exit_code, reason, error = decide(results, problems, checks)
    return Verdict(
        status=status,
        exit_code=exit_code,
        reason=reason,
        error=redact(error) if error else None,
        gate_version=__version__,
        config=str(options.config_path),
        endpoint=endpoint,
        variants=variants,
        metrics=metrics,
        checks=[_check_report(c) for c in checks],
        mlflow=mlflow_report,
        timing={
            "started_at": started_at,
            "calls_s": round(calls_s, 3),
            "total_s": round(time.monotonic() - started, 3),
        },
    )


def decide(
    results: list[CallResult], problems: list[str], checks: list[CheckResult]
) -> tuple[Literal["pass", "fail", "error"], int, str | None, str | None]:
    """(status, exit code, reason, error) from the calls, the trace discrepancies and the checks.

    Missing data outranks everything: a run with no usable data, missing traces, or a check without
    values is an error (exit 3), never a pass and never a "regression".
    """
    if all(r.error for r in results):
        first = " | ".join(_first_errors(results))
        return (
            "error",
            RunError.exit_code,
            "run",
            f"every call of both versions failed, so there is nothing to compare; first errors: {first}",
        )
    if problems:
        return "error", RunError.exit_code, "run", "traces do not match the calls made: " + "; ".join(problems)
    if missing := [c.metric for c in checks if c.status == "missing"]:
        return "error", RunError.exit_code, "run", f"no data for {', '.join(missing)}; a check without data cannot pass"
    if any(c.status == "fail" for c in checks):
        return "fail", 1, None, None
    return "pass", 0, None, None


def _check_report(check: CheckResult) -> CheckReport:
    return CheckReport(**{**vars(check), "message": redact(check.message)})


def _enable_openai_autolog() -> None:
    try:
        import mlflow.openai

        mlflow.openai.autolog(silent=True)
    except ImportError as exc:  # openai not installed: the app cannot be calling it either
        raise RunError(f"run.autolog is on but MLflow's OpenAI autolog cannot load: {exc}") from None


def plan_gate(options: RunOptions) -> dict[str, Any]:
    """What ``--dry-run`` reports: the calls a run would make, without calling any model."""
    prepared = prepare(options)
    config = prepared.config
    calls = len(prepared.cases) * len(VARIANTS) * config.run.repeats
    return {
        "config": str(options.config_path),
        "cases": len(prepared.cases),
        "variants": {
            v: {"label": config.label(v), "target": (config.baseline if v == "baseline" else config.candidate).target}
            for v in VARIANTS
        },
        "repeats": config.run.repeats,
        "calls": calls,
        "concurrency": config.run.concurrency,
        "checks": [c.metric for c in config.checks],
    }
