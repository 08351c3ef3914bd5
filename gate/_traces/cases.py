"""Cases kept in MLflow: an evaluation dataset's records, or the inputs of stored traces (production replay).

Both come back as rows ``{id?, inputs, expectations?, tags?, golden?}`` for ``gate._config.dataset.cases_from_rows``,
with a report of where they came from for the verdict (``dataset``). docs/datasets.md.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from gate._config.dataset import case_id_for
from gate._config.schema import DatasetConfig
from gate._errors import ConfigError, RunError
from gate._secrets import redact_uri
from gate._traces.select import iter_pages, selection_for

__all__ = ["SourceRows", "read_mlflow_dataset", "read_trace_inputs"]

GOLDEN_TAG = "golden"  # a record tag that marks a golden case (any value but "false")


@dataclass
class SourceRows:
    """Rows of cases read from MLflow, and what the verdict says about where they came from."""

    rows: list[dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)


def _client(tracking_uri: str) -> Any:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)  # the datasets API reads the global tracking URI
    return mlflow.MlflowClient(tracking_uri)


def _experiment_id(client: Any, name: str, where: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise ConfigError(f"{where}: no experiment named '{name}' in the tracking store")
    return str(experiment.experiment_id)


def read_mlflow_dataset(source: DatasetConfig, tracking_uri: str, where: str) -> SourceRows:
    """An MLflow evaluation dataset by id (``d-…``) or name (unique in ``experiment`` if given, else in the store)."""
    from mlflow.exceptions import MlflowException
    from mlflow.genai import datasets

    client = _client(tracking_uri)
    wanted = str(source.mlflow)
    try:
        if wanted.startswith("d-"):
            dataset_id = wanted
        else:
            experiments = [_experiment_id(client, source.experiment, where)] if source.experiment else None
            found = datasets.search_datasets(
                experiment_ids=experiments, filter_string=f"name = '{wanted}'", max_results=50
            )
            if not found:
                scope = f" in experiment '{source.experiment}'" if source.experiment else ""
                raise ConfigError(f"{where}: no MLflow evaluation dataset named '{wanted}'{scope}")
            if len(found) > 1:
                ids = ", ".join(d.dataset_id for d in found)
                raise ConfigError(
                    f"{where}: {len(found)} MLflow evaluation datasets are named '{wanted}' ({ids}); give one id "
                    "(mlflow: d-…), or narrow with experiment:"
                )
            dataset_id = found[0].dataset_id
        dataset = datasets.get_dataset(dataset_id=dataset_id, version=source.version)
        frame = dataset.to_df()
    except MlflowException as exc:
        message = exc.message.splitlines()[0] if exc.message else type(exc).__name__
        if "not found" in message.lower() or "does not exist" in message.lower():
            raise ConfigError(f"{where}: MLflow evaluation dataset '{wanted}': {message}") from None
        raise RunError(f"{where}: cannot read MLflow evaluation dataset '{wanted}': {message}") from None
    rows = []
    for record in frame.to_dict("records"):
        tags = {k: v for k, v in (record.get("tags") or {}).items() if not str(k).startswith("mlflow.")}
        rows.append(
            {
                "id": record.get("dataset_record_id"),
                "inputs": record.get("inputs") or {},
                "expectations": record.get("expectations") or None,
                "tags": [k if v in ("", None, True, "true") else f"{k}={v}" for k, v in sorted(tags.items())],
                "golden": GOLDEN_TAG in tags and str(tags[GOLDEN_TAG]).lower() != "false",
            }
        )
    report = {
        "kind": "mlflow",
        "name": dataset.name,
        "id": dataset.dataset_id,
        "digest": dataset.digest,
        "version": source.version,
        "records": len(rows),
    }
    return SourceRows(rows, report)


def read_trace_inputs(source: DatasetConfig, tracking_uri: str, experiment: str, where: str) -> SourceRows:
    """The distinct root-span inputs of the selected traces, a reproducible sample of them, with the expectations
    reviewers left on those traces. Errored traces and traces whose inputs are not a mapping are skipped, counted."""
    assert source.traces is not None
    client = _client(tracking_uri)
    selector = source.traces
    experiment_id = _experiment_id(client, selector.experiment or experiment, where)
    selection = selection_for(selector, "dataset", experiment_id, time.time())
    read = errored = no_inputs = 0
    found: dict[str, dict[str, Any]] = {}  # by inputs id: the newest trace with those inputs
    for traces, _token in iter_pages(client, selection, redact_uri(tracking_uri)):
        for trace in traces:
            read += 1
            if str(getattr(trace.info.state, "value", trace.info.state)) == "ERROR":
                errored += 1
                continue
            inputs = _root_inputs(trace)
            if not isinstance(inputs, dict) or not inputs:
                no_inputs += 1
                continue
            key = case_id_for(inputs)
            expectations = _expectations(trace)
            if key in found:
                if expectations and not found[key]["expectations"]:
                    found[key]["expectations"] = expectations  # a reviewer's label on an older copy still counts
                continue
            found[key] = {"inputs": inputs, "expectations": expectations, "trace_id": trace.info.trace_id}
    if read == 0:
        raise ConfigError(f"{where}: the selector matched no traces (filter: {selection.filter_string})")
    keys = sorted(found)  # the store's order must not matter: same seed, same store, same cases
    if source.sample is not None and source.sample < len(keys):
        keys = sorted(random.Random(source.seed).sample(keys, source.sample))
    rows = [
        {"id": key, "inputs": found[key]["inputs"], "expectations": found[key]["expectations"] or None} for key in keys
    ]
    report = {
        "kind": "traces",
        "filter": selection.filter_string,
        "experiment_id": experiment_id,
        "traces_read": read,
        "skipped_errors": errored,
        "skipped_without_inputs": no_inputs,
        "duplicates": read - errored - no_inputs - len(found),
        "distinct_inputs": len(found),
        "sample": source.sample,
        "seed": source.seed,
        "cases": len(rows),
        "trace_ids": [found[key]["trace_id"] for key in keys[:1000]],
    }
    return SourceRows(rows, report)


def _root_inputs(trace: Any) -> Any:
    root = next((s for s in trace.data.spans if s.parent_id is None), None)
    if root is not None:
        return root.inputs
    request = getattr(trace.data, "request", None)
    try:
        return json.loads(request) if isinstance(request, str) else request
    except ValueError:
        return None


def _expectations(trace: Any) -> dict[str, Any]:
    """The expectation assessments on a trace (a reviewer's labels), by name; the newest of a name wins."""
    found: dict[str, Any] = {}
    for assessment in sorted(trace.info.assessments or [], key=lambda a: a.create_time_ms or 0):
        expectation = getattr(assessment, "expectation", None)
        if expectation is not None and getattr(assessment, "valid", True) is not False:
            found[assessment.name] = expectation.value
    return found
