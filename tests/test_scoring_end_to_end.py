"""Scorers through `gate run` and `gate score`: real judges against the simulator, feedback on the stored traces.

Scoring happens in the gate's process after the calls, so the versions run inline here (no worker processes).
One `gate run` with every scorer (the ``scored`` fixture) is made once per module (per pytest worker); the tests that
re-score a whole session each re-score their own copy of its store, as tests/test_compare.py does with its producer.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import mlflow
import pytest
from conftest import QUESTIONS, TESTS, GateResult, Project

from gate._store.store import open_store

pytestmark = pytest.mark.run_isolation("inline")

SCORERS = [
    {"name": "on_topic", "type": "contains"},
    {"name": "polite", "target": "gate_test_apps:polite"},
    {"name": "words", "target": "gate_test_apps:answer_words"},
    {"name": "helpful", "type": "judge", "rubric": "Does the answer help the customer?"},
    {
        "name": "empathy",
        "type": "mlflow",
        "judge": "Guidelines",
        "args": {"guidelines": "The response must show empathy for the customer."},
    },
]
CASES = [
    {"id": f"q{i}", "inputs": {"question": q}, "expectations": {"contains": [q.split()[-1].strip("?").lower()]}}
    for i, q in enumerate(QUESTIONS)
]


def _feedback_counts(project: Project, verdict: dict) -> Counter[tuple[str, str]]:
    mlflow.set_tracking_uri(f"sqlite:///{project.path / 'store' / 'mlflow.db'}")
    traces = mlflow.search_traces(
        locations=[verdict["mlflow"]["experiment_id"]],
        filter_string=f"tags.`gate.session` = '{verdict['mlflow']['session']}'",
        return_type="list",
        include_spans=False,
    )
    return Counter(
        (t.info.trace_id, a.name)
        for t in traces
        for a in t.info.assessments
        if a.source.source_id.startswith("gate:") and a.valid is not False
    )


def _write_scored_config(project: Project) -> None:
    project.write_config(
        cases=CASES,
        scorers=SCORERS,
        checks=[
            {"metric": "on_topic/rate", "at_least": 0.5},
            {"metric": "polite/rate", "max_decrease": 0.5},
            {"metric": "words/mean", "max_increase_pct": 50},
            {"metric": "helpful/rate", "max_decrease": 0.5},
            {"metric": "empathy/mean", "max_decrease": 0.5},
        ],
    )


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GateResult]:
    """One `gate run --simulate` of CASES with every scorer, into a store of its own: its folder and its result.

    No test opens this store: ``copy_of_scored`` gives each test a copy, which it may change (feedback, run status).
    """
    folder = tmp_path_factory.mktemp("scored")
    shutil.copy(TESTS / "gate_test_apps.py", folder / "gate_test_apps.py")
    project = Project(folder, "inline")
    _write_scored_config(project)
    return folder, project.gate("run", "--simulate")


def copy_of_scored(project: Project, scored: tuple[Path, GateResult]) -> GateResult:
    """The scored run's store copied into the project, whose config is the run's; the run's result."""
    folder, result = scored
    assert not (project.path / "store").exists()
    shutil.copytree(folder / "store", project.path / "store")
    _write_scored_config(project)
    return result


def test_scores_become_metrics_and_feedback_written_once(project: Project, scored: tuple[Path, GateResult]) -> None:
    result = copy_of_scored(project, scored)
    assert result.code in (0, 1), result.stderr
    verdict = result.verdict
    traces = verdict["variants"]["baseline"]["traces"] + verdict["variants"]["candidate"]["traces"]
    for name in ("on_topic", "polite", "words", "helpful", "empathy"):
        report = verdict["scorers"][name]
        assert report["scored"] == traces and report["missing"] == 0, (name, report)
        assert verdict["metrics"]["candidate"][f"{name}/mean"] is not None
    assert verdict["scorers"]["helpful"]["judge_input_tokens"] > 0
    # Judge calls are not the app's: the app's token metrics come from its own traces only.
    assert verdict["scorers"]["on_topic"]["judge_input_tokens"] == 0
    counts = _feedback_counts(project, verdict)
    assert len(counts) == traces * 5 and set(counts.values()) == {1}

    # Re-scoring the same traces twice writes nothing new and calls no app.
    session = verdict["mlflow"]["session"]
    for _ in range(2):
        again = project.gate("score", "--simulate", "--session", session)
        assert again.code == verdict["exit_code"], again.stderr
        assert again.verdict["spend"]["calls"] == 0
        assert {s["assessments_written"] for s in again.verdict["scorers"].values()} == {0}
        assert [c["candidate"] for c in again.verdict["checks"]] == [c["candidate"] for c in verdict["checks"]]
    assert _feedback_counts(project, verdict) == counts


