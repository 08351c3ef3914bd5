"""A validated config with its cases and both targets: imported (to run them) or only located (validate, dry run)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gate._config.dataset import Case, cases_from_rows, load_cases, validated_rows
from gate._config.schema import DEFAULT_TRACKING_URI, VARIANTS, GateConfig, Variant, load_config, require_run_parts
from gate._config.templating import input_names
from gate._errors import ConfigError
from gate._run.versions import missing_env
from gate._targets import Located, import_target, locate_target

__all__ = ["Prepared", "check_versions", "gather_cases", "prepare", "search_path"]


@dataclass(frozen=True)
class Prepared:
    """A validated config with its cases and imported targets, ready to run.

    ``targets`` is empty when ``prepare`` only located them; ``located`` then says where each was found.
    """

    config: GateConfig
    cases: list[Case]
    targets: dict[Variant, Callable[..., Any]]
    located: dict[Variant, Located] = field(default_factory=dict)


def search_path(config_path: Path) -> list[Path]:
    """Where targets and scorers are imported from: the config's folder first, then the working directory."""
    return [config_path.resolve().parent, Path.cwd()]


def prepare(config_path: Path, config: GateConfig | None = None, *, import_targets: bool = True) -> Prepared:
    """Validate the config, load the cases and import both targets (raises ``ConfigError``).

    With ``import_targets=False`` (``gate validate``, ``--dry-run``) the targets are only located, without running
    the app's code or importing MLflow (gate/_targets.py explains how); ``targets`` is then empty.
    """
    config = config or load_config(config_path)
    require_run_parts(config, config_path)  # gate compare needs neither targets nor a dataset; run does
    cases, _ = gather_cases(config, config_path, None)
    check_versions(config, cases, config_path)
    path = search_path(config_path)
    python = [v for v in VARIANTS if config.kind(v) == "target"]
    where = {v: f"{config_path}: {v}.target" for v in VARIANTS}
    if not import_targets:
        located = {v: locate_target(config.target(v) or "", where[v], path) for v in python}
        return Prepared(config, cases, {}, located)
    targets = {v: import_target(config.target(v) or "", where[v], path) for v in python}
    check_signatures(targets, cases, where)
    return Prepared(config, cases, targets)


def check_signatures(targets: dict[Variant, Callable[..., Any]], cases: list[Case], where: dict[Variant, str]) -> None:
    """Every case's inputs must fit each imported target's parameters (else every call would be a TypeError)."""
    import inspect

    problems = []
    for variant, target in targets.items():
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):  # a builtin or a C callable: nothing to check against
            continue
        for case in cases:
            try:
                signature.bind(**case.inputs)
            except TypeError as exc:
                keys = ", ".join(sorted(case.inputs)) or "none"
                problems.append(
                    f"{where[variant]}: {getattr(target, '__name__', 'the target')}{signature} cannot take the inputs "
                    f"of case '{case.id}' ({keys}): {exc}"
                )
                break  # one case per version says it
    if problems:
        raise ConfigError(problems)


def gather_cases(
    config: GateConfig, config_path: Path, tracking_uri: str | None
) -> tuple[list[Case], dict[str, Any] | None]:
    """The cases, wherever the config keeps them, and where they came from (for the verdict's ``dataset``).

    A file or inline list is read without MLflow; an MLflow evaluation dataset or a selection of stored traces is
    read from the tracking store (``tracking_uri``, else MLFLOW_TRACKING_URI, the config's, the default).
    """
    source = config.dataset
    if source is None or source.kind == "file":
        cases = load_cases(config, config_path)
        if source is None:
            return cases, {"kind": "inline", "cases": len(cases)}
        return cases, {"kind": "file", "path": source.file, "cases": len(cases)}
    from gate._store.store import prepare_environment, resolve_tracking_uri
    from gate._traces.cases import read_mlflow_dataset, read_trace_inputs

    prepare_environment()
    uri = resolve_tracking_uri(tracking_uri, config.tracking_uri, DEFAULT_TRACKING_URI)
    where = f"{config_path}: dataset"
    if source.kind == "mlflow":
        found = read_mlflow_dataset(source, uri, where)
    else:
        found = read_trace_inputs(source, uri, config.experiment, where)
    label = f"{where} ({source.kind} {source.mlflow or found.report.get('filter')})"
    problems: list[str] = []
    cases = cases_from_rows(validated_rows(found.rows, f"{label}: ", problems), label, f"{label}: ", problems)
    return cases, {**found.report, "cases": len(cases)}


def check_versions(config: GateConfig, cases: list[Case], config_path: Path) -> None:
    """What can be checked of an http, prompt or model version without calling it: every ``${NAME}`` it names is
    set, and every input its templates name is in every case (raises ``ConfigError``, exit 2)."""
    problems: list[str] = []
    for v in VARIANTS:
        seat = config.variant(v)
        if seat is None or seat.kind in (None, "target"):
            continue
        problems += missing_env(seat, f"{config_path}: {v}")
        templates = {
            "http.body": seat.http.body if seat.http else None,
            "model.messages": [m.content for m in seat.model.messages] if seat.model and seat.model.messages else None,
        }
        for place, template in templates.items():
            for name in sorted(input_names(template)):
                lacking = next((c for c in cases if name not in c.inputs), None)
                if lacking is not None:
                    keys = ", ".join(sorted(lacking.inputs)) or "none"
                    problems.append(
                        f"{config_path}: {v}.{place}: names input '{name}', which case '{lacking.id}' does not have "
                        f"(its inputs: {keys})"
                    )
    if problems:
        raise ConfigError(problems)
