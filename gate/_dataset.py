"""Load the cases of a gate: from a YAML or JSONL file, or inline; give each a stable, unique id."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gate._config import CaseConfig, GateConfig, describe_error, format_loc, read_yaml
from gate._errors import ConfigError

__all__ = ["Case", "case_id_for", "load_cases"]


@dataclass(frozen=True)
class Case:
    """One input to run through both versions."""

    id: str
    inputs: dict[str, Any]
    expectations: dict[str, Any] | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)
    golden: bool = False


def case_id_for(inputs: dict[str, Any]) -> str:
    """A stable id from the inputs: the same inputs give the same id on every machine."""
    canonical = json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _read_rows(path: Path) -> list[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: dataset file not found (paths are relative to the config file's folder)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read dataset: {exc}") from None
    if path.suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as exc:
                    raise ConfigError(f"{path}: line {number}: not valid JSON: {exc}") from None
        return rows
    data = read_yaml(path, text)
    if isinstance(data, dict) and "cases" in data:
        data = data["cases"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(
            f"{path}: expected a list of cases ({{id?, inputs, expectations?, tags?}}), got {type(data).__name__}"
        )
    return data


def load_cases(config: GateConfig, config_path: Path) -> list[Case]:
    """The config's cases, validated, with ids filled in and checked for uniqueness."""
    if config.cases is not None:
        source, prefix, parsed = f"{config_path}: cases", f"{config_path}: cases", list(config.cases)
    else:
        assert config.dataset is not None  # the config validator guarantees one of the two
        path = (config_path.parent / config.dataset).resolve()
        source, prefix = str(path), f"{path}: "
        parsed = []
        problems = []
        for index, row in enumerate(_read_rows(path)):
            try:
                parsed.append(CaseConfig.model_validate(row))
            except ValidationError as exc:
                for e in exc.errors():
                    where = format_loc((index, *e["loc"]))
                    problems.append(f"{prefix}{where}: {describe_error(e, list(CaseConfig.model_fields))}")
        if problems:
            raise ConfigError(problems)
    if not parsed:
        raise ConfigError(f"{source}: the dataset has no cases")
    cases: list[Case] = []
    first: dict[str, int] = {}
    problems = []
    for index, row in enumerate(parsed):
        case_id = row.id or case_id_for(row.inputs)
        if case_id in first:
            problems.append(
                f"{prefix}[{index}].id: duplicate case id '{case_id}' (first at [{first[case_id]}]); ids must be unique"
            )
        first.setdefault(case_id, index)
        cases.append(
            Case(
                case_id,
                dict(row.inputs),
                dict(row.expectations) if row.expectations else None,
                tuple(row.tags),
                row.golden,
            )
        )
    if problems:
        raise ConfigError(problems)
    return cases