def test_a_scorer_that_raises_leaves_its_check_missing_and_exits_3(project: Project) -> None:
    project.write_config(
        scorers=[{"name": "buggy", "target": "gate_test_apps:broken_scorer"}],
        checks=[{"metric": "buggy/rate", "at_least": 0.5}, {"metric": "error/rate", "at_most": 0}],
    )
    result = project.gate("run", "--simulate")
    assert result.code == 3, result.stderr
    verdict = result.verdict
    assert verdict["checks"][0]["status"] == "missing"
    assert verdict["scorers"]["buggy"]["first_error"] == "ValueError: this scorer has a bug"
    assert "scorer 'buggy' gave no value for 12 traces: ValueError: this scorer has a bug" in result.stderr


def test_score_on_an_unknown_session_exits_3(project: Project, tmp_path: Path) -> None:
    project.write_config()
    no_store = project.gate("score", "--session", "no-such-session")
    assert no_store.code == 3
    assert f"no MLflow store at {project.path / 'store' / 'mlflow.db'}: the file does not exist" in no_store.stderr
    assert not (project.path / "store").exists()  # reading what was recorded creates nothing
    open_store(f"sqlite:///{project.path / 'store' / 'mlflow.db'}", "test-gate")
    result = project.gate("score", "--session", "no-such-session")
    assert result.code == 3
    assert "no traces tagged gate.session = no-such-session" in result.verdict["error"]


def test_score_refuses_traces_of_other_inputs_or_targets(project: Project, scored: tuple[Path, GateResult]) -> None:
    # The session ran CASES with every scorer; which scorers ran is not part of what `gate score` compares (the
    # dataset's ids and inputs, each version's target and run settings), so it serves as a run with on_topic only.
    session = copy_of_scored(project, scored).verdict["mlflow"]["session"]
    changed_inputs = [{**case, "inputs": {"question": case["inputs"]["question"] + " now"}} for case in CASES]
    project.write_config(
        cases=changed_inputs, scorers=[SCORERS[0]], checks=[{"metric": "on_topic/rate", "at_least": 0.5}]
    )
    result = project.gate("score", "--session", session)
    assert result.code == 3
    assert "the dataset's case ids or inputs changed since the session ran" in result.verdict["error"]
    project.write_config(
        cases=CASES,
        candidate={"target": "gate_test_apps:slow_agent"},
        scorers=[SCORERS[0]],
        checks=[{"metric": "on_topic/rate", "at_least": 0.5}],
    )
    result = project.gate("score", "--session", session)
    assert result.code == 3
    assert "the target or run settings of candidate (fingerprint" in result.verdict["error"]
    # New expectations are what re-scoring is for: they do not count as a different dataset.
    new_expectations = [{**case, "expectations": {"contains": ["package"]}} for case in CASES]
    project.write_config(
        cases=new_expectations, scorers=[SCORERS[0]], checks=[{"metric": "on_topic/rate", "at_least": 0}]
    )
    assert project.gate("score", "--session", session).code == 0


def test_score_refuses_an_incomplete_session_as_compare_does(project: Project, scored: tuple[Path, GateResult]) -> None:
    """A run killed mid-way leaves its MLflow runs unfinished; a lone shard leaves the other shard missing. Either
    way some cases have no traces: re-scoring must exit 3, never decide on what is there (issue 16, finding 1)."""
    import mlflow

    whole = copy_of_scored(project, scored)  # a whole, finished session of CASES (in the project's store, a copy)
    project.write_config(cases=CASES, checks=[{"metric": "error/rate", "at_most": 0}])
    shard = project.gate("run", "--simulate", "--session", "half", "--shard", "1/2")
    assert shard.code == 0, shard.stderr
    lone = project.gate("score", "--session", "half")
    assert lone.code == 3
    assert "session half is incomplete: no run recorded for shard 2/2" in lone.verdict["error"]
    # The whole run finished and gave a verdict (its own exit code is its scorer checks' decision, 0 or 1); that its
    # session is complete is what re-scoring it with the error/rate check, exit 0, shows.
    assert whole.code in (0, 1), whole.stderr
    session = whole.verdict["mlflow"]["session"]
    assert project.gate("score", "--session", session).code == 0
    client = mlflow.MlflowClient(f"sqlite:///{project.path / 'store' / 'mlflow.db'}")
    client.update_run(whole.verdict["variants"]["candidate"]["mlflow_run_id"], status="RUNNING")  # as kill -9 leaves it
    killed = project.gate("score", "--session", session)
    assert killed.code == 3
    assert "not finished: shard 1/1 candidate (RUNNING)" in killed.verdict["error"]
