"""Deterministic scorers configured in YAML: exact_match, contains, not_contains, regex, is_json, json_schema,
length_between, latency_under. Each returns 1.0 or 0.0, or no value with the reason when it cannot apply."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gate.scorers import _models as m
from gate.scorers._interface import Score, ScoreInput, register

__all__: list[str] = []


@dataclass(frozen=True)
class _Rule:
    name: str
    check: Callable[[ScoreInput], bool | str]  # a bool, or a string saying why it cannot score
    source_type: Literal["CODE", "LLM_JUDGE"] = "CODE"

    def __call__(self, data: ScoreInput) -> Score:
        outcome = self.check(data)
        if isinstance(outcome, str):
            return Score(None, error=outcome)
        return Score(1.0 if outcome else 0.0, raw=outcome)


def _text(outputs: Any) -> str:
    if outputs is None:
        return ""
    return outputs if isinstance(outputs, str) else json.dumps(outputs, default=str, ensure_ascii=False)


def _strings(configured: list[str] | None, data: ScoreInput, key: str) -> list[str] | str:
    if configured is not None:
        return configured
    wanted = (data.expectations or {}).get(key)
    if wanted is None:
        return f"no strings: set `strings` on the scorer or `expectations.{key}` on the case"
    return [wanted] if isinstance(wanted, str) else [str(w) for w in wanted]


@register("exact_match")
def _exact_match(cfg: m.ExactMatch) -> _Rule:
    def check(data: ScoreInput) -> bool | str:
        if not data.expectations or "expected" not in data.expectations:
            return "the case has no `expectations.expected`"
        expected = data.expectations["expected"]
        if not isinstance(data.outputs, str) and not isinstance(expected, str):
            return bool(data.outputs == expected)  # structured values compare as values, whatever the key order
        got, want = _text(data.outputs), _text(expected)
        if cfg.strip:
            got, want = got.strip(), want.strip()
        return got == want if cfg.case_sensitive else got.casefold() == want.casefold()

    return _Rule(cfg.name, check)


@register("contains")
def _contains(cfg: m.Contains) -> _Rule:
    def check(data: ScoreInput) -> bool | str:
        wanted = _strings(cfg.strings, data, "contains")
        if isinstance(wanted, str):
            return wanted
        text = _text(data.outputs)
        if not cfg.case_sensitive:
            text, wanted = text.casefold(), [w.casefold() for w in wanted]
        found = [w in text for w in wanted]
        return all(found) if cfg.mode == "all" else any(found)

    return _Rule(cfg.name, check)


@register("not_contains")
def _not_contains(cfg: m.NotContains) -> _Rule:
    def check(data: ScoreInput) -> bool | str:
        banned = _strings(cfg.strings, data, "not_contains")
        if isinstance(banned, str):
            return banned
        text = _text(data.outputs)
        if not cfg.case_sensitive:
            text, banned = text.casefold(), [w.casefold() for w in banned]
        return not any(w in text for w in banned)

    return _Rule(cfg.name, check)


@register("regex")
def _regex(cfg: m.Regex) -> _Rule:
    pattern = re.compile(cfg.pattern, re.IGNORECASE if cfg.ignore_case else 0)
    return _Rule(cfg.name, lambda data: pattern.search(_text(data.outputs)) is not None)


def _parse_json(outputs: Any) -> tuple[bool, Any]:
    if not isinstance(outputs, str):
        return outputs is not None, outputs  # a dict or list returned by the app is JSON already
    try:
        return True, json.loads(outputs)
    except ValueError:
        return False, None


@register("is_json")
def _is_json(cfg: m.IsJson) -> _Rule:
    return _Rule(cfg.name, lambda data: _parse_json(data.outputs)[0])


@register("json_schema")
def _json_schema(cfg: m.JsonSchema) -> _Rule:
    import jsonschema

    validator = jsonschema.Draft202012Validator(cfg.json_schema)

    def check(data: ScoreInput) -> bool | str:
        ok, document = _parse_json(data.outputs)
        return ok and validator.is_valid(document)

    return _Rule(cfg.name, check)


@register("length_between")
def _length_between(cfg: m.LengthBetween) -> _Rule:
    def check(data: ScoreInput) -> bool | str:
        text = _text(data.outputs)
        size = len(text.split()) if cfg.unit == "words" else len(text)
        return (cfg.min is None or size >= cfg.min) and (cfg.max is None or size <= cfg.max)

    return _Rule(cfg.name, check)


@register("latency_under")
def _latency_under(cfg: m.LatencyUnder) -> _Rule:
    def check(data: ScoreInput) -> bool | str:
        duration = getattr(getattr(data.trace, "info", None), "execution_duration", None)
        return "the trace has no duration" if duration is None else float(duration) <= cfg.ms

    return _Rule(cfg.name, check)
