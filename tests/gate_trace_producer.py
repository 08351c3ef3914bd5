"""Traces made outside the gate, as a deployed app makes them: run as a script by tests/test_compare.py.

    python gate_trace_producer.py OUT.json [--old N] [--questions a,b] [--model-ids] [--errors N] [--label I=TEXT]

Two versions of a support app, told apart by their trace names (customer_support_v1 / _v2) and, with
--model-ids, by LoggedModels (mlflow.set_active_model). Writes what it did to OUT.json.
"""

from __future__ import annotations

import argparse
import json
import time

import mlflow
import openai

QUESTIONS = [
    "How can I track my package?",
    "What's your return policy?",
    "How long does a refund take?",
    "I need help with my account login",
    "Can I cancel my subscription?",
    "Do you ship internationally?",
]
_client = openai.OpenAI(max_retries=0)


def _ask(question: str, system: str) -> str:
    response = _client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
        max_tokens=80,
    )
    return response.choices[0].message.content or ""


@mlflow.trace(name="customer_support_v1", span_type="AGENT")
def support_v1(question: str) -> str:
    return _ask(question, "Answer briefly.")


@mlflow.trace(name="customer_support_v2", span_type="AGENT")
def support_v2(question: str) -> str:
    return _ask(question, "Answer warmly and in detail; thank the customer.")


@mlflow.trace(name="customer_support_v1", span_type="AGENT")
def support_v1_broken(question: str) -> str:
    raise RuntimeError("the knowledge base is down")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--experiment", default="support-prod")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--old", type=int, default=0, help="first make this many v1 traces, then note the time")
    parser.add_argument("--v1-questions", default="", help="comma-separated indexes into QUESTIONS (default all)")
    parser.add_argument("--v2-questions", default="")
    parser.add_argument("--model-ids", action="store_true")
    parser.add_argument("--errors", type=int, default=0, help="then this many v1 traces that raise")
    parser.add_argument(
        "--label", default="", help="index=answer: a reviewer's expected_response on the newest v1 trace of it"
    )
    args = parser.parse_args()
    mlflow.set_experiment(args.experiment)
    mlflow.openai.autolog()

    def pick(spec: str) -> list[str]:
        return [QUESTIONS[int(i)] for i in spec.split(",")] if spec else QUESTIONS

    done: dict[str, object] = {}
    for i in range(args.old):
        support_v1(QUESTIONS[i % len(QUESTIONS)])
    mlflow.flush_trace_async_logging()
    time.sleep(0.05)
    done["midpoint_ms"] = int(time.time() * 1000)
    time.sleep(0.05)
    for version, app, questions in (
        ("v1", support_v1, pick(args.v1_questions)),
        ("v2", support_v2, pick(args.v2_questions)),
    ):
        if args.model_ids:
            done[f"model_{version}"] = mlflow.set_active_model(name=f"support-{version}").model_id
        for _ in range(args.repeats):
            for question in questions:
                app(question)
    for i in range(args.errors):
        try:
            support_v1_broken(QUESTIONS[i % len(QUESTIONS)] + f" (broken {i})")
        except RuntimeError:
            pass
    mlflow.flush_trace_async_logging()
    if args.label:
        index, answer = args.label.split("=", 1)
        question = QUESTIONS[int(index)]
        found = mlflow.search_traces(
            filter_string="trace.name = 'customer_support_v1'", order_by=["timestamp_ms DESC"], return_type="list"
        )
        trace = next(t for t in found if json.loads(t.data.request or "{}").get("question") == question)
        mlflow.log_expectation(trace_id=trace.info.trace_id, name="expected_response", value=answer)
        done["labelled"] = trace.info.trace_id
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(done, handle)


if __name__ == "__main__":
    main()
