"""Cases from where teams keep them: CSV files, MLflow evaluation datasets (made through MLflow's own API in a temp
SQLite store) and the inputs of stored production traces (made by a script outside the gate)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TESTS, Project

from gate._config.dataset import case_id_for, load_cases
from gate._config.schema import load_config
from gate._errors import ConfigError
from gate._run.prepare import gather_cases
from gate.simulator import SimulatorSettings, running_simulator

# Where the cases come from is decided in the gate's process before any call: the versions run inline (two worker
# processes a run spared; tests/test_workers.py covers them).
pytestmark = pytest.mark.run_isolation("inline")

QUESTIONS_V1 = [
    "How can I track my package?",
    "What's your return policy?",
    "How long does a refund take?",
    "I need help with my account login",
    "Can I cancel my subscription?",
    "Do you ship internationally?",
]


def config_for(folder: Path, dataset: Any, **more: Any) -> Path:
    config = {
        "version": 1,
        "experiment": "test-gate",
        "dataset": dataset,
        "baseline": {"target": "gate_test_apps:agent"},
        "candidate": {"target": "gate_test_apps:agent"},
        "checks": [{"metric": "error/rate", "at_most": 0.0}],
        **more,
    }
    path = folder / "thresholds.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


# -- CSV ---------------------------------------------------------------------------------------------------------


CSV = (
    "\ufeffid,question,expected_response,expectations.tone,tags,golden,count,meta\r\n"
    'q1,"Where is my order, please?",the tracking page,warm,orders;shipping,true,3,"{""vip"": true}"\r\n'
    "q2,Réembourser ma commande ? 日本,,,,no,,\r\n"
    '"q3","line one\nline two, ""quoted""",x,,,,7,[1]\r\n'
)


def test_csv_columns_become_inputs_expectations_and_case_fields(tmp_path: Path) -> None:
    (tmp_path / "cases.csv").write_text(CSV, encoding="utf-8", newline="")
    path = config_for(tmp_path, {"file": "cases.csv", "columns": {"count": "integer", "meta": "json"}})
    cases = load_cases(load_config(path), path)
    assert [(c.id, c.inputs, c.expectations, c.tags, c.golden) for c in cases] == [
        (
            "q1",
            {"question": "Where is my order, please?", "count": 3, "meta": {"vip": True}},
            {"response": "the tracking page", "tone": "warm"},
            ("orders", "shipping"),
            True,
        ),
        ("q2", {"question": "Réembourser ma commande ? 日本", "count": None, "meta": None}, None, (), False),
        ("q3", {"question": 'line one\nline two, "quoted"', "count": 7, "meta": [1]}, {"response": "x"}, (), False),
    ]


def test_csv_values_are_strings_unless_declared(tmp_path: Path) -> None:
    (tmp_path / "cases.csv").write_text("question,count\nhi,3\n,5\n,\n", encoding="utf-8")  # the last: blank
    path = config_for(tmp_path, "cases.csv")
    cases = load_cases(load_config(path), path)
    assert [c.inputs for c in cases] == [{"question": "hi", "count": "3"}, {"question": "", "count": "5"}]
    assert cases[0].id == case_id_for({"question": "hi", "count": "3"})


@pytest.mark.parametrize(
    ("text", "columns", "problems"),
    [
        (
            "id,question\nq1,a,extra\nq2\nq3,c\n",
            {},
            ["row 2: 3 cells, the header has 2 columns", "row 3: 1 cell, the header has 2 columns"],
        ),
        ("question,count\na,three\n", {"count": "integer"}, ["row 2: column 'count': 'three' is not an integer"]),
        ("question,ok\na,maybe\n", {"ok": "boolean"}, ["row 2: column 'ok': 'maybe' is not a boolean (true/false)"]),
        ("question,golden\na,perhaps\n", {}, ["row 2: column 'golden': 'perhaps' is not true or false"]),
        ("id,question\nq1,a\nq1,b\n", {}, ["row 3: id: duplicate case id 'q1' (first at row 2); ids must be unique"]),
        (
            "question\na\na\n",
            {},
            ["row 3: inputs: duplicate inputs (the same as row 2); give both cases an id if both are wanted"],
        ),
        ("question,question\na,b\n", {}, ["row 1: column 'question' appears twice"]),
        ("question\na\n", {"count": "integer"}, ["dataset.columns names count, not a column of the file"]),
    ],
)
def test_bad_csv_rows_are_named_by_file_and_row(
    tmp_path: Path, text: str, columns: dict[str, str], problems: list[str]
) -> None:
    (tmp_path / "cases.csv").write_text(text, encoding="utf-8")
    path = config_for(tmp_path, {"file": "cases.csv", "columns": columns} if columns else "cases.csv")
    with pytest.raises(ConfigError) as exc:
        load_cases(load_config(path), path)
    csv_path = (tmp_path / "cases.csv").resolve()
    assert exc.value.problems == [f"{csv_path}: {p}" for p in problems]


