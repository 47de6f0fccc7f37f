"""Generate docs/config.md: every option of every method, from the pydantic schemas.

Each option gets its dotted path (what ``--set`` takes), type, default and meaning.
The meaning is the field's ``Field(description=...)`` or else the ``#:`` comment
lines written above it in the source. A nested model (ModelSpec, TrainSettings, ...)
has its options listed once per method, under the first path it appears at; later
paths point back there with their own default.

    python -m failforge.docs_config            # print the reference
    python -m failforge.docs_config --write    # rewrite docs/config.md (from the repository root)
"""

from __future__ import annotations

import argparse
import ast
import enum
import functools
import inspect
import io
import textwrap
import tokenize
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

import failforge
from failforge.overrides import AnyKeys, nested_schema

DOC_PATH = Path("docs") / "config.md"
REGENERATE = "python -m failforge.docs_config --write"
_PACKAGE_DIR = str(Path(failforge.__file__).resolve().parent)


# --- meanings ---------------------------------------------------------------------


@functools.cache
def _class_comments(cls: type) -> dict[str, str]:
    """``#:`` comments of the fields a class defines, by field name.

    Pydantic keeps no comments, so they are read back from the class source: ``ast``
    finds each annotated field's line and ``tokenize`` the comments, which ``ast``
    drops. The ``#:`` lines right above a field (or ``#:`` at its end) are its doc.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    full_line: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and tok.string.startswith("#:"):
            comments[tok.start[0]] = tok.string[2:].strip()
            if not tok.line[: tok.start[1]].strip():
                full_line.add(tok.start[0])
    out: dict[str, str] = {}
    body = ast.parse(source).body[0]
    for node in getattr(body, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        lines: list[str] = []
        row = node.lineno - 1
        while row in full_line:
            lines.insert(0, comments[row])
            row -= 1
        trailing = [comments[r] for r in range(node.lineno, (node.end_lineno or node.lineno) + 1) if r in comments and r not in full_line]
        text = " ".join(lines + trailing).strip()
        if text:
            out[node.target.id] = text
    return out


def field_meaning(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    """The field's description, else the ``#:`` comment above it in the class that defines it."""
    if field.description:
        return " ".join(field.description.split())
    for cls in model.__mro__:
        if name in vars(cls).get("__annotations__", {}):
            return _class_comments(cls).get(name, "")
    return ""


# --- types and defaults -------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(_yaml_scalar(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        inner = [a for a in args if a is not Ellipsis]
        return f"list[{_type_name(inner[0])}]" if inner else "list"
    if origin is dict or annotation is dict:
        return f"dict[{', '.join(_type_name(a) for a in args)}]" if args and args[1] is not Any else "dict"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " | ".join(_yaml_scalar(m.value) for m in annotation)
    return getattr(annotation, "__name__", str(annotation))


#: pydantic's numeric constraints (annotated_types Ge, Gt, ...) carry their bound as an attribute
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def field_type(field: FieldInfo) -> str:
    """``int (>= 1)``, ``float (> 0, <= 1)``, ``ModelSpec | null`` ..."""
    bounds = [
        f"{sign} {_yaml_scalar(getattr(m, attr))}" for m in field.metadata for attr, sign in _BOUNDS if getattr(m, attr, None) is not None
    ]
    name = _type_name(field.annotation)
    return f"{name} ({', '.join(bounds)})" if bounds else name


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).removesuffix("\n").removesuffix("\n...")


def show_value(value: Any) -> str:
    """A default as YAML flow text; a model shows only what differs from its own defaults."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
    data = to_jsonable_python(value)
    text = _yaml_scalar(data)
    return text.replace(_PACKAGE_DIR, "<failforge package>")


def field_default(field: FieldInfo) -> Any:
    """The field's default value (calling a factory), or PydanticUndefined if required."""
    if field.is_required():
        return PydanticUndefined
    return field.get_default(call_default_factory=True)


# --- walking the schema ---------------------------------------------------------------


def option_rows(
    model: type[BaseModel], instance: BaseModel | None, prefix: str, seen: dict[type, str]
) -> Iterator[tuple[str, str, str | None, str]]:
    """Rows ``(path, type, default, meaning)`` for ``model``'s fields and nested models.

    ``instance`` is the value at ``prefix`` (its defaults are the ones that apply
    there); None means the option is unset, so the model's own defaults show. The
    default is None for a required option. ``seen`` maps each nested model already
    listed in this method to the path it was listed under.
    """
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        value = getattr(instance, name) if instance is not None else field_default(field)
        default = None if value is PydanticUndefined else show_value(value)
        meaning = field_meaning(model, name, field)
        sub = nested_schema(field.annotation)
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            if sub in seen:
                meaning = f"{meaning} (options as under `{seen[sub]}.*`)".strip()
                yield (path, field_type(field), default, meaning)
                continue
            seen[sub] = path
            yield (path, field_type(field), default, meaning)
            yield from option_rows(sub, value if isinstance(value, sub) else None, f"{path}.", seen)
        else:
            if sub is AnyKeys and "any key" not in meaning:
                meaning = f"{meaning} (any sub-key)".strip()
            yield (path, field_type(field), default, meaning)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def method_section(name: str) -> str:
    """The markdown section of one method: a short description and its options table."""
    from failforge.methods import get_method

    method = get_method(name)
    # the config class's own docstring (not BaseModel's), else the method module's
    doc = inspect.cleandoc(vars(method.Config).get("__doc__") or inspect.getmodule(method).__doc__ or "")
    summary = " ".join(doc.split("\n\n")[0].split())
    lines = [f"## `method: {name}`", ""]
    if summary:
        lines += [summary, ""]
    lines += ["| option | type | default | meaning |", "|---|---|---|---|"]
    for path, typ, default, meaning in option_rows(method.Config, None, "", {}):
        shown = "_required_" if default is None else _cell(_code(default))
        lines.append(f"| {_code(path)} | {_cell(_code(typ))} | {shown} | {_cell(meaning)} |")
    return "\n".join(lines)


def render_config_reference() -> str:
    """The whole of docs/config.md."""
    from failforge.methods import DEFAULT_METHOD, METHOD_NAMES

    head = [
        "# Config options",
        "",
        f"_Generated from the config schemas by `{REGENERATE}`; edit the `#:` comments in the source, not this file._",
        "",
        "A run config is a YAML mapping whose `method` picks the schema below "
        f"(default `{DEFAULT_METHOD}`); unknown keys are errors. Any option can also be set on the command "
        "line by its dotted path, with a YAML value: `failforge run CONFIG --set iterations=2 "
        "--set train.proposer=null`. A default shown as a mapping lists only what differs from that "
        "model's own defaults; `null` means unset.",
    ]
    sections = [method_section(name) for name in METHOD_NAMES]
    return "\n\n".join(["\n".join(head), *sections]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m failforge.docs_config", description="Print or write docs/config.md.")
    parser.add_argument("--write", nargs="?", const=str(DOC_PATH), metavar="PATH", help=f"write the file (default {DOC_PATH})")
    args = parser.parse_args(argv)
    text = render_config_reference()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
