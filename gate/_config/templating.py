"""Templates in a config: a case's inputs into an HTTP body or chat messages, environment variables into headers.

One syntax for inputs, the double braces of MLflow's prompt registry (and of mustache, Jinja, promptfoo):
``{{ question }}`` or, to say where the value comes from, ``{{ inputs.question }}`` — the same thing. Only a
case's top-level input keys can be named; there is no logic (no filters, loops or conditions).

- A string that is exactly one placeholder becomes the input's value with its JSON type (a number stays a number,
  a list a list); anywhere else in a string the value is written in as text (JSON for anything but a string).
- Dicts and lists are rendered value by value; keys are never rendered.

Environment variables in ``url`` and ``headers`` are written ``${NAME}`` (the shell's and GitHub Actions' syntax),
expanded when the gate runs; their values never reach the verdict, the reports or the traces.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

__all__ = ["env_names", "expand_env", "input_names", "render"]

_PLACEHOLDER = re.compile(r"\{\{\s*(?:inputs\.)?([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_BRACES = re.compile(r"\{\{(.*?)\}\}")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def input_names(template: Any) -> set[str]:
    """The input keys a template names (raises ``ValueError`` for ``{{ ... }}`` that is not a plain name)."""
    names: set[str] = set()
    for text in _strings(template):
        for match in _BRACES.finditer(text):
            named = _PLACEHOLDER.fullmatch(match[0])
            if named is None:
                raise ValueError(
                    f"'{match[0]}' is not a placeholder this gate fills: write {{{{ name }}}} or "
                    "{{ inputs.name }}, with name a top-level key of the cases' inputs"
                )
            names.add(named[1])
    return names


def render(template: Any, inputs: dict[str, Any]) -> Any:
    """The template with every placeholder filled from ``inputs`` (``KeyError`` names a key the inputs lack)."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template.strip())
        if whole is not None:
            return inputs[whole[1]]
        return _PLACEHOLDER.sub(lambda m: _as_text(inputs[m[1]]), template)
    if isinstance(template, dict):
        return {key: render(value, inputs) for key, value in template.items()}
    if isinstance(template, list):
        return [render(value, inputs) for value in template]
    return template


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _strings(template: Any) -> list[str]:
    if isinstance(template, str):
        return [template]
    if isinstance(template, dict):
        return [s for value in template.values() for s in _strings(value)]
    if isinstance(template, list):
        return [s for value in template for s in _strings(value)]
    return []


def env_names(text: str) -> list[str]:
    """The environment variables ``${NAME}`` a string names."""
    return _ENV.findall(text)


def expand_env(text: str, environ: dict[str, str] | None = None) -> str:
    """``text`` with each ``${NAME}`` replaced by the variable's value (``KeyError`` names one that is not set)."""
    env = os.environ if environ is None else environ
    return _ENV.sub(lambda m: env[m[1]], text)
