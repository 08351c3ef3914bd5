"""One gate run, in the order the data flows: config → cases → calls → traces → metrics → checks → verdict."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gate._assemble import build_verdict, code_digest, fingerprint
from gate._config import DEFAULT_TRACKING_URI, GateConfig, load_config, require_run_parts
from gate._dataset import Case, load_cases
from gate._errors import ConfigError, RunError
from gate._evaluate import Evaluation, evaluate, undecided
from gate._redaction import install_span_redaction
from gate._runner import VARIANTS, Call, CallResult, RetryPolicy, Variant, import_target, plan_calls, run_calls
from gate._scoring import ScorerStats, score_rows
from gate._targets import Located, locate_target
from gate._traces import TAG_PREFIX, TraceRow, match_traces, prepare_environment, redact_uri, resolve_tracking_uri
from gate._verdict import Verdict
from gate.scorers import Scorer, build_scorers

__all__ = ["Prepared", "RunOptions", "plan_gate", "prepare", "run_gate"]


@dataclass(frozen=True)
class RunOptions:
    """What the command line decides about a run."""

    config_path: Path
    simulate: bool = False
    tracking_uri: str | None = None
    session: str | None = None  # a session id chosen by the caller (shards share one); default: generated
    shard: tuple[int, int] | None = None  # (i, n): run the i-th of n deterministic slices of the cases
    baseline_from: str | None = None  # reuse the baseline traces of this session or MLflow run


@dataclass(frozen=True)
class Prepared:
    """A validated config with its cases and imported targets, ready to run.

    ``targets`` is empty when ``prepare`` only located them; ``located`` then says where each was found.
    """

    config: GateConfig
    cases: list[Case]
    targets: dict[Variant, Callable[..., Any]]
    located: dict[Variant, Located] = field(default_factory=dict)


def _search_path(options: RunOptions) -> list[Path]:
    return [options.config_path.resolve().parent, Path.cwd()]


def prepare(options: RunOptions, config: GateConfig | None = None, *, import_targets: bool = True) -> Prepared:
    """Validate the config, load the cases and import both targets (raises ``ConfigError``).

    With ``import_targets=False`` (``gate validate``, ``--dry-run``) the targets are only located, without running
    the app's code or importing MLflow (gate/_targets.py explains how); ``targets`` is then empty.
    """
    config = config or load_config(options.config_path)
    require_run_parts(config, options.config_path)  # gate compare needs neither targets nor a dataset; run does
    cases = load_cases(config, options.config_path)
    search_path = _search_path(options)
    if not import_targets:
        located: dict[Variant, Located] = {
            "baseline": locate_target(
                config.target("baseline") or "", f"{options.config_path}: baseline.target", search_path
            ),
            "candidate": locate_target(
                config.target("candidate") or "", f"{options.config_path}: candidate.target", search_path
            ),
        }
        return Prepared(config, cases, {}, located)
    targets: dict[Variant, Callable[..., Any]] = {
        "baseline": import_target(
            config.target("baseline") or "", f"{options.config_path}: baseline.target", search_path
        ),
        "candidate": import_target(
            config.target("candidate") or "", f"{options.config_path}: candidate.target", search_path
        ),
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


@dataclass
class _Session:
    """The calls and rows of one gate invocation so far, and how to add a round of repeats."""

    config: GateConfig
    prepared: Prepared
    store: Any
    session: str
    run_ids: dict[Variant, str]
    progress: Callable[[CallResult], None] | None
    results: list[CallResult] = field(default_factory=list)
    rows: list[TraceRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    rounds: int = 0
    repeats: int = 0
    warmup_calls: int = 0
    in_round: list[CallResult] = field(default_factory=list)  # calls finished in the round under way
    scorers: list[Scorer] = field(default_factory=list)
    scorer_stats: dict[str, ScorerStats] = field(default_factory=dict)
    variants: tuple[Variant, ...] = VARIANTS  # the versions this session calls (a reused baseline is not called)
    shard: str | None = None  # "i/n" when this session records one shard of a gate

    def context_for(self, call: Call, attempt: int = 0) -> Any:
        tags = {
            f"{TAG_PREFIX}attempt": str(attempt),
            f"{TAG_PREFIX}session": self.session,
            f"{TAG_PREFIX}variant": call.variant,
            f"{TAG_PREFIX}label": self.config.label(call.variant),
            f"{TAG_PREFIX}case_id": call.case.id,
            f"{TAG_PREFIX}repeat": str(call.repeat),
            **({f"{TAG_PREFIX}shard": self.shard} if self.shard else {}),
        }
        return self.store.tracing_context(tags, self.run_ids.get(call.variant))

    def warm_up(self) -> None:
        """One call per version on the first case, recorded under a separate session tag and never measured.

        The first call in a process pays for client creation and lazy imports (hundreds of ms); without a
        warm-up that outlier lands on whichever version happens to go first and distorts its percentiles.
        """
        warm_session = dataclasses.replace(self, session=f"{self.session}-warmup", run_ids={}, progress=None)
        calls = [c for c in plan_calls(self.prepared.cases[:1], 1) if c.variant in self.variants]
        cfg = self.config.run
        run_calls(calls, self.prepared.targets, warm_session.context_for, cfg.concurrency, cfg.timeout_s)
        self.warmup_calls = len(calls)

    def run_round(self, repeats: range) -> None:
        """Run every case ``len(repeats)`` more times per version, then read and match the new traces."""
        calls = [c for c in plan_calls(self.prepared.cases, repeats) if c.variant in self.variants]
        if self.progress is not None and hasattr(self.progress, "start"):
            label = f"round {self.rounds + 1} (repeat {repeats.start + 1}..{repeats.stop})"
            self.progress.start(len(calls), label, self.cost() if self.rows else None)
        cfg = self.config.run
        retry = RetryPolicy(cfg.retries, cfg.retry_backoff_s, cfg.retry_max_backoff_s)
        self.in_round = []

        def record(result: CallResult) -> None:
            self.in_round.append(result)
            if self.progress is not None:
                self.progress(result)

        results = run_calls(
            calls, self.prepared.targets, self.context_for, cfg.concurrency, cfg.timeout_s, record, retry
        )
        self.in_round = []
        traces = self.store.fetch_traces(self.session, repeats, self.shard, spans_as_dicts=not self.scorers)
        if self.shard:  # a shard re-run into the same session: only this run's traces are its data
            mine = set(self.run_ids.values())
            traces = [t for t in traces if t.info.trace_metadata.get("mlflow.sourceRun") in mine]
        rows, problems = match_traces(traces, results, self.config.pricing)
        rows = score_rows(
            self.scorers,
            rows,
            {t.info.trace_id: t for t in traces},
            {c.id: c for c in self.prepared.cases},
            self.session,
            self.config.run.concurrency,
            self.scorer_stats,
        )
        self.results += results
        self.rows += rows
        self.problems += problems
        self.rounds += 1
        self.repeats = repeats.stop

    def partial_report(self) -> dict[str, Any]:
        """What an interrupted run did so far: calls finished per version, and where their traces are."""
        done = self.results + self.in_round
        return {
            "session": self.session,
            "experiment_id": self.store.experiment_id,
            "calls": {v: sum(r.call.variant == v for r in done) for v in VARIANTS},
            "errors": {v: sum(r.call.variant == v and r.error is not None for r in done) for v in VARIANTS},
        }

    def cost(self) -> float | None:
        """The app's spend so far, or None when some trace's cost is unknown."""
        costs = [r.values.get("cost_usd") for r in self.rows if r.trace_id]
        return None if any(c is None for c in costs) else sum(c for c in costs if c is not None)

    def why_stop(self, evaluation: Evaluation) -> str | None:
        """None while adaptive repeats may go on; else the reason they stop."""
        if self.problems or all(r.error for r in self.results):
            return "run error"
        if not undecided(evaluation):
            return "all checks decided"
        if self.repeats >= self.config.max_repeats():
            return f"run.max_repeats ({self.config.max_repeats()}) reached"
        next_calls = len(self.prepared.cases) * len(self.variants)
        if self.config.run.max_calls is not None and len(self.results) + next_calls > self.config.run.max_calls:
            return f"run.max_calls ({self.config.run.max_calls}) reached"
        if self.config.run.max_cost_usd is not None:
            spent = self.cost()
            if spent is None:
                return "run.max_cost_usd is set but the cost is unknown (add the model to `pricing`)"
            if spent + spent / max(self.rounds, 1) > self.config.run.max_cost_usd:
                return f"run.max_cost_usd ({self.config.run.max_cost_usd:g}) reached"
        return None


def run_gate(
    options: RunOptions,
    progress: Callable[[CallResult], None] | None = None,
    transform: Callable[[GateConfig], GateConfig] | None = None,
) -> Verdict:
    """Run both versions and return the verdict. Raises ``ConfigError``/``RunError`` for exits 2/3.

    ``transform`` rewrites the loaded config (``gate calibrate`` puts the baseline in both seats).
    """
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    config = load_config(options.config_path)
    if transform is not None:
        config = transform(config)
    # A reused baseline is not called, but its target is still imported: its fingerprint must match the stored one.
    variants: tuple[Variant, ...] = ("candidate",) if options.baseline_from else VARIANTS
    require_run_parts(config, options.config_path)
    prepare_environment()
    with _endpoint(config, options.simulate) as endpoint:
        prepared = prepare(options, config)  # after the endpoint is set: a client made at import time sees it
        prints = fingerprint(config, prepared.cases)  # of the whole dataset: shards of one session must agree
        prepared = _shard(prepared, options)
        from gate._traces import open_store

        tracking_uri = resolve_tracking_uri(options.tracking_uri, config.tracking_uri, DEFAULT_TRACKING_URI)
        store = open_store(tracking_uri, config.experiment)
        store.start_recording()  # buffered writer, or MLflow's exporter (docs/design/trace-recording.md)
        if config.run.autolog:
            _enable_openai_autolog()
        install_span_redaction()
        session_id = options.session or (
            datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        )
        prints = {**prints, **{f"code.{v}": code_digest(prepared.targets[v]) for v in VARIANTS}}
        shard_tag = {f"{TAG_PREFIX}shard": f"{options.shard[0]}/{options.shard[1]}"} if options.shard else {}
        run_ids: dict[Variant, str] = {
            v: store.start_run(
                f"gate-{session_id}-{v}" + (f"-{options.shard[0]}of{options.shard[1]}" if options.shard else ""),
                {
                    f"{TAG_PREFIX}session": session_id,
                    f"{TAG_PREFIX}variant": v,
                    f"{TAG_PREFIX}label": config.label(v),
                    f"{TAG_PREFIX}fingerprint.dataset": prints["dataset"],
                    f"{TAG_PREFIX}fingerprint.target": prints[v],
                    f"{TAG_PREFIX}fingerprint.scorers": prints["scorers"],
                    f"{TAG_PREFIX}fingerprint.code": prints[f"code.{v}"],
                    **shard_tag,
                },
            )
            for v in variants
        }
        session = _Session(config, prepared, store, session_id, run_ids, progress)
        session.variants = variants
        session.shard = shard_tag.get(f"{TAG_PREFIX}shard")
        session.scorers = build_scorers(config.scorers, _search_path(options))
        golden = frozenset(c.id for c in prepared.cases if c.golden)
        reused = _reuse_baseline(session, options, prints) if options.baseline_from else None
        try:
            if config.run.warmup:
                session.warm_up()
            session.run_round(range(config.run.repeats))
            evaluation = evaluate(config, session.rows, golden)
            # Adaptive repeats: one more repeat of every case per round while a check is undecided and caps allow.
            while (stopped_because := session.why_stop(evaluation)) is None:
                session.run_round(range(session.repeats, session.repeats + 1))
                evaluation = evaluate(config, session.rows, golden, seed=session.rounds)  # fresh resamples per look
        except KeyboardInterrupt as exc:
            exc.partial = session.partial_report()  # type: ignore[attr-defined]  # read by the CLI's verdict
            _flush_traces(deadline_s=3.0)
            raise
    verdict = build_verdict(session, evaluation, options, endpoint, stopped_because, started, started_at)
    return _with_comparison(verdict, options, reused)


def _shard(prepared: Prepared, options: RunOptions) -> Prepared:
    """The i-th of n slices of the cases (every n-th case, in dataset order: balanced and deterministic)."""
    if options.shard is None:
        return prepared
    index, total = options.shard
    cases = prepared.cases[index - 1 :: total]
    if not cases:
        raise ConfigError(
            f"usage: --shard {index}/{total}: the dataset has {len(prepared.cases)} cases, so this shard has none; "
            "use fewer shards"
        )
    return dataclasses.replace(prepared, cases=cases)


def _reuse_baseline(session: _Session, options: RunOptions, prints: dict[str, str]) -> dict[str, Any]:
    """Put an earlier session's baseline rows into this session, if it ran exactly what this one would."""
    from gate._compare import StoredScoring, load_stored_baseline

    now = {"dataset": prints["dataset"], "baseline": prints["baseline"], "scorers": prints["scorers"]}
    now["code"] = prints["code.baseline"]
    scoring = StoredScoring.of(session.scorers, session.prepared.cases, session.session, session)
    rows, run_id, found = load_stored_baseline(
        session.store, options.baseline_from or "", session.config, session.prepared.cases, scoring, now
    )
    session.rows += rows
    return {"source": options.baseline_from, "run_id": run_id, "traces": len(rows), "found": found}


