"""Locating targets without importing them: same verdicts and messages as an import, and no app code runs."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

from gate._errors import ConfigError
from gate._targets import import_target, locate_target

_names = itertools.count()
EXPLODES = "raise RuntimeError('this module must not be imported')\n"


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", sys.path[:])


def write_module(folder: Path, source: str, package: str | None = None) -> str:
    """Write a uniquely named module (in a fresh package when ``package`` holds its ``__init__``); return its name."""
    name = f"gate_target_probe_{next(_names)}"
    if package is None:
        (folder / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        return name
    (folder / name).mkdir()
    (folder / name / "__init__.py").write_text(package, encoding="utf-8")
    (folder / name / "app.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return f"{name}.app"


def problem_of(call: object) -> str:
    with pytest.raises(ConfigError) as caught:
        call()  # type: ignore[operator]
    [problem] = caught.value.problems
    return problem


def test_a_defined_function_is_found_without_running_the_module(tmp_path: Path) -> None:
    name = write_module(tmp_path, EXPLODES + "def agent(question): ...\n")
    located = locate_target(f"{name}:agent", "t.yaml: baseline.target", [tmp_path])
    assert located.how == "static"
    assert name not in sys.modules


def test_a_module_in_a_package_is_found_without_running_the_package_init(tmp_path: Path) -> None:
    name = write_module(tmp_path, "async def agent(question): ...\n", package=EXPLODES)
    assert locate_target(f"{name}:agent", "w", [tmp_path]).how == "static"
    assert name.split(".")[0] not in sys.modules


@pytest.mark.parametrize(
    "source",
    [
        "class agent: ...\n",
        "agent = make_agent()\n",
        "from functools import partial as agent\n",
        "import agent\n",
        "try:\n    from fast import agent\nexcept ImportError:\n    def agent(q): ...\n",
        "if True:\n    agent: object = lambda q: q\n",
        "with open(__file__) as agent: ...\n",
        "first, *agent = make_pair()\n",
    ],
)
def test_every_top_level_binding_counts(tmp_path: Path, source: str) -> None:
    name = write_module(tmp_path, EXPLODES + source)
    assert locate_target(f"{name}:agent", "w", [tmp_path]).how == "static"


def test_a_method_of_a_class_is_found(tmp_path: Path) -> None:
    name = write_module(tmp_path, EXPLODES + "class Agent:\n    def answer(self, q): ...\n")
    assert locate_target(f"{name}:Agent.answer", "w", [tmp_path]).how == "static"


def test_a_missing_module_has_the_message_of_an_import(tmp_path: Path) -> None:
    where = "t.yaml: baseline.target"
    expected = problem_of(lambda: import_target("no_such_app_module:agent", where, [tmp_path]))
    assert problem_of(lambda: locate_target("no_such_app_module:agent", where, [tmp_path])) == expected
    assert expected == f"{where}: cannot import module 'no_such_app_module': No module named 'no_such_app_module'"


def test_a_missing_submodule_has_the_message_of_an_import(tmp_path: Path) -> None:
    package = write_module(tmp_path, "def agent(q): ...\n", package="").split(".")[0]
    spec = f"{package}.nope:agent"
    assert problem_of(lambda: locate_target(spec, "w", [tmp_path])) == problem_of(
        lambda: import_target(spec, "w", [tmp_path])
    )


def test_a_module_that_is_not_a_package_has_the_message_of_an_import(tmp_path: Path) -> None:
    name = write_module(tmp_path, "def agent(q): ...\n")
    spec = f"{name}.inner:agent"
    located = problem_of(lambda: locate_target(spec, "w", [tmp_path]))
    assert (
        located == f"w: cannot import module '{name}.inner': No module named '{spec[:-6]}'; '{name}' is not a package"
    )
    sys.modules.pop(name, None)
    assert located == problem_of(lambda: import_target(spec, "w", [tmp_path]))


def test_a_missing_function_has_the_message_of_an_import_and_runs_nothing(tmp_path: Path) -> None:
    name = write_module(tmp_path, "print('imported')\ndef agent(q): ...\n")
    located = problem_of(lambda: locate_target(f"{name}:agnet", "t.yaml: candidate.target", [tmp_path]))
    assert name not in sys.modules
    assert located == problem_of(lambda: import_target(f"{name}:agnet", "t.yaml: candidate.target", [tmp_path]))
    assert located == f"t.yaml: candidate.target: module '{name}' has no attribute 'agnet'"


def test_a_literal_is_not_callable(tmp_path: Path) -> None:
    name = write_module(tmp_path, "agent = 'not a function'\n")
    assert problem_of(lambda: locate_target(f"{name}:agent", "w", [tmp_path])) == f"w: '{name}:agent' is not callable"


def test_a_name_only_a_star_import_can_bind_is_imported_for_real(tmp_path: Path) -> None:
    provider = write_module(tmp_path, "def agent(q): ...\n")
    name = write_module(tmp_path, f"from {provider} import *\n")
    assert locate_target(f"{name}:agent", "w", [tmp_path]).how == "imported"


def test_a_name_bound_through_globals_is_imported_for_real(tmp_path: Path) -> None:
    name = write_module(tmp_path, "globals()['agent'] = len\n")
    assert locate_target(f"{name}:agent", "w", [tmp_path]).how == "imported"


def test_a_module_that_fails_to_parse_is_imported_and_reported_as_an_import_would(tmp_path: Path) -> None:
    name = write_module(tmp_path, "def agent(q):\n")
    assert "raised" in problem_of(lambda: locate_target(f"{name}:agent", "w", [tmp_path]))


def test_validate_and_dry_run_import_neither_the_app_nor_mlflow() -> None:
    probe = (
        "import contextlib, io, sys\n"
        "from gate._cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [main(['validate']), main(['run', '--dry-run', '--no-progress'])]\n"
        "heavy = ['mlflow', 'pandas', 'openai', 'jsonschema', 'numpy', 'examples.support_agents']\n"
        "print(codes, [m for m in heavy if m in sys.modules])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "[0, 0] []", done.stderr
