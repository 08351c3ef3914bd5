"""Load and validate ``thresholds.yaml`` into a frozen ``GateConfig``; every problem names file and path."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gate._errors import ConfigError
from gate._metrics import AGGREGATIONS, METRICS, metric_info, parse_metric_key, split_metric_key
from gate.scorers._models import ScorerConfig

__all__ = [
    "DEFAULT_TRACKING_URI",
    "CheckConfig",
    "GateConfig",
    "RunConfig",
    "TraceSelector",
    "VariantConfig",
    "load_config",
    "parse_instant",
    "require_run_parts",
]

DEFAULT_TRACKING_URI = "sqlite:///.gate/mlflow.db"
DATASET_CHOICE = "give exactly one of 'dataset' (a YAML or JSONL file) or 'cases' (a list inline)"
BOUNDS = ("at_most", "at_least", "max_increase", "max_decrease", "max_increase_pct", "max_decrease_pct")
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


class _Strict(BaseModel):
    # NaN compares false with everything: a NaN bound would be a check that can never fail.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


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


class VariantConfig(_Strict):
    """One version of the app: the function to call (``gate run``) or its stored traces (``gate compare``)."""

    target: str | None = None
    label: str | None = None
    traces: TraceSelector | None = None

    @field_validator("target")
    @classmethod
    def _module_colon_function(cls, value: str | None) -> str | None:
        if value is not None and not _TARGET.fullmatch(value):
            raise ValueError(f"'{value}' is not 'module:function' (e.g. examples.support_agents:basic_agent)")
        return value

    @model_validator(mode="after")
    def _runs_or_selects(self) -> VariantConfig:
        if self.target is None and self.traces is None:
            raise ValueError(
                "give 'target' (module:function, for gate run) or 'traces' (a selector of stored traces, "
                "for gate compare)"
            )
        return self


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
    dataset: str | None = None
    cases: list[CaseConfig] | None = None
    baseline: VariantConfig | None = None  # gate compare with --baseline/--candidate flags needs neither
    candidate: VariantConfig | None = None
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

    pair_by: Literal["auto", "case_id", "inputs", "none"] = Field(
        "auto", description="gate compare: how traces of the two versions are paired (auto: case_id when tagged)"
    )

    @model_validator(mode="after")
    def _one_dataset(self) -> GateConfig:
        if self.dataset is not None and self.cases is not None:
            raise ValueError(DATASET_CHOICE)
        return self

    def max_repeats(self) -> int:
        """The adaptive cap on repeats per case."""
        # 10: at 50 cases it is what detects a +30% p95 against a 10% bound 94.5% of the time (bench/README.md);
        # a cap of 5 detected it only 75% of the time. Only undecided checks spend it.
        return self.run.max_repeats or max(self.run.repeats, 10)

    def label(self, variant: str) -> str:
        """The display label of ``baseline`` or ``candidate``."""
        cfg = self.variant(variant)
        return (cfg.label if cfg else None) or variant

    def variant(self, name: str) -> VariantConfig | None:
        """The config of ``baseline`` or ``candidate``, if given."""
        return self.baseline if name == "baseline" else self.candidate

    def target(self, name: str) -> str | None:
        """The ``module:function`` of ``baseline`` or ``candidate``, if given."""
        cfg = self.variant(name)
        return cfg.target if cfg else None


# Limits on what a YAML or JSON file may hold. Deeper nesting would exhaust the stack of the recursive parser and
# of every walk over the data; aliases must not multiply the data ("billion laughs": nine nested aliases of ten
# items are 10**9 values that validation would walk). Real configs nest about 6 levels and alias a few blocks.
MAX_DEPTH = 100
MAX_ALIAS_EXPANSION = 1_000_000  # values that aliases add to the document, beyond the ones written in it


SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_PROBLEM = (
    "a \\uD800-\\uDFFF escape is half of a UTF-16 pair, not a character (YAML does not join pairs); "
    "write the character itself, or \\U and 8 hex digits (\\U0001F600)"
)


class InputLimitError(yaml.YAMLError):
    """A document over ``MAX_DEPTH`` or ``MAX_ALIAS_EXPANSION``; ``read_yaml`` reports it without "not valid YAML"."""

    def __init__(self, message: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(message)
        self.problem = message
        self.problem_mark = mark


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects a repeated key instead of silently keeping the last one.

    It also bounds nesting depth and alias expansion, and turns a scalar Python cannot represent (an integer of more
    than 4,300 digits, 2024-13-45, a time zone of +99:00) into a ``ConstructorError`` instead of a ``ValueError``.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
        elif self.check_event(yaml.ScalarEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            # Only a "\ud800" escape in double quotes makes a lone surrogate: not a character, so not UTF-8, so
            # every report and trace that would hold it fails to be written.
            if event.style == '"' and SURROGATE.search(event.value):
                raise yaml.composer.ComposerError(None, None, SURROGATE_PROBLEM, event.start_mark)
        elif self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            # The composer recurses once per level: stop before Python's recursion limit does, with a line number.
            if self._depth >= MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise InputLimitError(f"nested deeper than {MAX_DEPTH} levels; flatten the data", mark)
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)

    def construct_document(self, node: yaml.Node) -> Any:
        if self._aliases:  # without aliases the nodes form a tree, and compose_node has bounded its depth
            check_expansion(node)
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, ArithmeticError, LookupError, TypeError, AttributeError) as exc:
            # PyYAML's scalar constructors fail with plain Python errors on a value Python cannot hold, and on an
            # explicit tag the text does not fit: `!!int ''` (IndexError), `!!timestamp x` (AttributeError),
            # `!!bool maybe` (KeyError). A collection's errors surface later, from construct_document.
            if not isinstance(node, yaml.ScalarNode):
                raise
            value, tag = one_line(repr(node.value), 60), node.tag.removeprefix("tag:yaml.org,2002:")
            reason = one_line(str(exc), 120) if isinstance(exc, (ValueError, OverflowError)) else f"not a valid {tag}"
            if tag == "int" and "digits" in reason:
                reason = "an integer of more than 4,300 digits; quote it to keep it as text"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {value}: {reason}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # `!!set a`: SafeConstructor reports "expected a mapping node"
            return super().construct_mapping(node, deep=deep)
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)  # not `key in seen`: a set key is looked up as a frozenset, then cannot be added
            except TypeError:
                continue  # SafeConstructor reports "found unhashable key"
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {one_line(repr(key), 80)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def check_expansion(root: yaml.Node) -> None:
    """Raise ``InputLimitError`` if aliases make ``root`` recursive, deeper than allowed, or much bigger than written.

    One pass over the distinct nodes (an alias is the same node object again), without recursion: the size and
    depth of each node once expanded are computed from its children's.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if children_done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children)
            depth[key] = (1 + max((depth[id(child)] for child in children), default=0)) if children else 0
            if depth[key] > MAX_DEPTH:
                raise InputLimitError(f"aliases nest the data deeper than {MAX_DEPTH} levels", node.start_mark)
            continue
        if key in size:
            continue
        if key in on_path:
            raise InputLimitError("an alias refers to a value that contains it (a recursive alias)", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children)
    if (extra := size[id(root)] - len(size)) > MAX_ALIAS_EXPANSION:
        raise InputLimitError(
            f"aliases (*name) expand the document by {extra:,} values, more than the limit of "
            f"{MAX_ALIAS_EXPANSION:,} (a YAML alias bomb); write the values out or use fewer aliases"
        )