def test_gate_validate_reads_a_csv_dataset(project: Project) -> None:
    (project.path / "cases.csv").write_text("question\nWhere is my order?\nCan I get a refund?\n", encoding="utf-8")
    project.write_config(cases=None, dataset="cases.csv")
    text = (project.path / "thresholds.yaml").read_text().replace("cases: null\n", "")
    (project.path / "thresholds.yaml").write_text(text)
    result = project.gate("validate")
    assert result.code == 0, result.stderr
    assert "2 cases" in result.stdout + result.stderr


# -- MLflow evaluation datasets ----------------------------------------------------------------------------------


def store(project: Project) -> str:
    (project.path / "store").mkdir(exist_ok=True)
    return f"sqlite:///{project.path / 'store' / 'mlflow.db'}"


def make_dataset(uri: str, name: str, records: list[dict[str, Any]]) -> Any:
    import mlflow
    from mlflow.genai import datasets

    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("test-gate") or client.get_experiment(
        client.create_experiment("test-gate")
    )
    dataset = datasets.create_dataset(name=name, experiment_id=[experiment.experiment_id])
    dataset.merge_records(records)
    return dataset


RECORDS = [
    {"inputs": {"question": "How can I track my package?"}, "expectations": {"expected_response": "tracking"}},
    {"inputs": {"question": "What's your return policy?"}, "tags": {"topic": "returns", "golden": "true"}},
    {"inputs": {"question": "Do you ship internationally?"}},
]


def test_an_mlflow_evaluation_dataset_is_the_cases_of_a_gate_run(project: Project) -> None:
    dataset = make_dataset(store(project), "support-eval", RECORDS)
    project.write_config(cases=None, dataset={"mlflow": "support-eval"})
    text = (project.path / "thresholds.yaml").read_text().replace("cases: null\n", "")
    (project.path / "thresholds.yaml").write_text(text)
    result = project.gate("run", "--simulate")
    assert result.code in (0, 1), result.stderr
    verdict = result.verdict
    assert verdict["dataset"]["kind"] == "mlflow"
    assert verdict["dataset"]["id"] == dataset.dataset_id
    from mlflow.genai import datasets

    assert verdict["dataset"]["digest"] == datasets.get_dataset(dataset_id=dataset.dataset_id).digest
    assert verdict["dataset"]["cases"] == 3
    records = dataset.to_df().to_dict("records")
    assert {c["case_id"] for c in verdict["cases"]} == {r["dataset_record_id"] for r in records}
    golden = next(r["dataset_record_id"] for r in records if "golden" in r["tags"])
    cases, _ = gather_cases(load_config(project.path / "thresholds.yaml"), project.path / "thresholds.yaml", None)
    by_id = {c.id: c for c in cases}
    assert by_id[golden].golden and by_id[golden].tags == ("golden", "topic=returns")
    tracked = next(c for c in cases if c.inputs["question"] == "How can I track my package?")
    assert tracked.expectations == {"expected_response": "tracking"}


def test_an_ambiguous_or_missing_dataset_name_is_exit_2_naming_it(project: Project) -> None:
    uri = store(project)
    first = make_dataset(uri, "support-eval", RECORDS)
    second = make_dataset(uri, "support-eval", RECORDS[:1])
    path = config_for(project.path, {"mlflow": "support-eval"})
    with pytest.raises(ConfigError) as exc:
        gather_cases(load_config(path), path, uri)
    assert str(exc.value) in (
        f"{path}: dataset: 2 MLflow evaluation datasets are named 'support-eval' ({a}, {b}); give one id "
        "(mlflow: d-…), or narrow with experiment:"
        for a, b in ((first.dataset_id, second.dataset_id), (second.dataset_id, first.dataset_id))
    )
    by_id = config_for(project.path, {"mlflow": second.dataset_id})
    assert len(gather_cases(load_config(by_id), by_id, uri)[0]) == 1
    missing = config_for(project.path, {"mlflow": "nonesuch"})
    with pytest.raises(ConfigError) as exc:
        gather_cases(load_config(missing), missing, uri)
    assert str(exc.value) == f"{missing}: dataset: no MLflow evaluation dataset named 'nonesuch'"
    project.write_config(cases=None, dataset={"mlflow": "nonesuch"})
    text = (project.path / "thresholds.yaml").read_text().replace("cases: null\n", "")
    (project.path / "thresholds.yaml").write_text(text)
    result = project.gate("run", "--simulate")
    assert result.code == 2
    assert "dataset: no MLflow evaluation dataset named 'nonesuch'" in result.stderr


# -- production traces -------------------------------------------------------------------------------------------


