"""Versions the gate calls itself: an HTTP endpoint, a prompt-registry version or chat messages sent to a model.

Each becomes a callable taking a case's inputs, like a Python target, so the runners (worker processes or inline),
matching, deciding and the verdict do not change. Each call opens the trace's root span itself, so the trace has the
case's inputs, the answer, the status and the latency of the whole call, as a traced app's would:

- ``http``: one request; the W3C ``traceparent`` header of the gate's span goes with it, so a server that calls
  ``mlflow.tracing.set_tracing_context_from_http_request_headers`` and logs to the same store adds its own spans to
  the trace (docs/versions.md says what the server needs). A non-2xx status or a dropped connection is an error data
  point; 408/409/429/5xx and connection errors are retried as a provider's transient errors are. OpenAI-style
  ``usage`` in the answer becomes the trace's token usage (and ``model`` its model, for pricing).
- ``prompt``: the registry version is resolved once, when the version starts (an alias names a number for the whole
  run, and a missing one stops the run before any call); each call loads that number through MLflow's own
  ``load_prompt``, which links the prompt version to the trace, formats it with the inputs and sends it with the
  OpenAI SDK (whose autolog span carries the tokens).
- ``model``: the same with the messages of the config.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

from gate._config.schema import VariantConfig
from gate._config.templating import expand_env, render
from gate._config.versions import PROMPT_URI, HttpConfig, ModelConfig
from gate._errors import ConfigError, RunError
from gate._secrets import redact, redact_uri

__all__ = [
    "Built",
    "EndpointError",
    "EndpointUnreachableError",
    "build_version",
    "missing_env",
    "pin_prompts",
    "resolve_pins",
]

USAGE_ATTRIBUTE = "mlflow.chat.tokenUsage"  # MLflow's SpanAttributeKey.CHAT_USAGE: summed into the trace's usage
MODEL_ATTRIBUTE = "mlflow.llm.model"  # what pricing looks up
STATUS_ATTRIBUTE = "http.response.status_code"  # OpenTelemetry's semantic convention
URL_ATTRIBUTE = "url.full"
_TRANSIENT_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Built:
    """A version ready to call: the callable, what it is (for the verdict) and a digest of its definition."""

    call: Callable[..., Any]
    identity: dict[str, Any] = field(default_factory=dict)
    digest: str = ""


class EndpointError(Exception):
    """A request that did not give an answer: an HTTP status, or no connection. ``transient`` ones are retried."""

    def __init__(self, message: str, status_code: int | None = None, headers: Any = None, transient: bool = False):
        super().__init__(message)
        self.status_code = status_code
        self.transient = transient or status_code in _TRANSIENT_STATUS
        self.response = _Response(headers) if headers is not None else None  # where RetryPolicy reads Retry-After


class EndpointUnreachableError(EndpointError):
    """No answer at all: refused, unresolvable, dropped or timed out (a circuit breaker's signal)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


@dataclass
class _Response:
    headers: Any


def missing_env(seat: VariantConfig, where: str) -> list[str]:
    """One line per ``${NAME}`` an endpoint's URL or headers name that is not set (checked before any call)."""
    if seat.http is None:
        return []
    return [
        f"{where}.http.{place}: names ${{{name}}}, which is not set in the environment; set it (a CI secret) or "
        "remove it"
        for place, name in seat.http.env_names()
        if name not in os.environ
    ]


def build_version(seat: VariantConfig, where: str, timeout_s: float) -> Built:
    """The callable of an ``http``, ``prompt`` or ``model`` version (``where`` names the seat in messages)."""
    if seat.http is not None:
        return _http_version(seat.http, where, timeout_s)
    if seat.model is not None or seat.prompt is not None:
        return _chat_version(seat.prompt, seat.model or ModelConfig(), where, timeout_s)
    raise ValueError(f"{where}: not an http, prompt or model version")


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -- http --------------------------------------------------------------------------------------------------------


def _http_version(config: HttpConfig, where: str, timeout_s: float) -> Built:
    import httpx2

    if problems := missing_env(VariantConfig(http=config), where):
        raise ConfigError(problems)
    url = expand_env(config.url)
    headers = {key: expand_env(value) for key, value in config.headers.items()}
    shown = redact_uri(config.url)  # as written in the config: ${NAME} placeholders, never their values
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}.http.url: '{shown}' is not an http:// or https:// URL once expanded")
    timeout = config.timeout_s or timeout_s
    client = httpx2.Client(
        timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=httpx2.Limits(max_connections=None, max_keepalive_connections=256),
        follow_redirects=False,
    )
    _probe(client, url, shown, where)
    span_name = f"{config.method} {parts.path or '/'}"

    def call(**inputs: Any) -> Any:
        import mlflow
        from mlflow.tracing import get_tracing_context_headers_for_http_request

        with mlflow.start_span(name=span_name, span_type="AGENT") as span:
            span.set_inputs(inputs)
            span.set_attribute(URL_ATTRIBUTE, shown)
            body = inputs if config.body is None else render(config.body, inputs)
            sent = {**headers, **get_tracing_context_headers_for_http_request()}
            try:
                response = client.request(config.method, url, json=body, headers=sent)
            except httpx2.TimeoutException:
                raise EndpointUnreachableError(f"{shown}: no answer within {timeout:g} s") from None
            except httpx2.TransportError as exc:
                raise EndpointUnreachableError(f"{shown}: {redact(_first_line(exc))}") from None
            span.set_attribute(STATUS_ATTRIBUTE, response.status_code)
            if not 200 <= response.status_code < 300:
                raise EndpointError(
                    f"{shown}: HTTP {response.status_code}: {redact(_first_line(response.text))[:200]}",
                    response.status_code,
                    response.headers,
                )
            answer = _json_or_text(response)
            _record_usage(span, answer)
            output = _pick(answer, config.output, shown)
            span.set_outputs(output)
            return output

    identity = {"kind": "http", "url": shown, "method": config.method}
    return Built(call, identity, _digest(config.model_dump(mode="json")))


