"""The floor: the same requests as traced_app.py through the bare OpenAI SDK, no MLflow.

Usage: raw_openai.py CASES_JSON — every question × 2 versions, 8 calls in flight.
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import openai

client = openai.OpenAI(max_retries=0)


def ask(system: str, question: str) -> str:
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        temperature=0.3,
        max_tokens=60,
    )
    return response.choices[0].message.content or ""


def main() -> int:
    questions = json.loads(open(sys.argv[1], encoding="utf-8").read())
    systems = ("Answer briefly.", "Answer briefly and politely.")  # v1, v2
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda job: ask(*job), [(s, q) for q in questions for s in systems]))
    print(f"{len(answers)} calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
