"""From a pydantic ``ValidationError`` to the one line a user reads: ``field.path: expected
..., got ...``. Every input model (topology, experiment schedule, ...) reports through here,
so the same mistake reads the same in every file."""

from __future__ import annotations

import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import InputError

Model = TypeVar("Model", bound=BaseModel)


def path_of(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel]:
    """The model whose fields the last part of ``loc`` is one of."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return model
        inner = _inner_model(field.annotation)
        if inner is None:
            return model
        model = inner
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, typing.Union, types.UnionType, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


def describe(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """``where: expected ..., got ...`` for the first error; ``prefix`` is prepended to the
    path (``method[0].x-aichaos``)."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    where = path_of(loc)
    if prefix:
        where = prefix if where == "(top level)" else f"{prefix}.{where}"
    kind = error["type"]
    got = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return f"{where}: expected a value, the field is missing"
    if kind == "extra_forbidden":
        known = ", ".join(_model_at(model, loc).model_fields)
        return f"{where}: expected one of the fields {known}, got unknown field {loc[-1]!r}"
    if kind == "value_error":
        return f"{where}: expected {ctx.get('error', error['msg'])}"
    if kind == "too_short":
        return f"{where}: expected at least {ctx.get('min_length', 1)} item(s), got none"
    if kind == "string_pattern_mismatch":
        return f"{where}: expected a name of letters, digits, '-', '_' or '.', got {got!r}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        sign = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<="}
        limit = next(iter(ctx.values()), "?")
        return f"{where}: expected a number {sign.get(kind, '<')} {limit}, got {got!r}"
    if kind == "finite_number":
        return f"{where}: expected a finite number, got {got!r}"
    message = error["msg"]
    for start in ("Input should be ", "Value should be "):
        if message.startswith(start):
            message = message[len(start) :]
    return f"{where}: expected {message}, got {got!r}"


def validate_model(data: Any, model: type[Model], source: str | Path) -> Model:
    """``data`` (a JSON document's content) as ``model``; ``InputError`` naming ``source`` and
    the first field that does not fit."""
    if not isinstance(data, dict):
        raise InputError(source, "content", "a JSON object", type(data).__name__)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        field, _, rest = describe(exc, model).partition(": expected ")
        raise InputError(source, field, rest) from None


def read_json_model(path: Path, model: type[Model]) -> Model | None:
    """The JSON file at ``path`` as ``model``; None when there is no such file, ``InputError``
    (one line, exit 2) when it is not JSON or does not fit."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(path, "content", "a readable UTF-8 file", str(exc)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, "content", "a JSON object", f"unreadable JSON ({exc})") from None
    return validate_model(data, model, path)
