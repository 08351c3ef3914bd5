"""One gate session: the calls made so far, the rows their traces gave, and how to add a round of repeats.

A ``Session`` is built whole by ``gate run`` (every field given at construction). It owns the MLflow tags that
make each call's trace findable again (session, version, case, repeat, attempt, shard) and the loop step
"call, read back, match, score"; what to conclude is left to ``gate._decide``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gate._config.dataset import Case
from gate._config.schema import VARIANTS, GateConfig, Variant
from gate._decide.evaluate import Evaluation
from gate._decide.per_case import MAX_SUSPECTS
from gate._decide.sequential import next_look
from gate._decide.stopping import look_cap, stop_reason
from gate._errors import PartialRun, RunError
from gate._run.callers import Caller
from gate._run.progress import Progress
from gate._run.runner import plan_calls
from gate._store.store import TAG_PREFIX, Store
from gate._traces.read import fetch_session_traces
from gate._traces.rows import (
    CONFIRM_TAG,
    Call,
    CallResult,
    TraceRow,
    match_traces,
    spent_usd,
    unjoined_server_spans,
)
from gate._traces.scoring import ScorerStats, score_rows
from gate.scorers import Scorer

__all__ = ["Session"]


# Errors that say the endpoint is not there (refused, unresolvable, no answer), as the OpenAI SDK, httpx and the
# gate's own HTTP versions name them; an error from the app or the model's answer is not one of them.
UNREACHABLE = frozenset(
    {"APIConnectionError", "APITimeoutError", "ConnectError", "ConnectTimeout", "ConnectionRefusedError"}
    | {"TimeoutError", "EndpointUnreachableError"}
)
# How long a round waits for an HTTP version's server to log its spans into the gate's traces (MLflow's exporter
# writes them asynchronously, after the answer was sent) before a trace without them is a problem (exit 3).
SERVER_SPANS_WAIT_S = 10.0


def _unreachable(result: CallResult) -> bool:
    return result.timed_out or (result.error or "").split(":")[0] in UNREACHABLE


@dataclass
class Session:
    """The calls and rows of one ``gate run`` so far."""

    config: GateConfig
    cases: Sequence[Case]
    caller: Caller  # worker processes, or threads of this process
    store: Store
    session: str
    run_ids: dict[Variant, str]
    scorers: list[Scorer]
    variants: tuple[Variant, ...] = VARIANTS  # the versions this session calls (a reused baseline is not called)
    shard: str | None = None  # "i/n" when this session records one shard of a gate
    progress: Progress | None = None
    results: list[CallResult] = field(default_factory=list)  # every call, confirmation runs included
    rows: list[TraceRow] = field(default_factory=list)  # every case's runs: what the statistics are over
    confirmation_rows: list[TraceRow] = field(default_factory=list)  # the flagged cases' confirmation runs
    problems: list[str] = field(default_factory=list)
    rounds: int = 0
    repeats: int = 0
    warmup_calls: int = 0
    scorer_stats: dict[str, ScorerStats] = field(default_factory=dict)
    in_round: list[CallResult] = field(default_factory=list)  # calls finished in the round under way
    confirming: bool = False  # a round of confirmation runs is under way (its traces are tagged CONFIRM_TAG)

    def tags_for(self, call: Call) -> tuple[dict[str, str], str | None]:
        """The gate's tags on one call's trace and the MLflow run of its version (an attempt adds ``gate.attempt``)."""
        tags = {
            f"{TAG_PREFIX}session": self.session,
            f"{TAG_PREFIX}variant": call.variant,
            f"{TAG_PREFIX}label": self.config.label(call.variant),
            f"{TAG_PREFIX}case_id": call.case.id,
            f"{TAG_PREFIX}repeat": str(call.repeat),
            **({f"{TAG_PREFIX}shard": self.shard} if self.shard else {}),
            **({CONFIRM_TAG: "true"} if self.confirming else {}),
        }
        return tags, self.run_ids.get(call.variant)

    def warm_up(self) -> None:
        """One call per version on the first case, recorded under a separate session tag and never measured.

        The first call in a process pays for client creation and lazy imports (hundreds of ms); without a
        warm-up that outlier lands on whichever version happens to go first and distorts its percentiles.
        """

        def warm_tags(call: Call) -> tuple[dict[str, str], str | None]:
            tags, _ = self.tags_for(call)
            return {**tags, f"{TAG_PREFIX}session": f"{self.session}-warmup"}, None

        calls = [c for c in plan_calls(self.cases[:1], 1) if c.variant in self.variants]
        cfg = self.config.run
        results = self.caller.run(calls, warm_tags, cfg.concurrency, cfg.timeout_s)
        self.warmup_calls = len(calls)
        # A circuit breaker: an endpoint that is not there fails every call the same way, each after its timeout.
        # One unlucky call (a provider's occasional hang) is not that: a version trips only if a second warm-up
        # call fails the same way, so a dead endpoint costs ~2 x timeout_s, not a timeout per call.
        suspects = [r.call for r in results if _unreachable(r)]
        if not suspects:
            return
        again = self.caller.run(suspects, warm_tags, cfg.concurrency, cfg.timeout_s)
        self.warmup_calls += len(suspects)
        for result in again:
            if _unreachable(result):
                variant = result.call.variant
                raise RunError(
                    f"the {variant}'s first two calls (the warm-up, retries included) failed with {result.error}: "
                    "what it calls looks unreachable, so the gate stops instead of letting every call wait for it "
                    f"({self.config.describe(variant)}; run.warmup: false skips this check)"
                )

    def run_round(self, repeats: range, only: Sequence[Case] | None = None) -> None:
        """Run every case ``len(repeats)`` more times per version, then read and match the new traces.

        ``only``: confirmation runs of these cases (per-case checks' suspects): their rows go to
        ``confirmation_rows``, and the runs per case of the session (``repeats``, its looks) stay as they were."""
        calls = [c for c in plan_calls(only if only is not None else self.cases, repeats) if c.variant in self.variants]
        self.confirming = only is not None
        if self.progress is not None:
            what = f"confirming {len(only)} flagged cases, " if only is not None else ""
            label = f"round {self.rounds + 1} ({what}repeat {repeats.start + 1}..{repeats.stop})"
            self.progress.start(len(calls), label, self.cost() if self.rows else None)
        cfg = self.config.run
        self.in_round = []

        def record(result: CallResult) -> None:
            self.in_round.append(result)
            if self.progress is not None:
                self.progress(result)

        results = self.caller.run(calls, self.tags_for, cfg.concurrency, cfg.timeout_s, record)
        self.in_round = []
        traces, rows, problems = self._read_back(repeats, results)
        # An HTTP version's server logs its own spans into the trace, by default asynchronously after it answered:
        # some may land after the round ends. Wait for them, bounded, before counting a trace as not joined.
        labels: dict[str, str] = {v: self.config.label(v) for v in VARIANTS}
        deadline = time.monotonic() + SERVER_SPANS_WAIT_S
        while unjoined_server_spans(rows, self.server_spans(), labels) and time.monotonic() < deadline:
            time.sleep(0.5)
            traces, rows, problems = self._read_back(repeats, results)
        rows = score_rows(
            self.scorers,
            rows,
            {t.info.trace_id: t for t in traces},
            {c.id: c for c in self.cases},
            self.session,
            self.config.run.concurrency,
            self.scorer_stats,
        )
        self.results += results
        self.problems += problems
        self.rounds += 1
        if only is not None:
            self.confirmation_rows += rows
            return
        self.rows += rows
        self.repeats = repeats.stop

    def _read_back(self, repeats: range, results: list[CallResult]) -> tuple[list[Any], list[TraceRow], list[str]]:
        """This round's traces, matched to its calls: one trace per call, or a problem saying otherwise."""
        traces = fetch_session_traces(self.store, self.session, repeats, self.shard, spans_as_dicts=not self.scorers)
        if self.shard:  # a shard re-run into the same session: only this run's traces are its data
            mine = set(self.run_ids.values())
            traces = [t for t in traces if t.info.trace_metadata.get("mlflow.sourceRun") in mine]
        rows, problems = match_traces(traces, results, self.config.pricing)
        return traces, rows, problems

    def server_spans(self) -> dict[str, str]:
        """Each HTTP version's ``server_spans`` setting: whether its server's spans must join the gate's traces."""
        return {v: seat.http.server_spans for v in VARIANTS if (seat := self.config.variant(v)) and seat.http}

    def partial(self) -> PartialRun:
        """What an interrupted run did so far: calls finished per version, and where their traces are."""
        done = self.results + self.in_round
        return PartialRun(
            session=self.session,
            experiment_id=self.store.experiment_id,
            calls={v: sum(r.call.variant == v for r in done) for v in VARIANTS},
            errors={v: sum(r.call.variant == v and r.error is not None for r in done) for v in VARIANTS},
        )

    def cost(self) -> float | None:
        """The app's spend so far, or None when some trace's cost is unknown."""
        return spent_usd(self.rows + self.confirmation_rows)

    def look(self) -> tuple[int, int, int]:
        """(runs per case so far, runs in the first round, the cap) for ``evaluate`` and the look schedule."""
        return self.repeats, self.config.run.repeats, look_cap(self.config, len(self.cases) * len(self.variants))

    def can_confirm(self) -> bool:
        """Whether confirmation runs fit the caps at the last look, at their most (``MAX_SUSPECTS`` cases, as many
        runs each as the screening had), decided before the last look's data are: the rule chosen must not depend
        on how many cases it flags."""
        run = self.config.run
        if tuple(self.variants) != VARIANTS or self.repeats < 2:
            return False  # a reused baseline is not run again; one run a case has no within-case noise
        calls = min(MAX_SUSPECTS, len(self.cases)) * self.repeats * len(self.variants)
        if self.shard:  # a shard's cases are decided when gathered (gate compare --session), once, without them
            return False
        if run.max_calls is not None and len(self.results) + calls > run.max_calls:
            return False
        if run.max_cost_usd is not None:
            cost = self.cost()
            per_call = (cost or 0.0) / max(len(self.results), 1)
            if cost is None or cost + per_call * calls > run.max_cost_usd:
                return False
        return True

    def next_look(self) -> int:
        """Runs per case at the adaptive loop's next look (gate/_decide/sequential.py)."""
        return next_look(*self.look())

    def why_stop(self, evaluation: Evaluation) -> str | None:
        """None while adaptive repeats may go on; else the reason they stop (``gate._decide.stopping``)."""
        return stop_reason(
            self.config,
            evaluation,
            self.results,
            self.problems,
            repeats=self.repeats,
            next_repeats=self.next_look() - self.repeats,
            calls_per_repeat=len(self.cases) * len(self.variants),
            cost_usd=self.cost(),
        )
