"""``gate run``: config → cases → calls → traces → metrics → checks → verdict, in the order the data flows."""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gate._commands.plan import RunOptions, plan_gate
from gate._config.dataset import Case
from gate._config.fingerprint import code_digest, fingerprint
from gate._config.schema import DEFAULT_TRACKING_URI, VARIANTS, GateConfig, Variant, load_config, require_run_parts
from gate._decide.evaluate import Evaluation, evaluate
from gate._errors import ConfigError, Interrupted, RunError, Terminated
from gate._run.callers import Caller, InlineCaller
from gate._run.endpoint import model_endpoint
from gate._run.forkserver import ForkServer
from gate._run.git import Source, checked_out, repo_root, working_tree_source
from gate._run.prepare import check_versions, gather_cases, prepare, search_path
from gate._run.progress import Progress
from gate._run.runner import RetryPolicy
from gate._run.session import Session
from gate._run.versions import build_version
from gate._run.workers import STOP_TIMEOUT_S, VersionSpec, WorkerPool, WorkerSettings, worker_preload
from gate._store.recording import flush_traces, hold_writes
from gate._store.redaction import install_span_redaction
from gate._store.store import (
    TAG_PREFIX,
    Store,
    absolute_tracking_uri,
    open_store,
    prepare_environment,
    resolve_tracking_uri,
)
from gate._traces.rows import unjoined_server_spans
from gate._traces.stored import StoredScoring, load_stored_baseline, recorded_runs
from gate._verdict.assemble import Gathered, StoreInfo, VersionSource, build_verdict
from gate._verdict.schema import ComparisonReport, SourceReport, Verdict
from gate.scorers import build_scorers

__all__ = ["RunOptions", "plan_gate", "run_gate"]

INTERRUPTED_STOP_S = 3.0  # what workers get to write their traces when the run is cancelled or failed


@dataclass(frozen=True)
class _Reused:
    """A baseline taken from an earlier session instead of being called."""

    source: str
    run_id: str
    traces: int


