"""Load the cases of a gate: from a YAML or JSONL file, or inline; give each a stable, unique id.

A JSONL file is read line by line and each row becomes a ``Case`` as soon as it is read, so memory holds the cases
and one line, never the whole text nor a second copy of the rows: use JSONL for large datasets (100,000 cases load
in seconds). A YAML file is parsed whole, by PyYAML in pure Python: fine for thousands of cases, slow (about half a
millisecond per case) for hundreds of thousands.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gate._config.reader import MAX_DEPTH, SURROGATE, decode_utf8, format_loc, one_line, read_file, read_yaml
from gate._config.schema import CaseConfig, GateConfig, describe_error
from gate._errors import ConfigError

__all__ = ["EXPECTATION_PREFIXES", "Case", "case_id_for", "cases_from_rows", "csv_rows", "load_cases", "validated_rows"]

MAX_PROBLEMS = 100  # lines reported for one dataset; a broken 100,000-line file must not print 100,000 lines
_MISSING = "dataset file not found (paths are relative to the config file's folder)"


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
    try:
        canonical = json.dumps(inputs, sort_keys=True, ensure_ascii=False, default=_canonical)
    except TypeError:
        # YAML allows keys JSON cannot sort or hold ({1: a, b: c}, a date as a key): name every key as JSON would.
        # Only inputs that used to raise take this path, so no existing id changes.
        canonical = json.dumps(_text_keys(inputs), sort_keys=True, ensure_ascii=False, default=_canonical)
    # surrogatepass: a lone surrogate ("\ud800" is a valid escape in YAML and JSON) still hashes, to the same id
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _canonical(value: Any) -> Any:
    """How ``json.dumps`` writes what JSON has no type for (YAML dates, !!set, !!binary)."""
    if isinstance(value, (set, frozenset)):  # str() of a set follows the hash seed: sort it to be the same everywhere
        return sorted(map(str, value))
    return str(value)


def _text_keys(value: Any) -> Any:
    """``value`` with every mapping key as text (an iterative walk would be longer; depth is capped at MAX_DEPTH)."""
    if isinstance(value, dict):
        return {k if isinstance(k, str) else json.dumps(k, default=str): _text_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_text_keys(v) for v in value]
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object that repeats a key is an error, as in YAML (json.loads would silently keep the last value)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {one_line(repr(key), 80)}")
            seen.add(key)
    return result


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)  # one for all lines: json.loads would make one per line


def _too_deep(value: Any, limit: int) -> bool:
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def _has_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, row) for every non-blank line, one line in memory at a time."""
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {_MISSING}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read dataset: {one_line(str(exc))}") from None
    with stream:
        number = 0
        try:
            for number, raw in enumerate(stream, start=1):
                line = _decode_line(path, number, raw)
                if not line.strip():
                    continue
                try:
                    row = _DECODER.decode(line)
                except RecursionError:
                    raise ConfigError(f"{path}: line {number}: nested deeper than {MAX_DEPTH} levels") from None
                except ValueError as exc:  # JSONDecodeError, a duplicate key, an integer of over 4,300 digits
                    raise ConfigError(f"{path}: line {number}: not valid JSON: {one_line(str(exc), 200)}") from None
                if "\\u" in line and _has_surrogate(row):  # only a \ud800 escape makes one: test those lines only
                    raise ConfigError(
                        f"{path}: line {number}: not valid JSON: a \\uD800-\\uDFFF escape without its other half "
                        "is not a character; write the character itself"
                    )
                # cheap test first: a row can only be that deep if it has that many brackets
                if line.count("[") + line.count("{") > MAX_DEPTH and _too_deep(row, MAX_DEPTH):
                    raise ConfigError(f"{path}: line {number}: nested deeper than {MAX_DEPTH} levels; flatten the data")
                yield number, row
        except OSError as exc:
            raise ConfigError(f"{path}: line {number + 1}: cannot read dataset: {one_line(str(exc))}") from None


def _decode_line(path: Path, number: int, raw: bytes) -> str:
    if number == 1:
        if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as some Windows editors write
            raw = raw[3:]
        else:
            return decode_utf8(path, raw)  # a UTF-16 byte-order mark gets its own message
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: line {number}, column {exc.start + 1}: byte 0x{raw[exc.start]:02x} is not UTF-8; "
            "the file must be UTF-8 (convert it, e.g. iconv -f latin1 -t utf-8)"
        ) from None


