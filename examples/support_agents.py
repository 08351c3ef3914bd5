"""Two versions of a customer-support agent, each one traced call to an OpenAI-compatible endpoint.

They run unchanged against OpenAI (set OPENAI_API_KEY) and against the gate's simulator
(``gate run --simulate`` sets OPENAI_BASE_URL and a dummy key before this module is imported).
"""

from __future__ import annotations

import os

import mlflow
import openai

MODEL = os.environ.get("SUPPORT_AGENT_MODEL", "gpt-4o-mini")

BASIC_PROMPT = "You are a customer support agent. Answer briefly and accurately."

EMPATHETIC_PROMPT = (
    "You are a warm, caring customer support agent for an online store. Customers who write to us are "
    "often frustrated or worried, so begin by acknowledging how they feel and thanking them for their "
    "patience. Then explain, step by step and in plain language, exactly what they can do to resolve "
    "their issue, including where to find the relevant page in their account, what information to have "
    "ready, and how long each step usually takes. Offer an alternative if the first option does not work, "
    "reassure them that we are here to help, and close by inviting them to reply with any further "
    "questions. Never blame the customer, never use jargon, and keep a friendly, respectful tone."
)

_client: openai.OpenAI | None = None


def _openai() -> openai.OpenAI:
    # Created on first use, so OPENAI_BASE_URL / OPENAI_API_KEY set by the gate are picked up.
    global _client
    if _client is None:
        _client = openai.OpenAI()
    return _client


def _answer(system: str, question: str, temperature: float, max_tokens: int) -> str:
    response = _openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        temperature=temperature,
        max_tokens=max_tokens,
    )
    return response.choices[0].message.content or ""


@mlflow.trace(span_type="AGENT")
def basic_agent(question: str) -> str:
    """Version 1: a short prompt, low temperature, short answers."""
    return _answer(BASIC_PROMPT, question, temperature=0.3, max_tokens=100)


@mlflow.trace(span_type="AGENT")
def empathetic_agent(question: str) -> str:
    """Version 2: a long, caring prompt, warmer temperature, longer answers."""
    return _answer(EMPATHETIC_PROMPT, question, temperature=0.7, max_tokens=150)
