"""Load and validate ``thresholds.yaml`` into a frozen ``GateConfig``; every problem names file and path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from gate._errors import ConfigError
from gate._metrics import AGGREGATIONS, METRICS, metric_info, parse_metric_key, split_metric_key
from gate.scorers._models import ScorerConfig

__all__ = ["DEFAULT_TRACKING_URI", "CheckConfig", "GateConfig", "RunConfig", "VariantConfig", "load_config"]

DEFAULT_TRACKING_URI = "sqlite:///.gate/mlflow.db"
BOUNDS = ("at_most", "at_least", "max_increase", "max_decrease", "max_increase_pct", "max_decrease_pct")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class _Strict(BaseModel):
    # NaN compares false with everything: a NaN bound would be a check that can never fail.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class VariantConfig(_Strict):
    """One version of the app: the function to call and the label shown in reports."""

    target: str
    label: str | None = None

    @field_validator("target")
    @classmethod
    def _module_colon_function(cls, value: str) -> str:
        if not _TARGET.fullmatch(value):
            raise ValueError(f"'{value}' is not 'module:function' (e.g. examples.support_agents:basic_agent)")
        return value


OnInconclusive = Literal["fail", "warn", "pass"]


class RunConfig(_Strict):
    """How the versions are run, and how much more the gate may spend when a check is undecided."""

    repeats: int = Field(1, ge=1, le=1000)
    max_repeats: int | None = Field(None, ge=1, le=1000, description="adaptive cap per case (default 10)")
    max_calls: int | None = Field(None, ge=1, description="cap on all calls of both versions")
    max_cost_usd: float | None = Field(None, gt=0, description="cap on the app's spend, both versions")
    concurrency: int = Field(4, ge=1, le=256)
    timeout_s: float = Field(120.0, gt=0)
    autolog: bool = True  # turn on mlflow.openai.autolog so OpenAI calls become CHAT_MODEL spans with usage
    retries: int = Field(2, ge=0, le=10, description="re-runs of a call that failed with a transient provider error")
    retry_backoff_s: float = Field(0.5, ge=0, description="first backoff; doubles per retry, with jitter")
    retry_max_backoff_s: float = Field(30.0, ge=0, description="cap on one wait, Retry-After included")
    max_error_rate: float | None = Field(None, ge=0, le=1, description="exit 3 when a version's error rate is above")
    warmup: bool = True  # one call per version first, kept out of the data: first calls pay for clients and imports


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
    dataset: str | None = None
    cases: list[CaseConfig] | None = None
    baseline: VariantConfig
    candidate: VariantConfig
    run: RunConfig = RunConfig()
    checks: list[CheckConfig] = Field(min_length=1)
    confidence: float = Field(0.95, ge=0.5, lt=1, description="one-sided confidence of every decision")
    on_inconclusive: OnInconclusive = "warn"
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

    @model_validator(mode="after")
    def _one_dataset(self) -> GateConfig:
        if (self.dataset is None) == (self.cases is None):
            raise ValueError("give exactly one of 'dataset' (a YAML or JSONL file) or 'cases' (a list inline)")
        return self

    def max_repeats(self) -> int:
        """The adaptive cap on repeats per case."""
        # 10: at 50 cases it is what detects a +30% p95 against a 10% bound 94.5% of the time (bench/README.md);
        # a cap of 5 detected it only 75% of the time. Only undecided checks spend it.
        return self.run.max_repeats or max(self.run.repeats, 10)

    def label(self, variant: str) -> str:
        """The display label of ``baseline`` or ``candidate``."""
        cfg = self.baseline if variant == "baseline" else self.candidate
        return cfg.label or variant


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects a repeated key instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, text: str) -> Any:
    """Parse YAML with unique keys; a syntax error becomes one ``ConfigError`` line naming line and column."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{path}: {where}not valid YAML: {getattr(exc, 'problem', None) or exc}") from None


def format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


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
    return message.removeprefix("Value error, ")


def load_config(path: str | Path) -> GateConfig:
    """Read and validate a config file; raise ``ConfigError`` with one line per problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; pass the config with -c/--config") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    raw = read_yaml(path, text)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (version, baseline, candidate, checks, ...)")
    if type(raw.get("version")) is not int or raw.get("version") != 1:
        raise ConfigError(f"{path}: version: expected 1 (this gate reads config version 1), got {raw.get('version')!r}")
    try:
        listed = raw.get("scorers")
        scorers = [s.get("name") for s in listed if isinstance(s, dict)] if isinstance(listed, list) else []
        return GateConfig.model_validate(raw, context={"scorers": scorers})
    except ValidationError as exc:
        problems = [f"{path}: {format_loc(tuple(e['loc']))}: {describe_error(e)}" for e in exc.errors()]
        raise ConfigError(problems) from None


def known_metrics_help() -> str:
    """A one-line list of metric names and aggregations, for messages and docs."""
    return f"metrics: {', '.join(METRICS)}; aggregations: {', '.join(AGGREGATIONS)}, pNN"
