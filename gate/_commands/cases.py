"""``gate cases export``: the cases a config reads, frozen into a JSONL file or a new MLflow evaluation dataset.

Turns a sample of last week's traffic (``dataset: {traces: …, sample: N}``), or any other source, into a reviewed,
versioned dataset that later gates read with ``dataset: cases.jsonl`` or ``dataset: {mlflow: NAME}``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from gate._config.dataset import Case
from gate._config.schema import DEFAULT_TRACKING_URI, load_config
from gate._errors import ConfigError, RunError
from gate._run.prepare import gather_cases

__all__ = ["export_cases"]


def export_cases(config_path: Path, to: str, tracking_uri: str | None = None) -> str:
    """Write the config's cases to ``to`` (``FILE.jsonl`` or ``mlflow:NAME``); one line saying what was written."""
    config = load_config(config_path)
    cases, source = gather_cases(config, config_path, tracking_uri)
    kind = (source or {}).get("kind", "inline")
    if to.startswith("mlflow:"):
        name = to.removeprefix("mlflow:").strip()
        if not name:
            raise ConfigError("usage: --to mlflow:NAME: give the new dataset a name")
        return _to_mlflow(cases, name, config.experiment, tracking_uri or config.tracking_uri, kind)
    path = Path(to)
    if path.suffix != ".jsonl":
        raise ConfigError(f"usage: --to {to}: write a .jsonl file, or mlflow:NAME for an MLflow evaluation dataset")
    _write_jsonl(cases, path)
    return f"{len(cases)} cases from the {kind} dataset written to {path}"


def _row(case: Case) -> dict[str, Any]:
    row: dict[str, Any] = {"id": case.id, "inputs": case.inputs}
    if case.expectations:
        row["expectations"] = case.expectations
    if case.tags:
        row["tags"] = list(case.tags)
    if case.golden:
        row["golden"] = True
    return row


def _write_jsonl(cases: list[Case], path: Path) -> None:
    """Atomically: a reader sees the old file or the whole new one."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as out:
            for case in cases:
                out.write(json.dumps(_row(case), ensure_ascii=False, default=str) + "\n")
        os.replace(out.name, path)
    except OSError as exc:
        raise RunError(f"--to {path}: cannot write: {exc.strerror or exc}") from None


def _record_tags(case: Case) -> dict[str, str]:
    tags = {t.partition("=")[0]: t.partition("=")[2] if "=" in t else "true" for t in case.tags}
    if case.golden:
        tags["golden"] = "true"
    return tags


def _to_mlflow(cases: list[Case], name: str, experiment: str, tracking_uri: str | None, kind: str) -> str:
    import mlflow
    from mlflow.genai import datasets

    from gate._store.store import prepare_environment, resolve_tracking_uri

    prepare_environment()
    uri = resolve_tracking_uri(None, tracking_uri, DEFAULT_TRACKING_URI)
    mlflow.set_tracking_uri(uri)
    if found := datasets.search_datasets(filter_string=f"name = '{name}'", max_results=10):
        ids = ", ".join(d.dataset_id for d in found)
        raise ConfigError(
            f"usage: --to mlflow:{name}: an evaluation dataset of that name exists ({ids}); names are not unique in "
            "MLflow, so pick a new one (a gate reading it by name would then be ambiguous)"
        )
    client = mlflow.MlflowClient(uri)
    existing = client.get_experiment_by_name(experiment)
    experiment_id = existing.experiment_id if existing else client.create_experiment(experiment)
    dataset = datasets.create_dataset(name=name, experiment_id=[experiment_id], tags={"gate.source": kind})
    dataset.merge_records(
        [{"inputs": c.inputs, "expectations": c.expectations or {}, "tags": _record_tags(c)} for c in cases]
    )
    where = f"MLflow evaluation dataset '{name}' ({dataset.dataset_id})"
    return f"{len(cases)} cases from the {kind} dataset written to {where}"