def run_gate(
    options: RunOptions,
    progress: Progress | None = None,
    transform: Callable[[GateConfig], GateConfig] | None = None,
) -> Verdict:
    """Run both versions and return the verdict. Raises ``ConfigError``/``RunError`` for exits 2/3, and
    ``Interrupted``/``Terminated`` (exits 130/143, with what was done so far) when stopped.

    ``transform`` rewrites the loaded config (``gate calibrate`` puts the baseline in both seats).
    """
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    config = load_config(options.config_path)
    if options.baseline_ref is not None:
        config = config.with_baseline_ref(options.baseline_ref)
    if transform is not None:
        config = transform(config)
    # A reused baseline is not called, but its code is still looked at: its fingerprint must match the stored one.
    variants: tuple[Variant, ...] = ("candidate",) if options.baseline_from else VARIANTS
    require_run_parts(config, options.config_path)
    pinned = [v for v in VARIANTS if (s := config.variant(v)) is not None and s.prompts]
    if pinned and config.run.isolation == "inline":
        raise ConfigError(
            f"{options.config_path}: {pinned[0]}.prompts: pinning prompts needs each version in a process of its own "
            "(the pin replaces MLflow's load_prompt for the whole process); remove run.isolation: inline"
        )
    seat = config.variant("baseline")
    if seat is not None and seat.ref is not None and config.run.isolation == "inline":
        raise ConfigError(
            f"{options.config_path}: run.isolation: inline cannot run the baseline from git revision {seat.ref} (two "
            "revisions of one module cannot share a process); remove it: each version then runs in a worker process"
        )
    if options.simulate:
        config = _simulated(config)
    prepare_environment()
    tracking_uri = resolve_tracking_uri(options.tracking_uri, config.tracking_uri, DEFAULT_TRACKING_URI)
    with ExitStack() as stack:
        # Before any thread starts (the simulator's server is one): workers are forked from a copy made now.
        forks = (
            ForkServer.start(worker_preload(tracking_uri, config.run.autolog))
            if config.run.isolation == "process"
            else None
        )
        if forks is not None:
            stack.callback(forks.close)
        endpoint = stack.enter_context(model_endpoint(config, options.simulate))
        cases, source = gather_cases(config, options.config_path, tracking_uri)
        check_versions(config, cases, options.config_path)
        prints = fingerprint(config, cases)  # of the whole dataset: shards of one session must agree
        cases = _shard(cases, options)
        sources = _sources(config, options.config_path, tracking_uri, stack)
        if config.run.isolation == "process":
            pool = WorkerPool(
                _specs(config, options.config_path, sources),
                WorkerSettings(
                    absolute_tracking_uri(tracking_uri),
                    config.experiment,
                    config.run.autolog,
                    _retry(config),
                    config.run.timeout_s,
                ),
                forks,
            )
            stack.push(_closing(pool))  # stop the workers on the way out; quickly when interrupted or failed
            pool.spawn()  # both versions import at once, each in its own process (docs/design/workers.md) ...
            store = open_store(tracking_uri, config.experiment)  # ... while this process opens the store
            pool.ready()
            writer = pool.writer()
            caller: Caller = pool
            digests = pool.digests()
            identities: dict[Variant, dict[str, Any]] = pool.identities()
        else:
            prepared = prepare(options.config_path, config)  # after the endpoint: a client made at import sees it
            store = open_store(tracking_uri, config.experiment)
            targets = dict(prepared.targets)
            digests = {v: code_digest(t) for v, t in targets.items()}
            identities = {v: {} for v in VARIANTS}
            for v in VARIANTS:  # an endpoint, prompt or model version: the gate's own caller (a prompt needs the store)
                seat = config.variant(v)
                if seat is not None and seat.kind not in (None, "target"):
                    built = build_version(seat, f"{options.config_path}: {v}", config.run.timeout_s)
                    targets[v], digests[v], identities[v] = built.call, built.digest, built.identity
            writer = store.start_recording()  # buffered writer, or MLflow's exporter (docs/design/trace-recording.md)
            hold_writes()  # written after each batch of calls, as workers do: a write meanwhile would take the GIL
            if config.run.autolog:
                _enable_openai_autolog()
            install_span_redaction()
            caller = InlineCaller(targets, store, _retry(config))
        session_id = options.session or (
            datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        )
        code = {v: f"tree:{found[1].tree}" if (found := sources.get(v)) else digests[v] for v in VARIANTS}
        prints = {**prints, **{f"code.{v}": code[v] for v in VARIANTS}}
        shard = f"{options.shard[0]}/{options.shard[1]}" if options.shard else None
        if options.session is not None and shard is None:  # a shard re-run (a CI retry) joins its session
            _require_new_session(store, options.session)
        run_ids = {v: _start_run(store, config, session_id, v, prints, options.shard) for v in variants}
        session = Session(
            config=config,
            cases=cases,
            caller=caller,
            store=store,
            session=session_id,
            run_ids=run_ids,
            scorers=build_scorers(config.scorers, search_path(options.config_path)),
            variants=variants,
            shard=shard,
            progress=progress,
        )
        golden = frozenset(c.id for c in cases if c.golden)
        reused = _reuse_baseline(session, options, prints) if options.baseline_from else None
        try:
            if config.run.warmup:
                session.warm_up()
            session.run_round(range(config.run.repeats))
            stale = _stale(options.baseline_from)
            evaluation = evaluate(
                config, session.rows, golden, not_together=stale, look=session.look(), cases=cases,
                confirm=session.can_confirm(),
            )  # fmt: skip
            # Adaptive repeats while a check is undecided and caps allow: every case runs again, both versions, up to
            # the next look of the schedule (1, 2, 4, … runs a case, then the cap: gate/_decide/sequential.py).
            while (stopped_because := session.why_stop(evaluation)) is None:
                session.run_round(range(session.repeats, session.next_look()))
                evaluation = evaluate(  # fresh resamples per look
                    config, session.rows, golden, seed=session.rounds, not_together=stale, look=session.look(),
                    cases=cases, confirm=session.can_confirm(),
                )  # fmt: skip
            if _confirmation_due(evaluation, stopped_because):
                # Per-case checks flagged suspects at their last look: run those cases as often again, and decide
                # them on the new runs alone (gate/_decide/per_case.py).
                flagged = [c for c in cases if c.id in evaluation.suspects]
                session.run_round(range(session.repeats, 2 * session.repeats), only=flagged)
                evaluation = evaluate(
                    config, session.rows, golden, seed=session.rounds, not_together=stale, look=session.look(),
                    cases=cases, confirm=True, confirmation=session.confirmation_rows,
                )  # fmt: skip
                stopped_because += (
                    f"; then {session.repeats} confirmation runs of each of {len(flagged)} cases a per-case check "
                    "flagged, decided on those runs alone"
                )
        except KeyboardInterrupt as exc:
            flush_traces(deadline_s=3.0)  # inline: this process's traces; workers write theirs as they stop
            raise (Terminated if isinstance(exc, Terminated) else Interrupted)(session.partial()) from exc
        _close_runs(session, evaluation)
    calls = {v: sum(r.call.variant == v for r in session.results) for v in VARIANTS}
    every_row = session.rows + session.confirmation_rows
    labels: dict[str, str] = {v: config.label(v) for v in VARIANTS}
    versions = {
        v: VersionSource(
            target=config.target(v),
            mlflow_run_id=run_ids.get(v),
            calls=calls[v],
            source=_source_report(sources.get(v)),
            identity=_identity(config, v, identities[v]),
        )
        for v in VARIANTS
    }
    if reused is not None:
        versions["baseline"] = VersionSource(
            target=config.target("baseline"),
            mlflow_run_id=reused.run_id,
            calls=0,
            source=_source_report(sources.get("baseline")),
            identity=_identity(config, "baseline", {}),
        )
    return build_verdict(
        Gathered(
            dataset=source,
            config=config,
            config_path=options.config_path,
            endpoint=endpoint,
            cases=cases,
            results=session.results,
            rows=every_row,
            problems=session.problems + unjoined_server_spans(every_row, session.server_spans(), labels),
            evaluation=evaluation,
            versions=versions,
            store=StoreInfo(store.tracking_uri, store.experiment_id, session_id, writer),
            stopped_because=stopped_because,
            calls_made=len(session.results),
            rounds=session.rounds,
            repeats=session.repeats,
            warmup_calls=session.warmup_calls,
            scorer_stats=session.scorer_stats,
            comparison=ComparisonReport(
                baseline_source="stored" if reused else "run",
                candidate_source="run",
                pair_by="case_id",
                why="both versions ran the same cases" if not reused else "the reused baseline ran the same cases",
                baseline_from=options.baseline_from,
                shards=[shard] if shard else [],
            ),
            timing={"started_at": started_at, "total_s": round(time.monotonic() - started, 3)},
            report_only=options.report_only or options.shard is not None,  # a shard never decides alone
        )
    )


