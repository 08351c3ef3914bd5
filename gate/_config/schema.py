"""Load and validate ``thresholds.yaml`` into a frozen ``GateConfig``; every problem names file and path."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gate._config.base import STRICT
from gate._config.reader import format_loc, one_line, read_file, read_yaml
from gate._config.versions import HttpConfig, ModelConfig, check_prompt_uri
from gate._errors import ConfigError
from gate._metrics import AGGREGATIONS, METRICS, is_percentile, metric_info, parse_metric_key, split_metric_key
from gate._secrets import redact_uri
from gate.scorers._models import ScorerConfig

__all__ = [
    "DEFAULT_TRACKING_URI",
    "VARIANTS",
    "CheckConfig",
    "GateConfig",
    "RunConfig",
    "TraceSelector",
    "Variant",
    "VariantConfig",
    "load_config",
    "parse_instant",
    "require_run_parts",
]

DEFAULT_TRACKING_URI = "sqlite:///.gate/mlflow.db"
Variant = Literal["baseline", "candidate"]
VARIANTS: tuple[Variant, Variant] = ("baseline", "candidate")
DATASET_CHOICE = (
    "give exactly one of 'dataset' (a YAML, JSONL or CSV file, an MLflow evaluation dataset, or stored traces) or "
    "'cases' (a list inline)"
)
BOUNDS = ("at_most", "at_least", "max_increase", "max_decrease", "max_increase_pct", "max_decrease_pct")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class _Strict(BaseModel):
    model_config = STRICT


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_DURATION_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_instant(value: str, now_s: float) -> int:
    """``1h``/``30m``/``2d`` (that long before ``now_s``) or an ISO 8601 timestamp, as epoch milliseconds.

    MLflow's trace filter compares ``timestamp_ms`` with a number; it does not parse dates.
    """
    from datetime import datetime, timezone

    if match := _DURATION.fullmatch(value.strip()):
        return int((now_s - float(match[1]) * _DURATION_S[match[2]]) * 1000)
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"'{value}' is neither a duration (30m, 1h, 2d, 1w: that long ago) nor an ISO 8601 timestamp "
            "(2026-11-26T09:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)  # CI machines run in UTC; say so in the docs
    return int(moment.timestamp() * 1000)


class TraceSelector(_Strict):
    """Which stored traces are one version's, for ``gate compare`` (every field given must match)."""

    experiment: str | None = Field(None, min_length=1, description="default: the config's experiment")
    session: str | None = Field(None, min_length=1, description="a gate session id")
    variant: Literal["baseline", "candidate"] | None = Field(
        None, description="with session: which seat of that session (default: the one this selector is for)"
    )
    run_id: str | None = Field(None, min_length=1)
    model_id: str | None = Field(None, min_length=1, description="a LoggedModel id (mlflow.set_active_model)")
    trace_name: str | None = Field(None, min_length=1)
    tags: dict[str, str] = {}
    metadata: dict[str, str] = {}
    since: str | None = Field(None, description="30m, 1h, 2d (that long ago) or an ISO 8601 timestamp")
    until: str | None = Field(None, description="as since; default: now")
    max_traces: int = Field(10_000, ge=1, le=1_000_000, description="the newest this many; more is reported")

    @field_validator("since", "until")
    @classmethod
    def _instant(cls, value: str | None) -> str | None:
        if value is not None:
            parse_instant(value, 0.0)
        return value

    @field_validator("session", "run_id", "model_id", "trace_name")
    @classmethod
    def _no_quote(cls, value: str | None) -> str | None:
        if value is not None and "'" in value:
            raise ValueError("a single quote cannot be matched in MLflow's trace filter")
        return value

    @field_validator("tags", "metadata")
    @classmethod
    def _plain_pairs(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if "`" in key or "'" in item:
                raise ValueError(f"'{key}': keys cannot hold a backtick, nor values a single quote (MLflow's filter)")
        return value

    @model_validator(mode="after")
    def _selects_something(self) -> TraceSelector:
        if not (self.session or self.run_id or self.model_id or self.trace_name or self.tags or self.metadata):
            raise ValueError(
                "a selector needs at least one of session, run_id, model_id, trace_name, tags, metadata "
                "(a time window alone would take every trace of the experiment)"
            )
        if self.variant is not None and self.session is None:
            raise ValueError("'variant' picks a seat of a gate session; give 'session' too")
        return self


VersionKind = Literal["target", "http", "prompt", "model"]


class VariantConfig(_Strict):
    """One version of the app, for ``gate run`` exactly one of: a Python function (``target``, from a git revision
    with ``ref``), an HTTP endpoint (``http``), a prompt-registry version sent to a model (``prompt``, with optional
    ``model`` settings), or chat messages and a model inline (``model`` with ``messages``); for ``gate compare``, its
    stored traces (``traces``)."""

    target: str | None = None
    label: str | None = None
    traces: TraceSelector | None = None
    ref: str | None = Field(
        None,
        min_length=1,
        description="baseline only: run the target's code as of this git revision (e.g. origin/main, HEAD~1)",
    )
    python: str | None = Field(
        None, min_length=1, description="the interpreter of this version's worker (default: the gate's own)"
    )
    http: HttpConfig | None = None
    prompt: str | None = Field(None, description="prompts:/NAME/VERSION or prompts:/NAME@ALIAS")
    model: ModelConfig | None = None
    prompts: dict[str, int | str] | None = Field(
        None,
        description="target only: registry prompts the app loads, pinned for this version (name: version or alias)",
    )

    @field_validator("prompts")
    @classmethod
    def _pins(cls, value: dict[str, int | str] | None) -> dict[str, int | str] | None:
        for name, pin in (value or {}).items():
            uri = f"prompts:/{name}/{pin}" if isinstance(pin, int) else f"prompts:/{name}@{pin}"
            check_prompt_uri(uri)
        return value

    @field_validator("target")
    @classmethod
    def _module_colon_function(cls, value: str | None) -> str | None:
        if value is not None and not _TARGET.fullmatch(value):
            raise ValueError(f"'{value}' is not 'module:function' (e.g. examples.support_agents:basic_agent)")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_uri(cls, value: str | None) -> str | None:
        return None if value is None else check_prompt_uri(value)

    @field_validator("ref")
    @classmethod
    def _plain_ref(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("-") or any(c.isspace() or not c.isprintable() for c in value)):
            raise ValueError(f"{value!r} is not a git revision name (e.g. origin/main, HEAD~1, a commit SHA)")
        return value

    @model_validator(mode="after")
    def _runs_or_selects(self) -> VariantConfig:
        kinds = [k for k in ("target", "http", "prompt") if getattr(self, k) is not None]
        if self.model is not None and self.prompt is None:
            kinds.append("model")
        if len(kinds) > 1:
            raise ValueError(f"give one of {', '.join(kinds)}: a version is one function, endpoint or prompt")
        if not kinds and self.traces is None and self.ref is None:
            raise ValueError(
                "give 'target' (module:function), 'http' (an endpoint), 'prompt' (prompts:/NAME@ALIAS) or 'model' "
                "(messages and a model) for gate run, or 'traces' (a selector of stored traces) for gate compare"
            )
        if self.prompt is not None and self.model is not None and self.model.messages is not None:
            raise ValueError("model.messages: the prompt is the messages; give either 'prompt' or model.messages")
        if self.model is not None and self.prompt is None and self.model.messages is None:
            raise ValueError("model: give 'messages' (the chat to send, with {{ name }} placeholders), or a 'prompt'")
        if kinds and kinds[0] != "target":
            for key in ("ref", "python", "prompts"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' applies to a Python 'target', not to a {kinds[0]} version")
        return self

    @property
    def kind(self) -> VersionKind | None:
        """What ``gate run`` calls for this version (None: nothing of its own; ``ref`` alone runs the candidate's
        target at that revision)."""
        if self.http is not None:
            return "http"
        if self.prompt is not None:
            return "prompt"
        if self.model is not None:
            return "model"
        return "target" if self.target is not None or self.ref is not None else None


ColumnType = Literal["string", "integer", "number", "boolean", "json"]


class DatasetConfig(_Strict):
    """Where the cases are, when not a plain file path: exactly one of ``file``, ``mlflow`` or ``traces``
    (docs/datasets.md)."""

    file: str | None = Field(None, min_length=1, description="a YAML, JSONL or CSV file, relative to the config")
    columns: dict[str, ColumnType] = Field({}, description="CSV: the type of a column (default: string)")
    mlflow: str | None = Field(None, min_length=1, description="an MLflow evaluation dataset: its name or id (d-…)")
    experiment: str | None = Field(None, min_length=1, description="mlflow: the experiment a dataset name is in")
    version: int | None = Field(None, ge=1, description="mlflow: a version of the dataset (default: the latest)")
    traces: TraceSelector | None = Field(None, description="replay the inputs of stored traces (production traffic)")
    sample: int | None = Field(None, ge=1, description="traces: how many distinct inputs to take (default: all)")
    seed: int = Field(0, description="traces: which sample (the same seed and store give the same cases)")

    @model_validator(mode="after")
    def _one_source(self) -> DatasetConfig:
        given = [k for k in ("file", "mlflow", "traces") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'file' (a path), 'mlflow' (a dataset name or id) or 'traces'")
        for key, owner in (("columns", "file"), ("experiment", "mlflow"), ("version", "mlflow"), ("sample", "traces")):
            if getattr(self, key) and given[0] != owner:
                raise ValueError(f"'{key}' applies to '{owner}', not to '{given[0]}'")
        if self.columns and not str(self.file).lower().endswith(".csv"):
            raise ValueError("'columns' types the columns of a CSV file")
        return self

    @property
    def kind(self) -> Literal["file", "mlflow", "traces"]:
        return "file" if self.file is not None else "mlflow" if self.mlflow is not None else "traces"


OnInconclusive = Literal["fail", "warn", "pass"]
MAX_REPEATS = 10  # the adaptive cap on runs a case when the config does not set one
PERCENTILE_MAX_REPEATS = 20  # the same when a check decides a percentile (GateConfig.max_repeats)


class RunConfig(_Strict):
    """How the versions are run, and how much more the gate may spend when a check is undecided."""

    repeats: int = Field(1, ge=1, le=1000)
    max_repeats: int | None = Field(
        None, ge=1, le=1000, description="adaptive cap per case (default 10; 20 with a percentile check)"
    )
    max_calls: int | None = Field(None, ge=1, description="cap on all calls of both versions")
    max_cost_usd: float | None = Field(None, gt=0, description="cap on the app's spend, both versions")
    concurrency: int = Field(4, ge=1, le=256)
    timeout_s: float = Field(120.0, gt=0)
    autolog: bool = True  # turn on mlflow.openai.autolog so OpenAI calls become CHAT_MODEL spans with usage
    retries: int = Field(2, ge=0, le=10, description="re-runs of a call that failed with a transient provider error")
    retry_backoff_s: float = Field(0.5, ge=0, description="first backoff; doubles per retry, with jitter")
    retry_max_backoff_s: float = Field(30.0, ge=0, description="cap on one wait, Retry-After included")
    max_error_rate: float | None = Field(None, ge=0, le=1, description="exit 3 when a version's error rate is above")
    decide_all: bool = Field(
        False, description="keep repeating while any check is undecided even after one has failed (default: stop)"
    )
    warmup: bool = True  # one call per version first, kept out of the data: first calls pay for clients and imports
    isolation: Literal["process", "inline"] = Field(
        "process",
        description="process: each version runs in a worker process of its own (docs/design/workers.md); "
        "inline: both in the gate's process, as a debugger needs",
    )


class TradeOffCondition(_Strict):
    """The other metric's change that buys the relaxed bounds: shown at the check's confidence."""

    metric: str
    fell_pct_at_least: float | None = Field(None, gt=0, description="e.g. 20: it fell by 20% or more")
    rose_pct_at_least: float | None = Field(None, gt=0, description="e.g. 10: it rose by 10% or more")

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str, info: ValidationInfo) -> str:
        scorers = (info.context or {}).get("scorers", ())
        parse_metric_key(value, scorers)
        if metric_info(split_metric_key(value)[0]).per_case:
            raise ValueError(f"'{value}' counts cases; a trade-off needs a measured metric such as cost_usd/mean")
        return value

    @model_validator(mode="after")
    def _one_change(self) -> TradeOffCondition:
        if (self.fell_pct_at_least is None) == (self.rose_pct_at_least is None):
            raise ValueError("give one of fell_pct_at_least or rose_pct_at_least (e.g. fell_pct_at_least: 20)")
        return self


class TradeOff(_Strict):
    """Looser bounds for a check, applied only when another metric is shown to have changed enough."""

    when: TradeOffCondition
    at_most: float | None = None
    at_least: float | None = None
    max_increase: float | None = Field(None, ge=0)
    max_decrease: float | None = Field(None, ge=0)
    max_increase_pct: float | None = Field(None, ge=0)
    max_decrease_pct: float | None = Field(None, ge=0)

    def bounds(self) -> dict[str, float]:
        return {name: value for name in BOUNDS if (value := getattr(self, name)) is not None}


class CheckConfig(_Strict):
    """A bound on one metric. At least one bound; ``severity: warn`` only reports."""

    metric: str
    at_most: float | None = None
    at_least: float | None = None
    max_increase: float | None = Field(None, ge=0)
    max_decrease: float | None = Field(None, ge=0)
    max_increase_pct: float | None = Field(None, ge=0)
    max_decrease_pct: float | None = Field(None, ge=0)
    severity: Literal["error", "warn"] = "error"
    on_inconclusive: OnInconclusive | None = None  # default: the config's top-level on_inconclusive
    per_case: bool = Field(
        False,
        description="decide the bound for every case on its own (its repeats), failing when any case is beyond it; "
        "docs/design/statistics.md",
    )
    where: dict[str, str] | None = Field(
        None,
        description="only the cases in this slice: {tag: refund} (the case has that tag) and/or "
        "{inputs.lang: de} (that input, as text, equals the value); every entry must hold",
    )
    trade_off: TradeOff | None = Field(
        None,
        description="looser bounds that apply when another metric is shown to have changed enough, e.g. quality "
        "may fall 1 point if cost falls 20%: {max_decrease: 1, when: {metric: cost_usd/mean, fell_pct_at_least: 20}}",
    )
    per_slice: str | None = Field(
        None,
        description="decide the check for every slice of cases: 'tags' (one slice per tag) or 'inputs.NAME' (one "
        "per value of that input); the worst slice decides, each at confidence adjusted for the number of slices",
    )
    about: Literal["app", "dataset"] = Field(
        "app",
        description="what the check's interval speaks about: 'app' (default): the cases are a sample of the app's "
        "inputs, so intervals take the case as the unit; 'dataset': these cases as they are, with their runs "
        "(repeats) as the sample, for a fixed suite whose cases are the whole population of interest",
    )
    percentile: Literal["smoothed", "plain"] = Field(
        "smoothed",
        description="how a change of a percentile (pNN, median) is decided: 'smoothed' (default): the bootstrap "
        "weighs the order statistics around it, finding a change of the whole distribution more often; 'plain': "
        "the percentile itself, so that a change confined to calls beyond it (the slowest 3% for a p95) cannot "
        "move the check; docs/design/statistics.md",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str, info: ValidationInfo) -> str:
        scorers = (info.context or {}).get("scorers", ())
        parse_metric_key(value, scorers)  # raises ValueError naming what is valid
        return value

    @model_validator(mode="after")
    def _bounds_apply(self) -> CheckConfig:
        if not any(getattr(self, name) is not None for name in BOUNDS):
            raise ValueError(f"no bound given; use one or more of: {', '.join(BOUNDS)}")
        if self.at_most is not None and self.at_least is not None and self.at_least > self.at_most:
            raise ValueError(f"at_least ({self.at_least}) is above at_most ({self.at_most}); no value can pass")
        metric, aggregation = split_metric_key(self.metric)
        info = metric_info(metric)
        if info.per_case and not {"at_most", "at_least"} >= set(self.bounds()):
            raise ValueError(f"'{metric}' counts cases of this run; only at_most / at_least apply")
        if aggregation == "rate" and not info.binary and metric in METRICS:
            raise ValueError(f"'rate' is the share of 1s in a 0/1 metric; '{metric}' is not 0/1, use mean or pNN")
        if info.binary and aggregation not in ("rate", "mean", "sum", "min", "max"):
            raise ValueError(f"'{metric}' is 0/1; use '{metric}/rate' instead of '{self.metric}'")
        for key in self.where or {}:
            if key != "tag" and not (key.startswith("inputs.") and len(key) > len("inputs.")):
                raise ValueError(f"where: unknown key '{key}'; use tag or inputs.NAME (e.g. where: {{tag: refund}})")
        if self.where is not None and not self.where:
            raise ValueError("where: {} selects every case; leave it out, or give tag / inputs.NAME")
        if self.per_slice is not None:
            if self.per_slice != "tags" and not (
                self.per_slice.startswith("inputs.") and len(self.per_slice) > len("inputs.")
            ):
                raise ValueError(f"per_slice: '{self.per_slice}'; use tags or inputs.NAME (e.g. per_slice: tags)")
            if self.per_case:
                raise ValueError("per_slice with per_case: per_case already decides every case; use one")
        if self.trade_off is not None:
            if not self.trade_off.bounds():
                raise ValueError(f"trade_off: no bound given; use one or more of: {', '.join(BOUNDS)}")
            if self.per_case or info.per_case:
                raise ValueError("trade_off applies to a check over cases, not to per-case counts or per_case checks")
        if self.about == "dataset" and (self.per_case or info.per_case):
            raise ValueError(
                "about: dataset applies to a check over cases; per_case checks and case counts already take each "
                "case as it is"
            )
        if self.percentile == "plain" and not (
            (aggregation.startswith("p") or aggregation == "median") and not info.binary and not info.per_case
        ):
            raise ValueError(
                f"percentile: plain applies to a percentile of a measured metric (e.g. latency_ms/p95), not "
                f"'{self.metric}'"
            )
        if self.per_case:
            if info.per_case or info.binary or aggregation != "mean":
                raise ValueError(
                    f"per_case compares each case's runs of a measured metric, e.g. latency_ms/mean, not "
                    f"'{self.metric}' (0/1 outcomes per case are cases_regressed's)"
                )
            if not {"max_increase_pct", "max_decrease_pct"} >= set(self.bounds()):
                raise ValueError("per_case takes max_increase_pct and/or max_decrease_pct (a ratio per case)")
        return self

    def bounds(self) -> dict[str, float]:
        """The bounds that are set, in a fixed order."""
        return {name: value for name in BOUNDS if (value := getattr(self, name)) is not None}


class CaseConfig(_Strict):
    """One input of the dataset."""

    id: str | None = None
    inputs: dict[str, Any]
    expectations: dict[str, Any] | None = None
    tags: list[str] = []
    golden: bool = False  # any regression of this case fails the gate

    @field_validator("id", mode="before")
    @classmethod
    def _integer_id_as_text(cls, value: Any) -> Any:
        # Users number their cases (`id: 1` in YAML, `"id": 17` in a database export), so an integer id is accepted
        # as its decimal text: 17 -> "17". Only a true int: a bool (`id: yes`) or a float (`id: 1.50` -> "1.5") would
        # not read back as written, so they stay errors ("Input should be a valid string"); quote such ids.
        # YAML 1.1 reads an unquoted 010 as octal 8 and 1:30 as 90: quote ids with leading zeros or colons.
        return str(value) if type(value) is int else value

    @field_validator("id")
    @classmethod
    def _usable_id(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("empty id; give a name, or leave the key out for an id hashed from the inputs")
        if (
            value is not None
            and not value.isprintable()
            and any(unicodedata.category(c) in ("Cc", "Cs") for c in value)
        ):
            # a newline or NUL in an id breaks every report (a JUnit XML file cannot even hold it)
            raise ValueError(f"id {one_line(repr(value), 80)} holds a control character or a lone surrogate")
        return value


class PriceConfig(_Strict):
    """USD per million tokens, for models MLflow cannot price."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)


class SimulatorConfig(_Strict):
    """Settings for ``--simulate`` (see ``gate.simulator``)."""

    seed: int = 0
    base_latency_ms: float = Field(15.0, ge=0)
    ms_per_token: float = Field(0.3, ge=0)
    latency_sigma: float = Field(0.15, ge=0, le=3)
    error_rate: float = Field(0.0, ge=0, le=1)
    faults: dict[
        Literal["rate_limit", "rate_limit_no_retry_after", "server_error", "unavailable", "reset", "hang", "truncated"],
        float,
    ] = Field({}, description="per-request probability of each injected provider fault")


class GateConfig(_Strict):
    """The whole of ``thresholds.yaml``."""

    version: Literal[1]
    experiment: str = Field("gate", min_length=1)
    tracking_uri: str | None = None
    dataset: DatasetConfig | None = Field(None, description="a file path, or a source: {file|mlflow|traces: …}")

    @field_validator("dataset", mode="before")
    @classmethod
    def _path_is_a_file(cls, value: Any) -> Any:
        return {"file": value} if isinstance(value, str) else value

    cases: list[CaseConfig] | None = None
    baseline: VariantConfig | None = None  # gate compare with --baseline/--candidate flags needs neither
    candidate: VariantConfig | None = None
    run: RunConfig = RunConfig()
    checks: list[CheckConfig] = Field(min_length=1)
    confidence: float = Field(0.95, ge=0.5, lt=1, description="one-sided confidence of every decision")
    on_inconclusive: OnInconclusive = "warn"
    guard_errors: bool = Field(
        True,
        description="without an error/rate check, fail when the candidate's error rate rises (a default check)",
    )
    scorers: list[ScorerConfig] = []
    pricing: dict[str, PriceConfig] = {}
    simulator: SimulatorConfig = SimulatorConfig()

    @field_validator("scorers")
    @classmethod
    def _unique_scorer_names(cls, value: list[Any]) -> list[Any]:
        names = [s.name for s in value]
        if clash := sorted({n for n in names if n in METRICS}):
            raise ValueError(f"scorer names {', '.join(clash)} are built-in metrics; pick other names")
        if dupes := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"scorer names must be unique; repeated: {', '.join(dupes)}")
        return value

    pair_by: Literal["auto", "case_id", "inputs", "none"] = Field(
        "auto", description="gate compare: how traces of the two versions are paired (auto: case_id when tagged)"
    )

    @model_validator(mode="after")
    def _one_dataset(self) -> GateConfig:
        if self.dataset is not None and self.cases is not None:
            raise ValueError(DATASET_CHOICE)
        return self

    @model_validator(mode="after")
    def _ref_is_for_the_baseline(self) -> GateConfig:
        if self.candidate is not None and self.candidate.ref is not None:
            raise ValueError(
                "candidate.ref: the candidate is always the working tree (the pull request's code); "
                "give 'ref' under baseline"
            )
        return self

    def default_checks(self) -> list[CheckConfig]:
        """Checks the gate adds: with ``guard_errors`` (the default) and no check of the error rate, a rise in the
        candidate's error rate fails the gate. Only a decided rise fails it; undecided, it passes and spends no
        repeats, so it never makes a run inconclusive."""
        if not self.guard_errors or any(split_metric_key(c.metric)[0] == "error" for c in self.checks):
            return []
        return [CheckConfig(metric="error/rate", max_increase=0.0, on_inconclusive="pass")]

    def max_repeats(self) -> int:
        """The adaptive cap on repeats per case: ``run.max_repeats``, else 20 when a check decides a percentile
        (pNN), else 10; never below ``run.repeats``. Only runs with a check still undecided spend it."""
        # A percentile is read off the slowest few calls: at 40 cases × 10 runs 20 calls lie above a p95, and no
        # calibrated interval detects a +30% p95 against a +10% bound 90% of the time there (87%); at 20 runs it
        # does 98% (docs/design/statistics.md, "The cap on runs a case"). A mean, a rate or a score detects the
        # changes measured there within 10.
        if self.run.max_repeats:
            return self.run.max_repeats
        percentile = any(is_percentile(split_metric_key(c.metric)[1]) for c in self.checks)
        return max(self.run.repeats, PERCENTILE_MAX_REPEATS if percentile else MAX_REPEATS)

    def label(self, variant: str) -> str:
        """The display label of ``baseline`` or ``candidate``."""
        cfg = self.variant(variant)
        return (cfg.label if cfg else None) or variant

    def variant(self, name: str) -> VariantConfig | None:
        """The config of ``baseline`` or ``candidate``, if given."""
        return self.baseline if name == "baseline" else self.candidate

    def target(self, name: str) -> str | None:
        """The ``module:function`` of ``baseline`` or ``candidate``, if given; a baseline taken from a git revision
        without a target of its own runs the candidate's target as of that revision."""
        cfg = self.variant(name)
        if cfg is not None and cfg.target is None and cfg.ref is not None:
            return self.target("candidate")
        return cfg.target if cfg else None

    def kind(self, name: str) -> VersionKind | None:
        """What ``gate run`` calls for ``baseline`` or ``candidate``."""
        cfg = self.variant(name)
        return cfg.kind if cfg else None

    def describe(self, name: str) -> str | None:
        """One line naming what a version is (the function, the endpoint without credentials, the prompt, the
        model), for messages and reports; never a header or a secret."""
        cfg = self.variant(name)
        if cfg is None or cfg.kind is None:
            return None
        if cfg.kind == "http" and cfg.http is not None:
            return f"{cfg.http.method} {redact_uri(cfg.http.url)}"
        if cfg.kind in ("prompt", "model"):
            model = cfg.model.name if cfg.model and cfg.model.name else None
            what = cfg.prompt if cfg.kind == "prompt" else "messages"
            return f"{what} → {model}" if model else str(what)
        return self.target(name)

    def identity(self, name: str) -> Any:
        """What makes two runs of a version the same version (for fingerprints): the target, or the whole
        definition of an endpoint, prompt or model version (its ``${NAME}`` placeholders, never their values)."""
        cfg = self.variant(name)
        if cfg is None or cfg.kind in (None, "target"):
            return [self.target(name), cfg.prompts] if cfg is not None and cfg.prompts else self.target(name)
        return cfg.model_dump(mode="json", include={"http", "prompt", "model"}, exclude_none=True)

    def with_baseline_ref(self, ref: str) -> GateConfig:
        """This config with the baseline taken from git revision ``ref`` (``--baseline-ref``, which wins)."""
        if self.baseline is not None and self.baseline.kind not in (None, "target"):
            raise ConfigError(
                f"usage: --baseline-ref {ref}: the config's baseline is a {self.baseline.kind} version, not code "
                "from git; remove the flag, or make the baseline a Python target"
            )
        seat = self.baseline or VariantConfig(ref=ref)
        return self.model_copy(update={"baseline": seat.model_copy(update={"ref": ref})})


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """The valid keys of the object that holds the last element of ``loc``."""
    model: Any = GateConfig
    skip_next = False
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if skip_next:  # the key of a dict (a model name under `pricing`), not a field
            skip_next = False
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        skip_next = getattr(annotation, "__origin__", None) is dict
        args = getattr(annotation, "__args__", ())
        candidates = [annotation, *args, *(a for arg in args for a in getattr(arg, "__args__", ()))]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields) if model is not None else []


def describe_error(error: Any, fields: list[str] | None = None) -> str:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        valid = fields if fields is not None else _fields_at(loc)
        return f"unknown key; valid keys here: {', '.join(valid)}" if valid else "unknown key"
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    return one_line(message.removeprefix("Value error, "))


def load_config(path: str | Path) -> GateConfig:
    """Read and validate a config file; raise ``ConfigError`` with one line per problem."""
    path = Path(path)
    text = read_file(path, "file not found; pass the config with -c/--config")
    raw = read_yaml(path, text)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (version, baseline, candidate, checks, ...)")
    if type(raw.get("version")) is not int or raw.get("version") != 1:
        got = one_line(repr(raw.get("version")), 80)
        raise ConfigError(f"{path}: version: expected 1 (this gate reads config version 1), got {got}")
    listed = raw.get("scorers")
    scorers = (
        [s["name"] for s in listed if isinstance(s, dict) and isinstance(s.get("name"), str)]
        if isinstance(listed, list)
        else []
    )
    try:
        return GateConfig.model_validate(raw, context={"scorers": scorers})
    except ValidationError as exc:
        problems = [f"{path}: {format_loc(tuple(e['loc']))}: {describe_error(e)}" for e in exc.errors()]
        raise ConfigError(problems) from None
    except (RecursionError, OverflowError) as exc:
        # A scorer's own check gave up: re.compile on 'a{99999999999}' or on 2,000 nested groups, jsonschema on a
        # deeply nested schema. Find which scorer, to name it.
        where = _failing_scorer(listed) or "(top level)"
        reason = "too deeply nested" if isinstance(exc, RecursionError) else one_line(str(exc), 200)
        raise ConfigError(f"{path}: {where}: cannot be checked: {reason}") from None


def _failing_scorer(listed: Any) -> str | None:
    if not isinstance(listed, list):
        return None
    adapter: TypeAdapter[Any] = TypeAdapter(ScorerConfig)
    for index, scorer in enumerate(listed):
        try:
            adapter.validate_python(scorer)
        except ValidationError:
            continue
        except (RecursionError, OverflowError):
            return f"scorers[{index}]"
    return None


def known_metrics_help() -> str:
    """A one-line list of metric names and aggregations, for messages and docs."""
    return f"metrics: {', '.join(METRICS)}; aggregations: {', '.join(AGGREGATIONS)}, pNN"


def require_run_parts(config: GateConfig, path: Path, variants: tuple[str, ...] = ("baseline", "candidate")) -> None:
    """``gate run`` calls the app: it needs inputs and a target for each version it runs."""
    problems = []
    if config.dataset is None and config.cases is None:
        problems.append(f"{path}: (top level): {DATASET_CHOICE}")
    for variant in variants:
        kind = config.kind(variant)
        if kind is None or (kind == "target" and config.target(variant) is None):
            problems.append(
                f"{path}: {variant}.target: required key is missing (gate run calls it: give 'target', 'http', "
                "'prompt' or 'model'; 'traces' selects stored traces for gate compare)"
            )
        seat = config.variant(variant)
        if variant == "baseline" and seat is not None and seat.ref is not None and config.kind("candidate") != "target":
            problems.append(
                f"{path}: baseline.ref: a git revision runs the candidate's Python target as of that revision; the "
                f"candidate is a {config.kind('candidate')} version: give the baseline its own kind instead"
            )
    if problems:
        raise ConfigError(problems)
