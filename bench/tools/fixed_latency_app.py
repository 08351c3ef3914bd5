"""The app of bench/fidelity.py: one ``@mlflow.trace`` function around one OpenAI chat call.

Both versions of the gate run this same function (an A/A run), so any latency the gate reports beyond the fake
server's fixed answer time is the gate's own distortion. The OpenAI client reads OPENAI_BASE_URL / OPENAI_API_KEY,
which the benchmark points at its fake server. ``REQUEST`` is also what the bare client sends, untraced.
"""

from __future__ import annotations

import mlflow
import openai

client = openai.OpenAI(max_retries=0)

SYSTEM = "Answer briefly."
REQUEST = {"model": "gpt-4o-mini", "temperature": 0.3, "max_tokens": 60}


@mlflow.trace(span_type="AGENT")
def answer(question: str) -> str:
    response = client.chat.completions.create(
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}], **REQUEST
    )
    return response.choices[0].message.content or ""
