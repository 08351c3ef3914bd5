"""What must match for two sets of traces to be comparable: hashes of the dataset, the targets, the run settings,
the scorers and the code."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a worker process imports this module for code_digest and needs no config models
    from gate._config.dataset import Case
    from gate._config.schema import GateConfig

__all__ = ["code_digest", "fingerprint"]


def fingerprint(config: GateConfig, cases: list[Case]) -> dict[str, str]:
    """Hashes of what must match for two sets of traces to be comparable.

    The dataset hash covers case ids and inputs (what produced the traces), not expectations: those only feed
    scorers, and re-scoring with new expectations is what ``gate score`` is for.
    """

    def digest(value: Any) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]

    dataset = digest([[c.id, c.inputs] for c in cases])
    run = digest(config.run.model_dump(include={"timeout_s", "autolog"}))
    return {
        "dataset": dataset,
        "run": run,
        "baseline": digest([config.identity("baseline"), dataset, run]),
        "candidate": digest([config.identity("candidate"), dataset, run]),
        "scorers": digest([s.model_dump(mode="json") for s in config.scorers]),
    }


def code_digest(target: Any) -> str:
    """A hash of the target function's source, so a reused baseline is known to be the same code.

    Only the function itself: a change in what it calls (helpers, prompt files, packages) is not seen.
    """
    import inspect

    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):  # built-ins, C functions, some callables: fall back to the qualified name
        source = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', repr(target))}"
    return hashlib.sha256(source.encode()).hexdigest()[:16]
