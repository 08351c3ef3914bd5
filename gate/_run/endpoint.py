"""Where the app's OpenAI client points: the real endpoint, or the built-in simulator switched in for the run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from gate._config.schema import GateConfig
from gate._secrets import redact_uri

__all__ = ["model_endpoint"]


@contextmanager
def model_endpoint(config: GateConfig, simulate: bool) -> Iterator[str]:
    """Point the app at the simulator when asked (before targets are imported); yield what to report."""
    if not simulate:
        yield redact_uri(os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"))
        return
    from gate.simulator import SimulatorSettings, running_simulator

    settings = SimulatorSettings(**config.simulator.model_dump())
    saved = {name: os.environ.get(name) for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    with running_simulator(settings) as base_url:
        os.environ["OPENAI_BASE_URL"] = base_url
        os.environ["OPENAI_API_KEY"] = "sk-simulated-no-real-key"
        try:
            yield "simulated"
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
