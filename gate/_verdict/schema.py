"""The verdict: the gate's public JSON output (schema_version 1), its JSON Schema, and an atomic writer."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["SCHEMA_VERSION", "CheckReport", "VariantReport", "Verdict", "verdict_schema", "write_verdict"]

SCHEMA_VERSION: Literal[1] = 1


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SelectionReport(_Out):
    """Which stored traces stood for a version (``gate compare``, a reused baseline)."""

    experiment_id: str
    filter: str = Field(description="the MLflow trace filter used")
    traces: int = Field(description="traces read")
    counted: int | None = Field(
        None, description="traces that count: of a retried call's attempts in one session, the last; every session's"
    )
    sessions: int | None = Field(None, description="gate sessions the traces read came from (0: none recorded them)")
    more_than_max: bool = Field(False, description="the filter matched more than max_traces; the newest were read")
    reader: Literal["sqlite", "sql", "public"] | None = Field(
        None,
        description="how the traces were read: sqlite (Python's sqlite3, MLflow not imported), sql (MLflow's SQL "
        "store's tables) or public (MLflow's search_traces); GATE_TRACE_READER chooses one",
    )


class ComparisonReport(_Out):
    """Where each version's traces came from, and how they were paired for the statistics."""

    baseline_source: Literal["run", "stored"]
    candidate_source: Literal["run", "stored"]
    pair_by: Literal["case_id", "inputs", "none"] = Field(description="none: unpaired statistics")
    why: str
    baseline_from: str | None = Field(None, description="the session or MLflow run whose baseline traces were reused")
    shards: list[str] = Field([], description="the shards gathered, as i/n")


class SourceReport(_Out):
    """Where one version's code came from."""

    kind: Literal["working tree", "git revision"]
    ref: str | None = Field(None, description="the revision asked for (--baseline-ref), e.g. origin/main")
    commit: str = Field(description="the full SHA of the revision, or of HEAD for the working tree")
    dirty: bool = Field(False, description="working tree: it differs from HEAD (changed or untracked files)")
    diff_sha256: str | None = Field(None, description="working tree, when dirty: a hash of the changes")
    tree: str = Field(description="the git tree of the code that ran (the fingerprint's code part)")


class VariantReport(_Out):
    """What ran for one version and what it left in MLflow."""

    label: str
    target: str | None = None
    kind: Literal["target", "http", "prompt", "model"] | None = Field(
        None, description="what gate run called: a Python target, an endpoint, a prompt version, or a model"
    )
    url: str | None = Field(None, description="http: the endpoint as the config names it (never a credential)")
    prompt: str | None = Field(None, description="prompt: the registry URI in the config (an alias, or a number)")
    prompt_version: int | None = Field(None, description="prompt: the version that URI resolved to for this run")
    model: str | None = Field(None, description="prompt or model: the model the messages were sent to")
    prompts: dict[str, int] | None = Field(
        None, description="target: the registry prompt versions pinned for the app (name → the version it resolved to)"
    )
    source: SourceReport | None = Field(None, description="the code's git source, when it is in a git repository")
    selection: SelectionReport | None = None
    mlflow_run_id: str | None = None
    calls: int = Field(description="calls made")
    traces: int = Field(description="traces found in the store for those calls")
    errors: int = Field(description="calls that raised, timed out or left an ERROR trace")
    retries: int = Field(0, description="attempts re-run after a transient provider error (429, 5xx, reset)")
    first_errors: list[str] = Field([], description="up to 3 distinct error messages of this version's calls")


class CheckReport(_Out):
    """One check, decided."""

    metric: str
    status: Literal["pass", "fail", "warn", "inconclusive", "missing"]
    severity: Literal["error", "warn"]
    baseline: float | None
    candidate: float | None
    delta: float | None
    delta_pct: float | None
    bound: dict[str, float]
    message: str
    ci_low: float | None = Field(None, description="one-sided lower bound at `confidence` of `ci_of`")
    ci_high: float | None = Field(None, description="one-sided upper bound at `confidence` of `ci_of`")
    ci_of: Literal["candidate", "delta", "delta_pct"] | None = None
    p_value: float | None = Field(None, description="exact McNemar test, for 0/1 metrics")
    n_pairs: int | None = Field(None, description="cases with values for both versions")
    on_inconclusive: Literal["fail", "warn", "pass"] | None = None
    default: bool = Field(False, description="a check the gate adds (guard_errors), not one of the config's")
    slice: str | None = Field(
        None,
        description="the cases the check was decided on, when not all (where:, or the deciding slice of per_slice:)",
    )
    leans: Literal["pass", "fail"] | None = Field(
        None, description="an inconclusive check: which side of the bound its point estimate is on"
    )
    needs_cases: int | None = Field(
        None, description="too few cases to decide this check (its interval resamples cases): the minimum it needs"
    )
    comparable: bool = Field(
        True,
        description="false: a time-sensitive metric (latency) of versions whose traces were not recorded together "
        "(a stored baseline); the check is inconclusive whatever its numbers say",
    )
    population: Literal["app", "dataset", "traffic", "case"] | None = Field(
        None,
        description="what the interval speaks about: 'app' — the cases as a sample of the app's inputs (the case is "
        "the unit); 'dataset' — these cases as they are, their runs the sample (about: dataset); 'traffic' — "
        "unpaired traces, each a draw from a version's traffic; 'case' — a per-case check, each case on its own runs",
    )
    suspects: list[str] = Field(
        default_factory=list,
        description="a per-case check: the cases its last look flagged, re-run and decided on the new runs alone "
        "(confirmation runs; docs/design/statistics.md)",
    )


