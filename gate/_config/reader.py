"""Read a YAML file safely: UTF-8 only, unique keys, bounded depth and alias expansion; errors name line and column."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from gate._errors import ConfigError

__all__ = [
    "MAX_ALIAS_EXPANSION",
    "MAX_DEPTH",
    "SURROGATE",
    "decode_utf8",
    "format_loc",
    "one_line",
    "read_file",
    "read_yaml",
]


# Limits on what a YAML or JSON file may hold. Deeper nesting would exhaust the stack of the recursive parser and
# of every walk over the data; aliases must not multiply the data ("billion laughs": nine nested aliases of ten
# items are 10**9 values that validation would walk). Real configs nest about 6 levels and alias a few blocks.
MAX_DEPTH = 100
MAX_ALIAS_EXPANSION = 1_000_000  # values that aliases add to the document, beyond the ones written in it


SURROGATE = re.compile("[\ud800-\udfff]")
SURROGATE_PROBLEM = (
    "a \\uD800-\\uDFFF escape is half of a UTF-16 pair, not a character (YAML does not join pairs); "
    "write the character itself, or \\U and 8 hex digits (\\U0001F600)"
)


class InputLimitError(yaml.YAMLError):
    """A document over ``MAX_DEPTH`` or ``MAX_ALIAS_EXPANSION``; ``read_yaml`` reports it without "not valid YAML"."""

    def __init__(self, message: str, mark: yaml.Mark | None = None) -> None:
        super().__init__(message)
        self.problem = message
        self.problem_mark = mark


class UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects a repeated key instead of silently keeping the last one.

    It also bounds nesting depth and alias expansion, and turns a scalar Python cannot represent (an integer of more
    than 4,300 digits, 2024-13-45, a time zone of +99:00) into a ``ConstructorError`` instead of a ``ValueError``.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
        elif self.check_event(yaml.ScalarEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            # Only a "\ud800" escape in double quotes makes a lone surrogate: not a character, so not UTF-8, so
            # every report and trace that would hold it fails to be written.
            if event.style == '"' and SURROGATE.search(event.value):
                raise yaml.composer.ComposerError(None, None, SURROGATE_PROBLEM, event.start_mark)
        elif self.check_event(yaml.SequenceStartEvent, yaml.MappingStartEvent):
            # The composer recurses once per level: stop before Python's recursion limit does, with a line number.
            if self._depth >= MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise InputLimitError(f"nested deeper than {MAX_DEPTH} levels; flatten the data", mark)
            self._depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)

    def construct_document(self, node: yaml.Node) -> Any:
        if self._aliases:  # without aliases the nodes form a tree, and compose_node has bounded its depth
            check_expansion(node)
        return super().construct_document(node)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, ArithmeticError, LookupError, TypeError, AttributeError) as exc:
            # PyYAML's scalar constructors fail with plain Python errors on a value Python cannot hold, and on an
            # explicit tag the text does not fit: `!!int ''` (IndexError), `!!timestamp x` (AttributeError),
            # `!!bool maybe` (KeyError). A collection's errors surface later, from construct_document.
            if not isinstance(node, yaml.ScalarNode):
                raise
            value, tag = one_line(repr(node.value), 60), node.tag.removeprefix("tag:yaml.org,2002:")
            reason = one_line(str(exc), 120) if isinstance(exc, (ValueError, OverflowError)) else f"not a valid {tag}"
            if tag == "int" and "digits" in reason:
                reason = "an integer of more than 4,300 digits; quote it to keep it as text"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {value}: {reason}", node.start_mark
            ) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # `!!set a`: SafeConstructor reports "expected a mapping node"
            return super().construct_mapping(node, deep=deep)
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)  # not `key in seen`: a set key is looked up as a frozenset, then cannot be added
            except TypeError:
                continue  # SafeConstructor reports "found unhashable key"
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {one_line(repr(key), 80)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def check_expansion(root: yaml.Node) -> None:
    """Raise ``InputLimitError`` if aliases make ``root`` recursive, deeper than allowed, or much bigger than written.

    One pass over the distinct nodes (an alias is the same node object again), without recursion: the size and
    depth of each node once expanded are computed from its children's.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if children_done:
            on_path.discard(key)
            size[key] = 1 + sum(size[id(child)] for child in children)
            depth[key] = (1 + max((depth[id(child)] for child in children), default=0)) if children else 0
            if depth[key] > MAX_DEPTH:
                raise InputLimitError(f"aliases nest the data deeper than {MAX_DEPTH} levels", node.start_mark)
            continue
        if key in size:
            continue
        if key in on_path:
            raise InputLimitError("an alias refers to a value that contains it (a recursive alias)", node.start_mark)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in children)
    if (extra := size[id(root)] - len(size)) > MAX_ALIAS_EXPANSION:
        raise InputLimitError(
            f"aliases (*name) expand the document by {extra:,} values, more than the limit of "
            f"{MAX_ALIAS_EXPANSION:,} (a YAML alias bomb); write the values out or use fewer aliases"
        )


def one_line(text: str, limit: int = 1000) -> str:
    """``text`` on one printable line: control and other non-printable characters escaped, cut at ``limit``."""
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def decode_utf8(path: Path, data: bytes) -> str:
    """The text of a file that must be UTF-8; anything else is a ``ConfigError`` naming the place and the fix."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}: the file is UTF-16 or UTF-32 (it starts with a byte-order mark); save it as UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            f"{path}: line {line}, column {column}: byte 0x{data[exc.start]:02x} is not UTF-8; "
            "the file must be UTF-8 (convert it, e.g. iconv -f latin1 -t utf-8)"
        ) from None


def read_file(path: Path, missing: str) -> str:
    """Read a UTF-8 file; ``missing`` is the message (after the path) when it does not exist."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {missing}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {one_line(str(exc))}") from None
    return decode_utf8(path, data)


def read_yaml(path: Path, text: str) -> Any:
    """Parse YAML with unique keys; a syntax error becomes one ``ConfigError`` line naming line and column."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow; it has no problem_mark
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            f"{path}: line {line}: not valid YAML: character #x{exc.character:04x} is not allowed"
        ) from None
    except RecursionError:  # not expected: compose_node stops at MAX_DEPTH levels, far below the limit
        raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    except (ValueError, TypeError, AttributeError, LookupError, ArithmeticError) as exc:
        # Not expected either (fuzzing found none left): PyYAML failing on odd input with a plain Python error.
        raise ConfigError(f"{path}: not valid YAML: {type(exc).__name__}: {one_line(str(exc), 200)}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        what = "" if isinstance(exc, InputLimitError) else "not valid YAML: "
        problem = one_line(str(getattr(exc, "problem", None) or exc))
        raise ConfigError(f"{path}: {where}{what}{problem}") from None


def format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad key of a mapping (the key itself is the part before)
            out += " (the key)"
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return one_line(out, 300) or "(top level)"