def one_line(text: str, limit: int = 1000) -> str:
    """``text`` on one printable line: control and other non-printable characters escaped, cut at ``limit``."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_utf8(path: Path, data: bytes) -> str:
    """The text of a file that must be UTF-8; anything else is a ``ConfigError`` naming the place and the fix."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: the file is UTF-16 or UTF-32 (it starts with a byte-order mark); save it as UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}: line {line}, column {column}: byte 0x{data[exc.start]:02x} is not UTF-8; "
            "the file must be UTF-8 (convert it, e.g. iconv -f latin1 -t utf-8)"
        ) from None


def read_file(path: Path, missing: str) -> str:
    """Read a UTF-8 file; ``missing`` is the message (after the path) when it does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {missing}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {one_line(str(exc))}") from None
    return decode_utf8(path, data)


def read_yaml(path: Path, text: str) -> Any:
    """Parse YAML with unique keys; a syntax error becomes one ``ConfigError`` line naming line and column."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; it has no problem_mark
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            f"{path}: line {line}: not valid YAML: character #x{exc.character:04x} is not allowed"
        ) from None
    except RecursionError:  # not expected: compose_node stops at MAX_DEPTH levels, far below the limit
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except (ValueError, TypeError, AttributeError, LookupError, ArithmeticError) as exc:
        # Not expected either (fuzzing found none left): PyYAML failing on odd input with a plain Python error.
        raise ConfigError(f"{path}: not valid YAML: {type(exc).__name__}: {one_line(str(exc), 200)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = "" if isinstance(exc, InputLimitError) else "not valid YAML: "
        problem = one_line(str(getattr(exc, "problem", None) or exc))
        raise ConfigError(f"{path}: {where}{what}{problem}") from None


def format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad key of a mapping (the key itself is the part before)
            out += " (the key)"
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return one_line(out, 300) or "(top level)"


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
        if config.target(variant) is None:
            problems.append(
                f"{path}: {variant}.target: required key is missing (gate run calls it; "
                "'traces' selects stored traces for gate compare)"
            )
    if problems:
        raise ConfigError(problems)
