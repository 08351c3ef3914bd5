"""Unit tests for ``gate._config.dataset.load_cases``: file formats, paths, ids and their errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gate._config.dataset import Case, case_id_for, load_cases
from gate._config.schema import load_config
from gate._errors import ConfigError

HEAD: dict[str, Any] = {
    "version": 1,
    "baseline": {"target": "app:old_agent"},
    "candidate": {"target": "app:new_agent"},
    "checks": [{"metric": "error/rate", "at_most": 0}],
}


def project(folder: Path, files: dict[str, str] | None = None, **source: Any) -> Path:
    """Write a config with the given ``dataset=`` or ``cases=`` and extra files into ``folder``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (folder / name).write_text(text, encoding="utf-8")
    path = folder / "thresholds.yaml"
    path.write_text(yaml.safe_dump({**HEAD, **source}, sort_keys=False), encoding="utf-8")
    return path


def cases_of(config_path: Path) -> list[Case]:
    return load_cases(load_config(config_path), config_path)


def problems(config_path: Path) -> list[str]:
    config = load_config(config_path)
    with pytest.raises(ConfigError) as exc:
        load_cases(config, config_path)
    return exc.value.problems


# --- formats ----------------------------------------------------------------------------------------------------


def test_yaml_list_loads_every_field(tmp_path: Path) -> None:
    text = "- id: track\n  inputs: {question: 'Where is it?'}\n  expectations: {topic: shipping}\n  tags: [smoke]\n"
    path = project(tmp_path, {"cases.yaml": text}, dataset="cases.yaml")
    assert cases_of(path) == [Case("track", {"question": "Where is it?"}, {"topic": "shipping"}, ("smoke",))]


def test_yaml_mapping_with_cases_key_loads_the_list(tmp_path: Path) -> None:
    text = "cases:\n  - {id: a, inputs: {q: 1}}\n  - {id: b, inputs: {q: 2}}\n"
    path = project(tmp_path, {"cases.yaml": text}, dataset="cases.yaml")
    assert [case.id for case in cases_of(path)] == ["a", "b"]


def test_yaml_mapping_without_cases_key_is_rejected(tmp_path: Path) -> None:
    path = project(tmp_path, {"cases.yaml": "items: []\n"}, dataset="cases.yaml")
    assert problems(path) == [
        f"{(tmp_path / 'cases.yaml').resolve()}: expected a list of cases ({{id?, inputs, expectations?, tags?}}), "
        "got dict"
    ]


def test_jsonl_file_loads_one_case_per_line(tmp_path: Path) -> None:
    text = '{"id": "a", "inputs": {"q": 1}}\n{"id": "b", "inputs": {"q": 2}, "tags": ["x"]}\n'
    path = project(tmp_path, {"cases.jsonl": text}, dataset="cases.jsonl")
    assert cases_of(path) == [Case("a", {"q": 1}), Case("b", {"q": 2}, None, ("x",))]


def test_jsonl_blank_lines_are_skipped(tmp_path: Path) -> None:
    text = '\n{"id": "a", "inputs": {"q": 1}}\n   \n\n{"id": "b", "inputs": {"q": 2}}\n\n'
    path = project(tmp_path, {"cases.jsonl": text}, dataset="cases.jsonl")
    assert [case.id for case in cases_of(path)] == ["a", "b"]


def test_invalid_jsonl_line_reports_its_line_number_counting_blank_lines(tmp_path: Path) -> None:
    text = '{"id": "a", "inputs": {"q": 1}}\n\n{"id": "b", "inputs": {"q": 2}\n'
    path = project(tmp_path, {"cases.jsonl": text}, dataset="cases.jsonl")
    config = load_config(path)
    with pytest.raises(
        ConfigError, match=re.escape(f"{(tmp_path / 'cases.jsonl').resolve()}: line 3: not valid JSON: ")
    ):
        load_cases(config, path)


def test_invalid_yaml_dataset_is_one_line_naming_the_line(tmp_path: Path) -> None:
    path = project(tmp_path, {"cases.yaml": "- {id: a, inputs: {q: 1}}\n- [\n"}, dataset="cases.yaml")
    [line] = problems(path)
    assert re.fullmatch(
        re.escape(f"{(tmp_path / 'cases.yaml').resolve()}: line 3, column 1: not valid YAML: ") + ".*", line
    )


