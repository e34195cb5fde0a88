"""Imports of optional dependencies that say which extra to install when they are missing.

Each component's dependencies are an extra of the `asymdsd-scale` distribution (see pyproject.toml). A module
that needs a package outside its own extra imports it inside the function that uses it, through `require`:

    shard_corpus = require("sharding.shard_corpus", "sharding").main
    MlflowClient = require("mlflow", "train").MlflowClient

so that a missing package is an ImportError naming the extra, not a bare `No module named ...`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

DISTRIBUTION = "asymdsd-scale"


def install_hint(extra: str) -> str:
    """The pip command that installs `extra`."""
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def require(module: str, extra: str) -> ModuleType:
    """Import `module`; if it (or something it imports) is missing, raise an ImportError naming `extra`.

    The error keeps the missing package's name (`err.name`) and the original error as its cause.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        missing = f" ({err.name} is not installed)" if err.name else f" ({err})"
        raise ImportError(f"{module} needs the '{extra}' extra{missing}: {install_hint(extra)}",
                          name=err.name) from err


__all__ = ["DISTRIBUTION", "install_hint", "require"]