def _probe(client: Any, url: str, shown: str, where: str) -> None:
    """Connect once before any call, so a wrong host or a closed port stops the run in seconds, naming the
    endpoint (exit 3), instead of every call failing in turn."""
    import socket

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=10.0).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RunError(f"{where}.http.url: cannot connect to {shown}: {reason}") from None


def _first_line(value: Any) -> str:
    text = str(value).strip().splitlines()
    return text[0] if text else type(value).__name__


def _json_or_text(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _record_usage(span: Any, answer: Any) -> None:
    """OpenAI-style ``usage`` (chat: prompt/completion tokens; responses: input/output tokens) as MLflow's."""
    if not isinstance(answer, dict) or not isinstance(answer.get("usage"), dict):
        return
    usage = answer["usage"]
    given_in = usage.get("prompt_tokens", usage.get("input_tokens"))
    given_out = usage.get("completion_tokens", usage.get("output_tokens"))
    if not isinstance(given_in, int) or not isinstance(given_out, int):
        return
    total = usage.get("total_tokens")
    span.set_attribute(
        USAGE_ATTRIBUTE,
        {
            "input_tokens": given_in,
            "output_tokens": given_out,
            "total_tokens": total if isinstance(total, int) else given_in + given_out,
        },
    )
    if isinstance(answer.get("model"), str):
        span.set_attribute(MODEL_ATTRIBUTE, answer["model"])


def _pick(answer: Any, path: str | None, shown: str) -> Any:
    """The value at ``path`` (``choices.0.message.content``) in the answer; the whole answer without a path."""
    if path is None:
        return answer
    value = answer
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise EndpointError(f"{shown}: the answer has no '{path}' (stopped at '{part}')")
    return value


# -- prompt and model ------------------------------------------------------------------------------------------------


def _chat_version(prompt_uri: str | None, model: ModelConfig, where: str, timeout_s: float) -> Built:
    from openai import OpenAI

    identity: dict[str, Any] = {"kind": "prompt" if prompt_uri else "model"}
    prompt = None
    name = model.name
    settings = model.settings()
    if prompt_uri is not None:
        prompt = _load_prompt(prompt_uri, f"{where}.prompt")
        identity |= {"prompt": prompt_uri, "prompt_version": int(prompt.version), "prompt_name": prompt.name}
        config = dict(getattr(prompt, "model_config", None) or {})
        name = name or config.get("model_name") or config.get("model")
        settings = {**_prompt_settings(config), **settings}  # the config's own settings win over the prompt's
        if name is None:
            raise ConfigError(
                f"{where}.model.name: prompt {prompt_uri} (version {prompt.version}) has no model_config naming its "
                "model; give model: {name: ...}"
            )
    identity["model"] = name
    api_key = os.environ.get(model.api_key_env)
    if api_key is None and model.base_url is None and "OPENAI_BASE_URL" not in os.environ:
        raise ConfigError(f"{where}.model.api_key_env: {model.api_key_env} is not set in the environment")
    client = OpenAI(base_url=model.base_url, api_key=api_key or "unused", timeout=timeout_s, max_retries=0)
    messages = [m.model_dump() for m in model.messages or []]
    pinned = f"prompts:/{prompt.name}/{prompt.version}" if prompt is not None else None

    def call(**inputs: Any) -> Any:
        import mlflow

        with mlflow.start_span(name=prompt.name if prompt is not None else "chat", span_type="CHAIN") as span:
            span.set_inputs(inputs)
            if pinned is not None:
                loaded = mlflow.genai.load_prompt(pinned, link_to_model=False)  # cached; links it to this trace
                chat = _as_messages(loaded.format(**inputs))
            else:
                chat = render(messages, inputs)
            response = client.chat.completions.create(model=str(name), messages=cast(Any, chat), **settings)
            answer = response.choices[0].message.content if response.choices else None
            span.set_outputs(answer)
            return answer

    definition = {**identity, "settings": settings, "messages": messages}
    if prompt is not None:
        definition["template"] = prompt.template
    return Built(call, identity, _digest(definition))


_PROMPT_SETTINGS = ("temperature", "max_tokens", "top_p", "frequency_penalty", "presence_penalty")


def _prompt_settings(config: dict[str, Any]) -> dict[str, Any]:
    """A registered prompt's model config (MLflow's ``PromptModelConfig``) as chat.completions parameters."""
    settings = {key: config[key] for key in _PROMPT_SETTINGS if config.get(key) is not None}
    if config.get("stop_sequences"):
        settings["stop"] = config["stop_sequences"]
    return {**settings, **(config.get("extra_params") or {})}


def _load_prompt(uri: str, where: str) -> Any:
    import mlflow.genai
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.genai.load_prompt(uri, link_to_model=False)
    except MlflowException as exc:
        raise RunError(f"{where}: {uri}: {_first_line(exc.message)}") from None


def _as_messages(formatted: Any) -> list[dict[str, Any]]:
    """A text prompt is one user message; a chat prompt is its messages."""
    if isinstance(formatted, str):
        return [{"role": "user", "content": formatted}]
    return [dict(m) for m in formatted]


# -- prompt pins for a Python target ---------------------------------------------------------------------------------


def pin_prompts(pins: dict[str, int | str]) -> None:
    """Make this process's ``mlflow.genai.load_prompt`` (and ``mlflow.load_prompt``) load the pinned version of
    each named prompt, whatever version or alias the app asks for; other prompts load as asked.

    A worker process holds one version, so the hook changes only that version. It is installed before the app is
    imported (an app that does ``from mlflow.genai import load_prompt`` gets the hooked one). MLflow has no public
    setting for this; the hook is the narrow one: one function, same signature, same result type.
    """
    import mlflow
    import mlflow.genai

    original = mlflow.genai.load_prompt

    def load_prompt(name_or_uri: str, version: str | int | None = None, **kwargs: Any) -> Any:
        match = PROMPT_URI.fullmatch(name_or_uri) if name_or_uri.startswith("prompts:/") else None
        name = match["name"] if match else name_or_uri
        if name in pins:
            return original(_pin_uri(name, pins[name]), **kwargs)
        return original(name_or_uri, version=version, **kwargs)

    mlflow.genai.load_prompt = load_prompt
    mlflow.load_prompt = load_prompt


def resolve_pins(pins: dict[str, int | str], where: str) -> dict[str, int]:
    """Each pinned prompt's version number, resolved once (an alias names one number for the whole run); a missing
    prompt, version or alias is a ``RunError`` naming it. Afterwards the pins hold the numbers."""
    resolved = {}
    for name, pin in pins.items():
        resolved[name] = int(_load_prompt(_pin_uri(name, pin), f"{where}.prompts.{name}").version)
    pins.update(resolved)
    return resolved


def _pin_uri(name: str, pin: int | str) -> str:
    return f"prompts:/{name}/{pin}" if isinstance(pin, int) else f"prompts:/{name}@{pin}"
