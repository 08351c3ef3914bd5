"""The ``scorers:`` section of thresholds.yaml: one strict model per scorer type, told apart by ``type``."""

from __future__ import annotations

import re
import warnings
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

__all__ = ["SCORER_TYPES", "ScorerConfig"]

_NAME = r"^[a-z][a-z0-9_]*$"


class _Scorer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=_NAME, description="the metric name in checks: <name>/<aggregation>")


class ExactMatch(_Scorer):
    """1 when the output equals ``expectations.expected``."""

    type: Literal["exact_match"]
    case_sensitive: bool = True
    strip: bool = True


class Contains(_Scorer):
    """1 when the output contains the strings (``strings``, else ``expectations.contains``)."""

    type: Literal["contains"]
    strings: list[str] | None = None
    mode: Literal["any", "all"] = "any"
    case_sensitive: bool = False


class NotContains(_Scorer):
    """1 when the output contains none of the strings (``strings``, else ``expectations.not_contains``)."""

    type: Literal["not_contains"]
    strings: list[str] | None = None
    case_sensitive: bool = False


class Regex(_Scorer):
    """1 when the pattern is found in the output."""

    type: Literal["regex"]
    pattern: str
    ignore_case: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        # Python warns (FutureWarning) on a set it will read differently in a future version, e.g. "[a--z]" or "[[":
        # the pattern would mean something else after an upgrade, so it is refused here with the fix.
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
            except FutureWarning as exc:
                raise ValueError(
                    f"ambiguous regular expression: {exc} (Python will read it differently in a future version); "
                    "escape the repeated '-', '&', '~', '|' or the '[' inside [...] with a backslash"
                ) from None
        return value


class IsJson(_Scorer):
    """1 when the output is (or parses as) JSON."""

    type: Literal["is_json"]


class JsonSchema(_Scorer):
    """1 when the output parses as JSON and validates against ``schema``."""

    type: Literal["json_schema"]
    json_schema: dict[str, Any] = Field(alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        import jsonschema

        try:
            jsonschema.Draft202012Validator.check_schema(value)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        return value

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LengthBetween(_Scorer):
    """1 when the output's length (chars or words) is within [min, max]."""

    type: Literal["length_between"]
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)
    unit: Literal["chars", "words"] = "chars"

    @model_validator(mode="after")
    def _a_range(self) -> LengthBetween:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class LatencyUnder(_Scorer):
    """1 when the trace took at most ``ms`` milliseconds."""

    type: Literal["latency_under"]
    ms: float = Field(gt=0)


class Judge(_Scorer):
    """An LLM judge over any OpenAI-compatible endpoint, with a rubric written in the config."""

    type: Literal["judge"]
    rubric: str = Field(min_length=1)
    model: str = "gpt-4o-mini"
    base_url: str | None = Field(None, description="default: OPENAI_BASE_URL, else OpenAI")
    api_key_env: str = Field("OPENAI_API_KEY", description="the environment variable holding the key")
    result: Literal["yes_no", "score"] = "yes_no"
    scale_max: int = Field(5, ge=2, le=100, description="for result: score, the top of the 1..scale_max scale")
    max_retries: int = Field(3, ge=0, le=10)
    timeout_s: float = Field(60, gt=0)


class MlflowJudge(_Scorer):
    """One of MLflow's built-in judges (Correctness, RelevanceToQuery, Guidelines, Safety, ...) by class name."""

    type: Literal["mlflow"]
    judge: str = Field(pattern=r"^[A-Z][A-Za-z]+$")
    args: dict[str, Any] = {}


class Custom(_Scorer):
    """The user's own scorer: an MLflow ``@scorer``, or a callable taking inputs, outputs, expectations, trace."""

    type: Literal["custom"] = "custom"
    target: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _discriminate(value: Any) -> str | None:
    if isinstance(value, dict):
        return str(value.get("type") or ("custom" if "target" in value else ""))
    return getattr(value, "type", None)


ScorerConfig = Annotated[
    Annotated[ExactMatch, Tag("exact_match")]
    | Annotated[Contains, Tag("contains")]
    | Annotated[NotContains, Tag("not_contains")]
    | Annotated[Regex, Tag("regex")]
    | Annotated[IsJson, Tag("is_json")]
    | Annotated[JsonSchema, Tag("json_schema")]
    | Annotated[LengthBetween, Tag("length_between")]
    | Annotated[LatencyUnder, Tag("latency_under")]
    | Annotated[Judge, Tag("judge")]
    | Annotated[MlflowJudge, Tag("mlflow")]
    | Annotated[Custom, Tag("custom")],
    Discriminator(
        _discriminate,
        custom_error_type="unknown_scorer_type",
        custom_error_message="unknown scorer type; known: exact_match, contains, not_contains, regex, is_json, "
        "json_schema, length_between, latency_under, judge, mlflow, or `target: module:function` for your own",
    ),
]

SCORER_TYPES = (
    "exact_match",
    "contains",
    "not_contains",
    "regex",
    "is_json",
    "json_schema",
    "length_between",
    "latency_under",
    "judge",
    "mlflow",
    "custom",
)
