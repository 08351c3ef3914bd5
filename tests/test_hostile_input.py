"""Hostile configs and datasets: each loads correctly or is a ``ConfigError`` of one-line problems, never a crash.

Hypothesis fuzzes ``load_config`` and ``load_cases`` with arbitrary YAML and JSONL (any types, any unicode, huge
numbers, deep nesting, raw bytes, YAML syntax soup) and with mutations of a valid config; fixed tests cover an alias
bomb, non-UTF-8 files, a 100,000-case dataset and case ids.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import subprocess
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gate._config.dataset import MAX_PROBLEMS, Case, case_id_for, load_cases
from gate._config.reader import MAX_ALIAS_EXPANSION, MAX_DEPTH
from gate._config.schema import GateConfig, load_config
from gate._errors import ConfigError

VALID: dict[str, Any] = {
    "version": 1,
    "experiment": "fuzz",
    "cases": [
        {"id": "a", "inputs": {"question": "Where is my parcel?"}, "expectations": {"contains": "track"}},
        {"inputs": {"question": "Refund?"}, "tags": ["money"], "golden": True},
    ],
    "baseline": {"target": "app:old_agent", "label": "v1"},
    "candidate": {"target": "app:new_agent"},
    "run": {"repeats": 2, "concurrency": 4, "timeout_s": 30},
    "checks": [
        {"metric": "latency_ms/p95", "max_increase_pct": 50},
        {"metric": "on_topic/rate", "at_least": 0.8, "severity": "warn"},
    ],
    "scorers": [
        {"name": "on_topic", "type": "contains"},
        {"name": "shape", "type": "regex", "pattern": "^[A-Z]"},
        {"name": "schema", "type": "json_schema", "schema": {"type": "object"}},
    ],
    "pricing": {"gpt-4o-mini": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}},
    "simulator": {"seed": 3, "error_rate": 0.1},
}
HEAD = {key: VALID[key] for key in ("version", "baseline", "candidate")} | {
    "checks": [{"metric": "error/rate", "at_most": 0}]
}

FUZZ = settings(
    max_examples=200,
    deadline=timedelta(seconds=5),  # one example; a hang or an exponential walk would blow it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # no .hypothesis/ folder in the work tree
)


# --- strategies ---------------------------------------------------------------------------------------------------


class Raw(str):
    """A scalar written into the YAML as is, plain: a huge integer, an impossible date, ``.nan``."""


class Dumper(yaml.SafeDumper):
    pass


def _represent_raw(dumper: yaml.SafeDumper, value: Raw) -> yaml.ScalarNode:
    return dumper.represent_scalar(dumper.resolve(yaml.ScalarNode, str(value), (True, False)), str(value))


Dumper.add_representer(Raw, _represent_raw)

RAW_SCALARS = [
    "9" * 5000,  # more digits than int() accepts
    "-" + "9" * 400,  # an int too big for a float
    "1e400",
    "-.inf",
    ".nan",
    "2024-13-45",  # looks like a date, is none
    "2024-02-30 10:00:00 +99:00",
    "0b1_0_1",
    "0x_",
    "010",  # YAML 1.1 octal: 8
    "1:30",  # YAML 1.1 sexagesimal: 90
    "~",
    "yes",
]
huge_ints = st.sampled_from([2**63, -(2**64), 10**300, 10**4000, -(10**4299)])
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)  # any unicode, control characters included
    | st.text(st.characters(codec=None, categories=["Cs", "Cc", "Zl", "Zp", "Co"]), max_size=5)  # surrogates too
    | st.sampled_from(RAW_SCALARS).map(Raw)
)
keys = st.text(max_size=12) | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
json_like = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=25,
)


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


class Deep:
    """Lists nested ``depth`` deep, put into the text as ``[[[...]]]`` only once it is written: a Python value that
    deep would make the YAML dumper, and Hypothesis printing a failing example, recurse too far."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __repr__(self) -> str:
        return f"Deep({self.depth})"

    def __str__(self) -> str:
        return f"DEEP{self.depth}DEEP"


