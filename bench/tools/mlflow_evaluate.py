"""MLflow's own harness: ``mlflow.genai.evaluate`` on traced_app.py, once per version, one trivial scorer.

Usage: mlflow_evaluate.py CASES_JSON. The store is MLFLOW_TRACKING_URI; the harness sets
MLFLOW_GENAI_EVAL_MAX_WORKERS=8 (predict calls in flight) and skips the extra validation call.
"""

from __future__ import annotations

import json
import sys

import mlflow
import mlflow.openai
import traced_app
from mlflow.genai.scorers import scorer


@scorer
def answered(outputs: str) -> bool:
    return bool(outputs)


def main() -> int:
    questions = json.loads(open(sys.argv[1], encoding="utf-8").read())
    mlflow.set_experiment("bench-evaluate")
    mlflow.openai.autolog()
    data = [{"inputs": {"question": q}} for q in questions]
    for predict_fn in (traced_app.answer_v1, traced_app.answer_v2):
        result = mlflow.genai.evaluate(data=data, predict_fn=predict_fn, scorers=[answered])
        print(predict_fn.__name__, result.metrics, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
