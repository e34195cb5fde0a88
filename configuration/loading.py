"""Reading a config: a YAML (or JSON) file, the files it includes by path, then `a.b.c=value` overrides.

Paths inside configs (`model: configs/model/tiny.yaml`) and on the command line resolve from the
working directory, then next to the file that names them, then from the project root, so the shipped
`configs/` work from any directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from configuration.base import ConfigError
from configuration.errors import format_validation_error

PROJECT_ROOT = Path(__file__).resolve().parent.parent
Model = TypeVar("Model", bound=BaseModel)


def load_config(model: type[Model], path: str | os.PathLike | None, overrides: Sequence[str] = (),
                includes: Sequence[str] = (), what: str = "config") -> Model:
    """Read `path` (optional: defaults plus overrides alone), inline `includes`, apply overrides, validate.

    An override of an include key (`deepspeed=configs/deepspeed/zero2.json`) swaps the file before it is
    read; dotted overrides below it (`deepspeed.zero_optimization.stage=1`) reach into what it holds.
    """
    tree: dict[str, Any] = {}
    config_path = None
    if path is not None:
        config_path = resolve_path(path, None, what)
        tree = read_mapping(config_path)
    swaps = [o for o in overrides if o.partition("=")[0] in includes]
    for item in swaps:
        apply_override(tree, item)
    for key in includes:
        if isinstance(tree.get(key), str):
            tree[key] = read_mapping(resolve_path(tree[key], config_path, f"{what} key {key!r}"))
    for item in overrides:
        if item not in swaps:
            apply_override(tree, item)
    source = str(config_path) if config_path is not None else "defaults"
    if overrides:
        source += f" with overrides {list(overrides)}"
    return validate(model, tree, source, what)


def validate(model: type[Model], data: Any, source: str, what: str) -> Model:
    """`model` from plain data, or a `ConfigError` naming every bad key of it."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source, model, what)) from None


def read_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML or JSON file whose top level is a mapping (an empty file is an empty mapping)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ConfigError(f"{path} is not valid {kind}: {_parse_problem(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _parse_problem(err: json.JSONDecodeError | yaml.YAMLError) -> str:
    """A parser's complaint on one line, saying where: YAML's own message spans lines and quotes the text."""
    if not isinstance(err, yaml.MarkedYAMLError):
        return " ".join(str(err).split())
    mark = err.problem_mark or err.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    context = f" ({err.context})" if err.context else ""
    return f"{where}{err.problem}{context}"


def resolve_path(ref: str | os.PathLike, named_in: Path | None, what: str) -> Path:
    """A file named by a config or flag: as given, next to the file naming it, or under the project root."""
    ref = Path(ref).expanduser()
    candidates = [ref]
    if not ref.is_absolute():
        if named_in is not None:
            candidates.append(named_in.parent / ref)
        candidates.append(PROJECT_ROOT / ref)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    places = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"{what}: file {str(ref)!r} not found (looked at {places})")


def apply_override(tree: dict[str, Any], item: str) -> None:
    """`a.b.c=value` into the nested mapping; the value is parsed as YAML (numbers, booleans, null, lists).

    Missing sections are created, so a misspelt key reaches validation and is reported there with the
    keys allowed at that place. Integer parts index lists (`data.datasets.0.url=...`).
    """
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} is not KEY=VALUE with a dotted KEY (e.g. train.max_steps=10)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({_parse_problem(err)})") from None
    parts = key.split(".")
    node: Any = tree
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {key}: {where} is not an index of a list of {len(node)}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"override {key}: {'.'.join(parts[:i])} holds a value, not a section")