def _confirmation_due(evaluation: Evaluation, stopped_because: str) -> bool:
    """Suspects to confirm, and nothing that settles the exit code without them (a failed check, a run error)."""
    if not evaluation.suspects or stopped_because == "run error":
        return False
    return not any(c.status == "fail" for c in evaluation.checks) and not any(r.golden for r in evaluation.regressions)


def _require_new_session(store: Store, session: str) -> None:
    """A session id names one run: traces of an earlier run under it would be counted as this run's, and every
    count would be off (sharded runs share a session by design, and are gathered by ``gate compare --session``)."""
    if earlier := recorded_runs(store, session):
        raise ConfigError(
            f"usage: --session {session}: a gate run with this session id already ran in this store (MLflow run "
            f"{earlier[0].info.run_id}); give each run a new id (e.g. ci-$GITHUB_RUN_ID-$GITHUB_RUN_ATTEMPT)"
        )


def _simulated(config: GateConfig) -> GateConfig:
    """``--simulate`` serves every model call: a prompt or model version's own ``base_url`` gives way to it."""
    seats: dict[str, Any] = {}
    for v in VARIANTS:
        seat = config.variant(v)
        if seat is not None and seat.model is not None and seat.model.base_url is not None:
            seats[v] = seat.model_copy(update={"model": seat.model.model_copy(update={"base_url": None})})
    return config.model_copy(update=seats) if seats else config


def _identity(config: GateConfig, variant: Variant, resolved: dict[str, Any]) -> dict[str, Any]:
    """What the verdict says a version was: its kind and, for an endpoint, prompt or model, what it resolved to."""
    kind = config.kind(variant)
    return {"kind": kind, **resolved} if kind else {}


