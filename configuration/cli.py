"""What every command-line entry point does with configs: `--print-config`, and errors as one `error:` line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import yaml
from pydantic import BaseModel

from configuration.base import ConfigError
from configuration.redact import redact, redact_urls

USAGE_ERROR = 2  # argparse's exit code for a bad command line; a bad config is one too


def add_print_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (defaults, files and overrides applied; secrets redacted) and exit")


def print_config(cfg: BaseModel) -> None:
    print(yaml.safe_dump(redact(cfg.model_dump(mode="json")), sort_keys=False), end="")


def run_cli(main: Callable[[], int], errors: tuple[type[BaseException], ...] = ()) -> int:
    """`main()`, with a `ConfigError` (or one of `errors`) reported as `error: ...` and exit code 2.

    URL userinfo is taken out of the line: errors name manifests, shards and endpoints by their URLs.
    """
    try:
        return main()
    except (ConfigError, *errors) as err:
        print(f"error: {redact_urls(str(err))}", file=sys.stderr)
        return USAGE_ERROR
