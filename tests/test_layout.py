"""The package's layout, read from its imports: one folder per stage, imports only run downwards, no cycles.

docs/design/architecture.md explains the stages; this test is what keeps the tree true to it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import gate

ROOT = Path(gate.__file__).parent

# Stages, lowest first: a module may import from its own stage or any stage below it, never above.
STAGES: list[tuple[str, ...]] = [
    ("gate._version", "gate._errors", "gate._secrets", "gate._json", "gate._metrics", "gate._targets"),
    ("gate.simulator",),
    ("gate.scorers",),
    ("gate._config",),
    ("gate._store",),
    ("gate._traces",),
    ("gate._decide",),
    ("gate._run",),
    ("gate._verdict",),
    ("gate.reporters",),
    ("gate._commands",),
    ("gate._cli", "gate.__main__"),
    ("gate",),  # the package itself: the public API, re-exported lazily
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> int:
    best = -1, -1  # (length of the matching prefix, stage)
    for index, prefixes in enumerate(STAGES):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[0]:
                best = len(prefix), index
    if best[1] < 0:
        raise AssertionError(f"{module} belongs to no stage: add it to STAGES and to docs/design/architecture.md")
    return best[1]


def is_module(name: str) -> bool:
    relative = Path(*name.split(".")[1:])
    return (ROOT / relative).with_suffix(".py").exists() or (ROOT / relative / "__init__.py").exists()


def imports_of(path: Path) -> list[tuple[str, str | None, int]]:
    """(module imported, name imported from it or None, line) for every ``gate`` import, lazy ones included."""
    found: list[tuple[str, str | None, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "gate"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gate":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if is_module(full):  # `from gate.scorers import _models`: the submodule itself
                    found.append((full, None, node.lineno))
                else:
                    found.append((node.module, alias.name, node.lineno))
    return found


def graph() -> dict[str, list[tuple[str, str | None, int]]]:
    return {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def test_every_module_belongs_to_a_stage() -> None:
    for module in graph():
        stage_of(module)


def test_imports_only_run_down_the_stages() -> None:
    upward = [
        f"{module} (stage {stage_of(module)}) imports {target} (stage {stage_of(target)}) at line {line}"
        for module, targets in graph().items()
        for target, _, line in targets
        if module != "gate" and stage_of(target) > stage_of(module)
    ]
    assert upward == []


def test_the_import_graph_has_no_cycle() -> None:
    edges = {m: {t for t, _, _ in targets if t != m} for m, targets in graph().items()}
    # a package's __init__ importing its own submodules is not a cycle of the layering
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in edges.items()}
    state: dict[str, int] = {}
    path: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


def test_no_module_imports_a_private_name_of_another_module() -> None:
    private = [
        f"{module}: line {line} imports {name} from {target}"
        for module, targets in graph().items()
        for target, name, line in targets
        if name is not None and name.startswith("_") and name != "__version__"
    ]
    assert private == []


def test_no_type_ignore_at_a_seam() -> None:
    """Where one stage hands data to another, the types must say what flows: no ``type: ignore`` on a gate import
    or on a call into another gate module (ignores around MLflow's and PyYAML's untyped internals stay)."""
    offenders = []
    for path in ROOT.rglob("*.py"):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "type: ignore" in line and ("from gate" in line or "gate." in line.split("#")[0]):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{number}")
    assert offenders == []


def test_the_stage_check_catches_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: an import from the pure decisions into the runner is reported."""
    module = tmp_path / "probe.py"
    module.write_text("from gate._run.session import Session\n")
    ((target, name, line),) = imports_of(module)
    assert (target, name, line) == ("gate._run.session", "Session", 1)
    assert stage_of(target) > stage_of("gate._decide.evaluate")


EXPORTED = [
    "CalibrateOptions",
    "CompareOptions",
    "ConfigError",
    "GateConfig",
    "GateError",
    "Interrupted",
    "RunError",
    "RunOptions",
    "ScoreOptions",
    "Terminated",
    "Verdict",
    "__version__",
    "calibrate",
    "compare",
    "load_config",
    "run_gate",
    "score_session",
    "validate",
    "verdict_schema",
]


def test_exported_members() -> None:
    """The supported Python API, pinned: adding or removing a name is a decision, not an accident."""
    assert sorted(gate.__all__) == EXPORTED
    for name in gate.__all__:
        member = getattr(gate, name)
        if name != "__version__":
            assert member.__module__.startswith("gate."), name
    assert dir(gate) == EXPORTED


def test_an_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="module 'gate' has no attribute 'nope'"):
        gate.nope  # type: ignore[attr-defined]  # noqa: B018


def test_importing_gate_does_not_import_mlflow_or_numpy() -> None:
    """``gate validate`` must stay fast: the package and the CLI import neither until a run needs them."""
    import subprocess
    import sys

    code = "import sys, gate, gate._cli; print(sorted(m for m in ('mlflow', 'numpy', 'openai') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_listed_module_imports() -> None:
    for module in graph():
        if module != "gate.__main__":  # runs the CLI when imported
            importlib.import_module(module)