EXPECTATION_PREFIXES = ("expected_", "expectations.")  # a CSV column holding an expectation, not an input
_CSV_MEANINGS = {"id", "tags", "golden"}
_TRUE, _FALSE = {"true", "yes", "1", "y"}, {"false", "no", "0", "n", ""}


def csv_rows(path: Path, columns: Mapping[str, str], problems: list[str]) -> Iterator[dict[str, Any]]:
    """Rows of a CSV file (RFC 4180: quoted commas, newlines and quotes in cells) as case dicts.

    A header row names the columns: ``id``, ``tags`` (separated by ``;``) and ``golden`` (true/false) keep their
    meaning; a column named ``expected_X`` or ``expectations.X`` is the expectation ``X``; every other column is an
    input. Every value is a string unless ``columns`` gives the column a type (integer, number, boolean, json). An
    empty cell is an empty string for a string input, and no value for an expectation (labels may be sparse) or a
    typed column. A row with more or fewer cells than the header is an error naming its row.
    """
    import csv

    text = read_file(path, _MISSING)
    reader = csv.reader(text.splitlines(keepends=True))
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise ConfigError(f"{path}: row 1: not valid CSV: {exc}") from None
    header = [name.strip() for name in header]
    if header:
        header[0] = header[0].removeprefix("\ufeff")  # the byte-order mark spreadsheets write
    if dupes := sorted({n for n in header if header.count(n) > 1}):
        raise ConfigError(f"{path}: row 1: column {', '.join(repr(d) for d in dupes)} appears twice")
    if "" in header:
        raise ConfigError(f"{path}: row 1: column {header.index('') + 1} has no name")
    if unknown := sorted(set(columns) - set(header)):
        raise ConfigError(f"{path}: dataset.columns names {', '.join(unknown)}, not a column of the file")
    row_number = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ConfigError(f"{path}: row {row_number + 1}: not valid CSV: {exc}") from None
        row_number = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue  # a blank line
        if len(cells) != len(header):
            count = f"{len(cells)} cell{'s' if len(cells) != 1 else ''}"
            problems.append(f"{path}: row {row_number}: {count}, the header has {len(header)} columns")
            continue
        row: dict[str, Any] = {"inputs": {}}
        for name, cell in zip(header, cells, strict=True):
            try:
                value = _typed(cell, columns.get(name, "string"))
            except ValueError as exc:
                problems.append(f"{path}: row {row_number}: column '{name}': {exc}")
                continue
            expectation = next((name[len(p) :] for p in EXPECTATION_PREFIXES if name.startswith(p)), None)
            if name == "id":
                if cell.strip():
                    row["id"] = cell
            elif name == "tags":
                row["tags"] = [t.strip() for t in cell.split(";") if t.strip()]
            elif name == "golden":
                if cell.strip().lower() not in _TRUE | _FALSE:
                    problems.append(f"{path}: row {row_number}: column 'golden': '{cell}' is not true or false")
                row["golden"] = cell.strip().lower() in _TRUE
            elif expectation is not None:
                if value is not None and cell != "":
                    row.setdefault("expectations", {})[expectation] = value
            else:
                row["inputs"][name] = value  # None for an empty cell of a typed column: the input is null
        yield row


def _typed(cell: str, kind: str) -> Any:
    if kind == "string":
        return cell
    if not cell.strip():
        return None
    try:
        if kind == "integer":
            return int(cell)
        if kind == "number":
            return float(cell)
        if kind == "json":
            return json.loads(cell)
    except ValueError:
        raise ValueError(f"'{one_line(cell, 60)}' is not {'an' if kind == 'integer' else 'a'} {kind}") from None
    if cell.strip().lower() in _TRUE:
        return True
    if cell.strip().lower() in _FALSE:
        return False
    raise ValueError(f"'{one_line(cell, 60)}' is not a boolean (true/false)")


