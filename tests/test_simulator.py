"""The simulator as a client sees it: the real openai SDK over real HTTP against ``running_simulator``."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from gate.simulator import Simulator, SimulatorSettings, running_simulator

MODEL = "gpt-4o-mini"
# No latency at all: the server never sleeps, so the whole file runs in a few seconds.
FAST = SimulatorSettings(seed=0, base_latency_ms=0.0, ms_per_token=0.0)
QUESTIONS = [f"Question {i}: how do I reset the password of account {i}?" for i in range(20)]
LONG_SYSTEM = "You are a warm, thorough and friendly support agent who explains every step. " * 30  # > 2000 chars


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="x", max_retries=0)


def _ask(client: openai.OpenAI, question: str, system: str = "", **kwargs: Any) -> Any:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    return client.chat.completions.create(model=MODEL, messages=messages, **kwargs)


def _answers(url: str, questions: list[str]) -> list[tuple[str | None, int, str]]:
    client = _client(url)
    out = []
    for question in questions:
        response = _ask(client, question, system="Answer briefly.", max_tokens=200)
        out.append((response.choices[0].message.content, response.usage.completion_tokens, response.id))
    return out


def _mean_chars(client: openai.OpenAI, system: str, temperature: float) -> float:
    lengths = []
    for question in QUESTIONS:
        response = _ask(client, question, system=system, temperature=temperature, max_tokens=4096)
        lengths.append(len(response.choices[0].message.content or ""))
    return statistics.fmean(lengths)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with running_simulator(FAST) as base_url:
        yield base_url


@pytest.fixture
def client(url: str) -> openai.OpenAI:
    return _client(url)


def test_base_url_is_loopback_v1(url: str) -> None:
    assert url.startswith("http://127.0.0.1:")
    assert url.endswith("/v1")


def test_chat_completion_returns_content_and_consistent_usage(client: openai.OpenAI) -> None:
    response = _ask(client, "Where is my order?", system="Answer briefly.", max_tokens=100)
    assert response.model == MODEL
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content
    usage = response.usage
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens > 0
    assert usage.prompt_tokens + usage.completion_tokens == usage.total_tokens


def test_same_seed_and_request_sequence_give_identical_answers_across_instances() -> None:
    with running_simulator(FAST) as first:
        a = _answers(first, QUESTIONS[:5] + QUESTIONS[:5])  # repeats get fresh noise, but the same in both
    with running_simulator(FAST) as second:
        b = _answers(second, QUESTIONS[:5] + QUESTIONS[:5])
    assert a == b


def test_different_seed_gives_different_answers() -> None:
    with running_simulator(FAST) as first:
        a = _answers(first, QUESTIONS[:5])
    with running_simulator(SimulatorSettings(seed=1, base_latency_ms=0.0, ms_per_token=0.0)) as second:
        b = _answers(second, QUESTIONS[:5])
    assert [content for content, _, _ in a] != [content for content, _, _ in b]


@pytest.mark.parametrize("max_tokens", [1, 3, 10, 25])
def test_output_tokens_never_exceed_max_tokens(client: openai.OpenAI, max_tokens: int) -> None:
    for question in QUESTIONS[:5]:
        response = _ask(client, question, system=LONG_SYSTEM, temperature=2.0, max_tokens=max_tokens)
        assert response.usage.completion_tokens <= max_tokens


def test_finish_reason_is_length_when_capped(client: openai.OpenAI) -> None:
    # A long system prompt at temperature 2 wants ~300 tokens; 10 caps every answer.
    response = _ask(client, "Where is my order?", system=LONG_SYSTEM, temperature=2.0, max_tokens=10)
    assert response.usage.completion_tokens == 10
    assert response.choices[0].finish_reason == "length"


def test_finish_reason_is_stop_when_not_capped(client: openai.OpenAI) -> None:
    response = _ask(client, "Where is my order?", system="Answer briefly.", temperature=0.0, max_tokens=4096)
    assert response.usage.completion_tokens < 4096
    assert response.choices[0].finish_reason == "stop"


def test_longer_system_prompt_gives_longer_answers_on_average(client: openai.OpenAI) -> None:
    short = _mean_chars(client, system="Be brief.", temperature=0.5)
    long = _mean_chars(client, system=LONG_SYSTEM, temperature=0.5)
    assert long > 2 * short  # the model says ~5x; 2x leaves a wide margin


def test_higher_temperature_gives_longer_answers_on_average(client: openai.OpenAI) -> None:
    cold = _mean_chars(client, system="Be brief.", temperature=0.0)
    hot = _mean_chars(client, system="Be brief.", temperature=1.5)
    assert hot > 1.5 * cold  # the model says 2.5x


def test_error_rate_one_fails_every_call_with_429_or_500() -> None:
    settings = SimulatorSettings(seed=0, base_latency_ms=0.0, ms_per_token=0.0, error_rate=1.0)
    with running_simulator(settings) as base_url:
        client = _client(base_url)
        statuses = []
        for question in QUESTIONS:
            with pytest.raises((openai.RateLimitError, openai.InternalServerError)) as caught:
                _ask(client, question)
            error = caught.value
            statuses.append(error.status_code)
            expected = "simulated rate limit" if error.status_code == 429 else "simulated server error"
            assert expected in error.message
    assert set(statuses) == {429, 500}  # both kinds occur in 20 calls


def test_models_endpoint_lists_the_configured_model() -> None:
    settings = SimulatorSettings(base_latency_ms=0.0, ms_per_token=0.0, model="sim-model-1")
    with running_simulator(settings) as base_url:
        models = [m.id for m in _client(base_url).models.list()]
    assert models == ["sim-model-1"]


def test_response_format_request_gets_json_with_rationale_and_yes_or_no(client: openai.OpenAI) -> None:
    response = _ask(
        client, "Is 'Paris' a correct answer to 'capital of France'?", response_format={"type": "json_object"}
    )
    answer = json.loads(response.choices[0].message.content or "")
    assert set(answer) == {"rationale", "result"}
    assert answer["result"] in ("yes", "no")
    assert answer["rationale"]


def _judge_results(url: str, prompts: list[str], repeats: int) -> dict[str, set[str]]:
    client = _client(url)
    results: dict[str, set[str]] = {}
    for prompt in prompts:
        for _ in range(repeats):
            content = _ask(client, prompt, response_format={"type": "json_object"}).choices[0].message.content
            results.setdefault(prompt, set()).add(json.loads(content or "")["result"])
    return results


def test_response_format_same_prompt_gives_same_result_on_repeats(url: str) -> None:
    results = _judge_results(url, QUESTIONS[:5], repeats=3)
    assert all(len(found) == 1 for found in results.values()), results


def test_response_format_same_prompt_gives_same_result_whatever_the_seed(url: str) -> None:
    with running_simulator(SimulatorSettings(seed=7, base_latency_ms=0.0, ms_per_token=0.0)) as other:
        assert _judge_results(other, QUESTIONS, repeats=1) == _judge_results(url, QUESTIONS, repeats=1)


def test_stream_request_gets_400_with_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, "Where is my order?", stream=True)
    assert caught.value.status_code == 400
    assert "does not stream" in caught.value.message


def test_empty_messages_get_400_with_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[])
    assert caught.value.status_code == 400
    assert "'messages' must be a non-empty list" in caught.value.message


def test_non_object_message_gets_400_with_message(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=["hello"])  # type: ignore[list-item]
    assert caught.value.status_code == 400
    assert "messages" in caught.value.message


def test_response_format_output_tokens_never_exceed_max_tokens(client: openai.OpenAI) -> None:
    response = _ask(client, "Is this answer correct?", response_format={"type": "json_object"}, max_tokens=5)
    assert response.usage.completion_tokens <= 5


def test_latency_grows_with_output_tokens() -> None:
    sim = Simulator(SimulatorSettings(seed=0, base_latency_ms=10.0, ms_per_token=0.5, latency_sigma=0.0))
    points = []
    for max_tokens in (1, 5, 20, 60):
        body = {
            "model": MODEL,
            "messages": [{"role": "system", "content": LONG_SYSTEM}, {"role": "user", "content": "hi"}],
        }
        status, answer, delay = sim.complete({**body, "max_tokens": max_tokens, "temperature": 2.0})
        assert status == 200
        points.append((answer["usage"]["completion_tokens"], delay))
    tokens = [t for t, _ in points]
    delays = [d for _, d in points]
    assert tokens == [1, 5, 20, 60]
    assert delays == sorted(delays)
    assert len(set(delays)) == len(delays)


def test_latency_is_base_plus_per_token_time_without_noise() -> None:
    sim = Simulator(SimulatorSettings(seed=0, base_latency_ms=10.0, ms_per_token=0.5, latency_sigma=0.0))
    status, answer, delay = sim.complete({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200
    assert delay == pytest.approx((10.0 + 0.5 * answer["usage"]["completion_tokens"]) / 1000)


@pytest.mark.parametrize("wrong", ["", "/v2", "/v1/extra", "/openai/v1"])
def test_a_wrong_base_url_gets_404_not_an_answer(url: str, wrong: str) -> None:
    # The simulator answers only at its own base URL, as a real provider does: a misconfigured OPENAI_BASE_URL in a
    # project must fail against it too, not pass the gate and then fail in production.
    client = _client(url.removesuffix("/v1") + wrong)
    with pytest.raises(openai.NotFoundError) as exc:
        _ask(client, "hello")
    assert exc.value.status_code == 404
    assert "no route" in str(exc.value)
    assert _ask(_client(url), "hello").choices[0].message.content  # the right one still answers
