"""Scorers that call something: the gate's own LLM ``judge``, MLflow's built-in judges, and the user's scorers."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gate._errors import ConfigError
from gate.scorers import _models as m
from gate.scorers._interface import Score, ScoreInput, register, to_score

__all__ = ["SEARCH_PATH", "build_custom"]

SEARCH_PATH: list[Path] = []  # where user scorers are imported from; set by the gate before building

_JUDGE_SYSTEM = (
    "You are an impartial evaluator of a customer-facing assistant. Judge only the answer, against the criteria. "
    'Reply with a JSON object with the keys "rationale" (one or two sentences) and "result".'
)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


@dataclass
class _Judge:
    cfg: m.Judge
    name: str
    source_type: Literal["CODE", "LLM_JUDGE"] = "LLM_JUDGE"
    _client: Any = None

    def _openai(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self.cfg.base_url or os.environ.get("OPENAI_BASE_URL") or None,
                api_key=os.environ.get(self.cfg.api_key_env) or "missing-key",
                max_retries=self.cfg.max_retries,
                timeout=self.cfg.timeout_s,
            )
        return self._client

    def __call__(self, data: ScoreInput) -> Score:
        if self.cfg.result == "yes_no":
            answer_format = '"result" is "yes" if the answer meets the criteria, else "no".'
        else:
            answer_format = f'"result" is an integer from 1 (worst) to {self.cfg.scale_max} (best).'
        prompt = (
            f"Criteria: {self.cfg.rubric}\n\nQuestion: {_text(data.inputs)}\n\nAnswer: {_text(data.outputs)}\n\n"
            + (f"Expectations: {_text(data.expectations)}\n\n" if data.expectations else "")
            + answer_format
        )
        response = self._openai().chat.completions.create(
            model=self.cfg.model,
            messages=[{"role": "system", "content": _JUDGE_SYSTEM}, {"role": "user", "content": prompt}],
            temperature=0,
            response_format={"type": "json_object"},
        )
        usage = response.usage
        tokens = {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens} if usage else {}
        try:
            verdict = json.loads(response.choices[0].message.content or "")
            result, rationale = verdict["result"], str(verdict.get("rationale", ""))
        except (ValueError, KeyError, TypeError):
            content = (response.choices[0].message.content or "")[:200]
            return Score(
                None, error=f"the judge did not answer with JSON {{rationale, result}}: {content!r}", usage=tokens
            )
        score = to_score(result, "LLM_JUDGE")
        if score.value is not None and self.cfg.result == "score" and not 1 <= score.value <= self.cfg.scale_max:
            return Score(
                None, rationale, f"score {score.value:g} outside 1..{self.cfg.scale_max}", result, "LLM_JUDGE", tokens
            )
        return Score(score.value, rationale, score.error, result, "LLM_JUDGE", tokens)


@register("judge")
def _build_judge(cfg: m.Judge) -> _Judge:
    return _Judge(cfg, cfg.name)


@dataclass(frozen=True)
class _Called:
    """A scorer object or function called the way MLflow calls scorers."""

    name: str
    call: Callable[[ScoreInput], Any]
    source_type: Literal["CODE", "LLM_JUDGE"]

    def __call__(self, data: ScoreInput) -> Score:
        return to_score(self.call(data), self.source_type)


def _mlflow_call(scorer: Any) -> Callable[[ScoreInput], Any]:
    def call(data: ScoreInput) -> Any:
        return scorer.run(
            inputs=dict(data.inputs), outputs=data.outputs, expectations=dict(data.expectations or {}), trace=data.trace
        )

    return call


@register("mlflow")
def _build_mlflow_judge(cfg: m.MlflowJudge) -> _Called:
    from mlflow.genai import scorers

    def is_judge(candidate: Any) -> bool:
        return isinstance(candidate, type) and issubclass(candidate, scorers.Scorer) and candidate is not scorers.Scorer

    cls = getattr(scorers, cfg.judge, None)
    if not is_judge(cls):
        known = ", ".join(n for n in getattr(scorers, "__all__", []) if is_judge(getattr(scorers, n, None)))
        raise ConfigError(f"scorers '{cfg.name}': MLflow has no judge '{cfg.judge}'; known: {known}")
    args = {"model": "openai:/gpt-4o-mini", **cfg.args}
    assert cls is not None  # is_judge() said so
    try:
        judge = cls(name=cfg.name, **args)
    except Exception as exc:  # noqa: BLE001 - MLflow's validation error, reported as a config problem
        raise ConfigError(f"scorers '{cfg.name}': {cfg.judge}({', '.join(args)}) is invalid: {exc}") from None
    return _Called(cfg.name, _mlflow_call(judge), "LLM_JUDGE")


def build_custom(cfg: m.Custom) -> _Called:
    """Import the user's scorer and call it as MLflow would."""
    from gate._targets import import_target

    target = import_target(cfg.target, f"scorers '{cfg.name}'.target", SEARCH_PATH)
    if hasattr(target, "run") and callable(target.run):  # an MLflow @scorer / Scorer instance
        return _Called(cfg.name, _mlflow_call(target), "CODE")
    allowed = {"inputs", "outputs", "expectations", "trace"}
    try:
        parameters = inspect.signature(target).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        accepted = allowed if takes_any else set(parameters)
    except (TypeError, ValueError):
        accepted = allowed
    if not accepted & allowed:
        raise ConfigError(f"scorers '{cfg.name}': {cfg.target} takes none of inputs, outputs, expectations, trace")

    def call(data: ScoreInput) -> Any:
        given = {
            "inputs": dict(data.inputs),
            "outputs": data.outputs,
            "expectations": dict(data.expectations or {}),
            "trace": data.trace,
        }
        return target(**{k: v for k, v in given.items() if k in accepted})

    return _Called(cfg.name, call, "CODE")


register("custom")(build_custom)
