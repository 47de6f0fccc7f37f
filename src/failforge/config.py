"""YAML -> typed config objects, with one-line errors.

A run config is a mapping with a ``method`` key; the method's own pydantic schema
(``Method.Config``) validates the rest, rejecting unknown keys. The Python API
takes the same objects: ``failforge.methods.get("reversegen").Config(...)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from failforge.errors import ConfigError


def read_text_strict(path: str | Path, what: str = "file") -> str:
    """Read a UTF-8 text file or raise a one-line ConfigError naming it."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {p}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {p}: is a directory, expected a file") from None
    except OSError as e:
        raise ConfigError(f"{what} {p}: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {p}: invalid UTF-8 at byte {e.start}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    text = read_text_strict(path, "config")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config {path}:{where}: malformed YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"config {path}: malformed YAML: nested too deeply") from None
    if data is None:
        data = {}
    check_acyclic(data, f"config {path}")
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def check_acyclic(data: Any, source: str) -> None:
    """YAML aliases can make a list or mapping contain itself; no option takes that."""
    stack: list[tuple[Any, frozenset[int]]] = [(data, frozenset())]
    while stack:
        node, above = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in above:
            raise ConfigError(f"{source}: a YAML alias refers to a mapping or list that contains it")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, above | {id(node)}) for child in children)


#: keys whose rejected value is never shown: a key written where its variable's name goes
_UNSHOWN = frozenset({"api_key_env"})


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """The first problem of a pydantic error as one line: ``config x.yaml: target.backend: ...``."""
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
    msg = e["msg"]
    if e["type"] == "extra_forbidden":
        msg = "unknown key"
    elif e["type"] == "missing":
        msg = "required key is missing"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else ""
    value = e.get("input")
    hidden = e["type"] in ("missing", "extra_forbidden") or isinstance(value, (dict, list)) or (e["loc"] and e["loc"][-1] in _UNSHOWN)
    shown = "" if hidden else f" (got {value!r})"
    return f"{source}: {loc}: {msg}{shown}{tail}"


def validate(schema: type[BaseModel], data: dict[str, Any], source: str = "config") -> BaseModel:
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def parse_run_config(data: dict[str, Any], source: str = "config") -> BaseModel:
    """Pick the method's schema by ``method`` and validate the mapping with it."""
    from failforge.methods import DEFAULT_METHOD, METHOD_NAMES, get_method

    method = data.get("method", DEFAULT_METHOD)
    if not isinstance(method, str) or method not in METHOD_NAMES:
        raise ConfigError(f"{source}: method: unknown method {method!r} (known: {', '.join(METHOD_NAMES)})")
    cls = get_method(method)
    return validate(cls.Config, {**data, "method": method}, source)


def load_run_config(path: str | Path) -> BaseModel:
    return parse_run_config(load_yaml(path), f"config {path}")


def dump_config(config: BaseModel) -> str:
    """The config as YAML that reads back to the same values: readable Unicode where
    that round-trips, escapes where it does not (YAML reads U+0085 or U+2028 written
    raw as line breaks)."""
    data = config.model_dump(mode="json")
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    if yaml.safe_load(text) != data:
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=False)
    return text