def _closing(pool: WorkerPool) -> Callable[..., bool]:
    """An exit callback: stop the workers, letting them write their traces; within 3 s when the run did not end
    normally (a cancelled job must exit soon)."""

    def close(exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> bool:
        pool.close(deadline_s=INTERRUPTED_STOP_S if exc_type is not None else STOP_TIMEOUT_S)
        return False  # never swallow the exception

    return close


def _retry(config: GateConfig) -> RetryPolicy:
    return RetryPolicy(config.run.retries, config.run.retry_backoff_s, config.run.retry_max_backoff_s)


def _sources(
    config: GateConfig, config_path: Path, tracking_uri: str, stack: ExitStack
) -> dict[Variant, tuple[Path, Source] | None]:
    """Each version's code: the working tree, or a checkout of the baseline's git revision (removed on exit).

    Outside a git repository there is no source (the fingerprint then hashes the target function's source).
    """
    seat = config.variant("baseline")
    ref = seat.ref if seat else None
    folder = config_path.resolve().parent
    if ref is None:
        python = [v for v in VARIANTS if config.kind(v) == "target"]
        try:
            root = repo_root(folder) if python else None
        except ConfigError:  # not a git repository (or no git): nothing to say about the code's source
            root = None
        if root is None:  # an endpoint, prompt or model version has no code of ours to describe
            return {"baseline": None, "candidate": None}
        here = (root, working_tree_source(root, _store_folders(tracking_uri)))
        return {v: here if v in python else None for v in VARIANTS}
    root = repo_root(folder)  # --baseline-ref needs a repository: this names the fix when there is none
    candidate = (root, working_tree_source(root, _store_folders(tracking_uri)))
    checkout, source = stack.enter_context(checked_out(root, ref))
    return {"baseline": (checkout, source), "candidate": candidate}


def _store_folders(tracking_uri: str) -> list[Path]:
    """The gate's own SQLite store is not code: leave its folder out of the working tree's identity."""
    if tracking_uri.startswith("sqlite:///"):
        return [Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent]
    return []


def _source_report(found: tuple[Path, Source] | None) -> SourceReport | None:
    if found is None:
        return None
    s = found[1]
    return SourceReport(kind=s.kind, ref=s.ref, commit=s.commit, dirty=s.dirty, diff_sha256=s.diff_sha256, tree=s.tree)


def _specs(
    config: GateConfig, config_path: Path, sources: dict[Variant, tuple[Path, Source] | None]
) -> dict[Variant, VersionSpec]:
    """Where each version's worker runs: the user's folders, or the same folders inside the revision's checkout."""
    folder, cwd = config_path.resolve().parent, Path.cwd()
    specs = {}
    for v in VARIANTS:
        where = f"{config_path}: {v}.target"
        seat = config.variant(v)
        if seat is not None and seat.kind not in (None, "target"):
            version = seat.model_dump(mode="json", include={"http", "prompt", "model"}, exclude_none=True)
            specs[v] = VersionSpec(
                v, config.describe(v) or "", f"{config_path}: {v}", folder, [folder], sys.executable, version=version
            )
            continue
        python = _python(seat.python if seat else None, folder, f"{config_path}: {v}.python")
        pins = dict(seat.prompts) if seat is not None and seat.prompts else None
        found = sources.get(v)
        if found is None or found[1].kind == "working tree":
            specs[v] = VersionSpec(v, config.target(v) or "", where, cwd, [folder, cwd], python, prompts=pins)
            continue
        candidate = sources.get("candidate")
        root_of = candidate[0] if candidate else folder
        checkout, source = found

        def inside(path: Path, root: Path = root_of, checkout: Path = checkout) -> Path:
            return checkout / path.relative_to(root) if path.is_relative_to(root) else path

        run_in = inside(cwd) if cwd.is_relative_to(root_of) else inside(folder)
        hint = (
            f" (at {source.ref} = {source.commit[:12]}; a pull request that adds the app has no baseline to compare "
            "with: skip the gate for it, e.g. run without --baseline-ref, or mark the check optional)"
        )
        specs[v] = VersionSpec(
            v, config.target(v) or "", where, run_in, [inside(folder), run_in], python, hint, prompts=pins
        )
    return specs


def _python(configured: str | None, folder: Path, where: str) -> str:
    """The interpreter of a version's worker: the config's ``python`` (relative to the config's folder), or ours."""
    if configured is None:
        return sys.executable
    path = Path(configured).expanduser()
    if not path.is_absolute() and (os.sep in configured or "/" in configured):
        path = folder / path
    found = str(path) if path.is_absolute() or os.sep in configured or "/" in configured else shutil.which(configured)
    if found is None or not Path(found).is_file() or not os.access(found, os.X_OK):
        raise ConfigError(f"{where}: {configured!r} is not an executable Python interpreter")
    return found


def _start_run(
    store: Store, config: GateConfig, session_id: str, variant: Variant, prints: dict[str, str], shard: Any
) -> str:
    """One MLflow run per version (and shard), tagged with what a later reuse or gather must match."""
    return store.start_run(
        f"gate-{session_id}-{variant}" + (f"-{shard[0]}of{shard[1]}" if shard else ""),
        {
            f"{TAG_PREFIX}session": session_id,
            f"{TAG_PREFIX}variant": variant,
            f"{TAG_PREFIX}label": config.label(variant),
            f"{TAG_PREFIX}fingerprint.dataset": prints["dataset"],
            f"{TAG_PREFIX}fingerprint.target": prints[variant],
            f"{TAG_PREFIX}fingerprint.scorers": prints["scorers"],
            f"{TAG_PREFIX}fingerprint.code": prints[f"code.{variant}"],
            **({f"{TAG_PREFIX}shard": f"{shard[0]}/{shard[1]}"} if shard else {}),
        },
    )


def _close_runs(session: Session, evaluation: Evaluation) -> None:
    """Log each version's metrics and trace count to its run and close it (FAILED when the data is not whole)."""
    failed = all(r.error for r in session.results) or bool(session.problems)
    for v, run_id in session.run_ids.items():
        # gate.traces: what `gate compare --session` must find again when it gathers shards
        traces = sum(1 for row in session.rows if row.variant == v and row.trace_id)
        session.store.client.set_tag(run_id, f"{TAG_PREFIX}traces", str(traces))
        session.store.finish_run(run_id, evaluation.metrics[v], "FAILED" if failed else "FINISHED")


def _shard(cases: list[Case], options: RunOptions) -> list[Case]:
    """The i-th of n slices of the cases (every n-th case, in dataset order: balanced and deterministic)."""
    if options.shard is None:
        return cases
    index, total = options.shard
    mine = cases[index - 1 :: total]
    if not mine:
        raise ConfigError(
            f"usage: --shard {index}/{total}: the dataset has {len(cases)} cases, so this shard has none; "
            "use fewer shards"
        )
    return mine


def _stale(baseline_from: str | None) -> str | None:
    """Why a reused baseline's latency cannot be compared with the candidate's, or None (both run now)."""
    if baseline_from is None:
        return None
    return (
        f"the baseline's traces were recorded earlier (--baseline-from {baseline_from}), not interleaved with the "
        "candidate's, and the provider's speed then and now differ; run both versions to gate it"
    )


def _reuse_baseline(session: Session, options: RunOptions, prints: dict[str, str]) -> _Reused:
    """Put an earlier session's baseline rows into this session, if it ran exactly what this one would."""
    source = options.baseline_from or ""
    now = {"dataset": prints["dataset"], "baseline": prints["baseline"], "scorers": prints["scorers"]}
    now["code"] = prints["code.baseline"]
    scoring = StoredScoring.of(
        session.scorers, session.cases, session.session, session.config.run.concurrency, session.scorer_stats
    )
    rows, run_id, found = load_stored_baseline(session.store, source, session.config, session.cases, scoring, now)
    session.rows += rows
    return _Reused(source, run_id, found)


def _enable_openai_autolog() -> None:
    try:
        import mlflow.openai

        mlflow.openai.autolog(silent=True)
    except ImportError as exc:  # openai not installed: the app cannot be calling it either
        raise RunError(f"run.autolog is on but MLflow's OpenAI autolog cannot load: {exc}") from None