def _yaml_rows(path: Path) -> list[Any]:
    data = read_yaml(path, read_file(path, _MISSING))
    if isinstance(data, dict) and "cases" in data:
        data = data["cases"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError(
            f"{path}: expected a list of cases ({{id?, inputs, expectations?, tags?}}), got {type(data).__name__}"
        )
    return data


def _validated(rows: Iterable[Any], prefix: str, problems: list[str]) -> Iterator[tuple[int, CaseConfig]]:
    """Each row that is a valid case, with its index; the problems of the others are appended to ``problems``."""
    fields = list(CaseConfig.model_fields)
    for index, row in enumerate(rows):
        try:
            yield index, CaseConfig.model_validate(row)
        except ValidationError as exc:
            for e in exc.errors():
                problems.append(f"{prefix}{format_loc((index, *e['loc']))}: {describe_error(e, fields)}")


def load_cases(config: GateConfig, config_path: Path) -> list[Case]:
    """The config's cases from a file or inline, validated, with ids filled in and checked for uniqueness.

    A dataset in MLflow (an evaluation dataset, stored traces) is read by ``gate._traces.cases``, whose rows come
    back through ``cases_from_rows``.
    """
    problems: list[str] = []
    if config.cases is not None:
        source, prefix = f"{config_path}: cases", f"{config_path}: cases"
        return cases_from_rows(enumerate(config.cases), source, prefix, problems)
    assert config.dataset is not None and config.dataset.file is not None  # the config validator's guarantee
    path = (config_path.parent / config.dataset.file).resolve()
    source, prefix = str(path), f"{path}: "
    if path.suffix.lower() == ".csv":
        return cases_from_rows(_validated(csv_rows(path, config.dataset.columns, problems), prefix, problems),
                               source, prefix, problems, labels=_row_labels)  # fmt: skip
    rows: Iterable[Any] = (row for _, row in _jsonl_rows(path)) if path.suffix == ".jsonl" else _yaml_rows(path)
    return cases_from_rows(_validated(rows, prefix, problems), source, prefix, problems)


def validated_rows(rows: Iterable[Any], prefix: str, problems: list[str]) -> Iterator[tuple[int, CaseConfig]]:
    """Rows (``{id?, inputs, expectations?, tags?, golden?}``) validated as cases; problems are appended."""
    return _validated(rows, prefix, problems)


def _row_labels(index: int) -> str:
    return f"row {index + 2}"  # a CSV file's row: the header is row 1


def cases_from_rows(
    parsed: Iterable[tuple[int, CaseConfig]],
    source: str,
    prefix: str,
    problems: list[str],
    labels: Any = None,
) -> list[Case]:
    """Cases from validated rows: ids filled in (a hash of the inputs when none is given), duplicates refused."""

    def where(index: int) -> str:
        return f"{prefix}{labels(index)}: " if labels else f"{prefix}[{index}]."

    cases: list[Case] = []
    first: dict[str, int] = {}
    count = 0
    for index, row in parsed:
        count += 1
        # An explicit id is used as given; without one, the id is a hash of the inputs, so two cases with equal
        # inputs and no ids are duplicates too (give them ids if both are wanted).
        case_id = row.id or case_id_for(row.inputs)
        if case_id in first:
            earlier = labels(first[case_id]) if labels else f"[{first[case_id]}]"
            if row.id is None:
                problems.append(
                    f"{where(index)}inputs: duplicate inputs (the same as {earlier}); give both cases an id if both "
                    "are wanted"
                )
            else:
                problems.append(
                    f"{where(index)}id: duplicate case id '{one_line(case_id, 200)}' (first at {earlier}); "
                    "ids must be unique"
                )
            continue
        first[case_id] = index
        if not problems:  # once the load has failed, keep only what finds further problems
            cases.append(
                Case(
                    case_id,
                    dict(row.inputs),
                    dict(row.expectations) if row.expectations else None,
                    tuple(row.tags),
                    row.golden,
                )
            )
    if len(problems) > MAX_PROBLEMS:
        problems[MAX_PROBLEMS:] = [f"{source}: {len(problems) - MAX_PROBLEMS:,} more problems not shown"]
    if problems:
        raise ConfigError(problems)
    if not count:
        raise ConfigError(f"{source}: the dataset has no cases")
    return cases
