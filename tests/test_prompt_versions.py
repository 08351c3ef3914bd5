"""Prompt-registry versions and model-only versions: prompts registered in a temp SQLite store through MLflow's
own API, sent to the simulator over real HTTP by `gate run --simulate`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Project

WARM_CHAT = [
    {"role": "system", "content": "You are warm and caring. Answer in detail."},
    {"role": "user", "content": "{{ question }}"},
]


def store_uri(project: Project) -> str:
    return f"sqlite:///{project.path / 'store' / 'mlflow.db'}"


@pytest.fixture
def registry(project: Project) -> Any:
    """The project's store with prompt 'support': v1 (text, 30 tokens in its model config) is @production, v2 a chat."""
    import mlflow

    (project.path / "store").mkdir()
    client = mlflow.MlflowClient(tracking_uri=store_uri(project), registry_uri=store_uri(project))
    client.register_prompt(
        "support",
        "Answer the customer briefly: {{ question }}",
        model_config={"model_name": "gpt-4o-mini", "max_tokens": 30},
    )
    client.register_prompt("support", WARM_CHAT)
    client.set_prompt_alias("support", "production", 1)
    return client


def test_promoting_a_prompt_version_is_gated_against_the_alias(project: Project, registry: Any) -> None:
    project.write_config(
        baseline={"label": "production", "prompt": "prompts:/support@production"},
        candidate={"label": "v2", "prompt": "prompts:/support/2", "model": {"name": "gpt-4o-mini", "max_tokens": 120}},
        checks=[{"metric": "output_tokens/mean", "max_increase_pct": 20}],
    )
    result = project.gate("run", "--simulate")
    assert result.code == 1, result.stderr
    verdict = result.verdict
    baseline, candidate = verdict["variants"]["baseline"], verdict["variants"]["candidate"]
    assert (baseline["kind"], baseline["prompt"], baseline["prompt_version"], baseline["model"]) == (
        "prompt",
        "prompts:/support@production",
        1,
        "gpt-4o-mini",
    )
    assert (candidate["prompt"], candidate["prompt_version"]) == ("prompts:/support/2", 2)
    check = verdict["checks"][0]
    assert check["status"] == "fail"
    assert check["baseline"] == 30  # the prompt's own model config (max_tokens: 30) was applied

    traces = registry.search_traces(
        locations=[registry.get_experiment_by_name("test-gate").experiment_id],
        filter_string=f"tags.`gate.session` = '{verdict['mlflow']['session']}'",
        max_results=50,
    )
    assert len(traces) == 12
    linked = {t.info.tags["gate.variant"]: t.info.tags.get("mlflow.linkedPrompts") for t in traces}
    assert linked == {
        "baseline": '[{"name": "support", "version": "1"}]',  # MLflow's own prompt linkage, on every trace
        "candidate": '[{"name": "support", "version": "2"}]',
    }
    assert all(t.info.token_usage["output_tokens"] > 0 for t in traces)
    assert all([s.name for s in t.data.spans] == ["support", "Completions"] for t in traces)


@pytest.mark.parametrize(
    ("uri", "named"),
    [
        ("prompts:/support/9", "prompts:/support/9"),
        ("prompts:/support@staging", "prompts:/support@staging"),
        ("prompts:/nonesuch/1", "prompts:/nonesuch/1"),
    ],
)
def test_a_prompt_version_missing_at_run_time_is_exit_3_naming_it(
    project: Project, registry: Any, uri: str, named: str
) -> None:
    project.write_config(
        baseline={"prompt": "prompts:/support@production"},
        candidate={"prompt": uri},
        run={"isolation": "inline"},
    )
    result = project.gate("run", "--simulate")
    assert result.code == 3, result.stderr
    assert f"RunError: thresholds.yaml: candidate.prompt: {named}: " in result.stderr
    assert "Traceback" not in result.stderr


def test_a_model_only_pair_differing_in_max_tokens_fails_a_token_check(project: Project) -> None:
    chat = [{"role": "system", "content": "Answer."}, {"role": "user", "content": "{{ inputs.question }}"}]
    project.write_config(
        baseline={"label": "short", "model": {"name": "gpt-4o-mini", "max_tokens": 40, "messages": chat}},
        candidate={"label": "long", "model": {"name": "gpt-4o-mini", "max_tokens": 160, "messages": chat}},
        checks=[{"metric": "output_tokens/mean", "max_increase_pct": 20}],
        run={"isolation": "inline", "max_repeats": 1},
    )
    result = project.gate("run", "--simulate")
    assert result.code == 1, result.stderr
    verdict = result.verdict
    assert verdict["variants"]["candidate"]["kind"] == "model"
    assert verdict["variants"]["candidate"]["model"] == "gpt-4o-mini"
    assert verdict["checks"][0]["baseline"] == 40 and verdict["checks"][0]["candidate"] > 40


