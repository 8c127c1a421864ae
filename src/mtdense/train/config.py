"""Typed configs from YAML: read, apply ``--set`` overrides, validate with pydantic.

The loader knows nothing of recipes; any pydantic v2 model serves as the schema::

    settings, text = load_config(MySettings, "my.yaml", overrides=["stages.0.epochs=2"])

Overrides edit the plain mapping before validation: ``dotted.key=value``, list items by index
(``stages.0.size=[200, 512]``), the value parsed as YAML (``2`` -> int, ``null`` -> None).
Validation failures become one :class:`ConfigError` naming the file, the key path (``stages[0].epochs``)
and what is wrong, in place of pydantic's multi-line report.

Schemas built for this loader use :data:`Float` for numbers (YAML 1.1 reads ``1e-3``, without a
dot, as a string), :func:`one_of` for a set of allowed strings, and raise :class:`FieldError` from
a model validator to name the field that a check across several fields blames.
"""

from __future__ import annotations

import copy
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ValidationError

__all__ = [
    "ConfigError", "FieldError", "Float", "one_of", "apply_overrides", "parse_mapping", "validate", "load_config",
    "key_path",
]

M = TypeVar("M", bound=BaseModel)

_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the file, the key path and the fix."""


class FieldError(ValueError):
    """Raised by a model validator to blame one field (``key``, dotted, below the model).

    Args:
        key: The field's path below the validated model, e.g. ``"loss.weights"``.
        message: What is wrong and how to fix it.
    """

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _number_from_yaml11(value: Any) -> Any:
    if isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string; YAML 1.2 and people read a number
    return value


Float = Annotated[float, BeforeValidator(_number_from_yaml11)]
"""A number: a float, an int (converted) or a YAML 1.1 exponent string such as ``"1e-3"``."""


def one_of(values: Iterable[str], what: str) -> AfterValidator:
    """A check that a string is one of ``values``; ``what`` names it in the error (``"depth loss"``)."""
    allowed = tuple(values)

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; valid: {', '.join(allowed)}")
        return value

    return AfterValidator(check)


# -- overrides -------------------------------------------------------------------------------
def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a mapping (a modified deep copy).

    List items are addressed by index (``stages.0.epochs=2``); values are parsed with
    ``yaml.safe_load`` (``2`` -> int, ``[200, 512]`` -> list, ``null`` -> None); a missing or
    null mapping on the way is created.

    Raises:
        ConfigError: malformed override, or a path through a missing list item / non-mapping.
    """
    data = copy.deepcopy(dict(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value, e.g. stages.0.epochs=2")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({exc})") from exc
        parts = key.strip().split(".")
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    where = ".".join(parts[: depth + 1])
                    raise ConfigError(f"override {item!r}: {where!r} is not an item of a list of {len(node)}")
                index: int | str = int(part)
            elif isinstance(node, dict):
                index = part
                if not last and node.get(part) is None:
                    node[part] = {}
            else:
                raise ConfigError(f"override {item!r}: {'.'.join(parts[:depth])!r} is {node!r}, not a mapping or list")
            if last:
                node[index] = value
            else:
                node = node[index]
    return data


# -- validation and its messages ---------------------------------------------------------------
def key_path(parts: Sequence[str | int]) -> str:
    """``("stages", 0, "epochs")`` -> ``"stages[0].epochs"``."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _unwrap(tp: Any) -> Any:
    """``tp`` without ``Annotated`` and without ``None`` in a union (pydantic's nullable)."""
    while True:
        if typing.get_origin(tp) is Annotated:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) > 1:
                return tp
            tp = members[0]
        else:
            return tp


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _walk(model: type[BaseModel], loc: Sequence[str | int]) -> tuple[list[str | int], int | None, Any]:
    """Follow pydantic's ``loc`` through the schema.

    Returns:
        The key path without pydantic's union-member tags, the index in ``loc`` of the first
        tag (``None`` without one) and the type found at the end (``None`` if unknown).
    """
    tp: Any = model
    path: list[str | int] = []
    first_tag = None
    for i, part in enumerate(loc):
        tp = _unwrap(tp)
        if _is_union(tp):
            first_tag = i if first_tag is None else first_tag
            tp = None  # which member the tag names is not needed: the path goes on below it
            continue
        path.append(part)
        if _is_model(tp):
            field = tp.model_fields.get(str(part))
            tp = None if field is None else field.annotation
        elif typing.get_origin(tp) in (list, dict):
            tp = typing.get_args(tp)[-1]
        else:
            tp = None
    return path, first_tag, _unwrap(tp)


# What a value of the wrong type should have been, by pydantic error type.
_EXPECTED = {
    "bool_type": "true or false", "bool_parsing": "true or false",
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "string_type": "a string", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "none_required": "null",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _number(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _at(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _expected(error: Mapping[str, Any]) -> str | None:
    """The type phrase of a wrong-type error (``"an integer"``), ``None`` for other errors."""
    if error["type"] == "literal_error":
        return f"one of {error['ctx']['expected']}"
    return _EXPECTED.get(error["type"])


def _describe(model: type[BaseModel], path: list[str | int], error: Mapping[str, Any]) -> str:
    """One error as ``key.path: what is wrong, got value``."""
    where = key_path(path)
    parent = key_path(path[:-1]) or "the top level"
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return f"missing key {where!r} (required under {parent})"
    if kind == "extra_forbidden":
        section = _walk(model, path[:-1])[2]
        valid = f"; valid keys under {parent}: {', '.join(section.model_fields)}" if _is_model(section) else ""
        return f"unknown key {where!r}{valid}"
    if kind in ("value_error", "assertion_error") and isinstance(ctx.get("error"), Exception):
        exc = ctx["error"]
        if isinstance(exc, FieldError):
            where = ".".join(p for p in (where, exc.key) if p)
        return _at(where, str(exc))
    if kind in _BOUNDS:
        (bound,) = ctx.values()
        message = f"must be {_BOUNDS[kind]} {_number(bound)}, got {value!r}"
    elif kind in ("too_short", "too_long"):
        size = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        message = f"must have {'at least' if kind == 'too_short' else 'at most'} {size} item(s), got {value!r}"
    elif _expected(error) is not None:
        message = f"expected {_expected(error)}, got {value!r}"
    else:
        message = f"{error['msg']}, got {value!r}"
    return _at(where, message)


def _first_problem(model: type[BaseModel], exc: ValidationError) -> str:
    """The first error of ``exc`` in words; a value that fits no member of a union is one error."""
    errors = exc.errors(include_url=False)
    path, tag, _ = _walk(model, errors[0]["loc"])
    if tag is None:
        return _describe(model, path, errors[0])
    # Errors of the other members of the same union: same loc up to the member tag.
    prefix = tuple(errors[0]["loc"][:tag])
    members = [(_walk(model, e["loc"])[0], e) for e in errors if tuple(e["loc"][:tag]) == prefix]
    union_path = path[:tag]
    # A member that took the value's type but not its content says the most (a bound, a list item).
    for p, e in members:
        if len(p) > len(union_path) or _expected(e) is None:
            return _describe(model, p, e)
    expected = " or ".join(dict.fromkeys(str(_expected(e)) for _, e in members))
    return _at(key_path(union_path), f"expected {expected}, got {errors[0].get('input')!r}")


def _lists(data: Any) -> Any:
    """``data`` with tuples as lists, as YAML gives them (the strict schema takes lists only)."""
    if isinstance(data, dict):
        return {k: _lists(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_lists(v) for v in data]
    return data


def validate(model: type[M], data: Any, source: str | Path | None = None) -> M:
    """Validate a plain mapping into ``model`` (tuples count as lists).

    Args:
        model: The pydantic model (the schema).
        data: The mapping, e.g. as read from YAML.
        source: The file the mapping came from, named first in the error.

    Raises:
        ConfigError: the first problem, as ``source: key.path: what is wrong, got value``.
    """
    try:
        return model.model_validate(_lists(data))
    except ValidationError as exc:
        raise ConfigError(_at(str(source or ""), _first_problem(model, exc))) from None


# -- files -----------------------------------------------------------------------------------
def parse_mapping(text: str, source: str | Path, model: type[BaseModel] | None = None) -> dict[str, Any]:
    """Parse YAML ``text`` that must hold a mapping (``model``'s keys, if given, name it in the error).

    Raises:
        ConfigError: not valid YAML, or not a mapping; the message names ``source``.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        keys = f" ({', '.join(f'{k}:' for k in model.model_fields)} ...)" if model is not None else ""
        raise ConfigError(f"{source}: expected a mapping of keys{keys}, got {type(data).__name__}")
    return data


def load_config(model: type[M], path: str | Path, overrides: Sequence[str] = ()) -> tuple[M, str]:
    """Read a YAML file, apply ``overrides`` to its mapping and validate it into ``model``.

    Args:
        model: The pydantic model (the schema).
        path: The YAML file.
        overrides: ``dotted.key=value`` strings (see :func:`apply_overrides`).

    Returns:
        ``(config, text)``: the validated config and the file's text exactly as given.

    Raises:
        OSError: the file cannot be read.
        ConfigError: invalid YAML, override or value; the message names the file and the key path.
    """
    text = Path(path).read_text()
    data = parse_mapping(text, path, model)
    try:
        data = apply_overrides(data, overrides)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return validate(model, data, source=path), text