def _represent_deep(dumper: yaml.SafeDumper, value: Deep) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", str(value))


Dumper.add_representer(Deep, _represent_deep)
deep_values = st.integers(min_value=MAX_DEPTH - 3, max_value=MAX_DEPTH + 300).map(Deep)
any_value = st.integers(0, 9).flatmap(lambda pick: deep_values if pick == 0 else json_like)  # 1 in 10 deep


def expand_deep(text: str) -> str:
    while (start := text.find("DEEP")) >= 0:
        end = text.index("DEEP", start + 4)
        depth = int(text[start + 4 : end])
        text = text[:start] + "[" * depth + "]" * depth + text[end + 4 :]
    return text


def to_yaml(value: Any) -> str:
    return expand_deep(yaml.dump(value, Dumper=Dumper, allow_unicode=True, sort_keys=False, width=10**6))


# Text that is mostly YAML syntax, so the parser's error paths (and anchors, aliases, tags, merges) are reached.
YAML_TOKENS = [
    *"[]{}:,-&*!|>'\"#%@`?~ \n\t\r",
    *("a", "b", "1", "1e9", "&a ", "*a", "<<: ", "\\x", "\\u", "\ufeff", "---\n", "...\n", "%YAML 1.1\n"),
    *("!!set ", "!!omap ", "!!pairs ", "!!binary ", "!!int ", "!!float ", "!!timestamp ", "!!bool ", "!!null "),
    *("!!merge ", "!!str ", "!!seq ", "!!map ", "!local ", "!<tag:yaml.org,2002:set> "),
]
yaml_soup = st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map("".join)


