"""The kinds of version ``gate run`` can call besides a Python function: an HTTP endpoint, a prompt-registry
version sent to a model, or chat messages and a model given inline (docs/versions.md)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from gate._config.base import STRICT
from gate._config.templating import env_names, input_names

__all__ = ["PROMPT_URI", "HttpConfig", "MessageConfig", "ModelConfig", "check_prompt_uri"]

# prompts:/name/3 or prompts:/name@alias: MLflow's prompt URIs (mlflow.genai.load_prompt)
PROMPT_URI = re.compile(r"^prompts:/(?P<name>[^/@\s]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_\-]+))$")


def check_prompt_uri(value: str) -> str:
    if not PROMPT_URI.fullmatch(value):
        raise ValueError(
            f"'{value}' is not a prompt-registry URI: write prompts:/NAME/VERSION (prompts:/support/4) or "
            "prompts:/NAME@ALIAS (prompts:/support@production)"
        )
    return value


def _templated(value: Any) -> Any:
    input_names(value)  # raises ValueError naming a placeholder this gate cannot fill
    return value


class _Strict(BaseModel):
    model_config = STRICT


class HttpConfig(_Strict):
    """A deployed version: each call is one request to ``url``, and one trace recorded by the gate."""

    url: str = Field(description="http(s)://…; ${NAME} is replaced by an environment variable when the gate runs")
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = Field({}, description="values may name environment variables: 'Bearer ${TOKEN}'")
    body: Any = Field(None, description="a JSON template: {{ inputs.key }} placeholders (default: the inputs)")
    output: str | None = Field(
        None, description="the answer's path in the JSON response, e.g. answer or choices.0.message.content"
    )
    timeout_s: float | None = Field(None, gt=0, description="per request (default: run.timeout_s)")
    server_spans: Literal["auto", "required", "off"] = Field(
        "auto",
        description="the server's own spans joined into the gate's traces (traceparent): auto = if any trace of "
        "a version has them, every trace must; required = every trace must; off = not checked",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^(https?://|\$\{)", value):
            raise ValueError(f"'{value}' is not an http:// or https:// URL")
        return value

    @field_validator("body")
    @classmethod
    def _body(cls, value: Any) -> Any:
        return _templated(value)

    @field_validator("output")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(not part for part in value.split("."))):
            raise ValueError(f"'{value}' is not a path like answer or choices.0.message.content")
        return value

    def env_names(self) -> list[tuple[str, str]]:
        """(where, variable) for every ``${NAME}`` in the URL and the headers."""
        found = [("url", name) for name in env_names(self.url)]
        return found + [(f"headers.{key}", name) for key, value in self.headers.items() for name in env_names(value)]


class MessageConfig(_Strict):
    """One chat message; ``content`` may hold ``{{ name }}`` placeholders filled from the case's inputs."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str

    @field_validator("content")
    @classmethod
    def _content(cls, value: str) -> str:
        return str(_templated(value))


class ModelConfig(_Strict):
    """A model and its settings, for a ``prompt`` version, or with ``messages`` a version of its own."""

    name: str | None = Field(
        None, min_length=1, description="the model, e.g. gpt-4o-mini (prompt: default the prompt's model_config)"
    )
    messages: list[MessageConfig] | None = Field(None, min_length=1, description="without a prompt: the chat")
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    params: dict[str, Any] = Field({}, description="any other chat.completions parameter, passed as given")
    base_url: str | None = Field(
        None, description="an OpenAI-compatible endpoint (default: OPENAI_BASE_URL; --simulate replaces it)"
    )
    api_key_env: str = Field("OPENAI_API_KEY", description="the environment variable holding the API key")

    @field_validator("params")
    @classmethod
    def _not_the_named_ones(cls, value: dict[str, Any]) -> dict[str, Any]:
        if clash := sorted(set(value) & {"model", "messages", "temperature", "max_tokens", "top_p", "stream"}):
            raise ValueError(f"{', '.join(clash)}: set these as keys of 'model' (stream is not supported)")
        return value

    @model_validator(mode="after")
    def _named_when_alone(self) -> ModelConfig:
        if self.messages is not None and self.name is None:
            raise ValueError("'name' is required with 'messages' (the model to send them to, e.g. gpt-4o-mini)")
        return self

    def settings(self) -> dict[str, Any]:
        """The chat.completions parameters besides model and messages."""
        given = {"temperature": self.temperature, "max_tokens": self.max_tokens, "top_p": self.top_p}
        return {**{k: v for k, v in given.items() if v is not None}, **self.params}