def _with_comparison(verdict: Verdict, options: RunOptions, reused: dict[str, Any] | None) -> Verdict:
    """Say where each version's traces came from (and which baseline was reused)."""
    from gate._verdict import ComparisonReport

    comparison = ComparisonReport(
        baseline_source="stored" if reused else "run",
        candidate_source="run",
        pair_by="case_id",
        why="both versions ran the same cases" if not reused else "the reused baseline ran the same cases",
        baseline_from=options.baseline_from,
        shards=[f"{options.shard[0]}/{options.shard[1]}"] if options.shard else [],
    )
    update: dict[str, Any] = {"comparison": comparison}
    if reused and verdict.variants:
        base = verdict.variants["baseline"].model_copy(update={"mlflow_run_id": reused["run_id"], "calls": 0})
        update["variants"] = {**verdict.variants, "baseline": base}
    return verdict.model_copy(update=update)


def _flush_traces(deadline_s: float) -> None:
    """Write the traces still buffered or queued, waiting at most ``deadline_s`` (a cancelled job must exit soon)."""
    from gate._recorder import flush_traces

    flush_traces(deadline_s)


def _enable_openai_autolog() -> None:
    try:
        import mlflow.openai

        mlflow.openai.autolog(silent=True)
    except ImportError as exc:  # openai not installed: the app cannot be calling it either
        raise RunError(f"run.autolog is on but MLflow's OpenAI autolog cannot load: {exc}") from None


def plan_gate(options: RunOptions) -> dict[str, Any]:
    """What ``--dry-run`` reports: the calls a run would make, without calling any model or importing the targets."""
    prepared = prepare(options, import_targets=False)
    config = prepared.config
    calls = len(prepared.cases) * len(VARIANTS) * config.run.repeats
    return {
        "config": str(options.config_path),
        "cases": len(prepared.cases),
        "variants": {v: {"label": config.label(v), "target": config.target(v)} for v in VARIANTS},
        "repeats": config.run.repeats,
        "calls": calls,
        "concurrency": config.run.concurrency,
        "checks": [c.metric for c in config.checks],
    }
