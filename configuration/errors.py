"""Validation errors as one line per bad key: its dotted name, what is wrong, what is allowed, a close match."""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


def format_validation_error(err: ValidationError, source: str, root: type[BaseModel], what: str) -> str:
    """The message of a `root` document (`what`, read from `source`) that failed validation."""
    lines = [f"invalid {what} ({source}):"]
    for e in err.errors():
        loc = tuple(e["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(root, loc[:-1])
            lines.append(f"  {key}: unknown key{_allowed_hint(str(loc[-1]), allowed)}")
        elif e["type"] in ("literal_error", "enum"):
            expected = re.findall(r"'([^']*)'", str(e.get("ctx", {}).get("expected", "")))
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})"
                         f"{_suggestion(str(e.get('input')), expected)}")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _allowed_hint(given: str, allowed: list[str] | None) -> str:
    if not allowed:
        return ""
    return f" (allowed: {', '.join(allowed)}){_suggestion(given, allowed)}"


def _suggestion(given: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(given, allowed, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _allowed_keys(root: type[BaseModel], path: tuple) -> list[str] | None:
    """The keys of the section at `path` (list indices and optional wrappers are looked through)."""
    annotation: Any = root
    for part in path:
        model = _model_in(annotation)
        if model is None:
            return None
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
    model = _model_in(annotation)
    return list(model.model_fields) if model is not None else None


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model an annotation holds: itself, or inside `X | None`, `list[X]`, `dict[str, X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple, dict):
        for arg in typing.get_args(annotation):
            model = _model_in(arg)
            if model is not None:
                return model
    return None
