"""``--set PATH=VALUE``: override one option of a run config from the command line.

The value is parsed as YAML, like the config file (``iterations=2``, ``judge=null``,
``'proposer={backend: llamacpp, model: x.gguf}'``). The path is checked against the
method's pydantic schema before anything is changed, so a typo names the key that
does not exist; the result is then validated exactly like the YAML file.

Setting a sub-key of an option that is absent from the config starts from that
option's default (``train.proposer.beta=0.2`` keeps the other DPO defaults); an
option that is ``null`` starts from an empty mapping.
"""

from __future__ import annotations

import copy
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from failforge.config import check_acyclic
from failforge.errors import ConfigError


class AnyKeys:
    """Marker schema: a dict-typed option takes any sub-key."""


Schema = type[BaseModel] | type[AnyKeys] | None


def parse_set(arg: str) -> tuple[str, Any]:
    """``"a.b=VALUE"`` -> ``("a.b", VALUE parsed as YAML)``; a ConfigError on bad input."""
    if "=" not in arg:
        raise ConfigError(f"--set {arg}: expected PATH=VALUE, e.g. --set iterations=2")
    path, _, raw = arg.partition("=")
    path = path.strip()
    if not path or any(not part.strip() for part in path.split(".")):
        raise ConfigError(f"--set {arg}: empty key in the path")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"--set {path}: malformed YAML value: {problem}") from None
    except RecursionError:
        raise ConfigError(f"--set {path}: malformed YAML value: nested too deeply") from None
    check_acyclic(value, f"--set {path}")
    return path, value


def _union_members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def nested_schema(annotation: Any) -> Schema:
    """What a field's sub-keys are checked against: a pydantic model, AnyKeys for a
    dict, or None when the field takes no sub-keys. ``Model | None`` counts as Model."""
    members = [m for m in _union_members(annotation) if m is not type(None)]
    models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    if len(models) == 1:
        return models[0]
    if models or any(m is dict or typing.get_origin(m) in (dict, Mapping) for m in members):
        return AnyKeys  # a dict, or a union of several models: any key may be right
    return None


def check_path(path: str, schema: type[BaseModel]) -> None:
    """Raise a one-line ConfigError unless every key of ``path`` exists in ``schema``."""
    current: Schema = schema
    parts = path.split(".")
    for i, key in enumerate(parts):
        prefix = ".".join(parts[: i + 1])
        if current is AnyKeys:
            return
        if current is None:
            parent = ".".join(parts[:i])
            raise ConfigError(f"--set {path}: {parent} takes no sub-keys")
        fields = current.model_fields
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {'.'.join(parts[:i] + close)}?)" if close else ""
            raise ConfigError(f"--set {path}: unknown key {prefix}{hint}")
        current = nested_schema(fields[key].annotation)


def _field_default(schema: Schema, key: str) -> Any:
    """The default of ``key`` as plain data, or None where there is none to start from."""
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)) or key not in schema.model_fields:
        return None
    field = schema.model_fields[key]
    if field.is_required():
        return None
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        # only what the default sets explicitly: the rest stays the model's own default
        return value.model_dump(mode="json", exclude_unset=True)
    return copy.deepcopy(value) if isinstance(value, dict) else None


def _assign(data: dict[str, Any], path: str, value: Any, schema: Schema) -> None:
    """Set ``path`` in ``data``, creating the mappings on the way from the schema's defaults."""
    node = data
    current: Schema = schema
    parts = path.split(".")
    for i, key in enumerate(parts[:-1]):
        child = node[key] if key in node else _field_default(current, key)
        if child is None:
            child = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"--set {path}: {where} is {type(child).__name__} in the config, not a mapping")
        node[key] = child
        node = child
        if isinstance(current, type) and issubclass(current, BaseModel):
            current = nested_schema(current.model_fields[key].annotation)
    node[parts[-1]] = value


def apply_overrides(data: dict[str, Any], sets: Sequence[str], schema: type[BaseModel] | None) -> dict[str, Any]:
    """A copy of ``data`` with each ``PATH=VALUE`` of ``sets`` applied in order.

    Paths are checked against ``schema`` (the method's config model); with ``schema``
    None (an unknown method, reported by validation) they are applied unchecked.
    """
    out = copy.deepcopy(data)
    for arg in sets:
        path, value = parse_set(arg)
        if schema is not None:
            check_path(path, schema)
        _assign(out, path, value, schema)
    return out


def method_of(data: Mapping[str, Any], sets: Sequence[str]) -> Any:
    """The method a config names once ``--set method=...`` is applied (the last one wins)."""
    from failforge.methods import DEFAULT_METHOD

    method = data.get("method", DEFAULT_METHOD)
    for arg in sets:
        path, value = parse_set(arg)
        if path == "method":
            method = value
    return method


def _blame(err: ValidationError, paths: Sequence[str], source: str) -> str:
    """``--set`` when the first problem lies on, above or below an overridden path."""
    loc = ".".join(str(p) for p in err.errors()[0]["loc"])
    if loc and any(p == loc or p.startswith(loc + ".") or loc.startswith(p + ".") for p in paths):
        return "--set"
    return source


def build_run_config(config_path: str | Path | None, sets: Sequence[str] = ()) -> BaseModel:
    """The validated run config from a YAML file (None = the default job) and ``--set``s."""
    from failforge.config import format_validation_error, load_yaml, parse_run_config
    from failforge.methods import METHOD_NAMES, get_method

    data = load_yaml(config_path) if config_path is not None else {}
    source = f"config {config_path}" if config_path is not None else "default job"
    sets = list(sets or ())
    paths = [parse_set(arg)[0] for arg in sets]
    method = method_of(data, sets)
    if not isinstance(method, str) or method not in METHOD_NAMES:
        # parse_run_config names the unknown method
        data = apply_overrides(data, sets, None)
        return parse_run_config(data, "--set" if "method" in paths else source)
    schema = get_method(method).Config
    data = apply_overrides(data, sets, schema)
    try:  # what parse_run_config does, but a problem in an overridden option names --set
        return schema.model_validate({**data, "method": method})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, _blame(e, paths, source))) from None
