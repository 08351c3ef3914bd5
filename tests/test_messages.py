"""Accurate advice: messages that used to point at the wrong thing (issue 16's "misleading advice")."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gate._cli import main

CONFIG = {
    "version": 1,
    "cases": [{"inputs": {"q": 1}}],
    "baseline": {"target": "app:f"},
    "candidate": {"target": "app:f"},
    "checks": [{"metric": "error/rate", "at_most": 0}],
}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr("sys.argv", ["gate", *argv])
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_an_unknown_flag_names_the_commands_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = run(capsys, monkeypatch, "run", "--bogus")
    assert code == 2
    assert "ConfigError: usage: unrecognized arguments: --bogus (see 'gate run --help')" in err


def test_a_selector_flag_lists_the_selectors_keys(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = run(
        capsys, monkeypatch, "compare", "-c", str(config), "--baseline", "bogus=1", "--candidate", "session=x"
    )
    assert code == 2
    assert (
        "ConfigError: --baseline.bogus: unknown key; valid keys here: experiment, session, variant, run_id, model_id, "
        "trace_name, since, until, max_traces, tag.KEY, metadata.KEY"
    ) in err


def test_a_bad_since_names_the_flag_once(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = run(
        capsys, monkeypatch, "compare", "-c", str(config), "--baseline", "trace_name=a", "--candidate",
        "trace_name=b", "--since", "yesterday",
    )  # fmt: skip
    assert code == 2
    assert (
        "ConfigError: --since: 'yesterday' is neither a duration (30m, 1h, 2d, 1w: that long ago) nor an ISO 8601 "
        "timestamp (2026-11-26T09:00:00Z)"
    ) in err


def test_gate_score_refuses_a_session_id_that_is_not_one_with_exit_2(
    config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, err = run(capsys, monkeypatch, "score", "-c", str(config), "--session", "x' OR '1'='1")
    assert code == 2
    assert "ConfigError: usage: --session \"x' OR '1'='1\": use letters, digits, '.', '_' and '-' (≤ 100)" in err


def test_validate_import_refuses_inputs_the_target_cannot_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "signature_app.py").write_text("def answer(query: str) -> str:\n    return query\n")
    path = tmp_path / "thresholds.yaml"
    config = {**CONFIG, "baseline": {"target": "signature_app:answer"}, "candidate": {"target": "signature_app:answer"}}
    config["cases"] = [{"id": "q0", "inputs": {"question": "hi"}}]
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    code, err = run(capsys, monkeypatch, "validate", "--import", "-c", str(path))
    assert code == 2
    assert (
        f"ConfigError: {path}: baseline.target: answer(query: str) -> str cannot take the inputs of case 'q0' "
        "(question): missing a required argument: 'query'"
    ) in err