class RegressionReport(_Out):
    """A case the candidate made worse, with the traces to open."""

    case_id: str
    rule: str
    detail: str
    golden: bool
    baseline_trace_ids: list[str]
    candidate_trace_ids: list[str]


class ScorerReport(_Out):
    """How one scorer fared: values given, values missing (with the first reason), judge tokens, assessments."""

    type: str
    scored: int
    missing: int
    first_error: str | None = None
    judge_input_tokens: int = Field(0, description="the judge's own tokens, never counted as the app's")
    judge_output_tokens: int = 0
    assessments_written: int = Field(0, description="feedback newly logged or overridden on the traces")


class SpendReport(_Out):
    """What the run spent, including adaptive repeats."""

    calls: int = Field(description="measured calls, both versions")
    warmup_calls: int = Field(0, description="unmeasured first calls (run.warmup)")
    rounds: int
    repeats_per_case: int
    cost_usd: float | None = Field(None, description="the app's spend on both versions, where it is known")
    stopped_because: str = Field(description="all checks decided, or the cap that stopped adaptive repeats")


class CaseSide(_Out):
    """One version's runs of one case."""

    trace_ids: list[str]
    errors: int
    output: str | None = Field(None, description="the first run's answer, cut to 2,000 characters")
    values: dict[str, float | None] = Field({}, description="per-case means of the main metrics and scores")


class CaseReport(_Out):
    """A case, both versions side by side."""

    case_id: str
    inputs: dict[str, Any]
    golden: bool = False
    baseline: CaseSide | None = None
    candidate: CaseSide | None = None


class MlflowReport(_Out):
    """Where the traces are."""

    tracking_uri: str = Field(description="redacted: passwords are replaced by ***")
    experiment: str
    experiment_id: str | None = None
    session: str | None = Field(None, description="the gate.session tag shared by this run's traces")
    trace_writer: Literal["buffered", "mlflow"] | None = Field(
        None, description="who wrote this run's traces: the gate's buffered writer, or MLflow's exporter"
    )
    trace_writer_reason: str | None = None


class DatasetReport(_Out):
    """Where the cases came from: a file, the config, an MLflow evaluation dataset, or stored traces."""

    kind: Literal["inline", "file", "mlflow", "traces"]
    cases: int
    path: str | None = None
    name: str | None = Field(None, description="mlflow: the dataset's name")
    id: str | None = Field(None, description="mlflow: the dataset's id (d-…)")
    digest: str | None = Field(None, description="mlflow: MLflow's digest of the dataset's records")
    version: int | None = None
    records: int | None = None
    filter: str | None = Field(None, description="traces: MLflow's filter the selector became")
    experiment_id: str | None = None
    traces_read: int | None = None
    skipped_errors: int | None = Field(None, description="traces: selected traces left out because they errored")
    skipped_without_inputs: int | None = Field(None, description="traces: left out, root span inputs not a mapping")
    duplicates: int | None = Field(None, description="traces: traces whose inputs an earlier (newer) trace had")
    distinct_inputs: int | None = None
    sample: int | None = None
    seed: int | None = None
    trace_ids: list[str] = Field([], description="traces: the trace each case's inputs came from (at most 1,000)")


class Verdict(_Out):
    """The gate's answer. On exit 2 or 3 only ``status``, ``exit_code``, ``reason`` and ``error`` are sure to be set."""

    schema_version: Literal[1] = SCHEMA_VERSION
    status: Literal["pass", "fail", "error"]
    exit_code: int
    report_only: bool = Field(False, description="--report-only turned a failing verdict's exit 1 into 0")
    reason: str | None = Field(None, description="why the status is error: config, run, interrupted, internal")
    error: str | None = None
    gate_version: str
    config: str | None = None
    endpoint: str | None = Field(None, description="'simulated', or the OpenAI base URL the app was pointed at")
    variants: dict[Literal["baseline", "candidate"], VariantReport] | None = None
    metrics: dict[Literal["baseline", "candidate"], dict[str, float | None]] | None = None
    checks: list[CheckReport] = []
    confidence: float | None = None
    confidence_per_look: float | None = Field(
        None,
        description="adaptive runs: the one-sided confidence every look decided at, so that all looks together hold "
        "`confidence` (repeated confidence intervals; docs/design/statistics.md)",
    )
    regressions: list[RegressionReport] = Field([], description="worst first; golden cases lead")
    unpaired_cases: dict[Literal["baseline_only", "candidate_only"], list[str]] = {}
    spend: SpendReport | None = None
    scorers: dict[str, ScorerReport] = {}
    cases: list[CaseReport] = Field([], description="every case, both versions side by side (at most 1,000)")
    distributions: dict[str, dict[Literal["baseline", "candidate"], list[float]]] = Field(
        {}, description="per-trace values of the main metrics and scores, for charts"
    )
    fingerprint: dict[str, str] = Field({}, description="hashes of what must match for a fair comparison")
    comparison: ComparisonReport | None = None
    dataset: DatasetReport | None = None
    mlflow: MlflowReport | None = None
    timing: dict[str, Any] = {}


def verdict_schema() -> dict[str, Any]:
    """The JSON Schema of the verdict, as ``gate schema`` prints it."""
    schema = Verdict.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "gate verdict"
    return schema


def write_verdict(verdict: Verdict, path: Path, text: str | None = None) -> None:
    """Write the verdict (``text``: its ``render_json``, when the caller has it) atomically: readers see the old file
    or the whole new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(render_json(verdict) if text is None else text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_json(verdict: Verdict) -> str:
    """The verdict as indented JSON with a trailing newline."""
    return json.dumps(verdict.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
