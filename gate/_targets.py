"""Locate a ``module:function`` target without running any of its code, for ``gate validate`` and ``--dry-run``.

Importing an app usually imports MLflow and the OpenAI SDK (~2 s) and runs whatever its modules do at import time,
which a check of the config should not pay for. So a target is only located:

* the module is found as ``import`` would find it (the config's folder and the current folder first on ``sys.path``,
  then each ``sys.meta_path`` finder's ``find_spec``, through the parent packages' search locations for dotted
  names), but no module code runs, not even a parent package's ``__init__`` (``importlib.util.find_spec`` would
  run that);
* the module's source is parsed with ``ast`` and must bind the name at top level: ``def``, ``async def``, ``class``,
  an assignment or an ``import`` (also inside top-level ``if``/``try``/``with``/loops); for ``module:Class.method``
  the class body must define the method.

A missing module or name gets the message a real import gives (``cannot import module 'x': No module named 'x'``,
``module 'x' has no attribute 'y'``). Where the source cannot decide — no ``.py`` source (an extension module, a
namespace package), a star import, a module ``__getattr__``, ``globals()``/``setattr``/``exec`` and the like, an
attribute of something other than a class — a name not found statically is imported for real, so the static check
never rejects a target that an import accepts. A module already imported is checked on the real module. Left to
``gate run`` (and ``gate validate --import``), which import for real: that an assigned or imported name is callable,
and errors the module raises while importing.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import Any, Literal

from gate._errors import ConfigError

__all__ = ["Located", "locate_target", "put_on_sys_path"]

# Names whose use means a module may bind attributes its syntax tree does not show.
_DYNAMIC_NAMES = frozenset({"globals", "vars", "setattr", "exec", "eval", "__import__", "__dict__"})


@dataclass(frozen=True)
class Located:
    """Where a target's module is, and how the target was checked.

    ``how`` is ``"static"`` when the module's source binds the name, ``"imported"`` when the check used the real
    module (already imported, or imported because the source could not decide).
    """

    spec: str
    origin: str | None
    how: Literal["static", "imported"]


def put_on_sys_path(search_path: Sequence[Path]) -> None:
    """Put the search path first on ``sys.path`` (once), as uvicorn and pytest do for their targets."""
    for folder in reversed([str(p) for p in search_path]):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def locate_target(spec: str, where: str, search_path: Sequence[Path]) -> Located:
    """Check that ``module:attr`` exists, without importing it when its source can tell; else raise ``ConfigError``.

    ``where`` prefixes the messages (``thresholds.yaml: baseline.target``), which match ``import_target``'s.
    """
    put_on_sys_path(search_path)
    module_name, _, attr_path = spec.partition(":")
    module_spec = _find_module(module_name, where)
    origin = module_spec.origin if module_spec is not None and module_spec.has_location else None
    tree = _parse(origin) if module_spec is not None and origin is not None and origin.endswith(".py") else None
    if tree is not None:
        found = _defines(tree.body, attr_path.split("."))
        if found == "not callable":
            raise ConfigError(f"{where}: '{spec}' is not callable")
        if found == "yes":
            return Located(spec, origin, "static")
        if found == "no" and not _is_dynamic(tree):
            raise ConfigError(f"{where}: module '{module_name}' has no attribute '{attr_path}'")

    import_target(spec, where, search_path)
    return Located(spec, origin, "imported")


def _find_module(name: str, where: str) -> ModuleSpec | None:
    """The spec ``import name`` would use, from the finders alone; None when ``name`` is already imported."""
    if name in sys.modules:
        return None
    parts = name.split(".")
    path: Sequence[str] | None = None
    for depth in range(1, len(parts) + 1):
        fullname = ".".join(parts[:depth])
        loaded = sys.modules.get(fullname)
        found = getattr(loaded, "__spec__", None) if loaded is not None else _find_spec(fullname, path)
        if found is None:
            raise ConfigError(f"{where}: cannot import module '{name}': No module named '{fullname}'")
        if depth == len(parts):
            return found
        path = getattr(loaded, "__path__", None) if loaded is not None else found.submodule_search_locations
        if path is None:
            missing = f"{fullname}.{parts[depth]}"
            raise ConfigError(
                f"{where}: cannot import module '{name}': No module named '{missing}'; '{fullname}' is not a package"
            )
    return None  # not reached: parts is never empty


def _find_spec(fullname: str, path: Sequence[str] | None) -> ModuleSpec | None:
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is not None and (found := find(fullname, path)) is not None:
            return found  # type: ignore[no-any-return]
    return None


def _parse(origin: str) -> ast.Module | None:
    try:
        return ast.parse(Path(origin).read_bytes(), origin)
    except (OSError, SyntaxError, ValueError):  # unreadable or broken: the real import says what is wrong
        return None


_Found = Literal["yes", "no", "not callable", "unknown"]


def _defines(body: Sequence[ast.stmt], names: Sequence[str]) -> _Found:
    """Whether a block binds ``names[0]`` (and, through class bodies, the rest of a dotted path)."""
    bindings = list(_bindings(body, names[0]))
    if not bindings:
        return "no"
    if len(names) > 1:
        if not all(isinstance(b, ast.ClassDef) for b in bindings):
            return "unknown"  # an attribute of an instance, a module or a function: only an import can tell
        results = {_defines(b.body, names[1:]) for b in bindings if isinstance(b, ast.ClassDef)}
        return "yes" if "yes" in results else "unknown" if "unknown" in results else "no"
    return "not callable" if all(_assigns_a_literal(b) for b in bindings) else "yes"


def _bindings(body: Sequence[ast.stmt], name: str) -> Iterator[ast.stmt]:
    """The statements of a block, and of its nested blocks but not its functions or classes, that bind ``name``."""
    for stmt in body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if stmt.name == name:
                yield stmt
            continue
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            if any((alias.asname or alias.name.split(".")[0]) == name for alias in stmt.names):
                yield stmt
            continue
        if any(_binds(target, name) for target in _targets_of(stmt)):
            yield stmt
        for block in _blocks_of(stmt):
            yield from _bindings(block, name)


def _targets_of(stmt: ast.stmt) -> list[ast.expr]:
    if isinstance(stmt, ast.Assign):
        return list(stmt.targets)
    if isinstance(stmt, ast.AnnAssign):
        return [stmt.target] if stmt.value is not None else []  # `x: int` alone binds nothing
    if isinstance(stmt, (ast.AugAssign, ast.For, ast.AsyncFor)):
        return [stmt.target]
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return [item.optional_vars for item in stmt.items if item.optional_vars is not None]
    return []


def _blocks_of(stmt: ast.stmt) -> list[list[ast.stmt]]:
    blocks: list[list[ast.stmt]] = [
        block for field in ("body", "orelse", "finalbody") if isinstance(block := getattr(stmt, field, None), list)
    ]
    blocks += [handler.body for handler in getattr(stmt, "handlers", [])]
    blocks += [case.body for case in getattr(stmt, "cases", [])]
    return blocks


def _binds(target: ast.expr, name: str) -> bool:
    if isinstance(target, ast.Name):
        return target.id == name
    if isinstance(target, (ast.Tuple, ast.List)):
        return any(_binds(element, name) for element in target.elts)
    if isinstance(target, ast.Starred):
        return _binds(target.value, name)
    return False


def _assigns_a_literal(stmt: ast.stmt) -> bool:
    value: Any = stmt.value if isinstance(stmt, (ast.Assign, ast.AnnAssign)) else None
    return isinstance(value, (ast.Constant, ast.JoinedStr, ast.List, ast.Tuple, ast.Dict, ast.Set))


def _is_dynamic(tree: ast.Module) -> bool:
    """Whether the module may bind names its syntax tree does not show (a miss is then confirmed by importing)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
            return True
        if isinstance(node, ast.Name) and node.id in _DYNAMIC_NAMES:
            return True
        if isinstance(node, ast.Attribute) and node.attr in ("__dict__", "modules"):  # sys.modules[__name__]
            return True
        if isinstance(node, ast.NamedExpr):
            return True
    return any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == "__getattr__" for s in tree.body)


def import_target(spec: str, where: str, search_path: Sequence[Path]) -> Callable[..., Any]:
    """Import ``module:function`` with ``search_path`` first on ``sys.path``, as uvicorn and pytest do.

    This runs the module's code; ``gate validate`` and ``--dry-run`` only locate targets (``gate._targets``).
    """
    put_on_sys_path(search_path)
    module_name, _, attr_path = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import module '{module_name}': {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing: still their input
        raise ConfigError(f"{where}: importing '{module_name}' raised {type(exc).__name__}: {exc}") from None
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{where}: module '{module_name}' has no attribute '{attr_path}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{where}: '{spec}' is not callable")
    return obj  # type: ignore[no-any-return]
