"""Targets for the end-to-end tests: real @mlflow.trace functions calling the real openai SDK.

Each test copies this file next to its config, as a user's app would sit next to thresholds.yaml.
"""

from __future__ import annotations

import time

import mlflow
import openai
from mlflow.entities import Feedback
from mlflow.genai.scorers import scorer

_client: openai.OpenAI | None = None


def _ask(question: str, system: str = "Answer briefly.", max_tokens: int = 60, model: str = "gpt-4o-mini") -> str:
    global _client
    if _client is None:
        _client = openai.OpenAI(max_retries=0)
    response = _client.chat.completions.create(
        model=model,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        temperature=0.3,
        max_tokens=max_tokens,
    )
    return response.choices[0].message.content or ""


@mlflow.trace(span_type="AGENT")
def agent(question: str) -> str:
    return _ask(question)


@mlflow.trace(span_type="AGENT")
def in_house_agent(question: str) -> str:
    return _ask(question, model="in-house-llm-7b")  # a model no price list knows


@mlflow.trace(span_type="AGENT")
def slow_agent(question: str) -> str:
    time.sleep(0.25)  # a slower version: e.g. an extra retrieval step
    return _ask(question)


@mlflow.trace(span_type="AGENT")
def slow_on_refunds(question: str) -> str:
    if "refund" in question:
        time.sleep(0.4)  # a regression confined to one case: e.g. a slow tool only refund questions call
    return _ask(question)


@mlflow.trace(span_type="AGENT")
def flaky_agent(question: str) -> str:
    if "refund" in question:
        raise RuntimeError("tool 'refunds' is unavailable")
    return _ask(question)


@mlflow.trace(span_type="AGENT")
def chatty_agent(question: str) -> str:
    print("debug: the app printed this to stdout")  # must not corrupt the verdict on stdout
    return _ask(question)


def untraced_sometimes(question: str) -> str:
    # Records no trace for one case, as when an exporter drops a trace: the gate must notice.
    if "refund" in question:
        with mlflow.tracing.context(enabled=False):
            return _traced(question)
    return _traced(question)


@mlflow.trace(span_type="AGENT")
def _traced(question: str) -> str:
    return _ask(question)


@scorer
def polite(outputs: str) -> Feedback:
    """A user's MLflow scorer: the answer thanks the customer or says please."""
    found = any(word in (outputs or "").lower() for word in ("thank", "please", "sorry"))
    return Feedback(value=found, rationale="polite words found" if found else "no polite words")


def answer_words(outputs: str, expectations: dict) -> int:
    """A plain function taking some of MLflow's scorer arguments: the answer's length in words."""
    return len((outputs or "").split())


def broken_scorer(outputs: str) -> bool:
    raise ValueError("this scorer has a bug")


@mlflow.trace(span_type="AGENT")
def broken_agent(question: str) -> str:
    raise RuntimeError("the vector store is unreachable")


@mlflow.trace(span_type="AGENT")
def half_broken_agent(question: str) -> str:
    if len(question) % 2:  # fails fast on half the questions: quicker than any answer
        raise RuntimeError("tool 'orders' is unavailable")
    return _ask(question)