def produce(project: Project, *args: str) -> None:
    """Traces made by a script outside the gate (tests/gate_trace_producer.py), into the project's store."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_"))}
    env |= {"MLFLOW_TRACKING_URI": store(project), "MLFLOW_DISABLE_TELEMETRY": "true"}
    with running_simulator(SimulatorSettings(base_latency_ms=2, latency_sigma=0)) as base_url:
        env |= {"OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-test"}
        proc = subprocess.run(
            [sys.executable, str(TESTS / "gate_trace_producer.py"), str(project.path / "produced.json"), *args],
            cwd=project.path, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_stored_traces_replay_as_cases_skipping_errors_and_duplicates_with_reviewers_labels(project: Project) -> None:
    produce(project, "--repeats", "2", "--errors", "3", "--label", "1=thirty days")  # 12 v1 + 12 v2 + 3 errored
    uri = f"sqlite:///{project.path / 'store' / 'mlflow.db'}"
    selector = {"trace_name": "customer_support_v1", "experiment": "support-prod"}
    path = config_for(project.path, {"traces": selector})
    cases, report = gather_cases(load_config(path), path, uri)
    assert sorted(c.inputs["question"] for c in cases) == sorted(QUESTIONS_V1)
    assert report is not None
    assert (report["traces_read"], report["skipped_errors"], report["duplicates"], report["cases"]) == (15, 3, 6, 6)
    labelled = next(c for c in cases if c.inputs["question"] == QUESTIONS_V1[1])
    assert labelled.expectations == {"expected_response": "thirty days"}
    assert all(c.expectations is None for c in cases if c is not labelled)
    assert all(c.id == case_id_for(c.inputs) for c in cases)
    assert len(report["trace_ids"]) == 6

    sampled = config_for(project.path, {"traces": selector, "sample": 3, "seed": 7})
    first, _ = gather_cases(load_config(sampled), sampled, uri)
    again, _ = gather_cases(load_config(sampled), sampled, uri)
    assert len(first) == 3 and [c.id for c in first] == [c.id for c in again]

    def sample(seed: int) -> set[str]:
        other = config_for(project.path, {"traces": selector, "sample": 3, "seed": seed})
        return {c.id for c in gather_cases(load_config(other), other, uri)[0]}

    assert any(sample(seed) != {c.id for c in first} for seed in range(8, 14))  # the seed chooses the sample

    nothing = config_for(project.path, {"traces": {"trace_name": "no_such_app", "experiment": "support-prod"}})
    with pytest.raises(ConfigError) as exc:
        gather_cases(load_config(nothing), nothing, uri)
    assert "dataset: the selector matched no traces (filter: trace.name = 'no_such_app' AND timestamp_ms <= " in str(
        exc.value
    )


def test_dataset_keys_are_validated_with_one_line(tmp_path: Path) -> None:
    path = config_for(tmp_path, {"mlflow": "x", "columns": {"a": "integer"}})
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == [f"{path}: dataset: 'columns' applies to 'file', not to 'mlflow'"]
    path = config_for(tmp_path, {"file": "a.csv", "mlflow": "x"})
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == [
        f"{path}: dataset: give exactly one of 'file' (a path), 'mlflow' (a dataset name or id) or 'traces'"
    ]


# -- freezing cases ----------------------------------------------------------------------------------------------


def test_gate_cases_export_freezes_cases_into_jsonl_and_an_mlflow_dataset(project: Project) -> None:
    (project.path / "cases.csv").write_text(CSV, encoding="utf-8", newline="")
    path = config_for(project.path, {"file": "cases.csv", "columns": {"count": "integer", "meta": "json"}})
    before = load_cases(load_config(path), path)

    result = project.gate("cases", "export", "--to", "frozen/cases.jsonl")
    assert result.code == 0, result.stderr
    assert "gate: 3 cases from the file dataset written to frozen/cases.jsonl" in result.stderr
    frozen = config_for(project.path, "frozen/cases.jsonl")
    assert load_cases(load_config(frozen), frozen) == before  # ids, inputs, expectations, tags and golden, as read

    config_for(project.path, {"file": "cases.csv", "columns": {"count": "integer", "meta": "json"}})
    result = project.gate("cases", "export", "--to", "mlflow:reviewed-cases")
    assert result.code == 0, result.stderr
    assert "gate: 3 cases from the file dataset written to MLflow evaluation dataset 'reviewed-cases' (d-" in (
        result.stderr
    )
    from_mlflow = config_for(project.path, {"mlflow": "reviewed-cases"})
    cases, _ = gather_cases(load_config(from_mlflow), from_mlflow, store(project))
    assert sorted(json.dumps(c.inputs, sort_keys=True) for c in cases) == sorted(
        json.dumps(c.inputs, sort_keys=True) for c in before
    )
    golden = [c for c in cases if c.golden]
    assert [c.inputs["question"] for c in golden] == ["Where is my order, please?"]
    assert set(golden[0].tags) == {"golden", "orders", "shipping"}

    config_for(project.path, {"file": "cases.csv", "columns": {"count": "integer", "meta": "json"}})
    again = project.gate("cases", "export", "--to", "mlflow:reviewed-cases")
    assert again.code == 2
    assert "usage: --to mlflow:reviewed-cases: an evaluation dataset of that name exists (d-" in again.stderr
    wrong = project.gate("cases", "export", "--to", "cases.csv")
    assert wrong.code == 2
    assert "usage: --to cases.csv: write a .jsonl file, or mlflow:NAME for an MLflow evaluation dataset" in wrong.stderr