def paths_in(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a nested dict/list value, the root excluded."""
    out = []
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in children:
        out.append((*prefix, key))
        out.extend(paths_in(child, (*prefix, key)))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """``base`` with 1 to 3 edits: a value replaced by anything, a key deleted, a key added."""
    data = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        places = paths_in(data)
        place = draw(st.sampled_from(places)) if places else ()
        *parent_path, last = place or (None,)
        parent = data
        for part in parent_path:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not place or not isinstance(parent, (dict, list)):
            continue
        if action == "replace":
            parent[last] = draw(any_value)
        elif action == "delete":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(keys)] = draw(any_value)
        else:
            parent.append(draw(any_value))
    return data


# --- the property -------------------------------------------------------------------------------------------------


def assert_config_error(exc: ConfigError, *sources: Path | str) -> None:
    """Problems are non-empty, each one printable line naming one of ``sources``."""
    assert exc.problems
    for line in exc.problems:
        assert isinstance(line, str)
        assert "\n" not in line and "\r" not in line, line
        assert line.isprintable(), line
        assert line.startswith(tuple(str(source) for source in sources)), line


def config_outcome(path: Path) -> GateConfig | ConfigError:
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert_config_error(exc, path)
        return exc
    assert isinstance(config, GateConfig)
    return config


def dataset_outcome(config_path: Path, dataset: Path) -> list[Case] | ConfigError:
    config = load_config(config_path)
    try:
        cases = load_cases(config, config_path)
    except ConfigError as exc:
        assert_config_error(exc, dataset.resolve(), config_path)
        return exc
    ids = [case.id for case in cases]
    assert cases and all(isinstance(i, str) and i for i in ids) and len(set(ids)) == len(ids)
    return cases


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


def write_config(folder: Path, text: str | bytes) -> Path:
    path = folder / "thresholds.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return path


def dataset_project(folder: Path, name: str, content: str | bytes) -> tuple[Path, Path]:
    dataset = folder / name
    dataset.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return write_config(folder, yaml.safe_dump({**HEAD, "dataset": name})), dataset


def test_the_base_config_of_the_fuzzing_is_valid(folder: Path) -> None:
    assert isinstance(config_outcome(write_config(folder, yaml.safe_dump(VALID))), GateConfig)


# --- fuzzing the config -------------------------------------------------------------------------------------------


@FUZZ
@given(value=any_value)
def test_any_yaml_value_as_config_loads_or_is_a_config_error(folder: Path, value: Any) -> None:
    config_outcome(write_config(folder, to_yaml(value)))


@FUZZ
@given(data=mutated(VALID))
def test_a_mutated_valid_config_loads_or_is_a_config_error(folder: Path, data: Any) -> None:
    config_outcome(write_config(folder, to_yaml(data)))


@st.composite
def spliced(draw: st.DrawFn, text: str) -> str:
    """``text`` with 1 to 4 runs of YAML syntax put in at random places."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(yaml_soup) + text[at:]
    return text


@FUZZ
@given(text=yaml_soup | st.text(max_size=80) | spliced(yaml.safe_dump(VALID)), head=st.booleans())
def test_any_text_as_config_loads_or_is_a_config_error(folder: Path, text: str, head: bool) -> None:
    prefix = yaml.safe_dump(HEAD) if head else ""
    config_outcome(write_config(folder, prefix + text))


@FUZZ
@given(data=st.binary(max_size=200))
def test_any_bytes_as_config_load_or_are_a_config_error(folder: Path, data: bytes) -> None:
    config_outcome(write_config(folder, data))


SCHEMA_KEYWORDS = ["type", "properties", "items", "required", "enum", "const", "pattern", "format", "minimum"]
SCHEMA_KEYWORDS += ["$ref", "$defs", "allOf", "anyOf", "not", "uniqueItems", "patternProperties", "$schema", "$id"]
schemas = st.recursive(
    scalars | st.sampled_from(["object", "string", "regex", "#/$defs/x", "a{99999999999}", "(?P<a>", "[" * 500]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(SCHEMA_KEYWORDS), children),
    max_leaves=12,
)
regex_text = st.lists(st.sampled_from([*"()[]{}*+?|\\^$.a1,-:=!<>P#", "{99999999999}", "(?P<n>", "\\p"]), max_size=30)


# A json_schema's "pattern" of "[" * 500 makes jsonschema's re.compile warn; pytest would raise it. (The regex scorer's
# own pattern refuses such warnings as a config error: tests/test_scorers.py.)
@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")
@FUZZ
@given(
    schema=schemas,
    pattern=regex_text.map("".join),
    metric=st.text(max_size=12) | st.from_regex(r"\w+/p\d+", fullmatch=True),
)
def test_scorer_and_check_fields_that_run_code_load_or_are_a_config_error(
    folder: Path, schema: Any, pattern: str, metric: str
) -> None:
    scorers = [
        {"name": "schema", "type": "json_schema", "schema": schema},
        {"name": "shape", "type": "regex", "pattern": pattern},
    ]
    checks = [{"metric": metric, "at_most": 1}, {"metric": "shape/rate", "at_least": 0.5}]
    config_outcome(write_config(folder, to_yaml({**VALID, "scorers": scorers, "checks": checks})))


# --- fuzzing the dataset ------------------------------------------------------------------------------------------

CASE = {"id": "x", "inputs": {"q": "hello", "user": {"tier": "gold"}}, "expectations": {"k": 1}, "tags": ["t"]}


@FUZZ
@given(rows=st.lists(mutated(CASE) | any_value, max_size=4))
def test_any_yaml_dataset_loads_or_is_a_config_error(folder: Path, rows: list[Any]) -> None:
    config, dataset = dataset_project(folder, "cases.yaml", to_yaml(rows))
    dataset_outcome(config, dataset)


@FUZZ
@given(text=yaml_soup | spliced(yaml.safe_dump([CASE, {"inputs": {"q": [1, 2.5, None, True]}}])))
def test_any_text_as_yaml_dataset_loads_or_is_a_config_error(folder: Path, text: str) -> None:
    config, dataset = dataset_project(folder, "cases.yaml", text)
    dataset_outcome(config, dataset)


def json_line(value: Any) -> str:
    try:
        return expand_deep(json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError):  # keys JSON cannot hold, an int of over 4,300 digits
        return expand_deep(str(value))


@FUZZ
@given(
    lines=st.lists(
        mutated(CASE).map(json_line)
        | any_value.map(json_line)
        | st.text(max_size=30)
        | st.sampled_from(["", "  ", "{", '{"inputs": {"q": 1}, "inputs": {"q": 2}}', "[" * 5000, "\ufeff{}"])
        | st.sampled_from(['{"inputs": {"q": ' + "9" * 5000 + "}}", '{"inputs": {"\\ud800": 1e999}}', '{"id": 1}']),
        max_size=5,
    ),
    ending=st.sampled_from(["\n", "\r\n"]),
)
def test_any_jsonl_dataset_loads_or_is_a_config_error(folder: Path, lines: list[str], ending: str) -> None:
    config, dataset = dataset_project(folder, "cases.jsonl", "".join(line + ending for line in lines))
    dataset_outcome(config, dataset)


@FUZZ
@given(data=st.binary(max_size=200), suffix=st.sampled_from(["cases.yaml", "cases.jsonl"]))
def test_any_bytes_as_dataset_load_or_are_a_config_error(folder: Path, data: bytes, suffix: str) -> None:
    config, dataset = dataset_project(folder, suffix, data)
    dataset_outcome(config, dataset)


# --- crashes found by hand and by the fuzzing above, kept as examples -----------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("experiment: " + "9" * 5000, "an integer of more than 4,300 digits; quote it to keep it as text"),
        ("experiment: 2024-13-45", "cannot read '2024-13-45': month must be in 1..12"),
        ("experiment: 2024-01-01 10:00:00 +99:00", "cannot read '2024-01-01 10:00:00 +99:00': offset must be"),
        ("experiment: \x00", "line 1: not valid YAML: character #x0000 is not allowed"),
        ("experiment: " + "[" * 5000, f"nested deeper than {MAX_DEPTH} levels"),
        ("a: &a [*a]", "an alias refers to a value that contains it (a recursive alias)"),
        ("a: &a {b: *a}", "an alias refers to a value that contains it (a recursive alias)"),
        # an explicit tag the text does not fit: PyYAML raised IndexError, AttributeError, KeyError
        ("experiment: !!int ''", "line 1, column 13: not valid YAML: cannot read '': not a valid int"),
        ("experiment: !!float ''", "line 1, column 13: not valid YAML: cannot read '': not a valid float"),
        ("experiment: !!timestamp x", "line 1, column 13: not valid YAML: cannot read 'x': not a valid timestamp"),
        ("experiment: !!bool maybe", "line 1, column 13: not valid YAML: cannot read 'maybe': not a valid bool"),
        # the duplicate-key check of UniqueKeyLoader: ValueError on a scalar, TypeError on a set as a key
        ("!!set a", "line 1, column 1: not valid YAML: expected a mapping node, but found scalar"),
        ("!!set :", "line 1, column 1: not valid YAML: found unhashable key"),
    ],
)
def test_yaml_that_crashed_the_loader_is_a_config_error(folder: Path, text: str, message: str) -> None:
    path = write_config(folder, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert_config_error(exc.value, path)
    assert message in exc.value.problems[0]


def test_lone_surrogate_escape_in_yaml_is_a_config_error(folder: Path) -> None:
    path = write_config(folder, yaml.safe_dump(HEAD) + 'experiment: "ok \\ud83d\\ude00"\n')
    [line] = config_problems(path)
    assert line == (
        f"{path}: line {len(yaml.safe_dump(HEAD).splitlines()) + 1}, column 13: not valid YAML: a \\uD800-\\uDFFF "
        "escape is half of a UTF-16 pair, not a character (YAML does not join pairs); write the character itself, "
        "or \\U and 8 hex digits (\\U0001F600)"
    )
    text = yaml.safe_dump({k: v for k, v in VALID.items() if k != "experiment"}) + 'experiment: "ok \\U0001F600"\n'
    assert load_config(write_config(folder, text)).experiment == "ok 😀"


def test_lone_surrogate_escape_in_jsonl_is_a_config_error_and_a_pair_is_a_character(folder: Path) -> None:
    config, dataset = dataset_project(
        folder, "cases.jsonl", '{"inputs": {"q": "\\ud83d\\ude00"}}\n{"inputs": {"\\udc00": 1}}\n'
    )
    assert dataset_problems(config) == [
        f"{dataset.resolve()}: line 2: not valid JSON: a \\uD800-\\uDFFF escape without its other half is not a "
        "character; write the character itself"
    ]
    config, _ = dataset_project(folder, "cases.jsonl", '{"inputs": {"q": "\\ud83d\\ude00", "r": "\\\\ud800"}}\n')
    assert [case.inputs for case in load_cases(load_config(config), config)] == [{"q": "😀", "r": "\\ud800"}]


def test_value_with_a_newline_is_reported_on_one_line(folder: Path) -> None:
    path = write_config(folder, yaml.safe_dump({**VALID, "baseline": {"target": "a\nb"}, "x\ny": 1}))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert_config_error(exc.value, path)
    assert f"{path}: baseline.target: 'a\\nb' is not 'module:function'" in exc.value.problems[0]


def test_scorer_name_that_is_not_text_does_not_break_the_metric_check(folder: Path) -> None:
    data = {**VALID, "scorers": [{"name": 1, "type": "is_json"}], "checks": [{"metric": "x/mean", "at_most": 1}]}
    path = write_config(folder, yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert_config_error(exc.value, path)
    assert any("checks[0].metric: unknown metric 'x'" in line for line in exc.value.problems)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("a{99999999999}", "the repetition number is too large"), ("(" * 3000 + ")" * 3000, "too deeply nested")],
)
def test_regex_scorer_python_cannot_compile_names_the_scorer(folder: Path, pattern: str, reason: str) -> None:
    scorers = [{"name": "ok", "type": "is_json"}, {"name": "shape", "type": "regex", "pattern": pattern}]
    path = write_config(folder, yaml.safe_dump({**VALID, "scorers": scorers}))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == [f"{path}: scorers[1]: cannot be checked: {reason}"]


