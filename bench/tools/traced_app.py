"""The app under test: one ``@mlflow.trace`` function per version, each making one OpenAI chat call.

The OpenAI client reads OPENAI_BASE_URL / OPENAI_API_KEY, which the benchmarks point at the simulator.
The two versions differ only in their system prompt; raw_openai.py sends the same requests untraced.
"""

from __future__ import annotations

import mlflow
import openai

client = openai.OpenAI(max_retries=0)


def _ask(system: str, question: str) -> str:
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        temperature=0.3,
        max_tokens=60,
    )
    return response.choices[0].message.content or ""


@mlflow.trace(span_type="AGENT")
def answer_v1(question: str) -> str:
    return _ask("Answer briefly.", question)


@mlflow.trace(span_type="AGENT")
def answer_v2(question: str) -> str:
    return _ask("Answer briefly and politely.", question)