def test_inline_cases_are_loaded_with_their_fields(tmp_path: Path) -> None:
    inline = [{"id": "a", "inputs": {"q": 1}, "expectations": {"ok": True}, "tags": ["t"]}, {"inputs": {"q": 2}}]
    path = project(tmp_path, cases=inline)
    assert cases_of(path) == [Case("a", {"q": 1}, {"ok": True}, ("t",)), Case(case_id_for({"q": 2}), {"q": 2})]


# --- where the file is ------------------------------------------------------------------------------------------


def test_dataset_path_is_relative_to_the_config_folder_not_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = project(tmp_path / "project", {"cases.yaml": "- {id: from_project, inputs: {q: 1}}\n"}, dataset="cases.yaml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "cases.yaml").write_text("- {id: from_cwd, inputs: {q: 1}}\n", encoding="utf-8")
    monkeypatch.chdir(elsewhere)
    assert [case.id for case in cases_of(path)] == ["from_project"]


def test_relative_config_path_resolves_dataset_next_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project(tmp_path / "project", {"cases.yaml": "- {id: found, inputs: {q: 1}}\n"}, dataset="cases.yaml")
    monkeypatch.chdir(tmp_path)
    assert [case.id for case in cases_of(Path("project/thresholds.yaml"))] == ["found"]


def test_dataset_path_may_climb_out_of_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cases.yaml").write_text("- {id: shared, inputs: {q: 1}}\n", encoding="utf-8")
    path = project(tmp_path / "project", dataset="../data/cases.yaml")
    assert [case.id for case in cases_of(path)] == ["shared"]


def test_missing_dataset_file_names_the_resolved_path_and_the_rule(tmp_path: Path) -> None:
    path = project(tmp_path, dataset="nope.yaml")
    assert problems(path) == [
        f"{(tmp_path / 'nope.yaml').resolve()}: dataset file not found (paths are relative to the config file's folder)"
    ]


# --- empty ------------------------------------------------------------------------------------------------------


def test_empty_yaml_list_has_no_cases(tmp_path: Path) -> None:
    path = project(tmp_path, {"cases.yaml": "[]\n"}, dataset="cases.yaml")
    assert problems(path) == [f"{(tmp_path / 'cases.yaml').resolve()}: the dataset has no cases"]


def test_jsonl_of_blank_lines_has_no_cases(tmp_path: Path) -> None:
    path = project(tmp_path, {"cases.jsonl": "\n\n"}, dataset="cases.jsonl")
    assert problems(path) == [f"{(tmp_path / 'cases.jsonl').resolve()}: the dataset has no cases"]


def test_empty_inline_cases_has_no_cases(tmp_path: Path) -> None:
    path = project(tmp_path, cases=[])
    assert problems(path) == [f"{path}: cases: the dataset has no cases"]


def test_empty_yaml_file_has_no_cases(tmp_path: Path) -> None:
    path = project(tmp_path, {"cases.yaml": ""}, dataset="cases.yaml")
    assert problems(path) == [f"{(tmp_path / 'cases.yaml').resolve()}: the dataset has no cases"]


# --- invalid cases ----------------------------------------------------------------------------------------------


def test_case_missing_inputs_is_named_by_index(tmp_path: Path) -> None:
    path = project(tmp_path, {"cases.yaml": "- {id: a, inputs: {q: 1}}\n- {id: b}\n"}, dataset="cases.yaml")
    assert problems(path) == [f"{(tmp_path / 'cases.yaml').resolve()}: [1].inputs: required key is missing"]


def test_every_invalid_case_is_reported(tmp_path: Path) -> None:
    path = project(tmp_path, {"cases.yaml": "- {id: a}\n- {id: b, inputs: {q: 2}}\n- {id: c}\n"}, dataset="cases.yaml")
    source = (tmp_path / "cases.yaml").resolve()
    assert problems(path) == [
        f"{source}: [0].inputs: required key is missing",
        f"{source}: [2].inputs: required key is missing",
    ]


def test_inline_case_missing_inputs_is_reported_by_load_config(tmp_path: Path) -> None:
    path = project(tmp_path, cases=[{"id": "a"}])
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.problems == [f"{path}: cases[0].inputs: required key is missing"]


def test_misspelled_key_in_dataset_case_lists_valid_keys(tmp_path: Path) -> None:
    path = project(tmp_path, {"cases.yaml": "- {inputs: {q: 1}, tag: [x]}\n"}, dataset="cases.yaml")
    assert problems(path) == [
        f"{(tmp_path / 'cases.yaml').resolve()}: [0].tag: unknown key; "
        "valid keys here: id, inputs, expectations, tags, golden"
    ]


# --- ids --------------------------------------------------------------------------------------------------------


def test_duplicate_explicit_ids_name_both_indexes(tmp_path: Path) -> None:
    text = "- {id: a, inputs: {q: 1}}\n- {id: b, inputs: {q: 2}}\n- {id: a, inputs: {q: 3}}\n"
    path = project(tmp_path, {"cases.yaml": text}, dataset="cases.yaml")
    assert problems(path) == [
        f"{(tmp_path / 'cases.yaml').resolve()}: [2].id: duplicate case id 'a' (first at [0]); ids must be unique"
    ]


def test_duplicate_inline_ids_use_the_config_path_format(tmp_path: Path) -> None:
    path = project(tmp_path, cases=[{"id": "a", "inputs": {"q": 1}}, {"id": "a", "inputs": {"q": 2}}])
    assert problems(path) == [f"{path}: cases[1].id: duplicate case id 'a' (first at [0]); ids must be unique"]


def test_explicit_id_is_kept(tmp_path: Path) -> None:
    path = project(tmp_path, cases=[{"id": "refund-time", "inputs": {"q": 1}}])
    assert cases_of(path)[0].id == "refund-time"


def test_default_id_is_a_fixed_hash_of_the_inputs(tmp_path: Path) -> None:
    path = project(tmp_path, cases=[{"inputs": {"question": "How can I track my package?"}}])
    assert cases_of(path)[0].id == "941061fffbfd"  # sha256 of the canonical JSON; the same on every machine


def test_default_id_ignores_key_order(tmp_path: Path) -> None:
    first = project(
        tmp_path / "one", {"cases.yaml": "- inputs: {q: 1, user: {name: a, tier: gold}}\n"}, dataset="cases.yaml"
    )
    second = project(
        tmp_path / "two", {"cases.yaml": "- inputs: {user: {tier: gold, name: a}, q: 1}\n"}, dataset="cases.yaml"
    )
    assert cases_of(first)[0].id == cases_of(second)[0].id


def test_default_id_is_the_same_for_yaml_and_jsonl(tmp_path: Path) -> None:
    yaml_path = project(tmp_path / "yaml", {"cases.yaml": "- inputs: {q: hello}\n"}, dataset="cases.yaml")
    jsonl_path = project(tmp_path / "jsonl", {"cases.jsonl": '{"inputs": {"q": "hello"}}\n'}, dataset="cases.jsonl")
    assert cases_of(yaml_path)[0].id == cases_of(jsonl_path)[0].id


def test_default_ids_differ_for_different_inputs(tmp_path: Path) -> None:
    path = project(tmp_path, cases=[{"inputs": {"q": 1}}, {"inputs": {"q": 2}}])
    first, second = cases_of(path)
    assert first.id != second.id


def test_default_id_ignores_expectations_and_tags(tmp_path: Path) -> None:
    path = project(tmp_path, cases=[{"inputs": {"q": 1}, "expectations": {"x": 1}, "tags": ["t"]}])
    assert cases_of(path)[0].id == case_id_for({"q": 1})


def test_equal_inputs_without_ids_are_duplicates(tmp_path: Path) -> None:
    text = "- inputs: {q: 1, r: 2}\n- inputs: {r: 2, q: 1}\n"
    path = project(tmp_path, {"cases.yaml": text}, dataset="cases.yaml")
    assert problems(path) == [
        f"{(tmp_path / 'cases.yaml').resolve()}: [1].inputs: duplicate inputs (the same as [0]); give both cases an "
        "id if both are wanted"
    ]