def test_key_of_another_type_is_named_as_a_key(folder: Path) -> None:
    path = write_config(
        folder, yaml.safe_dump({k: v for k, v in VALID.items() if k != "pricing"}) + "pricing: {1: 2}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert f"{path}: pricing[1] (the key): Input should be a valid string" in exc.value.problems


@pytest.mark.parametrize(
    "inputs",
    [
        {"q": {1: "a", "b": "c"}},  # keys JSON cannot sort together
        {"q": {__import__("datetime").date(2024, 1, 1): "a"}},  # a key JSON cannot hold
        {"q": "\ud800"},  # a lone surrogate, a valid escape in YAML and JSON
        {"q": {"x", "y", "z"}},  # !!set: str() of a set follows the hash seed
    ],
)
def test_hashed_id_of_yaml_only_inputs_is_stable(inputs: dict[str, Any]) -> None:
    assert case_id_for(inputs) == case_id_for(copy.deepcopy(inputs))
    assert len(case_id_for(inputs)) == 12


def test_hashed_id_of_a_set_does_not_depend_on_the_hash_seed() -> None:
    code = (
        "from gate._config.dataset import case_id_for; print(case_id_for({'q': {'alpha', 'beta', 'gamma', 'delta'}}))"
    )
    ids = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(ids) == 1


# --- alias bomb ---------------------------------------------------------------------------------------------------


def billion_laughs(levels: int = 9) -> str:
    """``lol0`` is ten strings; each next anchor is ten aliases of the one before: 10**levels values."""
    lines = ["lol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"lol{n}: &lol{n} [{', '.join([f'*lol{n - 1}'] * 10)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_in_the_config_is_a_config_error(folder: Path) -> None:
    # Walked by Pydantic (tags: list[str]) and by the id hash, 10**9 strings would take hours and all memory.
    bomb = billion_laughs() + yaml.safe_dump({**HEAD, "cases": [{"inputs": {"q": 1}}]})
    path = write_config(folder, bomb.replace("cases:\n- inputs:", "cases:\n- tags: *lol8\n  inputs:"))
    [line] = config_problems(path)
    assert re.fullmatch(
        re.escape(f"{path}: aliases (*name) expand the document by ")
        + r"(\d{1,3}(,\d{3}){3})"  # over a billion
        + re.escape(f" values, more than the limit of {MAX_ALIAS_EXPANSION:,} (a YAML alias bomb); ")
        + "write the values out or use fewer aliases",
        line,
    ), line


def test_alias_bomb_in_the_dataset_is_a_config_error(folder: Path) -> None:
    config, dataset = dataset_project(folder, "cases.yaml", billion_laughs() + "cases:\n- {inputs: {q: *lol8}}\n")
    [line] = dataset_problems(config)
    assert line.startswith(f"{dataset.resolve()}: aliases (*name) expand the document by "), line


def test_aliases_that_nest_too_deep_are_a_config_error(folder: Path) -> None:
    chain = "a0: &a0 [x]\n" + "".join(f"a{n}: &a{n} [*a{n - 1}]\n" for n in range(1, MAX_DEPTH + 5))
    path = write_config(folder, chain)
    with pytest.raises(ConfigError, match=f"aliases nest the data deeper than {MAX_DEPTH} levels"):
        load_config(path)


def test_a_few_aliases_of_shared_settings_still_load(folder: Path) -> None:
    text = (
        "version: 1\nbaseline: &agent {target: 'app:agent'}\ncandidate: *agent\n"
        "checks: [{metric: error/rate, at_most: 0}]\n"
        "cases:\n- {inputs: &in {q: same}, id: a}\n- {inputs: *in}\n"
    )
    config = load_config(write_config(folder, text))
    assert config.baseline == config.candidate
    assert [case.inputs for case in load_cases(config, folder / "thresholds.yaml")] == [{"q": "same"}] * 2


def test_alias_bomb_ends_fast_with_exit_2_and_no_traceback(folder: Path) -> None:
    """The whole CLI, in a subprocess with a hard time limit: no hang, no memory blow-up, no traceback."""
    (folder / "cli").mkdir(exist_ok=True)
    path = write_config(folder / "cli", billion_laughs(12) + yaml.safe_dump({**HEAD, "cases": [{"inputs": {}}]}))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "gate", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, "Traceback" in done.stderr) == (2, False), done.stderr
    assert "a YAML alias bomb" in done.stderr
    print(f"alias bomb (10**12 values): exit 2 in {time.perf_counter() - started:.2f}s, import included")


# --- not UTF-8 ----------------------------------------------------------------------------------------------------

UTF8_FIX = "the file must be UTF-8 (convert it, e.g. iconv -f latin1 -t utf-8)"
UTF16 = "the file is UTF-16 or UTF-32 (it starts with a byte-order mark); save it as UTF-8"


def test_latin1_config_names_line_column_and_byte(folder: Path) -> None:
    path = write_config(folder, (yaml.safe_dump(HEAD) + "experiment: café\n").encode("latin-1"))
    line = len(yaml.safe_dump(HEAD).splitlines()) + 1
    assert config_problems(path) == [f"{path}: line {line}, column 16: byte 0xe9 is not UTF-8; {UTF8_FIX}"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_config_says_to_save_as_utf8(folder: Path, encoding: str) -> None:
    text = yaml.safe_dump(VALID)
    path = write_config(folder, ("\ufeff" + text if encoding != "utf-16" else text).encode(encoding))
    assert config_problems(path) == [f"{path}: {UTF16}"]


def test_jsonl_first_line_with_a_multibyte_character_at_its_start_is_utf8(folder: Path) -> None:
    # the byte-order-mark test of line 1 once cut "日" in half and called the file not UTF-8
    config, dataset = dataset_project(folder, "cases.jsonl", '{"日": 1, "inputs": {}}\n')
    assert dataset_problems(config) == [
        f"{dataset.resolve()}: [0].日: unknown key; valid keys here: id, inputs, expectations, tags, golden"
    ]


def test_utf8_byte_order_mark_is_accepted_in_config_and_datasets(folder: Path) -> None:
    assert isinstance(load_config(write_config(folder, "\ufeff" + yaml.safe_dump(VALID))), GateConfig)
    for name, text in [("cases.yaml", "- {id: a, inputs: {q: 1}}\n"), ("cases.jsonl", '{"id": "a", "inputs": {}}\n')]:
        config, _ = dataset_project(folder, name, "\ufeff" + text)
        assert [case.id for case in load_cases(load_config(config), config)] == ["a"]


def config_problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return exc.value.problems


def dataset_problems(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_cases(load_config(config), config)
    return exc.value.problems


def test_latin1_yaml_dataset_names_the_dataset(folder: Path) -> None:
    config, dataset = dataset_project(folder, "cases.yaml", "- {id: a, inputs: {q: naïve}}\n".encode("latin-1"))
    assert dataset_problems(config) == [f"{dataset.resolve()}: line 1, column 25: byte 0xef is not UTF-8; {UTF8_FIX}"]


def test_latin1_jsonl_line_is_named(folder: Path) -> None:
    text = '{"id": "a", "inputs": {}}\n\n{"id": "b", "inputs": {"q": "Größe"}}\n'.encode("latin-1")
    config, dataset = dataset_project(folder, "cases.jsonl", text)
    assert dataset_problems(config) == [f"{dataset.resolve()}: line 3, column 32: byte 0xf6 is not UTF-8; {UTF8_FIX}"]


@pytest.mark.parametrize("name", ["cases.yaml", "cases.jsonl"])
def test_utf16_dataset_says_to_save_as_utf8(folder: Path, name: str) -> None:
    config, dataset = dataset_project(folder, name, '{"id": "a", "inputs": {}}\n'.encode("utf-16"))
    assert dataset_problems(config) == [f"{dataset.resolve()}: {UTF16}"]


# --- 100,000 cases ------------------------------------------------------------------------------------------------


def test_100k_case_jsonl_streams_in_bounded_memory(folder: Path) -> None:
    n = 100_000
    with (folder / "big.jsonl").open("w", encoding="utf-8") as out:
        for i in range(n):
            row: dict[str, Any] = {"inputs": {"question": f"Where is parcel {i}?", "user": f"u{i % 100}"}}
            if i % 2:  # half with explicit ids, half with hashed ones
                row["id"] = f"case-{i}"
                row["tags"] = ["smoke"]
            out.write(json.dumps(row) + "\n")
    config = load_config(write_config(folder, yaml.safe_dump({**HEAD, "dataset": "big.jsonl"})))
    tracemalloc.start()
    started = time.perf_counter()
    try:
        cases = load_cases(config, folder / "thresholds.yaml")
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ids = {case.id for case in cases}
    assert len(cases) == len(ids) == n
    assert cases[1] == Case("case-1", {"question": "Where is parcel 1?", "user": "u1"}, None, ("smoke",))
    file_mb = (folder / "big.jsonl").stat().st_size / 1e6
    print(f"100k JSONL ({file_mb:.1f} MB): peak {peak / 1e6:.0f} MB traced, {seconds:.1f}s with tracemalloc on")
    assert peak < 300e6


def test_yaml_dataset_of_thousands_of_cases_loads(folder: Path) -> None:
    # PyYAML in pure Python takes about half a millisecond per case: JSONL is the format for 100,000 cases.
    n = 2_000
    rows = [{"id": f"c{i}", "inputs": {"question": f"Where is parcel {i}?"}, "tags": ["a"]} for i in range(n)]
    config, _ = dataset_project(folder, "big.yaml", yaml.safe_dump(rows))
    cases = load_cases(load_config(config), config)
    assert [case.id for case in cases] == [f"c{i}" for i in range(n)]


def test_thousands_of_bad_rows_report_a_bounded_number_of_lines(folder: Path) -> None:
    config, dataset = dataset_project(folder, "bad.jsonl", '{"id": "same", "inputs": {}}\n' * 20_000)
    problems = dataset_problems(config)
    assert len(problems) == MAX_PROBLEMS + 1
    assert problems[0] == f"{dataset.resolve()}: [1].id: duplicate case id 'same' (first at [0]); ids must be unique"
    assert problems[-1] == f"{dataset.resolve()}: {20_000 - 1 - MAX_PROBLEMS:,} more problems not shown"


# --- ids ----------------------------------------------------------------------------------------------------------


def ids_of(folder: Path, name: str, text: str) -> list[str]:
    config, _ = dataset_project(folder, name, text)
    return [case.id for case in load_cases(load_config(config), config)]


def test_integer_ids_are_accepted_as_their_decimal_text(folder: Path) -> None:
    assert ids_of(folder, "cases.yaml", "- {id: 1, inputs: {}}\n- {id: 20, inputs: {}}\n") == ["1", "20"]
    assert ids_of(folder, "cases.jsonl", '{"id": 7, "inputs": {}}\n{"id": 12345678901234567890, "inputs": {}}\n') == [
        "7",
        "12345678901234567890",
    ]


def test_integer_id_and_the_same_text_are_duplicates(folder: Path) -> None:
    config, dataset = dataset_project(folder, "cases.yaml", "- {id: 1, inputs: {}}\n- {id: '1', inputs: {}}\n")
    assert dataset_problems(config) == [
        f"{dataset.resolve()}: [1].id: duplicate case id '1' (first at [0]); ids must be unique"
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("yes", "Input should be a valid string"),  # YAML 1.1 reads yes as true: not an id anyone meant
        ("1.50", "Input should be a valid string"),  # would read back as 1.5
        ("[a]", "Input should be a valid string"),
        ("''", "empty id; give a name, or leave the key out for an id hashed from the inputs"),
        ('"a\\tb"', "id 'a\\tb' holds a control character or a lone surrogate"),
    ],
)
def test_id_that_does_not_read_back_as_written_is_rejected(folder: Path, value: str, message: str) -> None:
    config, dataset = dataset_project(folder, "cases.yaml", f"- {{id: {value}, inputs: {{}}}}\n")
    assert dataset_problems(config) == [f"{dataset.resolve()}: [0].id: {message}"]


def test_missing_ids_are_hashed_and_equal_inputs_collide(folder: Path) -> None:
    text = '{"inputs": {"q": 1}}\n{"id": "x", "inputs": {"q": 1}}\n{"inputs": {"q": 1}}\n'
    config, dataset = dataset_project(folder, "cases.jsonl", text)
    assert dataset_problems(config) == [
        f"{dataset.resolve()}: [2].inputs: duplicate inputs (the same as [0]); give both cases an id if both are "
        "wanted"
    ]


def test_explicit_id_equal_to_another_cases_hash_is_a_duplicate(folder: Path) -> None:
    text = f'{{"inputs": {{"q": 1}}}}\n{{"id": "{case_id_for({"q": 1})}", "inputs": {{"q": 2}}}}\n'
    config, _ = dataset_project(folder, "cases.jsonl", text)
    assert dataset_problems(config)[0].endswith(
        f"[1].id: duplicate case id '{case_id_for({'q': 1})}' (first at [0]); ids must be unique"
    )


def test_repeated_key_in_a_jsonl_row_is_rejected_like_in_yaml(folder: Path) -> None:
    config, dataset = dataset_project(folder, "cases.jsonl", '{"id": "a", "inputs": {"q": 1, "q": 2}}\n')
    assert dataset_problems(config) == [f"{dataset.resolve()}: line 1: not valid JSON: duplicate key 'q'"]


def test_nan_and_infinity_in_jsonl_inputs_load(folder: Path) -> None:
    config, _ = dataset_project(folder, "cases.jsonl", '{"inputs": {"x": NaN, "y": -Infinity}}\n')
    [case] = load_cases(load_config(config), config)
    assert math.isnan(case.inputs["x"]) and case.inputs["y"] == -math.inf


def test_too_deep_jsonl_row_names_its_line(folder: Path) -> None:
    deep = json.dumps({"inputs": nested(MAX_DEPTH + 5)})
    config, dataset = dataset_project(folder, "cases.jsonl", '{"inputs": {}}\n' + deep + "\n")
    assert dataset_problems(config) == [
        f"{dataset.resolve()}: line 2: nested deeper than {MAX_DEPTH} levels; flatten the data"
    ]
