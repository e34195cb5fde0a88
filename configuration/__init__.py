"""The one configuration system: strict pydantic models, errors that name the key, YAML with includes and overrides.

Every component (sharding, pipeline, model, launch, evaluation) declares its settings as `StrictModel`s
and reads them through `load_config`, so a misspelt key or an out-of-range value fails the same way
everywhere: one message per bad key, with its dotted name, what is allowed there and a close match.
"""

from configuration.base import ConfigError, StrictModel
from configuration.errors import format_validation_error
from configuration.loading import (
    PROJECT_ROOT,
    apply_override,
    load_config,
    read_mapping,
    resolve_path,
    validate,
)

__all__ = [
    "PROJECT_ROOT",
    "ConfigError",
    "StrictModel",
    "apply_override",
    "format_validation_error",
    "load_config",
    "read_mapping",
    "resolve_path",
    "validate",
]