@pytest.mark.parametrize(
    ("seat", "message"),
    [
        (
            {"prompt": "prompts:/support"},
            "candidate.prompt: 'prompts:/support' is not a prompt-registry URI: write prompts:/NAME/VERSION "
            "(prompts:/support/4) or prompts:/NAME@ALIAS (prompts:/support@production)",
        ),
        (
            {"model": {"name": "gpt-4o-mini"}},
            "candidate: model: give 'messages' (the chat to send, with {{ name }} placeholders), or a 'prompt'",
        ),
        (
            {"model": {"messages": [{"role": "user", "content": "{{ question }}"}]}},
            "candidate.model: 'name' is required with 'messages' (the model to send them to, e.g. gpt-4o-mini)",
        ),
        (
            {"target": "gate_test_apps:agent", "http": {"url": "http://localhost:1/x"}},
            "candidate: give one of target, http: a version is one function, endpoint or prompt",
        ),
        (
            {"http": {"url": "http://localhost:1/x"}, "python": "python3"},
            "candidate: 'python' applies to a Python 'target', not to a http version",
        ),
        (
            {"http": {"url": "ftp://example.com/x"}},
            "candidate.http.url: 'ftp://example.com/x' is not an http:// or https:// URL",
        ),
        (
            {"http": {"url": "http://localhost:1/x", "body": {"q": "{{ question | upper }}"}}},
            "candidate.http.body: '{{ question | upper }}' is not a placeholder this gate fills: write {{ name }} or "
            "{{ inputs.name }}, with name a top-level key of the cases' inputs",
        ),
        (
            {"http": {"url": "http://localhost:1/x", "method": "GET"}},
            "candidate.http.method: Input should be 'POST', 'PUT' or 'PATCH'",
        ),
        (
            {"http": {"url": "http://localhost:1/x", "tiemout_s": 3}},
            "candidate.http.tiemout_s: unknown key; valid keys here: url, method, headers, body, output, timeout_s, "
            "server_spans",
        ),
        (
            {"model": {"name": "m", "messages": [{"role": "user", "content": "x"}], "params": {"stream": True}}},
            "candidate.model.params: stream: set these as keys of 'model' (stream is not supported)",
        ),
    ],
)
def test_every_new_kind_of_version_is_validated_with_one_line(
    project: Project, seat: dict[str, Any], message: str
) -> None:
    project.write_config(candidate=seat)
    result = project.gate("validate")
    assert result.code == 2, result.stderr
    assert f"thresholds.yaml: {message}" in result.stderr, result.stderr


def test_a_messages_template_naming_an_input_no_case_has_is_exit_2(project: Project, tmp_path: Path) -> None:
    project.write_config(
        candidate={"model": {"name": "gpt-4o-mini", "messages": [{"role": "user", "content": "{{ topic }}"}]}}
    )
    result = project.gate("run", "--simulate")
    assert result.code == 2
    assert (
        "thresholds.yaml: candidate.model.messages: names input 'topic', which case 'q0' does not have "
        "(its inputs: question)"
    ) in result.stderr


PROMPT_APP = """
import mlflow
import openai
from mlflow.genai import load_prompt  # bound at import: the gate's pin must already be in place

client = openai.OpenAI()


@mlflow.trace
def answer(question: str) -> str:
    prompt = load_prompt("prompts:/support@production")
    formatted = prompt.format(question=question)
    messages = formatted if isinstance(formatted, list) else [{"role": "user", "content": formatted}]
    max_tokens = (prompt.model_config or {}).get("max_tokens", 120)
    response = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=max_tokens)
    return response.choices[0].message.content
"""


def test_a_python_target_runs_with_a_prompt_version_pinned_per_version(project: Project, registry: Any) -> None:
    (project.path / "prompt_app.py").write_text(PROMPT_APP, encoding="utf-8")
    project.write_config(
        baseline={"label": "production", "target": "prompt_app:answer"},
        candidate={"label": "support v2", "target": "prompt_app:answer", "prompts": {"support": 2}},
        checks=[{"metric": "output_tokens/mean", "max_increase_pct": 20}],
    )
    result = project.gate("run", "--simulate")
    assert result.code == 1, result.stderr
    verdict = result.verdict
    assert verdict["variants"]["candidate"]["prompts"] == {"support": 2}
    assert verdict["variants"]["baseline"]["prompts"] is None
    assert verdict["checks"][0]["baseline"] == 30  # @production is version 1 (30 tokens); the app asked for it
    traces = registry.search_traces(
        locations=[registry.get_experiment_by_name("test-gate").experiment_id],
        filter_string=f"tags.`gate.session` = '{verdict['mlflow']['session']}'",
        max_results=50,
    )
    linked = {t.info.tags["gate.variant"]: t.info.tags.get("mlflow.linkedPrompts") for t in traces}
    assert linked == {
        "baseline": '[{"name": "support", "version": "1"}]',
        "candidate": '[{"name": "support", "version": "2"}]',
    }


def test_pinning_a_missing_prompt_version_is_exit_3_and_inline_is_refused(project: Project, registry: Any) -> None:
    (project.path / "prompt_app.py").write_text(PROMPT_APP, encoding="utf-8")
    project.write_config(candidate={"target": "prompt_app:answer", "prompts": {"support": 7}})
    result = project.gate("run", "--simulate")
    assert result.code == 3, result.stderr
    assert "thresholds.yaml: candidate.prompts.support: prompts:/support/7: " in result.stderr
    project.write_config(
        candidate={"target": "prompt_app:answer", "prompts": {"support": "next"}}, run={"isolation": "inline"}
    )
    result = project.gate("run", "--simulate")
    assert result.code == 2
    assert (
        "thresholds.yaml: candidate.prompts: pinning prompts needs each version in a process of its own (the pin "
        "replaces MLflow's load_prompt for the whole process); remove run.isolation: inline"
    ) in result.stderr
